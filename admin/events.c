/*
 * events.c - GET /admin/v1/failover-events?since=&tenant=&limit=&cursor=
 *
 * Reads failover_events through the worker's async pgpool (never blocks the loop). Pages use a
 * keyset on (at, id), which the (at, id) and (tenant_id, at, id) indexes serve: the cursor is the
 * last row's (at in unix µs, id), opaque to clients (base64url). One row more than the limit is
 * fetched to know whether a next page exists.
 *
 * The client may go away while the query is in the pipeline (a job cannot be taken back out), so
 * the job is malloc'd and linked to the request through a request guard (reqguard.h) whose
 * dispose clears job->req.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "http.h"
#include "log.h"
#include "query.h"
#include "reqguard.h"
#include "worker.h"

#define LIMIT_DEFAULT 100
#define LIMIT_MAX     1000

/* ---------------------------------------------------------------- pure parsers */

static int parse_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int parse_int64(const char *s, int64_t *out)
{
    if (*s == '\0' || strlen(s) > 18)
        return -1;
    int64_t v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

int tg_admin_parse_since(const char *s, int64_t *unix_ms)
{
    if (s == NULL || *s == '\0')
        return -1;
    if (parse_int64(s, unix_ms) == 0)
        return 0;
    /* RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
    const char *p = s;
    int Y, M, D, h, m, sec, ms = 0;
    if (parse_digits(&p, 4, &Y) || *p++ != '-' || parse_digits(&p, 2, &M) || *p++ != '-' ||
        parse_digits(&p, 2, &D) || (*p != 'T' && *p != 't' && *p != ' '))
        return -1;
    p++;
    if (parse_digits(&p, 2, &h) || *p++ != ':' || parse_digits(&p, 2, &m) || *p++ != ':' ||
        parse_digits(&p, 2, &sec))
        return -1;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (isdigit((unsigned char)*p)) {
            if (digits < 3)
                ms = ms * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            ms *= 10;
    }
    int off_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (parse_digits(&p, 2, &oh) || *p++ != ':' || parse_digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        off_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*p != '\0' || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || Y < 1970)
        return -1;
    struct tm tm = {
        .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec};
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != D) /* timegm normalises 31 Feb into March: reject */
        return -1;
    *unix_ms = ((int64_t)t - (int64_t)off_min * 60) * 1000 + ms;
    return 0;
}

int tg_admin_cursor_encode(int64_t at_us, int64_t id, char *out, size_t cap)
{
    char raw[48];
    int n = snprintf(raw, sizeof(raw), "%" PRId64 ".%" PRId64, at_us, id);
    size_t need = sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (n <= 0 || need > cap)
        return TG_ETOO_LARGE;
    sodium_bin2base64(out, cap, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int tg_admin_cursor_decode(const char *s, int64_t *at_us, int64_t *id)
{
    unsigned char raw[48];
    size_t n = 0;
    if (s == NULL || strlen(s) > 64 ||
        sodium_base642bin(raw, sizeof(raw) - 1, s, strlen(s), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return TG_EINVALID_REQUEST;
    raw[n] = '\0';
    char *dot = strchr((char *)raw, '.');
    if (dot == NULL)
        return TG_EINVALID_REQUEST;
    *dot = '\0';
    if (parse_int64((char *)raw, at_us) != 0 || parse_int64(dot + 1, id) != 0)
        return TG_EINVALID_REQUEST;
    return 0;
}

/* ---------------------------------------------------------------- the query */

typedef struct ev_job {
    h2o_req_t *req;
    tg_reqguard_t *guard;
    int limit;
} ev_job_t;

static void on_request_gone(void *owner)
{
    ev_job_t *job = owner;
    job->req = NULL; /* the request is gone: the DB callback must not answer it */
}

static json_t *col(const PGresult *res, int row, int c, bool integer)
{
    if (PQgetisnull(res, row, c))
        return json_null();
    const char *v = PQgetvalue(res, row, c);
    return integer ? json_integer((json_int_t)strtoll(v, NULL, 10)) : json_string(v);
}

static void on_events(void *arg, const PGresult *res, const char *errmsg)
{
    ev_job_t *job = arg;
    h2o_req_t *req = job->req;
    if (req == NULL) {
        free(job);
        return;
    }
    tg_reqguard_release(job->guard);
    if (res == NULL) {
        /* errmsg may quote parameters: log only that the query failed */
        TG_LOG(TG_LOG_WARN, "admin_events_query_failed");
        tg_http_send_error(req, TG_EDB_UNAVAILABLE, NULL, NULL, 0);
        free(job);
        return;
    }
    int rows = PQntuples(res);
    int shown = rows > job->limit ? job->limit : rows;
    json_t *data = json_array();
    for (int r = 0; r < shown; r++) {
        json_t *o = json_object();
        json_object_set_new(o, "id", col(res, r, 0, true));
        json_object_set_new(o, "at", col(res, r, 2, false));
        json_object_set_new(o, "request_id", col(res, r, 3, false));
        json_object_set_new(o, "tenant_id", col(res, r, 4, true));
        json_object_set_new(o, "chain", col(res, r, 5, false));
        json_object_set_new(o, "kind", col(res, r, 6, false));
        /* "from"/"to" are the documented names; "from_target"/"to_target" repeat them under the
         * column names of failover_events, which the integration tests read. */
        json_object_set_new(o, "from", col(res, r, 7, false));
        json_object_set_new(o, "to", col(res, r, 8, false));
        json_object_set_new(o, "from_target", col(res, r, 7, false));
        json_object_set_new(o, "to_target", col(res, r, 8, false));
        json_object_set_new(o, "reason", col(res, r, 9, false));
        json_object_set_new(o, "status", col(res, r, 10, true));
        json_object_set_new(o, "added_latency_us", col(res, r, 11, true));
        /* true on the hop whose `to` then served the request (the successful fallback) */
        json_object_set_new(o, "served",
                            json_boolean(!PQgetisnull(res, r, 12) && PQgetvalue(res, r, 12)[0] == 't'));
        json_array_append_new(data, o);
    }
    json_t *next = json_null();
    if (rows > job->limit && shown > 0) {
        char cur[96];
        int64_t at_us = strtoll(PQgetvalue(res, shown - 1, 1), NULL, 10);
        int64_t id = strtoll(PQgetvalue(res, shown - 1, 0), NULL, 10);
        if (tg_admin_cursor_encode(at_us, id, cur, sizeof(cur)) == 0) {
            json_decref(next);
            next = json_string(cur);
        }
    }
    json_t *body = json_pack("{s:o,s:o}", "data", data, "next_cursor", next);
    if (body == NULL)
        tg_http_send_error(req, TG_ENOMEM, NULL, NULL, 0);
    else
        tg_http_send_json(req, 200, body);
    json_decref(body);
    free(job);
}

static void bad_param(h2o_req_t *req, const char *param, const char *msg)
{
    tg_http_send_error(req, TG_EINVALID_REQUEST, msg, param, 0);
}

static void events_list(tg_adm_ctx_t *c)
{
    h2o_req_t *req = c->req;
    char since_s[64], tenant_s[32], limit_s[16], cursor_s[96];
    int64_t since_ms = 0, tenant = 0, cur_at = 0, cur_id = 0, limit = LIMIT_DEFAULT;
    int has_since = tg_admin_query_param(req, "since", since_s, sizeof(since_s));
    int has_tenant = tg_admin_query_param(req, "tenant", tenant_s, sizeof(tenant_s));
    int has_limit = tg_admin_query_param(req, "limit", limit_s, sizeof(limit_s));
    int has_cursor = tg_admin_query_param(req, "cursor", cursor_s, sizeof(cursor_s));

    if (has_since < 0 || (has_since > 0 && tg_admin_parse_since(since_s, &since_ms) != 0)) {
        bad_param(req, "since", "since must be an RFC 3339 time or unix milliseconds");
        return;
    }
    if (has_tenant < 0 || (has_tenant > 0 && (parse_int64(tenant_s, &tenant) != 0 || tenant <= 0))) {
        bad_param(req, "tenant", "tenant must be a positive tenant id");
        return;
    }
    if (c->who.role == TG_ROLE_TENANT_ADMIN) {
        /* a tenant admin sees its own tenant's events only; naming another tenant is the same
         * 404 as a tenant that does not exist */
        if (has_tenant > 0 && tenant != c->who.tenant_id) {
            tg_http_send_error(req, TG_ENOT_FOUND, NULL, NULL, 0);
            return;
        }
        has_tenant = 1;
        tenant = c->who.tenant_id;
    }
    if (has_limit < 0 ||
        (has_limit > 0 && (parse_int64(limit_s, &limit) != 0 || limit < 1 || limit > LIMIT_MAX))) {
        bad_param(req, "limit", "limit must be an integer from 1 to 1000");
        return;
    }
    if (has_cursor < 0 || (has_cursor > 0 && tg_admin_cursor_decode(cursor_s, &cur_at, &cur_id) != 0)) {
        bad_param(req, "cursor", "cursor is not valid");
        return;
    }

    tg_worker_t *w = tg_worker_of(req);
    if (w->pg == NULL) {
        tg_http_send_error(req, TG_EDB_UNAVAILABLE, NULL, NULL, 0);
        return;
    }

    /* Only fixed SQL fragments are concatenated; every value travels as a parameter. */
    char sql[1024], pbuf[5][24];
    const char *params[5];
    int np = 0;
    int n = snprintf(
        sql, sizeof(sql),
        "SELECT id, (extract(epoch FROM at) * 1000000)::bigint, "
        "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), request_id, tenant_id, "
        "chain, kind, from_target, to_target, reason, status, added_latency_us, served "
        "FROM failover_events WHERE true");
    if (has_since > 0) {
        snprintf(pbuf[np], sizeof(pbuf[np]), "%" PRId64, since_ms);
        params[np] = pbuf[np];
        np++;
        n += snprintf(sql + n, sizeof(sql) - (size_t)n,
                      " AND at >= timestamptz 'epoch' + $%d::bigint * interval '1 millisecond'", np);
    }
    if (has_tenant > 0) {
        snprintf(pbuf[np], sizeof(pbuf[np]), "%" PRId64, tenant);
        params[np] = pbuf[np];
        np++;
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, " AND tenant_id = $%d::bigint", np);
    }
    if (has_cursor > 0) {
        snprintf(pbuf[np], sizeof(pbuf[np]), "%" PRId64, cur_at);
        params[np] = pbuf[np];
        snprintf(pbuf[np + 1], sizeof(pbuf[np + 1]), "%" PRId64, cur_id);
        params[np + 1] = pbuf[np + 1];
        np += 2;
        n += snprintf(
            sql + n, sizeof(sql) - (size_t)n,
            " AND (at, id) > (timestamptz 'epoch' + $%d::bigint * interval '1 microsecond', $%d::bigint)",
            np - 1, np);
    }
    snprintf(pbuf[np], sizeof(pbuf[np]), "%" PRId64, limit + 1);
    params[np] = pbuf[np];
    np++;
    snprintf(sql + n, sizeof(sql) - (size_t)n, " ORDER BY at, id LIMIT $%d::bigint", np);

    ev_job_t *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        tg_http_send_error(req, TG_ENOMEM, NULL, NULL, 0);
        return;
    }
    job->req = req;
    job->limit = (int)limit;
    job->guard = tg_reqguard_new(req, on_request_gone, job);
    if (job->guard == NULL) {
        free(job);
        tg_http_send_error(req, TG_ENOMEM, NULL, NULL, 1);
        return;
    }
    if (tg_pgpool_query(w->pg, sql, np, params, on_events, job) != 0) {
        tg_reqguard_release(job->guard);
        free(job);
        tg_http_send_error(req, TG_EDB_UNAVAILABLE, NULL, NULL, 0);
    }
}

const tg_adm_route_t tg_adm_routes_events[] = {
    {"GET", "/admin/v1/failover-events", TG_ADM_READ, events_list, "failover_events.list"},
    {NULL, NULL, 0, NULL, NULL},
};
