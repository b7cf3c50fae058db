/*
 * tenants.c - create, suspend, resume, get and list tenants (manage.h).
 *
 * Suspension is tenants.status: AUTH refuses every key of a suspended tenant with 403
 * tenant_suspended; the row's trigger NOTIFYs every gateway, which drops its cached keys.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "manage_db.h"

/* The columns every tenant query returns, in tenant_of_row's order. */
#define TENANT_COLS                                                                                     \
    "id, name, zero_retention, status = 'suspended', (extract(epoch FROM created_at) * 1000)::bigint, " \
    "(extract(epoch FROM updated_at) * 1000)::bigint"

static void tenant_of_row(const PGresult *r, int row, tg_tenant_t *t)
{
    memset(t, 0, sizeof(*t));
    t->id = tg_mgmt_col_i64(r, row, 0);
    tg_mgmt_col_text(r, row, 1, t->name, sizeof(t->name));
    t->zero_retention = tg_mgmt_col_bool(r, row, 2);
    t->suspended = tg_mgmt_col_bool(r, row, 3);
    t->created_ms = tg_mgmt_col_i64(r, row, 4);
    t->updated_ms = tg_mgmt_col_i64(r, row, 5);
}

/* Runs one statement that returns one tenant row, in a transaction of its own. */
static int one_tenant(PGconn *db, const char *sql, int n, const char *const *params, const char *what,
                      tg_tenant_t *out, tg_mgmt_err_t *err)
{
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    PGresult *r = tg_mgmt_exec(db, sql, n, params, what, &rc, err);
    if (r == NULL) {
        tg_mgmt_rollback(db);
        return rc;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        tg_mgmt_rollback(db);
        return tg_mgmt_fail(err, TG_ENOT_FOUND, "%s: no such tenant", what);
    }
    if (out != NULL)
        tenant_of_row(r, 0, out);
    PQclear(r);
    return tg_mgmt_commit(db, err);
}

int tg_tenant_create(PGconn *db, const char *name, bool zero_retention, int64_t trial_credits,
                     tg_tenant_t *out, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    if (!tg_mgmt_check_name(name, "name", err))
        return err->code;
    const char *p[2] = {name, zero_retention ? "true" : "false"};
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    PGresult *r = tg_mgmt_exec(
        db, "INSERT INTO tenants (name, zero_retention) VALUES ($1, $2::boolean) RETURNING " TENANT_COLS, 2,
        p, "create the tenant", &rc, err);
    if (r == NULL) {
        tg_mgmt_rollback(db);
        if (rc == TG_ECONFLICT)
            tg_mgmt_fail(err, TG_ECONFLICT, "a tenant named \"%s\" already exists", name);
        return rc;
    }
    tg_tenant_t t;
    tenant_of_row(r, 0, &t);
    PQclear(r);
    /* its wallet and trial credits in the same transaction: a tenant never exists without them */
    rc = tg_mgmt_wallet_open(db, t.id, trial_credits, err);
    if (rc != 0) {
        tg_mgmt_rollback(db);
        return rc;
    }
    if (out != NULL)
        *out = t;
    return tg_mgmt_commit(db, err);
}

/* The statement for a tenant by id or by name; p[0] gets the id's text or the name. */
static const char *by_ref(tg_tenant_ref_t t, const char *sql_id, const char *sql_name,
                          char idbuf[TG_MGMT_I64_STR], const char **p0)
{
    snprintf(idbuf, TG_MGMT_I64_STR, "%lld", (long long)t.id);
    *p0 = t.id > 0 ? idbuf : t.name;
    return t.id > 0 ? sql_id : sql_name;
}

int tg_tenant_set_suspended(PGconn *db, tg_tenant_ref_t t, bool suspended, tg_tenant_t *out,
                            tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    if (!tg_mgmt_check_ref(t, err))
        return err->code;
    char idbuf[TG_MGMT_I64_STR];
    const char *p[2] = {NULL, suspended ? "suspended" : "active"};
    /* updated only when the status changes: a repeated suspend NOTIFYs nobody */
    const char *sql = by_ref(
        t,
        "WITH u AS (UPDATE tenants SET status = $2, updated_at = now() WHERE id = $1::bigint AND status <> "
        "$2 "
        "RETURNING " TENANT_COLS ") SELECT * FROM u UNION ALL SELECT " TENANT_COLS
        " FROM tenants WHERE id = $1::bigint AND NOT EXISTS (SELECT 1 FROM u)",
        "WITH u AS (UPDATE tenants SET status = $2, updated_at = now() WHERE name = $1 AND status <> $2 "
        "RETURNING " TENANT_COLS ") SELECT * FROM u UNION ALL SELECT " TENANT_COLS
        " FROM tenants WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM u)",
        idbuf, &p[0]);
    return one_tenant(db, sql, 2, p, suspended ? "suspend the tenant" : "resume the tenant", out, err);
}

int tg_tenant_get(PGconn *db, tg_tenant_ref_t t, tg_tenant_t *out, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    if (!tg_mgmt_check_ref(t, err))
        return err->code;
    char idbuf[TG_MGMT_I64_STR];
    const char *p[1];
    const char *sql = by_ref(t, "SELECT " TENANT_COLS " FROM tenants WHERE id = $1::bigint",
                             "SELECT " TENANT_COLS " FROM tenants WHERE name = $1", idbuf, &p[0]);
    return one_tenant(db, sql, 1, p, "read the tenant", out, err);
}

int tg_tenant_list(PGconn *db, int64_t after_id, size_t limit, tg_tenant_page_t *out, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    memset(out, 0, sizeof(*out));
    tg_mgmt_page_t pg;
    tg_mgmt_page_init(&pg, after_id, limit, "a tenant id", err);
    if (err->code != 0)
        return err->code;
    const char *p[2] = {pg.after, pg.fetch};
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    PGresult *r = tg_mgmt_exec(
        db, "SELECT " TENANT_COLS " FROM tenants WHERE id > $1::bigint ORDER BY id LIMIT $2::int", 2, p,
        "list the tenants", &rc, err);
    if (r == NULL) {
        tg_mgmt_rollback(db);
        return rc;
    }
    size_t shown;
    bool more;
    out->rows = tg_mgmt_page_rows(&pg, r, sizeof(*out->rows), &shown, &more);
    if (out->rows == NULL) {
        PQclear(r);
        tg_mgmt_rollback(db);
        return tg_mgmt_fail(err, TG_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < shown; i++)
        tenant_of_row(r, (int)i, &out->rows[i]);
    out->n = shown;
    out->next_after = more ? out->rows[shown - 1].id : 0;
    PQclear(r);
    rc = tg_mgmt_commit(db, err);
    if (rc != 0)
        tg_tenant_page_free(out);
    return rc;
}

void tg_tenant_page_free(tg_tenant_page_t *p)
{
    free(p->rows);
    memset(p, 0, sizeof(*p));
}
