/*
 * cli.c - `tollgate check | migrate`, and the dispatch of every other subcommand to its file
 * (cli_tenants.c, cli_keys.c, cli_policy.c, ...), see cli.h.
 *
 * Output rules: stdout carries only what a script wants to capture (a new key, a listing);
 * progress and errors go to stderr. Secrets (the database URL, the pepper, a new key's hash) are
 * never printed; a new key itself is printed once and then wiped from memory.
 */
#include "cli.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "wallet.h"

/* pg_advisory_lock key: "tollgate" in ASCII, so two concurrent `migrate` runs serialise */
#define MIGRATE_LOCK_KEY "8390876119406896229"

/* The subcommands that live in files of their own: one line each (name, entry, usage line). */
static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
} subcommands[] = {
    {"tenants", tg_cli_tenants, "tollgate tenants create|suspend|resume|list -c FILE ..."},
    {"keys", tg_cli_keys, "tollgate keys create|revoke|rotate|list -c FILE ..."},
    {"policy", tg_cli_policy, "tollgate policy set -c FILE ..."},
    {"byok", tg_cli_byok_main, "tollgate byok set|delete|list -c FILE ..."},
    {"rotate-master-key", tg_cli_rotate_main, "tollgate rotate-master-key -c FILE [--batch N]"},
    {"token", tg_cli_token, "tollgate token -c FILE --role ROLE [--tenant ID] [--ttl D]"},
};

void tg_cli_usage(FILE *f)
{
    fputs("usage: tollgate serve -c FILE\n"
          "       tollgate check -c FILE\n"
          "       tollgate migrate -c FILE\n",
          f);
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        fprintf(f, "       %s\n", subcommands[i].usage);
    fputs("       tollgate COMMAND --help    (the options of each command)\n", f);
}

static void usage(FILE *f)
{
    tg_cli_usage(f);
}

typedef struct opts {
    const char *config;
} opts_t;

/* Parses the options after the subcommand words; returns false (after a message) on a bad one. */
static bool parse_opts(int argc, char **argv, int first, opts_t *o)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
            dst = &o->config;
        else if (strncmp(a, "--config=", 9) == 0) {
            o->config = a + 9;
            continue;
        } else {
            fprintf(stderr, "tollgate: unknown argument \"%s\"\n", a);
            return false;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tollgate: %s needs a value\n", a);
            return false;
        }
        *dst = argv[++i];
    }
    if (o->config == NULL) {
        fputs("tollgate: -c FILE is required\n", stderr);
        return false;
    }
    return true;
}

tg_config_t *tg_cli_load_config(const char *path)
{
    tg_buf_t errs;
    tg_buf_init(&errs, 1 << 20);
    tg_config_t *c = NULL;
    if (tg_config_load(path, &c, &errs) != 0) {
        unsigned n = 0;
        for (size_t i = 0; i < errs.len; i++)
            n += errs.data[i] == '\n';
        fprintf(stderr, "%s: %u error%s\n", path, n, n == 1 ? "" : "s");
        if (errs.data != NULL)
            fputs(errs.data, stderr);
        tg_buf_dispose(&errs);
        return NULL;
    }
    tg_buf_dispose(&errs);
    return c;
}

static int cmd_check(const opts_t *o)
{
    tg_config_t *c = tg_cli_load_config(o->config);
    if (c == NULL)
        return 1;
    fprintf(stderr, "%s: ok (%zu providers, %zu models, %zu chains)\n", o->config, c->n_providers,
            c->n_models, c->n_chains);
    tg_config_unref(c);
    return 0;
}

static void quiet_notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg; /* "relation already exists, skipping" and the like */
}

PGconn *tg_cli_db_connect(const tg_config_t *c)
{
    if (c->database_url == NULL) {
        fputs("tollgate: the config has no database (database.url or database.url_env)\n", stderr);
        return NULL;
    }
    PGconn *db = PQconnectdb(c->database_url);
    if (PQstatus(db) != CONNECTION_OK) {
        fprintf(stderr, "tollgate: cannot connect to the database: %s", PQerrorMessage(db));
        PQfinish(db);
        return NULL;
    }
    PQsetNoticeProcessor(db, quiet_notice, NULL);
    return db;
}

/* Runs a statement that returns no rows of interest; prints the error with `what` on failure. */
static bool exec_ok(PGconn *db, const char *sql, const char *what)
{
    PGresult *r = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "tollgate: %s: %s", what, PQerrorMessage(db));
    PQclear(r);
    return ok;
}

static int migrate(PGconn *db)
{
    if (!exec_ok(db, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", "cannot take the migration lock"))
        return 1;
    int rc = 1;
    if (!exec_ok(db,
                 "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                 "applied_at timestamptz NOT NULL DEFAULT now())",
                 "cannot create schema_migrations"))
        goto out;
    PGresult *r = PQexec(db, "SELECT version FROM schema_migrations ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "tollgate: cannot read schema_migrations: %s", PQerrorMessage(db));
        PQclear(r);
        goto out;
    }
    int max_known = tg_migrations_count > 0 ? tg_migrations[tg_migrations_count - 1].version : 0;
    int n_rows = PQntuples(r);
    int *applied = calloc((size_t)n_rows + 1, sizeof(int));
    if (applied == NULL) {
        PQclear(r);
        goto out;
    }
    for (int i = 0; i < n_rows; i++) {
        applied[i] = atoi(PQgetvalue(r, i, 0));
        if (applied[i] > max_known)
            fprintf(stderr,
                    "tollgate: warning: the database has migration %d, newer than this binary knows\n",
                    applied[i]);
    }
    PQclear(r);

    unsigned n_applied = 0;
    rc = 0;
    for (size_t m = 0; m < tg_migrations_count && rc == 0; m++) {
        const tg_migration_t *mg = &tg_migrations[m];
        bool done = false;
        for (int i = 0; i < n_rows; i++)
            done = done || applied[i] == mg->version;
        if (done)
            continue;
        /* one transaction per migration: a failure leaves the schema at the previous version */
        char ver[16];
        snprintf(ver, sizeof(ver), "%d", mg->version);
        const char *params[1] = {ver};
        if (!exec_ok(db, "BEGIN", "cannot begin")) {
            rc = 1;
            break;
        }
        PGresult *x = PQexec(db, mg->sql);
        bool ok = PQresultStatus(x) == PGRES_COMMAND_OK || PQresultStatus(x) == PGRES_TUPLES_OK;
        if (!ok)
            fprintf(stderr, "tollgate: migration %s failed: %s", mg->name, PQerrorMessage(db));
        PQclear(x);
        if (ok) {
            x = PQexecParams(db,
                             "INSERT INTO schema_migrations (version, applied_at) VALUES ($1::int, now())", 1,
                             NULL, params, NULL, NULL, 0);
            ok = PQresultStatus(x) == PGRES_COMMAND_OK;
            if (!ok)
                fprintf(stderr, "tollgate: cannot record migration %s: %s", mg->name, PQerrorMessage(db));
            PQclear(x);
        }
        if (ok && exec_ok(db, "COMMIT", "cannot commit")) {
            fprintf(stderr, "tollgate: applied %s\n", mg->name);
            n_applied++;
        } else {
            TG_IGNORE_RESULT(exec_ok(db, "ROLLBACK", "cannot roll back"));
            rc = 1;
        }
    }
    free(applied);
    if (rc == 0 && n_applied == 0)
        fputs("tollgate: the database is up to date\n", stderr);
out:
    TG_IGNORE_RESULT(
        exec_ok(db, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", "cannot release the lock"));
    return rc;
}

static int cmd_migrate(const opts_t *o)
{
    tg_config_t *c = tg_cli_load_config(o->config);
    if (c == NULL)
        return 1;
    PGconn *db = tg_cli_db_connect(c);
    tg_config_unref(c);
    if (db == NULL)
        return 1;
    int rc = migrate(db);
    PQfinish(db);
    return rc;
}

int tg_cli_check_schema(const char *config_path)
{
    tg_buf_t errs;
    tg_buf_init(&errs, 1 << 16);
    tg_config_t *c = NULL;
    int lrc = tg_config_load(config_path, &c, &errs);
    tg_buf_dispose(&errs);
    if (lrc != 0 || c->database_url == NULL) {
        tg_config_unref(c);
        return 0;
    }
    /* bounded: a database host that drops packets must not hold the start for libpq's default
     * (none); the conninfo's own connect_timeout wins, as it comes later */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {"5", c->database_url, NULL};
    PGconn *db = PQconnectdbParams(keys, vals, 1);
    tg_config_unref(c);
    if (PQstatus(db) != CONNECTION_OK) {
        TG_LOG(TG_LOG_WARN, "schema_not_checked", TG_KV_STR("reason", "database unreachable"));
        PQfinish(db);
        return 0;
    }
    PQsetNoticeProcessor(db, quiet_notice, NULL);
    PGresult *r = PQexec(db, "SELECT version FROM schema_migrations");
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state != NULL && strcmp(state, "42P01") == 0) { /* undefined_table: never migrated */
            fprintf(stderr,
                    "tollgate: the database has no schema (no schema_migrations table): run `tollgate "
                    "migrate -c %s` first\n",
                    config_path);
            rc = 1;
        } else {
            TG_LOG(TG_LOG_WARN, "schema_not_checked", TG_KV_STR("reason", "schema_migrations unreadable"));
        }
        PQclear(r);
        PQfinish(db);
        return rc;
    }
    int n_rows = PQntuples(r);
    int max_known = tg_migrations_count > 0 ? tg_migrations[tg_migrations_count - 1].version : 0;
    size_t missing = 0;
    const char *first_missing = NULL;
    for (size_t m = 0; m < tg_migrations_count; m++) {
        bool applied = false;
        for (int i = 0; i < n_rows && !applied; i++)
            applied = atoi(PQgetvalue(r, i, 0)) == tg_migrations[m].version;
        if (!applied && missing++ == 0)
            first_missing = tg_migrations[m].name;
    }
    int newest = 0;
    for (int i = 0; i < n_rows; i++) {
        int v = atoi(PQgetvalue(r, i, 0));
        newest = v > newest ? v : newest;
    }
    PQclear(r);
    PQfinish(db);
    if (missing > 0) {
        /* the gateway would run, and every failover event batch would be rejected */
        fprintf(stderr,
                "tollgate: the database schema is older than this binary: migration %s is not applied (%zu "
                "of %zu missing); run `tollgate migrate -c %s` first\n",
                first_missing, missing, tg_migrations_count, config_path);
        return 1;
    }
    if (newest > max_known)
        TG_LOG(TG_LOG_WARN, "schema_newer", TG_KV_INT("database_version", newest),
               TG_KV_INT("binary_version", max_known));
    return 0;
}

int tg_cli_main(int argc, char **argv)
{
    opts_t o = {0};
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "check") == 0 || strcmp(cmd, "migrate") == 0) {
        if (argc > 2 && (strcmp(argv[2], "-h") == 0 || strcmp(argv[2], "--help") == 0)) {
            usage(stdout);
            return 0;
        }
        if (!parse_opts(argc, argv, 2, &o)) {
            usage(stderr);
            return 2;
        }
        return strcmp(cmd, "check") == 0 ? cmd_check(&o) : cmd_migrate(&o);
    }
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        if (strcmp(cmd, subcommands[i].name) == 0)
            return subcommands[i].run(argc, argv);
    fprintf(stderr, "tollgate: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
