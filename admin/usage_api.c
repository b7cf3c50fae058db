/*
 * usage_api.c - /admin/v1/tenants/{id}/usage (records: filters, cursor pages, or the whole set as
 * a streamed CSV with Accept: text/csv, usage_export.h) and /usage/summary (per UTC day and model
 * from the usage_daily rollup). The queries are billing/usage.h's.
 *
 * Query parameters, every bad one a field error of one 400:
 *   usage:   since, until (RFC 3339 or unix ms; since inclusive, until exclusive), key (a key id),
 *            model, provider, status (100..599), limit (1..1000, 100), cursor (next_cursor)
 *   summary: from, to (UTC days YYYY-MM-DD, inclusive), model, limit (1..1000, 100), cursor
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "http.h"
#include "query.h"
#include "usage.h"
#include "usage_export.h"

static int64_t tenant_of(const tg_adm_call_t *call)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, "id") == 0)
            return call->params[i].id;
    return 0;
}

/* A positive integer parameter in lo..hi; 0 when absent. */
static int64_t int_param(h2o_req_t *req, const char *name, int64_t lo, int64_t hi, tg_mgmt_err_t *err)
{
    char v[32];
    int rc = tg_admin_query_param(req, name, v, sizeof(v));
    if (rc == 0)
        return 0;
    char *end = NULL;
    long long n = rc == 1 ? strtoll(v, &end, 10) : 0;
    if (rc != 1 || v[0] == '\0' || *end != '\0' || n < lo || n > hi) {
        tg_mgmt_field(err, name, "must be an integer from %" PRId64 " to %" PRId64, lo, hi);
        return 0;
    }
    return n;
}

/* A model or provider name: printable ASCII without space, as the config's names are (so that no
 * byte the database would refuse as text, such as invalid UTF-8, reaches it). */
static void text_param(h2o_req_t *req, const char *name, char *dst, size_t cap, tg_mgmt_err_t *err)
{
    int rc = tg_admin_query_param(req, name, dst, cap);
    bool ok = rc == 0 || (rc == 1 && dst[0] != '\0');
    for (const char *p = dst; ok && rc == 1 && *p != '\0'; p++)
        ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f;
    if (!ok)
        tg_mgmt_field(err, name, "must be a name of 1 to %zu printable ASCII characters", cap - 1);
    if (rc != 1 || !ok)
        dst[0] = '\0';
}

/* A time parameter as unix µs (0 when absent). */
static int64_t time_param(h2o_req_t *req, const char *name, tg_mgmt_err_t *err)
{
    char v[64];
    int rc = tg_admin_query_param(req, name, v, sizeof(v));
    if (rc == 0)
        return 0;
    int64_t ms = 0;
    if (rc != 1 || tg_admin_parse_since(v, &ms) != 0 || ms <= 0 || ms > INT64_C(253402300799999)) {
        tg_mgmt_field(err, name, "must be an RFC 3339 time (2024-05-01T12:00:00Z) or unix milliseconds");
        return 0;
    }
    return ms * 1000;
}

static bool wants_csv(h2o_req_t *req)
{
    const h2o_iovec_t *a = tg_http_header(req, "accept");
    if (a == NULL)
        return false;
    for (size_t i = 0; i + 8 <= a->len; i++)
        if (strncasecmp(a->base + i, "text/csv", 8) == 0)
            return true;
    return false;
}

/* ---------------------------------------------------------------- records */

typedef struct usage_arg {
    tg_usage_filter_t f;
    tg_usage_pos_t after;
    size_t limit;
} usage_arg_t;

static json_t *int_or_null(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? json_null() : json_integer(strtoll(PQgetvalue(r, row, col), NULL, 10));
}

static json_t *record_repr(const PGresult *r, int i)
{
    const char *error = PQgetvalue(r, i, TG_USAGE_COL_ERROR);
    json_t *o = json_object();
    json_object_set_new(o, "request_id", json_string(PQgetvalue(r, i, TG_USAGE_COL_REQUEST)));
    json_object_set_new(o, "created_at", json_string(PQgetvalue(r, i, TG_USAGE_COL_AT)));
    json_object_set_new(o, "key_id", int_or_null(r, i, TG_USAGE_COL_KEY));
    json_object_set_new(o, "model", json_string(PQgetvalue(r, i, TG_USAGE_COL_MODEL)));
    json_object_set_new(o, "provider", json_string(PQgetvalue(r, i, TG_USAGE_COL_PROVIDER)));
    json_object_set_new(o, "byok", json_boolean(PQgetvalue(r, i, TG_USAGE_COL_BYOK)[0] == 't'));
    json_object_set_new(o, "status", int_or_null(r, i, TG_USAGE_COL_STATUS));
    json_object_set_new(o, "error", error[0] != '\0' ? json_string(error) : json_null());
    json_object_set_new(o, "input_tokens", int_or_null(r, i, TG_USAGE_COL_INPUT));
    json_object_set_new(o, "output_tokens", int_or_null(r, i, TG_USAGE_COL_OUTPUT));
    json_object_set_new(o, "cached_tokens", int_or_null(r, i, TG_USAGE_COL_CACHED));
    json_object_set_new(o, "estimated", json_boolean(PQgetvalue(r, i, TG_USAGE_COL_ESTIMATED)[0] == 't'));
    json_object_set_new(o, "cost", int_or_null(r, i, TG_USAGE_COL_COST));
    json_object_set_new(o, "charged", int_or_null(r, i, TG_USAGE_COL_CHARGED));
    json_object_set_new(o, "latency_ms", int_or_null(r, i, TG_USAGE_COL_LATENCY));
    json_object_set_new(o, "attempts", int_or_null(r, i, TG_USAGE_COL_ATTEMPTS));
    return o;
}

/* 404 for a tenant that does not exist (an empty page would not tell). */
static int tenant_exists(PGconn *db, int64_t tenant_id, tg_adm_result_t *out)
{
    tg_tenant_t t;
    return tg_tenant_get(db, (tg_tenant_ref_t){.id = tenant_id}, &t, &out->err);
}

static void usage_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    usage_arg_t *a = call->arg;
    a->f.tenant_id = tenant_of(call);
    if (tenant_exists(db, a->f.tenant_id, out) != 0)
        return;
    PGresult *r = NULL;
    tg_error_t e = {0};
    /* one more than the page: whether a next page exists */
    if (tg_usage_records(db, &a->f, &a->after, a->limit + 1, &r, &e) != 0) {
        tg_adm_fail_error(out, &e, false);
        return;
    }
    int n = PQntuples(r);
    bool more = (size_t)n > a->limit;
    if (more)
        n = (int)a->limit;
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, record_repr(r, i));
    json_t *next = json_null();
    if (more) {
        tg_usage_pos_t pos;
        char cur[TG_USAGE_CURSOR_MAX];
        tg_usage_pos_of(r, n - 1, &pos);
        if (tg_usage_cursor_encode(&pos, cur, sizeof(cur)) == 0)
            next = json_string(cur);
    }
    PQclear(r);
    out->status = 200;
    out->body = json_pack("{so so}", "data", data, "next_cursor", next);
}

static bool parse_filter(h2o_req_t *req, tg_usage_filter_t *f, tg_mgmt_err_t *err)
{
    f->since_us = time_param(req, "since", err);
    f->until_us = time_param(req, "until", err);
    f->key_id = int_param(req, "key", 1, INT64_C(999999999999999999), err);
    f->status = (int)int_param(req, "status", 100, 599, err);
    text_param(req, "model", f->model, sizeof(f->model), err);
    text_param(req, "provider", f->provider, sizeof(f->provider), err);
    if (f->since_us > 0 && f->until_us > 0 && f->until_us <= f->since_us)
        tg_mgmt_field(err, "until", "must be later than since");
    return err->code == 0;
}

static void usage_get(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    tg_usage_filter_t f = {.tenant_id = tg_adm_param_id(c, "id")};
    parse_filter(c->req, &f, &err);
    if (wants_csv(c->req)) {
        /* the whole set: limit and cursor do not apply */
        if (err.code != 0) {
            tg_adm_reply_mgmt_err(c->req, &err);
            return;
        }
        tg_config_t *cfg = tg_config_acquire();
        if (cfg == NULL) {
            tg_adm_reply_error(c->req, TG_EDB_UNAVAILABLE, NULL, NULL);
            return;
        }
        tg_usage_export_start(c->req, cfg, &f);
        tg_config_unref(cfg);
        return;
    }
    usage_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    a->f = f;
    int64_t limit = int_param(c->req, "limit", 1, TG_USAGE_LIMIT_MAX, &err);
    a->limit = limit > 0 ? (size_t)limit : 100;
    char cur[TG_USAGE_CURSOR_MAX];
    int rc = tg_admin_query_param(c->req, "cursor", cur, sizeof(cur));
    if (rc < 0 || (rc == 1 && tg_usage_cursor_decode(cur, &a->after) != 0))
        tg_mgmt_field(&err, "cursor", "is not a next_cursor of this list");
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, usage_work, a, free);
}

/* ---------------------------------------------------------------- summary */

typedef struct summary_arg {
    tg_usage_summary_filter_t f;
    char after_day[11];
    char after_model[TG_USAGE_NAME_MAX + 1];
    size_t limit;
} summary_arg_t;

static int summary_cursor_encode(const char *day, const char *model, char *out, size_t cap)
{
    char raw[11 + 1 + TG_USAGE_NAME_MAX + 1];
    int n = snprintf(raw, sizeof(raw), "%s.%s", day, model);
    if (n <= 0 || (size_t)n >= sizeof(raw) ||
        sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) > cap)
        return -1;
    sodium_bin2base64(out, cap, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

static int summary_cursor_decode(const char *s, summary_arg_t *a)
{
    char raw[11 + 1 + TG_USAGE_NAME_MAX + 1];
    size_t n = 0;
    if (sodium_base642bin((unsigned char *)raw, sizeof(raw) - 1, s, strlen(s), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n < 12 || raw[10] != '.')
        return -1;
    raw[n] = '\0';
    memcpy(a->after_day, raw, 10);
    a->after_day[10] = '\0';
    if (!tg_usage_valid_day(a->after_day) || strlen(raw + 11) != n - 11 || n - 11 > TG_USAGE_NAME_MAX)
        return -1;
    memcpy(a->after_model, raw + 11, n - 11 + 1);
    for (const char *p = a->after_model; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return -1; /* a model name (text the database takes), as the server wrote it */
    return 0;
}

static void summary_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    summary_arg_t *a = call->arg;
    a->f.tenant_id = tenant_of(call);
    if (tenant_exists(db, a->f.tenant_id, out) != 0)
        return;
    PGresult *r = NULL;
    tg_error_t e = {0};
    if (tg_usage_summary(db, &a->f, a->after_day, a->after_model, a->limit + 1, &r, &e) != 0) {
        tg_adm_fail_error(out, &e, false);
        return;
    }
    int n = PQntuples(r);
    bool more = (size_t)n > a->limit;
    if (more)
        n = (int)a->limit;
    json_t *data = json_array();
    static const char *const names[] = {"requests",      "errors", "input_tokens", "output_tokens",
                                        "cached_tokens", "cost",   "charged"};
    for (int i = 0; i < n; i++) {
        json_t *o = json_pack("{ss ss}", "day", PQgetvalue(r, i, 0), "model", PQgetvalue(r, i, 1));
        for (int k = 0; k < 7; k++)
            json_object_set_new(o, names[k], json_integer(strtoll(PQgetvalue(r, i, 2 + k), NULL, 10)));
        json_array_append_new(data, o);
    }
    json_t *next = json_null();
    char cur[TG_USAGE_CURSOR_MAX * 3];
    if (more &&
        summary_cursor_encode(PQgetvalue(r, n - 1, 0), PQgetvalue(r, n - 1, 1), cur, sizeof(cur)) == 0)
        next = json_string(cur);
    PQclear(r);
    out->status = 200;
    out->body = json_pack("{so so}", "data", data, "next_cursor", next);
}

static void day_param(h2o_req_t *req, const char *name, char out[11], tg_mgmt_err_t *err)
{
    char v[16];
    int rc = tg_admin_query_param(req, name, v, sizeof(v));
    out[0] = '\0';
    if (rc == 0)
        return;
    if (rc != 1 || !tg_usage_valid_day(v)) {
        tg_mgmt_field(err, name, "must be a UTC day YYYY-MM-DD");
        return;
    }
    memcpy(out, v, 11);
}

static void summary_get(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    summary_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    day_param(c->req, "from", a->f.from_day, &err);
    day_param(c->req, "to", a->f.to_day, &err);
    if (a->f.from_day[0] != '\0' && a->f.to_day[0] != '\0' && strcmp(a->f.to_day, a->f.from_day) < 0)
        tg_mgmt_field(&err, "to", "must not be before from");
    text_param(c->req, "model", a->f.model, sizeof(a->f.model), &err);
    int64_t limit = int_param(c->req, "limit", 1, TG_USAGE_SUMMARY_MAX, &err);
    a->limit = limit > 0 ? (size_t)limit : 100;
    char cur[TG_USAGE_CURSOR_MAX * 3];
    int rc = tg_admin_query_param(c->req, "cursor", cur, sizeof(cur));
    if (rc < 0 || (rc == 1 && summary_cursor_decode(cur, a) != 0))
        tg_mgmt_field(&err, "cursor", "is not a next_cursor of this list");
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, summary_work, a, free);
}

const tg_adm_route_t tg_adm_routes_usage[] = {
    {"GET", "/admin/v1/tenants/{id}/usage", TG_ADM_READ | TG_ADM_TENANT, usage_get, "usage.list"},
    {"GET", "/admin/v1/tenants/{id}/usage/summary", TG_ADM_READ | TG_ADM_TENANT, summary_get,
     "usage.summary"},
    {NULL, NULL, 0, NULL, NULL},
};
