/*
 * manage_db.c - the database side the management files share: transactions, statements whose
 * errors are worded without the server's text, tenant resolution and column readers
 * (manage_db.h).
 *
 * The server's error message is never passed on: a unique violation's detail quotes the value,
 * and a key's hash is a parameter of its INSERT. The SQLSTATE is enough to say what happened.
 */
#include "manage_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "wallet.h"

/* What a failed statement means to the caller; the server's text is not copied (see above). */
static int db_error(PGconn *db, const PGresult *r, const char *what, tg_mgmt_err_t *err)
{
    if (PQstatus(db) != CONNECTION_OK)
        return tg_mgmt_fail(err, TG_EDB_UNAVAILABLE, "%s: the database connection is lost", what);
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL)
        return tg_mgmt_fail(err, TG_EDB_UNAVAILABLE, "%s: no answer from the database", what);
    if (strcmp(state, "23505") == 0)
        return tg_mgmt_fail(err, TG_ECONFLICT, "%s: it already exists", what);
    if (strncmp(state, "08", 2) == 0 || strcmp(state, "57P01") == 0 || strcmp(state, "57014") == 0)
        return tg_mgmt_fail(err, TG_EDB_UNAVAILABLE, "%s: the database is unavailable (SQLSTATE %s)", what,
                            state);
    if (strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0)
        return tg_mgmt_fail(err, TG_EINTERNAL,
                            "%s: the schema is older than this binary (run tollgate migrate)", what);
    return tg_mgmt_fail(err, TG_EINTERNAL, "%s: database error (SQLSTATE %s)", what, state);
}

PGresult *tg_mgmt_exec(PGconn *db, const char *sql, int n, const char *const *params, const char *what,
                       int *rc, tg_mgmt_err_t *err)
{
    PGresult *r = PQexecParams(db, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        *rc = 0;
        return r;
    }
    *rc = db_error(db, r, what, err);
    PQclear(r);
    return NULL;
}

/*
 * A management function called inside a transaction of its caller (the admin API, which writes the
 * audit row in the same transaction: admin/README.md, "Audit") runs under a savepoint instead of
 * BEGIN/COMMIT, so its COMMIT does not commit the caller's work and its rollback undoes only its
 * own. One bit per open level says which form it took (a thread's connection is its own).
 */
static __thread unsigned tx_nested_bits, tx_depth;

void tg_mgmt_page_init(tg_mgmt_page_t *pg, int64_t after_id, size_t limit, const char *what,
                       tg_mgmt_err_t *err)
{
    if (after_id < 0)
        tg_mgmt_field(err, "after", "must be %s (0 for the first page)", what);
    if (limit > TG_MGMT_LIST_MAX)
        tg_mgmt_field(err, "limit", "must be between 1 and %d", TG_MGMT_LIST_MAX);
    pg->limit = limit == 0 ? TG_MGMT_LIST_DEFAULT : limit;
    snprintf(pg->after, sizeof(pg->after), "%lld", (long long)after_id);
    snprintf(pg->fetch, sizeof(pg->fetch), "%zu", pg->limit + 1);
}

void *tg_mgmt_page_rows(const tg_mgmt_page_t *pg, const PGresult *r, size_t size, size_t *shown, bool *more)
{
    size_t n = (size_t)PQntuples(r);
    *more = n > pg->limit;
    *shown = *more ? pg->limit : n;
    return calloc(*shown > 0 ? *shown : 1, size);
}

int tg_mgmt_begin(PGconn *db, tg_mgmt_err_t *err)
{
    int rc;
    bool nested = PQtransactionStatus(db) == PQTRANS_INTRANS;
    PGresult *r = tg_mgmt_exec(db, nested ? "SAVEPOINT tg_mgmt" : "BEGIN", 0, NULL, "begin", &rc, err);
    PQclear(r);
    if (rc == 0 && tx_depth < 32) {
        tx_nested_bits = (tx_nested_bits & ~(1u << tx_depth)) | ((unsigned)nested << tx_depth);
        tx_depth++;
    }
    return rc;
}

static bool pop_nested(void)
{
    if (tx_depth == 0)
        return false;
    tx_depth--;
    return (tx_nested_bits >> tx_depth) & 1u;
}

int tg_mgmt_commit(PGconn *db, tg_mgmt_err_t *err)
{
    int rc;
    if (pop_nested()) {
        PGresult *r = tg_mgmt_exec(db, "RELEASE SAVEPOINT tg_mgmt", 0, NULL, "commit", &rc, err);
        PQclear(r);
        return rc;
    }
    PGresult *r = tg_mgmt_exec(db, "COMMIT", 0, NULL, "commit", &rc, err);
    /* a COMMIT that fails in a failed transaction answers ROLLBACK without an error status */
    if (r != NULL && strcmp(PQcmdStatus(r), "COMMIT") != 0)
        rc = tg_mgmt_fail(err, TG_EINTERNAL, "commit: the transaction was rolled back");
    PQclear(r);
    return rc;
}

void tg_mgmt_rollback(PGconn *db)
{
    if (pop_nested()) {
        PQclear(PQexec(db, "ROLLBACK TO SAVEPOINT tg_mgmt"));
        PQclear(PQexec(db, "RELEASE SAVEPOINT tg_mgmt"));
        return;
    }
    PQclear(PQexec(db, "ROLLBACK"));
}

int tg_mgmt_tenant_id(PGconn *db, tg_tenant_ref_t t, bool lock, int64_t *id, tg_mgmt_err_t *err)
{
    char idbuf[TG_MGMT_I64_STR];
    snprintf(idbuf, sizeof(idbuf), "%lld", (long long)t.id);
    const char *p[1] = {t.id > 0 ? idbuf : t.name};
    const char *sql = t.id > 0 ? (lock ? "SELECT id FROM tenants WHERE id = $1::bigint FOR UPDATE"
                                       : "SELECT id FROM tenants WHERE id = $1::bigint")
                               : (lock ? "SELECT id FROM tenants WHERE name = $1 FOR UPDATE"
                                       : "SELECT id FROM tenants WHERE name = $1");
    int rc;
    PGresult *r = tg_mgmt_exec(db, sql, 1, p, "find the tenant", &rc, err);
    if (r == NULL)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return t.id > 0 ? tg_mgmt_fail(err, TG_ENOT_FOUND, "no tenant with id %lld", (long long)t.id)
                        : tg_mgmt_fail(err, TG_ENOT_FOUND, "no tenant named \"%s\"", t.name);
    }
    *id = tg_mgmt_col_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int64_t tg_mgmt_col_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

bool tg_mgmt_col_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

void tg_mgmt_col_text(const PGresult *r, int row, int col, char *dst, size_t cap)
{
    const char *s = PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
    size_t n = strlen(s);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

void tg_mgmt_col_list(const PGresult *r, int row, int col, bool *has, char *dst, size_t cap)
{
    dst[0] = '\0';
    *has = !PQgetisnull(r, row, col);
    if (!*has)
        return;
    const char *s = PQgetvalue(r, row, col); /* array_to_string(x, E'\n') */
    size_t n = strlen(s);
    if (n == 0 || n + 2 > cap) /* the schema bounds a list far below cap */
        return;
    memcpy(dst, s, n);
    dst[n] = '\n';
    dst[n + 1] = '\0';
}

int tg_mgmt_wallet_open(PGconn *db, int64_t tenant_id, int64_t trial_credits, tg_mgmt_err_t *err)
{
    tg_error_t werr = {0};
    int rc = tg_wallet_open(db, tenant_id, trial_credits, NULL, &werr);
    if (rc != 0)
        return tg_mgmt_fail(err, rc, "open the tenant's wallet: %s", werr.detail);
    return 0;
}
