/*
 * money.c - the tenant's own money, read with its API key: GET /v1/wallet and GET /v1/usage.
 *
 * Each is the RELAY of its call (call.c's wallet_ops and usage_ops: ADMIT, AUTH, POLICY, then
 * this, SETTLE, LOG), so a revoked or expired key, a suspended tenant and the access log apply as
 * to any call. Both read PostgreSQL through the worker's async pool (never a blocking call on the
 * loop) and only ever the caller's tenant: the tenant id comes from the key, never the request.
 *
 *   GET /v1/wallet  {"object":"wallet","balance","reserved","spent"}: integer micro-credits, the
 *                   wallet row as billing/wallet.h's tg_wallet_read reads it (`reserved` is part of
 *                   `balance`: what leases and requests in flight hold).
 *   GET /v1/usage   {"object":"list","data":[records],"next_cursor":string|null}, newest first
 *                   (created_at, then request id, descending), a page of `limit` records; each
 *                   record with its tokens, its `cost` and what was `charged`. Parameters:
 *                   usage_query.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "err.h"
#include "log.h"
#include "usage_query.h"

static const char WALLET_SQL[] = "SELECT balance, reserved, spent FROM wallets WHERE tenant_id = $1::bigint";

/* created_at as unix microseconds (exact: extract returns numeric) and as RFC 3339 in UTC */
static const char USAGE_SQL[] =
    "SELECT request_id, (extract(epoch FROM created_at) * 1000000)::bigint, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), key_id, model, provider, "
    "byok, "
    "input_tokens, output_tokens, cached_tokens, estimated, cost, charged, status, error, latency_ms, "
    "attempts "
    "FROM usage_records WHERE tenant_id = $1::bigint "
    "AND ($2::bigint IS NULL OR created_at >= timestamptz 'epoch' + $2::bigint * interval '1 microsecond') "
    "AND ($3::bigint IS NULL OR created_at < timestamptz 'epoch' + $3::bigint * interval '1 microsecond') "
    "AND ($4::text IS NULL OR model = $4::text) "
    "AND ($5::bigint IS NULL OR (created_at, request_id) < "
    "(timestamptz 'epoch' + $5::bigint * interval '1 microsecond', $6::text)) "
    "ORDER BY created_at DESC, request_id DESC LIMIT $7::integer";

static json_t *int_of(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    return json_integer((json_int_t)strtoll(PQgetvalue(res, row, col), NULL, 10));
}

static json_t *bool_of(const PGresult *res, int row, int col)
{
    return json_boolean(PQgetvalue(res, row, col)[0] == 't');
}

static json_t *str_of(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? json_null() : json_string(PQgetvalue(res, row, col));
}

/* Sends root (consumed) as the call's 200 and moves it on. */
static void answer(tg_call_t *c, json_t *root)
{
    char *s = root != NULL ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (s == NULL) {
        tg_call_resume(c, TG_STAGE_SETTLE, TG_ENOMEM);
        return;
    }
    tg_respond_raw(c, 200, s, strlen(s));
    free(s);
    tg_call_resume(c, TG_STAGE_SETTLE, 0);
}

static bool query_failed(tg_call_t *c, const PGresult *res, const char *what)
{
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
        return false;
    TG_LOG(TG_LOG_WARN, "money_read_failed", TG_KV_STR("request_id", c->request_id), TG_KV_STR("what", what));
    tg_call_resume(c, TG_STAGE_SETTLE, TG_EDB_UNAVAILABLE);
    return true;
}

/* ------------------------------------------------------------------------------ wallet */

static void on_wallet(void *arg, const PGresult *res, const char *errmsg)
{
    (void)errmsg;
    tg_call_t *c = arg;
    if (!tg_pipeline_done(&c->pipe) && !query_failed(c, res, "wallet")) {
        if (PQntuples(res) != 1) {
            tg_call_set_error(c, "this tenant has no wallet", NULL);
            tg_call_resume(c, TG_STAGE_SETTLE, TG_ENOT_FOUND);
        } else {
            answer(c, json_pack("{s:s,s:o,s:o,s:o}", "object", "wallet", "balance", int_of(res, 0, 0),
                                "reserved", int_of(res, 0, 1), "spent", int_of(res, 0, 2)));
        }
    }
    tg_call_unref(c); /* the query's */
}

static int run(tg_call_t *c, const char *sql, int n, const char *const *params, tg_pg_cb cb)
{
    if (c->worker->pg == NULL)
        return TG_EDB_UNAVAILABLE;
    tg_call_ref(c);
    int rc = tg_pgpool_query(c->worker->pg, sql, n, params, cb, c);
    if (rc != 0) {
        tg_call_unref(c);
        return rc;
    }
    return TG_STAGE_PENDING;
}

int tg_stage_wallet(void *call)
{
    tg_call_t *c = call;
    char tenant[24];
    snprintf(tenant, sizeof(tenant), "%" PRId64, c->principal.tenant_id);
    const char *params[1] = {tenant};
    return run(c, WALLET_SQL, 1, params, on_wallet);
}

/* ------------------------------------------------------------------------------- usage */

static void on_usage(void *arg, const PGresult *res, const char *errmsg)
{
    (void)errmsg;
    tg_call_t *c = arg;
    if (tg_pipeline_done(&c->pipe) || query_failed(c, res, "usage")) {
        tg_call_unref(c);
        return;
    }
    /* one row more than the page was asked for: its presence means another page */
    uint32_t limit = c->usage_limit;
    int n = PQntuples(res);
    bool more = n > (int)limit;
    if (more)
        n = (int)limit;
    json_t *data = json_array();
    for (int i = 0; data != NULL && i < n; i++) {
        json_t *r = json_object();
        if (r == NULL || json_array_append_new(data, r) != 0) {
            json_decref(data);
            data = NULL;
            break;
        }
        json_object_set_new(r, "object", json_string("usage_record"));
        json_object_set_new(r, "request_id", str_of(res, i, 0));
        json_object_set_new(r, "created",
                            json_integer((json_int_t)(strtoll(PQgetvalue(res, i, 1), NULL, 10) / 1000000)));
        json_object_set_new(r, "created_at", str_of(res, i, 2));
        json_object_set_new(r, "key_id", int_of(res, i, 3));
        json_object_set_new(r, "model", str_of(res, i, 4));
        json_object_set_new(r, "provider", str_of(res, i, 5));
        json_object_set_new(r, "byok", bool_of(res, i, 6));
        json_object_set_new(r, "input_tokens", int_of(res, i, 7));
        json_object_set_new(r, "output_tokens", int_of(res, i, 8));
        json_object_set_new(r, "cached_tokens", int_of(res, i, 9));
        json_object_set_new(r, "estimated", bool_of(res, i, 10));
        json_object_set_new(r, "cost", int_of(res, i, 11));
        json_object_set_new(r, "charged", int_of(res, i, 12));
        json_object_set_new(r, "status", int_of(res, i, 13));
        json_object_set_new(r, "error", str_of(res, i, 14));
        json_object_set_new(r, "latency_ms", int_of(res, i, 15));
        json_object_set_new(r, "attempts", int_of(res, i, 16));
    }
    json_t *next = json_null();
    if (more && n > 0) {
        char cur[TG_USAGE_CURSOR_MAX + 1];
        tg_usage_cursor_make(strtoll(PQgetvalue(res, n - 1, 1), NULL, 10), PQgetvalue(res, n - 1, 0), cur);
        json_decref(next);
        next = json_string(cur);
    }
    answer(c, data != NULL ? json_pack("{s:s,s:o,s:o}", "object", "list", "data", data, "next_cursor", next)
                           : NULL);
    tg_call_unref(c); /* the query's */
}

int tg_stage_usage(void *call)
{
    tg_call_t *c = call;
    h2o_req_t *req = c->req;
    const char *qs = NULL;
    size_t qn = 0;
    if (req->query_at != SIZE_MAX && req->query_at < req->path.len) {
        qs = req->path.base + req->query_at + 1;
        qn = req->path.len - req->query_at - 1;
    }
    tg_usage_query_t q;
    char param[64], msg[200];
    if (tg_usage_query_parse(qs, qn, &q, param, sizeof(param), msg, sizeof(msg)) != 0) {
        tg_call_set_error(c, msg, param);
        return TG_EINVALID_REQUEST;
    }
    c->usage_limit = q.limit;
    char tenant[24], from[24], to[24], cur[24], lim[12];
    snprintf(tenant, sizeof(tenant), "%" PRId64, c->principal.tenant_id);
    snprintf(from, sizeof(from), "%" PRId64, q.from_us);
    snprintf(to, sizeof(to), "%" PRId64, q.to_us);
    snprintf(cur, sizeof(cur), "%" PRId64, q.cursor_us);
    snprintf(lim, sizeof(lim), "%" PRIu32, q.limit + 1);
    const char *params[7] = {tenant,
                             q.has_from ? from : NULL,
                             q.has_to ? to : NULL,
                             q.has_model ? q.model : NULL,
                             q.has_cursor ? cur : NULL,
                             q.has_cursor ? q.cursor_rid : NULL,
                             lim};
    return run(c, USAGE_SQL, 7, params, on_usage);
}
