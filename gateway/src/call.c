/*
 * call.c - the call object, its stage table, and the one way back in from callbacks.
 *
 * Owns: allocation and the per-thread cache of freed calls, references, the request guard, the
 * live-call list a drain walks, tg_call_resume (the only function that moves a waiting call on:
 * it holds a reference and checks that the client is still here), tg_call_gone and the abort of
 * a drain, and the stages ADMIT, AUTH and LOG. The stages in between live in request.c,
 * policy.c, settle.c, attempt.c, relay.c, respond.c and models.c.
 *
 * HTTP/1 hang-ups: h2o 2.2.5 stops reading an HTTP/1 connection while its request is handled, so
 * a client that hangs up before the answer starts would go unnoticed until we write, possibly a
 * whole first-byte timeout later, holding an upstream transfer (and a breaker's probe slot) for
 * nothing. Until the answer starts the socket is peeked at now and then (poll_client); EOF or a
 * reset means the client is gone. HTTP/2 needs none of this: h2o sees RST_STREAM and disposes
 * the request, which fires the guard.
 */
#include "call.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "call_internal.h"
#include "clock.h"
#include "credential.h"
#include "err.h"
#include "idempotency.h"
#include "log.h"
#include "retention.h"

/* How often an HTTP/1 client that has no answer yet is checked for having hung up. */
#define CALL_CLIENT_POLL_MS 250

static int stage_admit(void *call);
static int stage_auth(void *call);
static int stage_log(void *call);
static int timed_auth(void *call);
static int timed_policy(void *call);
static int timed_limit(void *call);

static const tg_pipeline_ops_t chat_ops = {
    .stage =
        {
            [TG_STAGE_ADMIT] = stage_admit,
            [TG_STAGE_AUTH] = timed_auth,
            [TG_STAGE_PARSE] = tg_stage_parse,
            [TG_STAGE_POLICY] = timed_policy,
            [TG_STAGE_ROUTE] = tg_stage_route,
            [TG_STAGE_LIMIT] = timed_limit,
            [TG_STAGE_RESERVE] = tg_stage_idem_reserve, /* Idempotency-Key's claim, then RESERVE */
            [TG_STAGE_ATTEMPT] = tg_stage_attempt,
            [TG_STAGE_WAIT] = tg_stage_wait,
            [TG_STAGE_RELAY] = tg_stage_relay,
            [TG_STAGE_SETTLE] = tg_stage_settle,
            [TG_STAGE_LOG] = stage_log,
        },
    .fail = tg_respond_fail,
};

/* GET /v1/models: who asks, under which policy; the listing is its whole answer. */
static const tg_pipeline_ops_t models_ops = {
    .stage =
        {
            [TG_STAGE_ADMIT] = stage_admit,
            [TG_STAGE_AUTH] = timed_auth,
            [TG_STAGE_POLICY] = timed_policy,
            [TG_STAGE_RELAY] = tg_stage_models,
            [TG_STAGE_SETTLE] = tg_stage_settle,
            [TG_STAGE_LOG] = stage_log,
        },
    .fail = tg_respond_fail,
};

/* GET /v1/wallet and GET /v1/usage (money.c): the tenant's own money, under its key's auth, status
 * and policy like any call, and in the access log. */
static const tg_pipeline_ops_t wallet_ops = {
    .stage =
        {
            [TG_STAGE_ADMIT] = stage_admit,
            [TG_STAGE_AUTH] = timed_auth,
            [TG_STAGE_POLICY] = timed_policy,
            [TG_STAGE_RELAY] = tg_stage_wallet,
            [TG_STAGE_SETTLE] = tg_stage_settle,
            [TG_STAGE_LOG] = stage_log,
        },
    .fail = tg_respond_fail,
};

static const tg_pipeline_ops_t usage_ops = {
    .stage =
        {
            [TG_STAGE_ADMIT] = stage_admit,
            [TG_STAGE_AUTH] = timed_auth,
            [TG_STAGE_POLICY] = timed_policy,
            [TG_STAGE_RELAY] = tg_stage_usage,
            [TG_STAGE_SETTLE] = tg_stage_settle,
            [TG_STAGE_LOG] = stage_log,
        },
    .fail = tg_respond_fail,
};

static const char *const kind_names[] = {"chat", "models", "wallet", "usage"};

/* ------------------------------------------------------------------ per-thread state */

/*
 * A call is several KiB (the plan's attempt records and the buffers' headers), and calloc'ing it
 * for every request showed in profiles. Each loop thread keeps a few freed calls for reuse; a new
 * call zeroes everything except plan.recs, which nothing reads beyond plan.n_recs (zeroed) and
 * tg_plan_init rewrites anyway. The thread's timer lists live beside the cache; both go when
 * the thread exits.
 */
#define CALL_CACHE 32

typedef struct call_thread {
    tg_call_t *cache[CALL_CACHE];
    size_t n_cache;
    h2o_loop_t *loop; /* the lists below belong to this loop */
    tg_timers_t waits, flushes;
    h2o_timeout_t poll_list; /* one fixed duration: h2o's own list is enough */
} call_thread_t;

static __thread call_thread_t *thr;
static pthread_key_t thr_key;
static pthread_once_t thr_once = PTHREAD_ONCE_INIT;

static void thr_drop(void *p)
{
    call_thread_t *t = p;
    while (t->n_cache > 0)
        free(t->cache[--t->n_cache]);
    /* the loop is gone or going with the thread: its lists need no unlinking */
    free(t);
}

static void thr_key_init(void)
{
    if (pthread_key_create(&thr_key, thr_drop) != 0)
        thr_key = (pthread_key_t)-1;
}

/* NULL only when out of memory on a thread's first call. */
static call_thread_t *thread_state(h2o_loop_t *loop)
{
    if (thr == NULL) {
        pthread_once(&thr_once, thr_key_init);
        thr = calloc(1, sizeof(*thr));
        if (thr == NULL)
            return NULL;
        if (thr_key != (pthread_key_t)-1)
            pthread_setspecific(thr_key, thr);
    }
    if (thr->loop != loop) { /* a thread runs one loop at a time (tests run several in turn) */
        tg_timers_init(&thr->waits, loop);
        tg_timers_init(&thr->flushes, loop);
        h2o_timeout_init(loop, &thr->poll_list, CALL_CLIENT_POLL_MS);
        thr->loop = loop;
    }
    return thr;
}

tg_timers_t *tg_call_waits(tg_call_t *c)
{
    (void)c;
    return &thr->waits;
}

tg_timers_t *tg_call_flushes(tg_call_t *c)
{
    (void)c;
    return &thr->flushes;
}

static tg_call_t *call_alloc(call_thread_t *t)
{
    tg_call_t *c = t->n_cache > 0 ? t->cache[--t->n_cache] : malloc(sizeof(tg_call_t));
    if (c == NULL)
        return NULL;
    char *p = (char *)c;
    size_t recs = offsetof(tg_call_t, plan) + offsetof(tg_plan_t, recs);
    size_t after = offsetof(tg_call_t, plan) + offsetof(tg_plan_t, n_recs);
    memset(p, 0, recs);
    memset(p + after, 0, sizeof(tg_call_t) - after);
    return c;
}

static void call_free(tg_call_t *c)
{
    if (thr != NULL && thr->n_cache < CALL_CACHE) {
        thr->cache[thr->n_cache++] = c;
        return;
    }
    free(c);
}

/* ------------------------------------------------------------------------------- lifetime */

void tg_call_ref(tg_call_t *c)
{
    c->refs++;
}

static void call_destroy(tg_call_t *c)
{
    /* The pipeline ended before the last reference could drop (the guard's dispose ends it);
     * what follows only frees. */
    tg_attempt_stop(c);
    h2o_timeout_unlink(&c->poll_entry);
    tg_deadline_cancel(&c->flush_due);
    tg_attempt_reset(c);
    tg_credential_call_free(c);
    tg_buf_dispose(&c->body_buf);
    tg_buf_dispose(&c->pending);
    tg_buf_dispose(&c->inflight);
    tg_buf_dispose(&c->route_log);
    tg_buf_dispose(&c->scratch);
    tg_buf_dispose(&c->held);
    tg_buf_dispose(&c->rt_request); /* LOG freed them; a call that never reached it did not */
    tg_buf_dispose(&c->rt_answer);
    tg_idem_free(c);
    json_decref(c->body);
    if (h2o_linklist_is_linked(&c->link))
        h2o_linklist_unlink(&c->link);
    if (c->worker->inflight > 0)
        c->worker->inflight--;
    tg_config_unref(c->cfg);
    call_free(c);
}

void tg_call_unref(tg_call_t *c)
{
    if (--c->refs == 0)
        call_destroy(c);
}

void tg_call_set_error(tg_call_t *c, const char *msg, const char *param)
{
    tg_str_copy(c->err_msg, sizeof(c->err_msg), msg);
    tg_str_copy(c->err_param, sizeof(c->err_param), param);
}

/* Every piece of work the call started stops now; nothing of it calls back afterwards. */
static void stop_work(tg_call_t *c)
{
    tg_attempt_stop(c); /* the transfer, the wait, an open attempt's probe slot */
    h2o_timeout_unlink(&c->poll_entry);
    tg_deadline_cancel(&c->flush_due);
}

void tg_call_gone(tg_call_t *c)
{
    /* Whatever the stage: the h2o request is gone or going (a drained stream may still have been
     * writing its last piece), so nothing may touch it again, and nothing is left to run. */
    c->req = NULL;
    stop_work(c);
    if (tg_pipeline_done(&c->pipe))
        return;
    tg_call_ref(c);
    tg_pipeline_gone(&c->pipe);
    tg_call_unref(c);
}

void tg_call_resume(tg_call_t *c, tg_stage_t next, int err)
{
    tg_call_ref(c);
    if (tg_pipeline_done(&c->pipe)) {
        /* a drained stream may still be handing h2o its last piece */
        if (next == TG_STAGE_RELAY && c->req != NULL)
            tg_relay_pump(c);
    } else if (c->req == NULL && c->pipe.stage < TG_STAGE_SETTLE) {
        stop_work(c);
        tg_pipeline_gone(&c->pipe);
    } else {
        tg_pipeline_resume(&c->pipe, next, err);
    }
    tg_call_unref(c);
}

static void on_request_gone(void *owner)
{
    tg_call_t *c = owner;
    c->guard = NULL;
    tg_call_gone(c);  /* idempotent; after a final send nothing is left running */
    tg_call_unref(c); /* the request's reference */
}

void tg_calls_abort(tg_worker_t *w)
{
    while (!h2o_linklist_is_empty(&w->calls)) {
        tg_call_t *c = H2O_STRUCT_FROM_MEMBER(tg_call_t, link, w->calls.next);
        /* off the list first: the walk must end even if the call lives on (its guard's ref) */
        h2o_linklist_unlink(&c->link);
        if (tg_pipeline_done(&c->pipe))
            continue;
        tg_call_ref(c);
        stop_work(c);
        tg_pipeline_abort(&c->pipe, TG_ESHUTTING_DOWN);
        tg_call_unref(c);
    }
}

/* --------------------------------------------------------------------- HTTP/1 hang-ups */

static bool client_hung_up(h2o_req_t *req)
{
    if (req->version >= 0x200 || req->conn->callbacks->get_socket == NULL)
        return false;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    int fd = sock != NULL ? h2o_socket_get_fd(sock) : -1;
    if (fd < 0)
        return false;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void poll_client(h2o_timeout_entry_t *e);

static void arm_poll(tg_call_t *c)
{
    if (c->req == NULL || c->req->version >= 0x200 || c->committed || h2o_timeout_is_linked(&c->poll_entry))
        return;
    c->poll_entry.cb = poll_client;
    h2o_timeout_link(c->worker->ctx.loop, &thr->poll_list, &c->poll_entry);
}

static void poll_client(h2o_timeout_entry_t *e)
{
    tg_call_t *c = H2O_STRUCT_FROM_MEMBER(tg_call_t, poll_entry, e);
    if (c->req == NULL || c->committed)
        return;
    if (!client_hung_up(c->req)) {
        arm_poll(c);
        return;
    }
    /* End the call first (its log says 499), then answer into the closed socket so that h2o
     * tears the request down. */
    h2o_req_t *req = c->req;
    tg_call_ref(c);
    c->status = tg_err_http_status(TG_ECLIENT_CLOSED);
    tg_call_gone(c);
    tg_http_send_error(req, TG_ECLIENT_CLOSED, NULL, NULL, 0);
    tg_call_unref(c);
}

/* ---------------------------------------------------------------------- ADMIT, AUTH, LOG */

static int stage_admit(void *call)
{
    tg_call_t *c = call;
    if (tg_server_draining())
        return TG_ESHUTTING_DOWN;
    if (c->cfg == NULL)
        return TG_ECONFIG;
    h2o_iovec_t m = c->req->method;
    if (c->kind == TG_CALL_CHAT ? !h2o_memis(m.base, m.len, H2O_STRLIT("POST"))
                                : !h2o_memis(m.base, m.len, H2O_STRLIT("GET")))
        return TG_EMETHOD_NOT_ALLOWED;
    if (c->kind == TG_CALL_CHAT)
        arm_poll(c);
    return TG_STAGE_GO;
}

/* What a failed lookup tells the client: a missing or refused key is 401, but a lookup that could
 * not be made (no database, no memory) says so, or a valid key would look revoked. */
static int auth_error(int rc)
{
    return rc == TG_EDB_UNAVAILABLE || rc == TG_ENOMEM ? rc : TG_EUNAUTHENTICATED;
}

static void on_auth(void *arg, int rc, const tg_principal_t *p)
{
    tg_call_t *c = arg;
    if (rc == 0 && p != NULL) {
        c->principal = *p;
        /* an expired key or a suspended tenant is found like any key: refused here, at use, so a
         * cached entry cannot outlive either */
        int why = tg_principal_check(&c->principal, tg_unix_now_ms());
        tg_call_resume(c, why == 0 ? TG_STAGE_AUTH + 1 : TG_STAGE_SETTLE, why);
    } else {
        tg_call_resume(c, TG_STAGE_SETTLE, auth_error(rc));
    }
    tg_call_unref(c); /* the lookup's reference */
}

static int stage_auth(void *call)
{
    tg_call_t *c = call;
    const h2o_iovec_t *h = tg_http_header(c->req, "authorization");
    if (h == NULL || h->len <= 7 || strncasecmp(h->base, "Bearer ", 7) != 0)
        return TG_EUNAUTHENTICATED;
    const char *key = h->base + 7;
    size_t len = h->len - 7;
    while (len > 0 && *key == ' ')
        key++, len--;
    while (len > 0 && key[len - 1] == ' ')
        len--;
    tg_call_ref(c); /* held by the lookup until its callback (if one comes) */
    int rc = tg_auth_lookup(c->worker->pg, c->cfg->key_pepper, c->cfg->key_cache_ttl_ms, tg_now_ms(), key,
                            len, &c->principal, on_auth, c);
    if (rc == 0)
        return TG_STAGE_PENDING; /* on_auth follows */
    tg_call_unref(c);
    return rc == 1 ? tg_principal_check(&c->principal, tg_unix_now_ms()) : auth_error(rc);
}

/*
 * The admission stages' own work (AUTH, POLICY, LIMIT: who calls, may they, how fast), timed on the
 * loop in nanoseconds and summed into the access log line's `admission_ns`, so that what they add
 * to a call is read from real traffic (bench/run.sh reports its p50). Only the synchronous part
 * counts: a wait for the database on a cache miss is not their work but the query's.
 */
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int timed(void *call, tg_stage_fn fn)
{
    tg_call_t *c = call;
    uint64_t t0 = now_ns();
    int rc = fn(call);
    c->admission_ns += now_ns() - t0;
    return rc;
}

static int timed_auth(void *call)
{
    return timed(call, stage_auth);
}

static int timed_policy(void *call)
{
    return timed(call, tg_stage_policy);
}

static int timed_limit(void *call)
{
    return timed(call, tg_stage_limit);
}

static int stage_log(void *call)
{
    tg_call_t *c = call;
    const tg_model_cfg_t *m = c->served != NULL ? c->served : c->target;
    if (c->status == 0)
        c->status = tg_err_http_status(TG_ECLIENT_CLOSED); /* the client left before any answer */
    bool stored = tg_retention_record(c); /* the stored_requests record, through the choke point */
    tg_idem_finish(c);                    /* a stream's (or a gone client's) Idempotency-Key is done */
    TG_LOG(TG_LOG_INFO, "request", TG_KV_STR("request_id", c->request_id),
           TG_KV_INT("tenant_id", c->principal.tenant_id), TG_KV_INT("key_id", c->principal.key_id),
           TG_KV_INT("max_tokens_capped", c->policy_capped),
           TG_KV_INT("zero_retention", tg_retention_is_zero(c)), TG_KV_INT("zr_removed", c->rt_removed),
           TG_KV_INT("stored", stored), TG_KV_STR("route", kind_names[c->kind]),
           TG_KV_STR("idempotency", tg_idem_log_state(c)),
           TG_KV_STR("chain", c->route.name[0] != '\0' ? c->route.name : "-"),
           TG_KV_STR("model", m != NULL ? m->name : "-"),
           TG_KV_STR("provider", m != NULL ? m->provider->name : "-"), TG_KV_INT("status", c->status),
           TG_KV_INT("attempts", c->kind == TG_CALL_CHAT ? tg_plan_attempt_count(&c->plan) : 0),
           TG_KV_INT("stream", c->stream), TG_KV_INT("mid_stream_failure", c->mid_stream_failed),
           TG_KV_INT("prompt_tokens", c->usage.prompt_tokens),
           TG_KV_INT("completion_tokens", c->usage.completion_tokens),
           TG_KV_INT("cached_tokens", c->usage.cached_tokens),
           TG_KV_INT("usage_estimated", c->usage_estimated),
           /* LIMIT: the limit that refused, the tokens counted at admission, admitted offline */
           TG_KV_STR("rate_limited", c->limit.refused != NULL ? c->limit.refused : "-"),
           TG_KV_INT("rate_tokens", c->limit.tokens), TG_KV_INT("rate_local", c->limit.local),
           TG_KV_INT("byok", c->served_byok), TG_KV_INT("byok_attempts", c->byok_attempts),
           TG_KV_INT("admission_ns", c->admission_ns), TG_KV_INT("duration_us", tg_now_us() - c->start_us));
    return TG_STAGE_GO;
}

/* ------------------------------------------------------------------------------- handlers */

static int handle(h2o_req_t *req, tg_call_kind_t kind)
{
    char rid[TG_REQUEST_ID_LEN + 1];
    tg_request_id(rid);
    tg_http_add_header(req, "x-tollgate-request-id", rid);

    tg_worker_t *w = tg_worker_of(req);
    call_thread_t *t = thread_state(w->ctx.loop);
    tg_call_t *c = t != NULL ? call_alloc(t) : NULL;
    tg_reqguard_t *g = c != NULL ? tg_reqguard_new(req, on_request_gone, c) : NULL;
    if (g == NULL) {
        if (c != NULL)
            call_free(c);
        tg_http_send_error(req, TG_ENOMEM, NULL, NULL, 1);
        return 0;
    }
    c->guard = g;
    c->refs = 1; /* the request's, dropped by on_request_gone */
    c->kind = kind;
    c->req = req;
    c->worker = w;
    w->inflight++;
    h2o_linklist_insert(&w->calls, &c->link);
    c->start_us = tg_now_us();
    memcpy(c->request_id, rid, sizeof(rid));
    c->cfg = tg_config_acquire();
    tg_buf_init(&c->route_log, TG_CALL_ROUTE_LOG_MAX);
    /* limits of this snapshot, fixed for the call's life; the pending buffer holds the pause
     * threshold plus room for what one more upstream chunk can produce */
    size_t max_up = c->cfg != NULL ? c->cfg->max_upstream_body_bytes : 0;
    size_t pend_max = c->cfg != NULL ? c->cfg->stream_buffer_bytes + 2 * c->cfg->max_sse_event_bytes +
                                           TG_CALL_ROUTE_LOG_MAX + 65536
                                     : 0;
    tg_buf_init(&c->body_buf, max_up > TG_CALL_ERROR_BODY_MAX ? max_up : TG_CALL_ERROR_BODY_MAX);
    tg_buf_init(&c->pending, pend_max);
    tg_buf_init(&c->inflight, pend_max);
    tg_buf_init(&c->scratch, c->cfg != NULL ? c->cfg->max_sse_event_bytes + 1024 : 0);
    tg_buf_init(&c->held, TG_CALL_HELD_MAX);

    tg_call_ref(c); /* the start's own, so a synchronous dispose cannot free the call mid-run */
    static const tg_pipeline_ops_t *const ops[] = {&chat_ops, &models_ops, &wallet_ops, &usage_ops};
    tg_pipeline_start(&c->pipe, ops[kind], c);
    tg_call_unref(c);
    return 0;
}

int tg_chat_handle(h2o_req_t *req)
{
    return handle(req, TG_CALL_CHAT);
}

int tg_models_handle(h2o_req_t *req)
{
    return handle(req, TG_CALL_MODELS);
}

int tg_wallet_handle(h2o_req_t *req)
{
    return handle(req, TG_CALL_WALLET);
}

int tg_usage_handle(h2o_req_t *req)
{
    return handle(req, TG_CALL_USAGE);
}
