/*
 * audit.c - the audit trail of the admin API (migrations/0010_admin_audit.sql): the transaction
 * helpers a writing job uses, tg_adm_audit which appends one row in the job's transaction, and
 * GET /admin/v1/audit (operators and auditors; pages on the id, oldest first).
 *
 * A write's job: tg_adm_tx_begin, read `before` (locked), the management function (it runs under
 * a savepoint inside this transaction, manage_db.c), read `after`, tg_adm_audit, tg_adm_tx_commit.
 * Any failure rolls the whole back: a refused request writes nothing and audits nothing.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "query.h"

static int exec_simple(PGconn *db, const char *sql, tg_mgmt_err_t *err)
{
    PGresult *r = PQexec(db, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (ok && strcmp(sql, "COMMIT") == 0 && strcmp(PQcmdStatus(r), "COMMIT") != 0)
        ok = 0; /* a COMMIT of a failed transaction answers ROLLBACK */
    PQclear(r);
    if (ok)
        return 0;
    return tg_mgmt_fail(err, PQstatus(db) == CONNECTION_OK ? TG_EINTERNAL : TG_EDB_UNAVAILABLE, "%s failed",
                        sql);
}

int tg_adm_tx_begin(PGconn *db, tg_mgmt_err_t *err)
{
    return exec_simple(db, "BEGIN", err);
}

int tg_adm_tx_commit(PGconn *db, tg_mgmt_err_t *err)
{
    return exec_simple(db, "COMMIT", err);
}

void tg_adm_tx_rollback(PGconn *db)
{
    if (PQtransactionStatus(db) != PQTRANS_IDLE)
        PQclear(PQexec(db, "ROLLBACK"));
}

int tg_adm_audit(PGconn *db, const tg_adm_call_t *call, const char *action, const char *resource,
                 const char *resource_id, int64_t tenant_id, const json_t *before, const json_t *after,
                 tg_mgmt_err_t *err)
{
    char *b = before != NULL ? json_dumps(before, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    char *a = after != NULL ? json_dumps(after, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    char tid[24];
    snprintf(tid, sizeof(tid), "%" PRId64, tenant_id);
    const char *p[8] = {call->who.actor, tg_role_name(call->who.role), action, resource,
                        resource_id,     tenant_id > 0 ? tid : NULL,   b,      a};
    PGresult *r =
        PQexecParams(db,
                     "INSERT INTO admin_audit (actor, role, action, resource, resource_id, tenant_id, "
                     "before, after) VALUES ($1, $2, $3, $4, $5, $6::bigint, $7::jsonb, $8::jsonb)",
                     8, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    free(b);
    free(a);
    if (ok)
        return 0;
    return tg_mgmt_fail(err, PQstatus(db) == CONNECTION_OK ? TG_EINTERNAL : TG_EDB_UNAVAILABLE,
                        "the audit row could not be written");
}

/* ---------------------------------------------------------------- GET /admin/v1/audit */

typedef struct audit_q {
    tg_adm_page_t page;
    int64_t tenant;
} audit_q_t;

static json_t *jcol(const PGresult *r, int row, int c)
{
    if (PQgetisnull(r, row, c))
        return json_null();
    json_t *v = json_loads(PQgetvalue(r, row, c), JSON_DECODE_ANY, NULL);
    return v != NULL ? v : json_null();
}

static void audit_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const audit_q_t *q = call->arg;
    char after[24], lim[24], ten[24];
    snprintf(after, sizeof(after), "%" PRId64, q->page.after_id);
    snprintf(lim, sizeof(lim), "%zu", q->page.limit + 1);
    snprintf(ten, sizeof(ten), "%" PRId64, q->tenant);
    const char *p[3] = {after, lim, q->tenant > 0 ? ten : NULL};
    PGresult *r = PQexecParams(db,
                               "SELECT id, to_char(at AT TIME ZONE 'UTC', "
                               "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor, role, action, "
                               "resource, resource_id, tenant_id, before::text, after::text FROM admin_audit "
                               "WHERE id > $1::bigint AND ($3::bigint IS NULL OR tenant_id = $3::bigint) "
                               "ORDER BY id LIMIT $2::bigint",
                               3, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        tg_adm_fail(out, TG_EINTERNAL, "the audit trail could not be read");
        return;
    }
    int n = PQntuples(r);
    int shown = n > (int)q->page.limit ? (int)q->page.limit : n;
    json_t *data = json_array();
    for (int i = 0; i < shown; i++) {
        json_t *o =
            json_pack("{s:I,s:s,s:s,s:s,s:s,s:s}", "id", (json_int_t)strtoll(PQgetvalue(r, i, 0), NULL, 10),
                      "at", PQgetvalue(r, i, 1), "actor", PQgetvalue(r, i, 2), "role", PQgetvalue(r, i, 3),
                      "action", PQgetvalue(r, i, 4), "resource", PQgetvalue(r, i, 5));
        json_object_set_new(o, "resource_id",
                            PQgetisnull(r, i, 6) ? json_null() : json_string(PQgetvalue(r, i, 6)));
        json_object_set_new(o, "tenant_id",
                            PQgetisnull(r, i, 7) ? json_null()
                                                 : json_integer(strtoll(PQgetvalue(r, i, 7), NULL, 10)));
        json_object_set_new(o, "before", jcol(r, i, 8));
        json_object_set_new(o, "after", jcol(r, i, 9));
        json_array_append_new(data, o);
    }
    int64_t next = n > shown && shown > 0 ? strtoll(PQgetvalue(r, shown - 1, 0), NULL, 10) : 0;
    PQclear(r);
    out->status = 200;
    out->body = tg_adm_page_body(data, next);
}

static void audit_list(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    audit_q_t *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    tg_adm_page_parse(c->req, &q->page, &err);
    char t[24];
    int ht = tg_admin_query_param(c->req, "tenant", t, sizeof(t));
    if (ht != 0) {
        char *end = NULL;
        q->tenant = ht > 0 && t[0] >= '1' && t[0] <= '9' && strlen(t) <= 18 ? strtoll(t, &end, 10) : 0;
        if (end == NULL || *end != '\0' || q->tenant <= 0)
            tg_mgmt_field(&err, "tenant", "tenant must be a positive tenant id");
    }
    if (err.code != 0) {
        free(q);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, audit_work, q, free);
}

const tg_adm_route_t tg_adm_routes_audit[] = {
    {"GET", "/admin/v1/audit", TG_ADM_READ | TG_ADM_OPERATOR, audit_list, "audit.list"},
    {NULL, NULL, 0, NULL, NULL},
};
