/*
 * pg_env.h - the PostgreSQL that a unit test's database part runs against: TG_TEST_PG (a libpq
 * conninfo, for runs by hand) or else TG_TEST_PG_FILE (a file holding one, as ctest passes the
 * conninfo that the "pg" fixture writes). Include after <cmocka.h>.
 *
 * A test that needs the database starts with tg_test_pg_or_skip(). With neither variable set it
 * skips. Once a database is configured, an unreadable file or a server that does not answer fails
 * the test: a broken fixture must not look like a run without a database.
 */
#ifndef TG_TESTS_UNIT_PG_ENV_H
#define TG_TESTS_UNIT_PG_ENV_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tg_test_pg_env {
    bool loaded;
    int state; /* 1: conninfo holds a reachable database, 0: none configured, -1: error says why */
    char conninfo[1024];
    char error[512];
} tg_test_pg_env_t;

static tg_test_pg_env_t tg_test_pg_env;

static int tg_test_pg_read(tg_test_pg_env_t *e)
{
    const char *direct = getenv("TG_TEST_PG");
    const char *path = getenv("TG_TEST_PG_FILE");
    const char *source;
    if (direct != NULL && direct[0] != '\0') {
        source = "TG_TEST_PG";
        if (strlen(direct) >= sizeof(e->conninfo)) {
            snprintf(e->error, sizeof(e->error), "TG_TEST_PG is too long");
            return -1;
        }
        snprintf(e->conninfo, sizeof(e->conninfo), "%s", direct);
    } else if (path != NULL && path[0] != '\0') {
        source = "TG_TEST_PG_FILE";
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            snprintf(e->error, sizeof(e->error),
                     "TG_TEST_PG_FILE=%s cannot be read (did the pg fixture run?)", path);
            return -1;
        }
        bool got = fgets(e->conninfo, sizeof(e->conninfo), f) != NULL;
        fclose(f);
        size_t n = got ? strlen(e->conninfo) : 0;
        while (n > 0 && strchr("\r\n \t", e->conninfo[n - 1]) != NULL)
            e->conninfo[--n] = '\0';
        if (n == 0) {
            snprintf(e->error, sizeof(e->error), "TG_TEST_PG_FILE=%s holds no conninfo", path);
            return -1;
        }
    } else {
        return 0;
    }
    /* The conninfo's own connect_timeout wins (it comes later); the default keeps a TCP host that
     * drops packets from hanging the run. */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {"10", e->conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (!ok) /* libpq's message names host and user, never the password */
        snprintf(e->error, sizeof(e->error), "the database from %s does not answer: %s", source,
                 PQerrorMessage(c));
    PQfinish(c);
    if (!ok)
        return -1;
    fprintf(stderr, "database tests run against the conninfo from %s\n", source);
    return 1;
}

/* The conninfo of a reachable database; skips the test when none is configured, fails it when the
 * configured one cannot be used. Read and checked once per process. */
static const char *tg_test_pg_or_skip(void)
{
    tg_test_pg_env_t *e = &tg_test_pg_env;
    if (!e->loaded) {
        e->state = tg_test_pg_read(e);
        e->loaded = true;
    }
    if (e->state < 0)
        fail_msg("%s", e->error);
    if (e->state == 0)
        skip();
    return e->conninfo;
}

#endif
