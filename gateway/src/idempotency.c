/*
 * idempotency.c - the Idempotency-Key of chat calls: the claim before RESERVE, the recorded
 * answer, the replay, the release, and the purge of expired keys (idempotency.h).
 *
 * Every database step goes through the worker's async pool; a call holds a reference while one of
 * its steps is in flight, so the answer it holds (or the row it claimed) is still there when the
 * database answers. A step the pool refuses at once (no connection, full queue) degrades to the
 * safe side: a claim refused is 503 db_unavailable (nothing ran), a record or release refused
 * leaves the row running, and a retry after the lease is told "interrupted", never run again.
 */
#include "idempotency.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "err.h"
#include "jsonmem.h"
#include "log.h"
#include "retention.h"

/* Expired rows deleted per purge statement; a full batch runs the next one soon after. */
#define PURGE_BATCH    1000
#define PURGE_AGAIN_MS 50

typedef enum { IDEM_CLAIMING = 1, IDEM_CLAIMED, IDEM_REPLAYED, IDEM_REFUSED } idem_phase_t;

struct tg_idem {
    idem_phase_t phase;
    bool finished; /* a claimed key's end (record or release) was sent to the database */
    char key[TG_IDEM_KEY_MAX + 1];
    char fp[TG_IDEM_FP_HEX + 1];
    /* an answer held until its record is written */
    h2o_req_t *req;
    int status;
    char *body;
    size_t len;
};

/* ------------------------------------------------------------------------- pure parts */

int tg_idem_key_parse(const char *v, size_t len, char out[TG_IDEM_KEY_MAX + 1])
{
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    /* the draft's form is a structured-field string; Stripe's clients send the bare token */
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"')
        v++, len -= 2;
    if (len == 0 || len > TG_IDEM_KEY_MAX)
        return TG_EINVALID_REQUEST;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
            return TG_EINVALID_REQUEST;
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

int tg_idem_fingerprint(const json_t *body, const uint8_t key[32], char hex[TG_IDEM_FP_HEX + 1])
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (s == NULL)
        return TG_ENOMEM;
    unsigned char h[32];
    crypto_generichash(h, sizeof(h), (const unsigned char *)s, strlen(s), key, 32);
    sodium_memzero(s, strlen(s)); /* the prompt: not left in freed memory */
    free(s);
    sodium_bin2hex(hex, TG_IDEM_FP_HEX + 1, h, sizeof(h));
    return 0;
}

tg_idem_verdict_t tg_idem_verdict(const tg_idem_row_t *row, const char *request_id, const char *fingerprint)
{
    if (strcmp(row->request_id, request_id) == 0)
        return TG_IDEM_RUN;
    if (strcmp(row->fingerprint, fingerprint) != 0)
        return TG_IDEM_MISMATCH; /* the draft: a different payload is 422 whatever the first's state */
    if (row->running)
        return row->lapsed ? TG_IDEM_INTERRUPTED : TG_IDEM_IN_PROGRESS;
    return row->has_answer ? TG_IDEM_REPLAY : TG_IDEM_NO_ANSWER;
}

const char *tg_idem_no_answer_msg(const char *reason)
{
    if (reason == NULL)
        reason = "";
    if (strcmp(reason, "zero_retention") == 0)
        return "the request with this idempotency key has finished; under zero retention nothing of it is "
               "stored, so its answer cannot be returned again (it is not run or charged again)";
    if (strcmp(reason, "stream") == 0)
        return "the request with this idempotency key was a stream that has finished; a stream is not "
               "stored, so it cannot be returned again (it is not run or charged again)";
    if (strcmp(reason, "too_large") == 0)
        return "the request with this idempotency key has finished; its answer was larger than the "
               "gateway stores, so it cannot be returned again (it is not run or charged again)";
    if (strcmp(reason, "client_gone") == 0)
        return "the request with this idempotency key ended when its client left before the answer; "
               "there is no answer to return (it is not run or charged again)";
    return "the request with this idempotency key has finished, but its answer was not stored";
}

#define INTERRUPTED_MSG                                                                                   \
    "the request with this idempotency key was interrupted before it finished (its gateway stopped); it " \
    "is not run again while the key lives; GET /v1/usage shows whether it was charged"

bool tg_idem_header_kept(const char *name, size_t len)
{
    /* what describes the answer; not the request id (the replay has its own, and names the first in
     * x-tollgate-replay-of) nor the money headers (a replay is not charged: they are this call's) */
    static const char *const kept[] = {"x-tollgate-model",          "x-tollgate-provider",
                                       "x-tollgate-attempts",       "x-tollgate-fallback-reason",
                                       "x-tollgate-dropped-params", "retry-after"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        if (strlen(kept[i]) == len && memcmp(kept[i], name, len) == 0)
            return true;
    return false;
}

/* --------------------------------------------------------------------------- the call */

static const char CLAIM_SQL[] = "SELECT o_request_id, o_fingerprint, o_state, o_lapsed, o_status, o_headers, "
                                "o_body, o_no_answer FROM tollgate_idempotency_claim($1::bigint, $2, $3, $4, "
                                "$5::bigint, $6::bigint)";
static const char RECORD_SQL[] =
    "UPDATE idempotency_keys SET state = 'done', finished_at = now(), status = $4::smallint, headers = $5, "
    "body = decode($6, 'hex'), no_answer = $7 WHERE tenant_id = $1::bigint AND idem_key = $2 AND request_id "
    "= $3";
static const char RELEASE_SQL[] =
    "DELETE FROM idempotency_keys WHERE tenant_id = $1::bigint AND idem_key = $2 AND request_id = $3";
static const char PURGE_SQL[] =
    "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys "
    "WHERE expires_at <= now() LIMIT 1000 FOR UPDATE SKIP LOCKED)";

void tg_idem_free(tg_call_t *c)
{
    if (c->idem == NULL)
        return;
    free(c->idem->body);
    free(c->idem);
    c->idem = NULL;
}

const char *tg_idem_log_state(const tg_call_t *c)
{
    if (c->idem == NULL)
        return "-";
    switch (c->idem->phase) {
    case IDEM_CLAIMED:
        return "claimed";
    case IDEM_REPLAYED:
        return "replayed";
    case IDEM_REFUSED:
        return "refused";
    default:
        return "claiming";
    }
}

/* The request's Idempotency-Key headers: how many, and the first. */
static size_t key_headers(h2o_req_t *req, const h2o_iovec_t **first)
{
    size_t n = 0;
    *first = NULL;
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (h->name->len == sizeof(TG_IDEM_HEADER) - 1 &&
            h2o_lcstris(h->name->base, h->name->len, H2O_STRLIT(TG_IDEM_HEADER))) {
            if (n++ == 0)
                *first = &h->value;
        }
    }
    return n;
}

static void on_claim(void *arg, const PGresult *res, const char *errmsg);

static int claim(tg_call_t *c)
{
    if (c->idem != NULL) /* resumed after the claim: only a claimed call comes back here */
        return c->idem->phase == IDEM_CLAIMED ? TG_STAGE_GO : TG_EINTERNAL;
    const h2o_iovec_t *h;
    size_t n = key_headers(c->req, &h);
    if (n == 0)
        return TG_STAGE_GO;
    if (n > 1) {
        tg_call_set_error(c, "Idempotency-Key must be given once", "Idempotency-Key");
        return TG_EINVALID_REQUEST;
    }
    struct tg_idem *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return TG_ENOMEM;
    c->idem = d;
    d->phase = IDEM_REFUSED;
    if (tg_idem_key_parse(h->base, h->len, d->key) != 0) {
        tg_call_set_error(c, "Idempotency-Key must be 1 to 200 printable ASCII characters without spaces",
                          "Idempotency-Key");
        return TG_EINVALID_REQUEST;
    }
    if (c->worker->pg == NULL)
        return TG_EDB_UNAVAILABLE; /* a key can only be honoured with the database */

    /* The client's own body, read again: POLICY and ROUTE have changed the tree since PARSE (a
     * capped max_tokens, the removed "models"), and the fingerprint is of what the client sent.
     * Within the same memory budget as PARSE; only calls with a key pay for it. */
    h2o_req_t *req = c->req;
    json_error_t jerr;
    int jrc;
    json_t *body = tg_json_load_bounded(req->entity.base != NULL ? req->entity.base : "", req->entity.len,
                                        tg_jsonmem_budget(req->entity.len, c->cfg->body_memory_factor),
                                        JSON_REJECT_DUPLICATES, &jerr, &jrc, NULL);
    if (body == NULL)
        return jrc != 0 ? jrc : TG_EINVALID_JSON; /* PARSE read it: only memory can fail here */
    int frc = tg_idem_fingerprint(body, c->cfg->key_pepper, d->fp);
    json_decref(body);
    if (frc != 0)
        return frc;

    char tenant[24], lease[24], ttl[24];
    snprintf(tenant, sizeof(tenant), "%" PRId64, c->principal.tenant_id);
    snprintf(lease, sizeof(lease), "%" PRIu32, c->cfg->idempotency.running_lease_ms);
    snprintf(ttl, sizeof(ttl), "%" PRIu32, c->cfg->idempotency.ttl_ms);
    const char *params[6] = {tenant, d->key, d->fp, c->request_id, lease, ttl};
    tg_call_ref(c); /* the claim's, until on_claim */
    int rc = tg_pgpool_query(c->worker->pg, CLAIM_SQL, 6, params, on_claim, c);
    if (rc != 0) {
        tg_call_unref(c);
        return rc;
    }
    d->phase = IDEM_CLAIMING;
    return TG_STAGE_PENDING;
}

int tg_stage_idem_reserve(void *call)
{
    tg_call_t *c = call;
    int rc = claim(c);
    return rc == TG_STAGE_GO ? tg_stage_reserve(c) : rc;
}

static void on_done(void *arg, const PGresult *res, const char *errmsg)
{
    (void)errmsg; /* the server's words may quote a parameter: not logged */
    if (res == NULL)
        TG_LOG(TG_LOG_WARN, "idempotency_record_failed", TG_KV_STR("what", (const char *)arg));
}

/* Sends a claimed key's end: its record (status >= 0: the answer; no_answer: why there is none) or,
 * when release, its deletion. cb NULL: fire and forget. Returns tg_pgpool_query's result. */
static int send_end(tg_call_t *c, bool release, int status, const char *headers, const char *body_hex,
                    const char *no_answer, tg_pg_cb cb, void *arg)
{
    struct tg_idem *d = c->idem;
    char tenant[24], st[8];
    snprintf(tenant, sizeof(tenant), "%" PRId64, c->principal.tenant_id);
    snprintf(st, sizeof(st), "%d", status);
    if (cb == NULL) {
        cb = on_done;
        arg = release ? "release" : "record";
    }
    if (release) {
        const char *p[3] = {tenant, d->key, c->request_id};
        return tg_pgpool_query(c->worker->pg, RELEASE_SQL, 3, p, cb, arg);
    }
    const char *p[7] = {tenant,  d->key,   c->request_id, no_answer == NULL ? st : NULL,
                        headers, body_hex, no_answer};
    return tg_pgpool_query(c->worker->pg, RECORD_SQL, 7, p, cb, arg);
}

static bool holding(const tg_call_t *c)
{
    return c->idem != NULL && c->idem->phase == IDEM_CLAIMED && !c->idem->finished;
}

/* Something was sent upstream (the provider may have worked, and charged): the key is spent. */
static bool ran(const tg_call_t *c)
{
    return tg_plan_attempt_count(&c->plan) > 0 || c->committed;
}

/* The replayable headers of the answer being sent, as a JSON object's text (NULL: out of memory). */
static char *kept_headers(h2o_req_t *req)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < req->res.headers.size; i++) {
        const h2o_header_t *h = &req->res.headers.entries[i];
        if (!tg_idem_header_kept(h->name->base, h->name->len))
            continue;
        json_t *v = json_stringn(h->value.base, h->value.len);
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)h->name->len, h->name->base);
        if (v != NULL)
            json_object_set_new(o, name, v);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void on_recorded(void *arg, const PGresult *res, const char *errmsg)
{
    tg_call_t *c = arg;
    struct tg_idem *d = c->idem;
    on_done("answer", res, errmsg);
    /* the guard is gone once h2o disposed the request (the client left meanwhile) */
    if (c->guard != NULL && d->req != NULL) {
        h2o_req_t *req = d->req;
        d->req = NULL;
        tg_http_send_raw_json(req, d->status, d->body != NULL ? d->body : "", d->len);
    }
    d->req = NULL;
    free(d->body);
    d->body = NULL;
    tg_call_unref(c); /* the hold's */
}

bool tg_idem_hold(tg_call_t *c, h2o_req_t *req, int status, const char *body, size_t len)
{
    if (!holding(c))
        return false;
    struct tg_idem *d = c->idem;
    d->body = malloc(len + 1);
    if (d->body == NULL)
        return false; /* sent now; the key stays running until its lease, then "interrupted" */
    memcpy(d->body, body, len);
    d->len = len;
    d->status = status;
    d->req = req;
    d->finished = true;

    bool zr = tg_retention_is_zero(c);
    bool release = !ran(c);
    const char *no_answer = zr                                           ? "zero_retention"
                            : len > c->cfg->idempotency.max_answer_bytes ? "too_large"
                                                                         : NULL;
    char *headers = NULL, *hex = NULL;
    if (!release && no_answer == NULL) {
        headers = kept_headers(req);
        hex = malloc(2 * len + 1);
        if (headers == NULL || hex == NULL) {
            free(headers);
            free(hex);
            headers = hex = NULL;
            no_answer = "too_large"; /* no memory to record it: as if it did not fit */
        } else {
            sodium_bin2hex(hex, 2 * len + 1, (const unsigned char *)body, len);
        }
    }
    tg_call_ref(c); /* the hold's, until on_recorded */
    int rc = send_end(c, release, status, headers, hex, no_answer, on_recorded, c);
    free(headers);
    if (hex != NULL) {
        sodium_memzero(hex, 2 * len);
        free(hex);
    }
    if (rc != 0) {
        /* the pool refused at once: the answer goes now, the row stays running (see the top) */
        tg_call_unref(c);
        d->req = NULL;
        free(d->body);
        d->body = NULL;
        return false;
    }
    return true;
}

bool tg_idem_hold_error(tg_call_t *c, h2o_req_t *req, int err, const char *message, const char *param,
                        unsigned retry_after_s)
{
    if (!holding(c))
        return false;
    /* the body and Retry-After exactly as tg_http_send_error makes them */
    tg_buf_t b;
    tg_buf_init(&b, 4096 + (message != NULL ? strlen(message) * 6 : 0));
    if (tg_http_error_json(&b, message != NULL ? message : tg_err_public_msg(err), tg_err_type(err),
                           tg_err_code(err), param) != 0) {
        tg_buf_reset(&b);
        if (tg_http_error_json(&b, tg_err_public_msg(err), tg_err_type(err), tg_err_code(err), NULL) != 0) {
            tg_buf_dispose(&b);
            return false;
        }
    }
    int status = tg_err_http_status(err);
    if (err == TG_EDB_UNAVAILABLE && retry_after_s == 0)
        retry_after_s = TG_HTTP_DB_RETRY_AFTER_S;
    if ((status == 429 || status == 503) && retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof(v), "%u", retry_after_s);
        tg_http_add_header(req, "retry-after", v);
    }
    bool held = tg_idem_hold(c, req, status, b.data != NULL ? b.data : "", b.len);
    if (!held) {
        tg_call_ref(c); /* h2o may dispose the request, and drop its reference, inside the send */
        tg_http_send_raw_json(req, status, b.data != NULL ? b.data : "", b.len);
        tg_call_unref(c);
    }
    tg_buf_dispose(&b);
    return true; /* answered either way (Retry-After is on the request already) */
}

void tg_idem_finish(tg_call_t *c)
{
    if (!holding(c))
        return;
    c->idem->finished = true;
    bool release = !ran(c);
    const char *why = tg_retention_is_zero(c)     ? "zero_retention"
                      : c->stream && c->committed ? "stream"
                                                  : "client_gone";
    TG_IGNORE_RESULT(send_end(c, release, 0, NULL, NULL, why, NULL, NULL));
}

/* The stored answer again: its headers, the replay's own two, then the body; the call then goes to
 * SETTLE with nothing reserved and nothing to charge. */
static void replay(tg_call_t *c, const PGresult *res)
{
    c->idem->phase = IDEM_REPLAYED;
    int status = atoi(PQgetvalue(res, 0, 4));
    size_t len = 0;
    unsigned char *body = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 6), &len);
    if (body == NULL || status < 100 || status > 599) {
        if (body != NULL)
            PQfreemem(body);
        tg_call_resume(c, TG_STAGE_SETTLE, TG_EINTERNAL);
        return;
    }
    json_t *hs = PQgetisnull(res, 0, 5) ? NULL : json_loads(PQgetvalue(res, 0, 5), 0, NULL);
    const char *name;
    json_t *v;
    json_object_foreach(hs, name, v)
    {
        if (json_is_string(v) && tg_idem_header_kept(name, strlen(name)))
            tg_http_add_header(c->req, name, json_string_value(v));
    }
    json_decref(hs);
    tg_http_add_header(c->req, "idempotent-replayed", "true");
    tg_http_add_header(c->req, "x-tollgate-replay-of", PQgetvalue(res, 0, 0));
    tg_respond_raw(c, status, (const char *)body, len);
    PQfreemem(body);
    tg_call_resume(c, TG_STAGE_SETTLE, 0);
}

static void on_claim(void *arg, const PGresult *res, const char *errmsg)
{
    (void)errmsg;
    tg_call_t *c = arg;
    struct tg_idem *d = c->idem;
    d->phase = IDEM_REFUSED;
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        TG_LOG(TG_LOG_WARN, "idempotency_claim_failed", TG_KV_STR("request_id", c->request_id));
        tg_call_resume(c, TG_STAGE_SETTLE, TG_EDB_UNAVAILABLE);
        tg_call_unref(c);
        return;
    }
    tg_idem_row_t row = {.request_id = PQgetvalue(res, 0, 0),
                         .fingerprint = PQgetvalue(res, 0, 1),
                         .running = strcmp(PQgetvalue(res, 0, 2), "running") == 0,
                         .lapsed = strcmp(PQgetvalue(res, 0, 3), "t") == 0,
                         .has_answer = !PQgetisnull(res, 0, 6)};
    tg_idem_verdict_t v = tg_idem_verdict(&row, c->request_id, d->fp);
    if (v == TG_IDEM_RUN) {
        d->phase = IDEM_CLAIMED;
        if (tg_pipeline_done(&c->pipe)) /* the client left while the claim was on its way */
            tg_idem_finish(c);          /* nothing was sent upstream: released */
        else
            tg_call_resume(c, TG_STAGE_RESERVE, 0);
    } else if (tg_pipeline_done(&c->pipe)) {
        /* gone: nothing to answer */
    } else if (v == TG_IDEM_REPLAY) {
        replay(c, res);
    } else {
        int err = TG_EIDEMPOTENCY_NO_REPLAY;
        if (v == TG_IDEM_MISMATCH) {
            err = TG_EIDEMPOTENCY_MISMATCH;
            tg_call_set_error(c, NULL, "Idempotency-Key");
        } else if (v == TG_IDEM_IN_PROGRESS) {
            err = TG_EIDEMPOTENCY_IN_PROGRESS;
        } else if (v == TG_IDEM_INTERRUPTED) {
            tg_call_set_error(c, INTERRUPTED_MSG, NULL);
        } else {
            tg_call_set_error(c, tg_idem_no_answer_msg(PQgetvalue(res, 0, 7)), NULL);
        }
        tg_call_resume(c, TG_STAGE_SETTLE, err);
    }
    tg_call_unref(c); /* the claim's */
}

/* ------------------------------------------------------------------------- the purge */

static struct {
    bool on, busy;
    tg_pgpool_t *pg;
    tg_timers_t timers;
    tg_deadline_t due;
} purge;

static void purge_tick(tg_deadline_t *dl);

static void purge_arm(uint64_t ms)
{
    if (purge.on)
        tg_deadline_arm(&purge.timers, &purge.due, ms, purge_tick);
}

static uint32_t purge_interval(void)
{
    tg_config_t *cfg = tg_config_acquire();
    uint32_t ms = cfg != NULL ? cfg->idempotency.purge_interval_ms : 60000u;
    tg_config_unref(cfg);
    return ms;
}

static void on_purged(void *arg, const PGresult *res, const char *errmsg)
{
    (void)arg;
    (void)errmsg;
    purge.busy = false;
    long n = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK ? atol(PQcmdTuples((PGresult *)res)) : 0;
    if (n > 0)
        TG_LOG(TG_LOG_DEBUG, "idempotency_purged", TG_KV_INT("rows", n));
    purge_arm(n >= PURGE_BATCH ? PURGE_AGAIN_MS : purge_interval());
}

static void purge_tick(tg_deadline_t *dl)
{
    (void)dl;
    if (purge.busy)
        return;
    if (tg_pgpool_query(purge.pg, PURGE_SQL, 0, NULL, on_purged, NULL) == 0)
        purge.busy = true;
    else
        purge_arm(purge_interval()); /* no connection yet: next time */
}

void tg_idem_purge_start(h2o_loop_t *loop, tg_pgpool_t *pg)
{
    if (purge.on || pg == NULL)
        return;
    tg_timers_init(&purge.timers, loop);
    purge.pg = pg;
    purge.on = true;
    purge.busy = false;
    purge_arm(purge_interval());
}

void tg_idem_purge_stop(void)
{
    if (!purge.on)
        return;
    purge.on = false;
    tg_deadline_cancel(&purge.due);
    tg_timers_dispose(&purge.timers);
}
