/*
 * test_pgpool.c - the async pipelined pool on a real h2o loop: many queries in flight,
 * a failing query isolated from its neighbours, recovery after pg_terminate_backend, job
 * deadlines (a slow query, a frozen backend: the job fails, its connection is replaced, no late
 * row reaches anyone), the queue cap, and the key lookup end to end (tollgate migrate + keys
 * create + tg_auth_lookup).
 *
 * Needs a PostgreSQL conninfo (unix socket or hostaddr) in TG_TEST_PG or TG_TEST_PG_FILE (see
 * pg_env.h; ctest passes the "pg" fixture's); skipped without one, except the no-database case.
 * The key lookup migrates a schema of its own, so the stack's database and earlier runs never
 * meet it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "cli.h"
#include "pgpool.h"
#include "pg_env.h"

typedef struct result {
    int fired;
    bool ok;
    char val[64];
    char err[160];
} result_t;

static h2o_loop_t *loop;

static void on_result(void *arg, const PGresult *res, const char *errmsg)
{
    result_t *r = arg;
    r->fired++;
    r->ok = res != NULL;
    if (res != NULL && PQntuples(res) > 0)
        snprintf(r->val, sizeof(r->val), "%s", PQgetvalue(res, 0, 0));
    if (res == NULL)
        snprintf(r->err, sizeof(r->err), "%s", errmsg != NULL ? errmsg : "");
}

/* Runs the loop until cond holds; bounded so a broken pool fails the test instead of hanging it. */
#define RUN_UNTIL(cond)                             \
    do {                                            \
        for (int i_ = 0; i_ < 600 && !(cond); i_++) \
            h2o_evloop_run(loop, 50);               \
        assert_true(cond);                          \
    } while (0)

static int setup(void **state)
{
    loop = h2o_evloop_create();
    return sodium_init() < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    h2o_evloop_destroy(loop);
    return 0;
}

/* A backend that a test stopped with SIGSTOP: continued by the test's teardown whatever happened,
 * since the cluster is shared with the other database tests. */
static pid_t frozen_backend;

static int thaw_backend(void **state)
{
    if (frozen_backend > 0)
        kill(frozen_backend, SIGCONT);
    frozen_backend = 0;
    return 0;
}

static void test_no_database(void **state)
{
    tg_pgpool_t *p = tg_pgpool_create(loop, "host=/nonexistent-tollgate-dir port=1 dbname=x",
                                      &(tg_pgpool_opts_t){.n_conns = 2});
    assert_non_null(p);
    for (int i = 0; i < 3; i++)
        h2o_evloop_run(loop, 10);
    assert_false(tg_pgpool_ready(p));
    result_t r = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT 1", 0, NULL, on_result, &r), TG_EDB_UNAVAILABLE);
    h2o_evloop_run(loop, 10);
    assert_int_equal(r.fired, 0); /* an early failure is returned, never called back */
    tg_pgpool_destroy(p);
    assert_int_equal(tg_pgpool_query(NULL, "SELECT 1", 0, NULL, on_result, &r), TG_EDB_UNAVAILABLE);
}

static void test_many_pipelined(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    tg_pgpool_t *p = tg_pgpool_create(loop, pg, &(tg_pgpool_opts_t){.n_conns = 2});
    RUN_UNTIL(tg_pgpool_ready(p));
    enum { N = 500 };
    static result_t r[N];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof(v), "%d", i);
        const char *params[1] = {v};
        assert_int_equal(tg_pgpool_query(p, "SELECT $1::int * 2", 1, params, on_result, &r[i]), 0);
        assert_int_equal(r[i].fired, 0); /* never synchronously */
    }
    int done = 0;
    RUN_UNTIL((done = 0, ({
                   for (int k = 0; k < N; k++)
                       done += r[k].fired;
               }),
               done == N));
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i * 2);
        assert_int_equal(r[i].fired, 1);
        assert_true(r[i].ok);
        assert_string_equal(r[i].val, want);
    }
    tg_pgpool_destroy(p);
}

static void test_error_isolated(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    tg_pgpool_t *p = tg_pgpool_create(loop, pg, NULL); /* one connection: all three share a pipeline */
    RUN_UNTIL(tg_pgpool_ready(p));
    result_t a = {0}, b = {0}, c = {0};
    const char *params[1] = {"3"};
    assert_int_equal(tg_pgpool_query(p, "SELECT 1", 0, NULL, on_result, &a), 0);
    assert_int_equal(tg_pgpool_query(p, "SELECT 1/0", 0, NULL, on_result, &b), 0);
    assert_int_equal(tg_pgpool_query(p, "SELECT $1::int", 1, params, on_result, &c), 0);
    RUN_UNTIL(a.fired && b.fired && c.fired);
    assert_true(a.ok);
    assert_string_equal(a.val, "1");
    assert_false(b.ok);
    assert_non_null(strstr(b.err, "division by zero"));
    assert_true(c.ok); /* its own sync: not aborted by b */
    assert_string_equal(c.val, "3");
    assert_int_equal(a.fired + b.fired + c.fired, 3);
    tg_pgpool_destroy(p);
}

static void test_terminate_recovery(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    /* a deadline far beyond the sleeps below: the backend's death is what ends them */
    tg_pgpool_t *p = tg_pgpool_create(loop, pg, &(tg_pgpool_opts_t){.job_timeout_ms = 120000});
    RUN_UNTIL(tg_pgpool_ready(p));
    result_t pid1 = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT pg_backend_pid()", 0, NULL, on_result, &pid1), 0);
    RUN_UNTIL(pid1.fired);
    assert_true(pid1.ok);

    /* a query in flight when the backend dies fails exactly once */
    result_t sleeping = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT pg_sleep(60)", 0, NULL, on_result, &sleeping), 0);
    h2o_evloop_run(loop, 10);
    PGconn *admin = PQconnectdb(pg);
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    const char *params[1] = {pid1.val};
    PGresult *res =
        PQexecParams(admin, "SELECT pg_terminate_backend($1::int)", 1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    PQfinish(admin);

    RUN_UNTIL(sleeping.fired);
    assert_int_equal(sleeping.fired, 1);
    assert_false(sleeping.ok);

    /* the pool reconnects by itself, on a new backend */
    result_t pid2 = {0};
    RUN_UNTIL(tg_pgpool_ready(p));
    assert_int_equal(tg_pgpool_query(p, "SELECT pg_backend_pid()", 0, NULL, on_result, &pid2), 0);
    RUN_UNTIL(pid2.fired);
    assert_true(pid2.ok);
    assert_string_not_equal(pid1.val, pid2.val);
    assert_int_equal(sleeping.fired, 1);

    /* destroying with a job in flight fails it once, from destroy */
    result_t pending = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT pg_sleep(60)", 0, NULL, on_result, &pending), 0);
    tg_pgpool_destroy(p);
    assert_int_equal(pending.fired, 1);
    assert_false(pending.ok);
}

static void test_deadline_slow_query(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    tg_pgpool_t *p = tg_pgpool_create(loop, pg, &(tg_pgpool_opts_t){.job_timeout_ms = 200});
    RUN_UNTIL(tg_pgpool_ready(p));
    result_t pid1 = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT pg_backend_pid()", 0, NULL, on_result, &pid1), 0);
    RUN_UNTIL(pid1.fired);

    /* A answers only after 600 s (RUN_UNTIL gives up after 30): only its deadline can end it. B
     * shares A's pipeline and goes down with the connection. */
    result_t a = {0}, b = {0};
    tg_pgpool_counts_t before, after;
    tg_pgpool_counts(&before);
    assert_int_equal(tg_pgpool_query(p, "SELECT 'late' FROM pg_sleep(600)", 0, NULL, on_result, &a), 0);
    assert_int_equal(tg_pgpool_query(p, "SELECT 'b'", 0, NULL, on_result, &b), 0);
    assert_int_equal(tg_pgpool_queued(p), 3 - 1); /* pid1 has left the queue */
    RUN_UNTIL(a.fired);
    assert_int_equal(a.fired, 1);
    assert_false(a.ok);
    assert_string_equal(a.err, "database job timed out");
    tg_pgpool_counts(&after);
    assert_int_equal(after.jobs_timed_out, before.jobs_timed_out + 1); /* /metrics sees it */
    assert_int_equal(b.fired, 1); /* behind A in the closed pipeline: failed with it, not later */
    assert_false(b.ok);
    assert_int_equal(tg_pgpool_queued(p), 0);

    /* The connection was replaced: the next job runs on a new backend and gets its own row. Had
     * the pool only dropped A from the FIFO, C would read A's row ('late') from the old pipeline. */
    RUN_UNTIL(tg_pgpool_ready(p));
    result_t c = {0}, pid2 = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT 'c'", 0, NULL, on_result, &c), 0);
    assert_int_equal(tg_pgpool_query(p, "SELECT pg_backend_pid()", 0, NULL, on_result, &pid2), 0);
    RUN_UNTIL(c.fired && pid2.fired);
    assert_true(c.ok);
    assert_string_equal(c.val, "c");
    assert_string_not_equal(pid1.val, pid2.val);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 1);

    /* the sleeping backend of the first connection is not left behind in the shared cluster */
    PGconn *admin = PQconnectdb(pg);
    const char *params[1] = {pid1.val};
    PQclear(PQexecParams(admin, "SELECT pg_terminate_backend($1::int)", 1, NULL, params, NULL, NULL, 0));
    PQfinish(admin);
    tg_pgpool_destroy(p);
}

/* Whether process pid still exists (a backend that has not exited yet). */
static bool process_alive(pid_t pid)
{
    return kill(pid, 0) == 0;
}

static void test_deadline_frozen_backend(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    tg_pgpool_t *p = tg_pgpool_create(loop, pg, &(tg_pgpool_opts_t){.job_timeout_ms = 300});
    RUN_UNTIL(tg_pgpool_ready(p));
    result_t pid1 = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT pg_backend_pid()", 0, NULL, on_result, &pid1), 0);
    RUN_UNTIL(pid1.fired);
    assert_true(pid1.ok);

    /* the server process of our one connection stops answering, as under SIGSTOP of the cluster */
    frozen_backend = (pid_t)atoi(pid1.val);
    assert_true(frozen_backend > 0);
    assert_int_equal(kill(frozen_backend, SIGSTOP), 0);
    result_t a = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT 'a'", 0, NULL, on_result, &a), 0);
    RUN_UNTIL(a.fired);
    assert_false(a.ok);
    assert_string_equal(a.err, "database job timed out");

    /* the pool recovers on a new backend while the old one is still frozen */
    RUN_UNTIL(tg_pgpool_ready(p));
    result_t c = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT 'c'", 0, NULL, on_result, &c), 0);
    RUN_UNTIL(c.fired);
    assert_true(c.ok);
    assert_string_equal(c.val, "c");

    /* The old backend wakes up, answers A into the closed connection and exits; nothing of it
     * reaches A again, nor anyone else. */
    assert_int_equal(kill(frozen_backend, SIGCONT), 0);
    pid_t old = frozen_backend;
    frozen_backend = 0;
    RUN_UNTIL(!process_alive(old));
    result_t d = {0};
    assert_int_equal(tg_pgpool_query(p, "SELECT 'd'", 0, NULL, on_result, &d), 0);
    RUN_UNTIL(d.fired);
    assert_string_equal(d.val, "d");
    assert_int_equal(a.fired, 1);
    assert_int_equal(c.fired, 1);
    tg_pgpool_destroy(p);
}

static void test_queue_cap(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    tg_pgpool_t *p = tg_pgpool_create(loop, pg, &(tg_pgpool_opts_t){.n_conns = 2, .max_queue = 3});
    /* both connections up: the cap is the pool's, not one connection's */
    RUN_UNTIL(tg_pgpool_ready_count(p) == 2);
    result_t r[4] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tg_pgpool_query(p, "SELECT 1", 0, NULL, on_result, &r[i]), 0);
    assert_int_equal(tg_pgpool_queued(p), 3);
    /* the fourth is refused at once, without a callback, before the loop runs again */
    tg_pgpool_counts_t before, after;
    tg_pgpool_counts(&before);
    assert_int_equal(tg_pgpool_query(p, "SELECT 1", 0, NULL, on_result, &r[3]), TG_EDB_UNAVAILABLE);
    tg_pgpool_counts(&after);
    assert_int_equal(after.jobs_refused, before.jobs_refused + 1);
    RUN_UNTIL(r[0].fired && r[1].fired && r[2].fired);
    assert_int_equal(r[3].fired, 0);
    /* answered jobs free their places */
    assert_int_equal(tg_pgpool_queued(p), 0);
    assert_int_equal(tg_pgpool_query(p, "SELECT 1", 0, NULL, on_result, &r[3]), 0);
    RUN_UNTIL(r[3].fired);
    assert_true(r[3].ok);
    tg_pgpool_destroy(p);
}

/* Runs tg_cli_main with stdout captured into out. */
static int run_cli(char **argv, int argc, char *out, size_t cap)
{
    char path[] = "/tmp/tg_test_cli_outXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    int rc = tg_cli_main(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

typedef struct auth_result {
    int fired;
    int rc;
    tg_principal_t p;
} auth_result_t;

static void on_auth(void *arg, int rc, const tg_principal_t *p)
{
    auth_result_t *r = arg;
    r->fired++;
    r->rc = rc;
    if (p != NULL)
        r->p = *p;
}

static void test_auth_end_to_end(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    static const char pepper_hex[] = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
    uint8_t pepper[32];
    assert_int_equal(sodium_hex2bin(pepper, 32, pepper_hex, 64, NULL, NULL, NULL), 0);
    setenv("TG_TEST_PG_PEPPER", pepper_hex, 1);

    /* A schema of its own, made afresh: what the migrations and keys below write meets neither the
     * integration stack (another database in the same cluster) nor what an earlier run left. */
    PGconn *admin = PQconnectdb(pg);
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PGresult *res =
        PQexec(admin, "SET client_min_messages = warning; "
                      "DROP SCHEMA IF EXISTS tg_pgpool_test CASCADE; CREATE SCHEMA tg_pgpool_test");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    char db[1100];
    snprintf(db, sizeof(db), "%s options='-c search_path=tg_pgpool_test'", pg);

    char cfg_path[] = "/tmp/tg_test_pg_cfgXXXXXX";
    int fd = mkstemp(cfg_path);
    assert_true(fd >= 0);
    json_t *cfg = json_pack("{s:{s:s},s:{s:s}}", "database", "url", db, "secrets", "key_pepper_env",
                            "TG_TEST_PG_PEPPER");
    char *text = json_dumps(cfg, 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    free(text);
    json_decref(cfg);

    char out[256];
    char *migrate[] = {"tollgate", "migrate", "-c", cfg_path};
    assert_int_equal(run_cli(migrate, 4, out, sizeof(out)), 0);
    assert_string_equal(out, "");                               /* migrate prints nothing on stdout */
    assert_int_equal(run_cli(migrate, 4, out, sizeof(out)), 0); /* idempotent */

    char tenant[32];
    snprintf(tenant, sizeof(tenant), "pgpool-test-%d", (int)getpid());
    char *create[] = {"tollgate", "keys", "create", "-c", cfg_path, "--tenant", tenant, "--name", "test"};
    assert_int_equal(run_cli(create, 9, out, sizeof(out)), 0);
    /* stdout holds exactly the key and a newline */
    assert_int_equal(strlen(out), TG_API_KEY_LEN + 1);
    assert_int_equal(out[TG_API_KEY_LEN], '\n');
    out[TG_API_KEY_LEN] = '\0';
    assert_true(tg_api_key_well_formed(out, TG_API_KEY_LEN));
    char *usage_err[] = {"tollgate", "keys", "create", "-c", cfg_path};
    assert_int_equal(run_cli(usage_err, 5, out + 100, sizeof(out) - 100), 2);
    unlink(cfg_path);

    tg_auth_cache_clear();
    tg_pgpool_t *p = tg_pgpool_create(loop, db, NULL);
    RUN_UNTIL(tg_pgpool_ready(p));
    tg_principal_t prin;
    auth_result_t r = {0};
    assert_int_equal(tg_auth_lookup(p, pepper, 60000, 1000, out, TG_API_KEY_LEN, &prin, on_auth, &r), 0);
    assert_int_equal(r.fired, 0);
    RUN_UNTIL(r.fired);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.p.tenant_name, tenant);
    assert_true(r.p.tenant_id > 0 && r.p.key_id > 0);
    /* now cached: answered at once */
    memset(&prin, 0, sizeof(prin));
    assert_int_equal(tg_auth_lookup(p, pepper, 60000, 2000, out, TG_API_KEY_LEN, &prin, on_auth, &r), 1);
    assert_int_equal(prin.key_id, r.p.key_id);

    /* an unknown but well-formed key: one query, then a cached negative answer */
    char unknown[TG_API_KEY_LEN + 1];
    tg_api_key_generate(unknown);
    auth_result_t u = {0};
    assert_int_equal(tg_auth_lookup(p, pepper, 60000, 1000, unknown, TG_API_KEY_LEN, &prin, on_auth, &u), 0);
    RUN_UNTIL(u.fired);
    assert_int_equal(u.rc, TG_EUNAUTHENTICATED);
    assert_int_equal(tg_auth_lookup(p, pepper, 60000, 1001, unknown, TG_API_KEY_LEN, &prin, on_auth, &u),
                     TG_EUNAUTHENTICATED);
    assert_int_equal(u.fired, 1);
    /* after the negative TTL it is asked again */
    assert_int_equal(tg_auth_lookup(p, pepper, 60000, 1000 + TG_AUTH_NEGATIVE_TTL_MS, unknown, TG_API_KEY_LEN,
                                    &prin, on_auth, &u),
                     0);
    RUN_UNTIL(u.fired == 2);

    /* a revoked key is refused once the cache forgets it */
    char kid[32];
    snprintf(kid, sizeof(kid), "%lld", (long long)r.p.key_id);
    const char *params[1] = {kid};
    res = PQexecParams(admin, "UPDATE tg_pgpool_test.api_keys SET revoked_at = now() WHERE id = $1::bigint",
                       1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    tg_auth_cache_clear();
    auth_result_t rv = {0};
    assert_int_equal(tg_auth_lookup(p, pepper, 60000, 3000, out, TG_API_KEY_LEN, &prin, on_auth, &rv), 0);
    RUN_UNTIL(rv.fired);
    assert_int_equal(rv.rc, TG_EUNAUTHENTICATED);
    tg_pgpool_destroy(p);
    res = PQexec(admin, "DROP SCHEMA tg_pgpool_test CASCADE");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(admin);
    sodium_memzero(out, sizeof(out));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_database),
        cmocka_unit_test(test_many_pipelined),
        cmocka_unit_test(test_error_isolated),
        cmocka_unit_test(test_terminate_recovery),
        cmocka_unit_test(test_deadline_slow_query),
        cmocka_unit_test_teardown(test_deadline_frozen_backend, thaw_backend),
        cmocka_unit_test(test_queue_cap),
        cmocka_unit_test(test_auth_end_to_end),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
