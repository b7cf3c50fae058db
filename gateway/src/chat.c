/*
 * chat.c - the data-plane request path: POST /v1/chat/completions and GET /v1/models.
 *
 * One call object per request (call_t, malloc'd, reference-counted, loop thread only):
 *   - the h2o request holds one reference through a guard allocated in req->pool; the guard's
 *     dispose callback (which always runs, whether the answer finished or the client left)
 *     drops it. The call therefore outlives every byte it handed to h2o_send.
 *   - an auth lookup in flight holds one (tg_auth_lookup has no cancel);
 *   - every callback that may end the call (transfer on_done, the wait timer, proceed) holds
 *     one for its own duration, so a synchronous dispose inside h2o_send cannot free the call
 *     under our feet.
 * A transfer holds no reference: whoever makes the call give up the client (generator stop,
 * guard dispose) cancels the transfer first, and tg_transfer_cancel guarantees no callback
 * runs after it. `c->req` is NULL once the client is gone or the final response was handed to
 * h2o; nothing touches h2o objects after that.
 *
 * Streams: canonical chunks are serialised into `pending` (bounded); h2o owns `inflight` from
 * h2o_send until proceed; the two swap. Above limits.stream_buffer_bytes pending bytes the
 * upstream transfer is paused and resumed once pending drains below a quarter of it.
 * Failover stays possible until the response is committed (h2o_start_response), which happens
 * only when the first canonical chunk is ready.
 *
 * Status rules for a failed plan: the planner's answer (503 naming every attempt, or the caller's
 * own 4xx), except a chain whose single attempt failed below HTTP, which keeps that failure's own
 * status (502 unreachable or unreadable, 504 timeout), as issue #2 asks.
 */
#include "chat.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "auth.h"
#include "breaker.h"
#include "buf.h"
#include "clock.h"
#include "config.h"
#include "err.h"
#include "events.h"
#include "failover.h"
#include "http.h"
#include "jsonmem.h"
#include "log.h"
#include "providers/provider.h"
#include "router.h"
#include "server.h"
#include "sse.h"
#include "upstream.h"

/* Retry-After up to this may retry the same target when no other target is usable (failover.h). */
#define CHAT_SHORT_WAIT_MS 2000
/* Route-event comment lines collected before the stream is committed. */
#define CHAT_ROUTE_LOG_MAX 8192
/* An error body is only read for classification: the first part is enough. */
#define CHAT_ERROR_BODY_MAX 65536
/* How often an HTTP/1 client that has no answer yet is checked for having hung up. */
#define CHAT_CLIENT_POLL_MS 250
/* Safety net against a planner that never ends (it should, within its attempt limits). */
#define CHAT_MAX_STEPS (4 * TG_PLAN_MAX_ATTEMPTS)

typedef enum { CALL_CHAT, CALL_MODELS } call_kind_t;

typedef struct call call_t;

/* Lives in req->pool; its dispose callback drops the request's reference on the call. */
typedef struct call_guard {
    call_t *call;
} call_guard_t;

struct call {
    int refs; /* loop thread only: no atomics needed */
    call_kind_t kind;
    h2o_req_t *req; /* NULL once the client is gone or the final response was sent */
    call_guard_t *guard;
    tg_worker_t *worker;
    tg_config_t *cfg; /* our reference: models/providers below are borrowed from it */
    char request_id[TG_REQUEST_ID_LEN + 1];
    uint64_t start_us;
    tg_principal_t principal;
    int status; /* status sent to the client; 0 none yet */

    /* the request */
    json_t *body;
    bool stream, client_usage, route_events;
    tg_route_t route;
    tg_breaker_t *breakers[TG_PLAN_MAX_TARGETS];
    tg_breaker_t *ctx_breaker;
    tg_plan_t plan;
    size_t recs_seen; /* plan records already turned into route comments */
    bool events_done; /* the plan's failover events were emitted */

    /* HTTP/1 hang-up detection before the answer starts (see poll_client) */
    h2o_timeout_entry_t poll_entry;

    /* stream output waiting for the end of this loop turn (flush_soon) */
    h2o_timeout_entry_t flush_entry;

    /* a Retry-After wait between attempts */
    h2o_timeout_entry_t wait_entry;
    uint32_t wait_ms;

    /* the current attempt */
    tg_transfer_t *transfer;
    bool attempt_open; /* started, outcome not yet recorded in the plan */
    const tg_model_cfg_t *target;
    const tg_adapter_t *adapter;
    uint64_t attempt_start_us;
    int up_status;
    char retry_after[64];
    bool has_retry_after;
    tg_buf_t body_buf; /* whole answer (non-stream) or error body */
    bool body_overflow;
    tg_sse_parser_t sse;
    bool sse_live;
    tg_stream_t *st;
    tg_resp_in_t resp_in;
    int stream_rc; /* failure seen while translating the stream (TG_E*), 0 none */
    tg_error_t stream_err;
    bool ended; /* the provider's end-of-stream signal was seen */
    char dropped[256];

    /* the answer */
    h2o_generator_t gen;
    bool committed;  /* response started: no failover any more */
    bool finishing;  /* everything is produced: FINAL once pending drained */
    bool send_error; /* end with H2O_SEND_STATE_ERROR (the error event could not be written) */
    bool paused;
    tg_buf_t pending, inflight;
    tg_buf_t scratch; /* one spliced stream chunk (pass-through) */
    tg_buf_t route_log;
    const tg_model_cfg_t *served;
    tg_usage_t usage;
    bool mid_stream_failed;
};

static void drive(call_t *c);
static void plan_events(call_t *c);

/* ----------------------------------------------------------------------------- call lifetime */

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * call_t is several KiB (the plan's attempt records and the call's buffers' headers), and
 * calloc'ing it for every request showed in profiles. Each loop thread keeps a few freed calls for reuse, and
 * a new call zeroes everything except plan.recs, which nothing reads beyond plan.n_recs (zeroed) and
 * tg_plan_init rewrites anyway. The cache is freed when its thread exits.
 */
#define CHAT_CALL_CACHE 32
static __thread call_t *call_cache[CHAT_CALL_CACHE];
static __thread size_t call_cache_n;
static pthread_key_t call_cache_key;
static pthread_once_t call_cache_once = PTHREAD_ONCE_INIT;

static void call_cache_drop(void *unused)
{
    (void)unused;
    while (call_cache_n > 0)
        free(call_cache[--call_cache_n]);
}

static void call_cache_init(void)
{
    if (pthread_key_create(&call_cache_key, call_cache_drop) != 0)
        call_cache_key = (pthread_key_t)-1;
}

static call_t *call_alloc(void)
{
    call_t *c = call_cache_n > 0 ? call_cache[--call_cache_n] : malloc(sizeof(call_t));
    if (c == NULL)
        return NULL;
    char *p = (char *)c;
    size_t recs = offsetof(call_t, plan) + offsetof(tg_plan_t, recs);
    size_t after = offsetof(call_t, plan) + offsetof(tg_plan_t, n_recs);
    memset(p, 0, recs);
    memset(p + after, 0, sizeof(call_t) - after);
    return c;
}

static void call_free(call_t *c)
{
    pthread_once(&call_cache_once, call_cache_init);
    if (call_cache_n < CHAT_CALL_CACHE && call_cache_key != (pthread_key_t)-1) {
        if (call_cache_n == 0)
            pthread_setspecific(call_cache_key, (void *)1); /* arms the destructor at thread exit */
        call_cache[call_cache_n++] = c;
        return;
    }
    free(c);
}

static void call_ref(call_t *c)
{
    c->refs++;
}

static void reset_attempt(call_t *c)
{
    if (c->st != NULL) {
        c->adapter->stream_destroy(c->st);
        c->st = NULL;
    }
    if (c->sse_live) {
        tg_sse_parser_dispose(&c->sse);
        c->sse_live = false;
    }
    tg_buf_reset(&c->body_buf);
    c->body_overflow = false;
    c->up_status = 0;
    c->has_retry_after = false;
    c->retry_after[0] = '\0';
    c->stream_rc = 0;
    memset(&c->stream_err, 0, sizeof(c->stream_err));
    c->ended = false;
}

static void log_call(call_t *c)
{
    const tg_model_cfg_t *m = c->served != NULL ? c->served : c->target;
    TG_LOG(TG_LOG_INFO, "request", TG_KV_STR("request_id", c->request_id),
           TG_KV_INT("tenant_id", c->principal.tenant_id),
           TG_KV_STR("route", c->kind == CALL_CHAT ? "chat" : "models"),
           TG_KV_STR("chain", c->route.name[0] != '\0' ? c->route.name : "-"),
           TG_KV_STR("model", m != NULL ? m->name : "-"),
           TG_KV_STR("provider", m != NULL ? m->provider->name : "-"), TG_KV_INT("status", c->status),
           TG_KV_INT("attempts", c->kind == CALL_CHAT ? tg_plan_attempt_count(&c->plan) : 0),
           TG_KV_INT("stream", c->stream), TG_KV_INT("mid_stream_failure", c->mid_stream_failed),
           TG_KV_INT("prompt_tokens", c->usage.prompt_tokens),
           TG_KV_INT("completion_tokens", c->usage.completion_tokens),
           TG_KV_INT("cached_tokens", c->usage.cached_tokens),
           TG_KV_INT("duration_us", tg_now_us() - c->start_us));
}

static void call_destroy(call_t *c)
{
    /* Both are cleared before the last reference can drop; this is a second line of defence. */
    if (c->transfer != NULL)
        tg_transfer_cancel(c->transfer);
    h2o_timeout_unlink(&c->wait_entry);
    h2o_timeout_unlink(&c->poll_entry);
    h2o_timeout_unlink(&c->flush_entry);
    if (c->kind == CALL_CHAT) /* no-op unless a started stream got no verdict on any other path */
        tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_NEUTRAL);
    if (c->status == 0)
        c->status = 499; /* the client left before any answer */
    log_call(c);
    reset_attempt(c);
    tg_buf_dispose(&c->body_buf);
    tg_buf_dispose(&c->pending);
    tg_buf_dispose(&c->inflight);
    tg_buf_dispose(&c->route_log);
    tg_buf_dispose(&c->scratch);
    json_decref(c->body);
    if (c->worker->inflight > 0)
        c->worker->inflight--;
    tg_config_unref(c->cfg);
    call_free(c);
}

static void call_unref(call_t *c)
{
    if (--c->refs == 0)
        call_destroy(c);
}

/* The client is gone (or will never be answered): stop every piece of work at once. */
static void abandon(call_t *c)
{
    c->req = NULL;
    if (c->transfer != NULL) {
        tg_transfer_cancel(c->transfer);
        c->transfer = NULL;
    }
    h2o_timeout_unlink(&c->wait_entry);
    h2o_timeout_unlink(&c->poll_entry);
    h2o_timeout_unlink(&c->flush_entry);
    if (c->attempt_open) {
        /* A half-open probe slot must not leak because its client hung up: neutral outcome. */
        tg_classified_t cls = {.cls = TG_OUTCOME_CALLER, .status = 0, .retry_after_ms = -1};
        snprintf(cls.reason, sizeof(cls.reason), "client_gone");
        c->attempt_open = false;
        tg_plan_record(&c->plan, tg_now_ms(), &cls, tg_now_us() - c->attempt_start_us);
        c->recs_seen = c->plan.n_recs;
    }
    /* a stream the client left says nothing about the provider, but must free a probe slot */
    tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_NEUTRAL);
    plan_events(c); /* the failures before the hang-up still happened */
}

static void on_guard_dispose(void *p)
{
    call_guard_t *g = p;
    call_t *c = g->call;
    if (c == NULL)
        return;
    g->call = NULL;
    c->guard = NULL;
    abandon(c); /* idempotent; after a final send nothing is left running */
    call_unref(c);
}

static void gen_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    call_t *c = H2O_STRUCT_FROM_MEMBER(call_t, gen, gen);
    /* After stop h2o must not be sent to again; the guard still holds the reference. */
    if (c->req != NULL)
        abandon(c);
}

/* Hands the final piece to h2o. h2o may dispose req->pool inside h2o_send (running the guard),
 * so the back-pointer is cleared first and a reference keeps the call alive until we return. */
static void send_final(call_t *c, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    h2o_req_t *req = c->req;
    c->req = NULL;
    call_ref(c);
    h2o_send(req, bufs, n, state);
    call_unref(c);
}

static void respond_raw(call_t *c, int status, const char *body, size_t len)
{
    if (c->req == NULL)
        return;
    h2o_req_t *req = c->req;
    c->status = status;
    c->req = NULL;
    call_ref(c);
    tg_http_send_raw_json(req, status, body, len);
    call_unref(c);
}

static void respond_error(call_t *c, int err, const char *message, const char *param, unsigned retry_after_s)
{
    if (c->req == NULL)
        return;
    h2o_req_t *req = c->req;
    c->status = tg_err_http_status(err);
    c->req = NULL;
    call_ref(c);
    tg_http_send_error(req, err, message, param, retry_after_s);
    call_unref(c);
}

static void add_header_u(h2o_req_t *req, const char *name, unsigned long v)
{
    char s[24];
    snprintf(s, sizeof(s), "%lu", v);
    tg_http_add_header(req, name, s);
}

/* x-tollgate-* headers of a served answer; they must precede the first byte of a stream. */
static void add_route_headers(call_t *c)
{
    h2o_req_t *req = c->req;
    tg_http_add_header(req, "x-tollgate-model", c->served->name);
    tg_http_add_header(req, "x-tollgate-provider", c->served->provider->name);
    add_header_u(req, "x-tollgate-attempts", (unsigned long)tg_plan_attempt_count(&c->plan));
    const char *fr = tg_plan_fallback_reason(&c->plan);
    if (fr != NULL)
        tg_http_add_header(req, "x-tollgate-fallback-reason", fr);
    if (c->dropped[0] != '\0')
        tg_http_add_header(req, "x-tollgate-dropped-params", c->dropped);
}

/* ------------------------------------------------------------------------- events and records */

static void route_comment(call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void route_comment(call_t *c, const char *fmt, ...)
{
    if (!c->route_events || c->committed)
        return;
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* A full log only loses diagnostics, never content. */
    TG_IGNORE_RESULT(tg_sse_write_comment(&c->route_log, line));
}

static void emit_event(call_t *c, tg_event_kind_t kind, const tg_model_cfg_t *from, const tg_model_cfg_t *to,
                       const char *reason, int status, uint64_t added_us)
{
    tg_failover_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    tg_str_copy(ev.request_id, sizeof(ev.request_id), c->request_id);
    ev.tenant_id = c->principal.tenant_id;
    tg_str_copy(ev.chain, sizeof(ev.chain), c->route.name);
    tg_str_copy(ev.from_target, sizeof(ev.from_target), from != NULL ? from->target_key : NULL);
    tg_str_copy(ev.to_target, sizeof(ev.to_target), to != NULL ? to->target_key : NULL);
    tg_str_copy(ev.reason, sizeof(ev.reason), reason);
    ev.status = status;
    ev.added_latency_us = added_us;
    ev.at_unix_ms = unix_ms();
    tg_events_emit(&ev);
}

/* Route comments for plan records added since the last look (skips and failed attempts). */
static void note_new_recs(call_t *c)
{
    for (; c->recs_seen < c->plan.n_recs; c->recs_seen++) {
        const tg_attempt_rec_t *r = &c->plan.recs[c->recs_seen];
        if (r->target == NULL)
            continue;
        if (r->skipped)
            route_comment(c, "tollgate skipped %s breaker_open", r->target->target_key);
        else if (r->out.cls != TG_OUTCOME_SUCCESS && r->out.cls != TG_OUTCOME_CALLER)
            route_comment(c, "tollgate failed %s %s %d", r->target->target_key, r->out.reason, r->out.status);
    }
}

/* Once the plan has ended (served, failed, or its client left): its failover events, once. */
static void plan_events(call_t *c)
{
    if (c->events_done || c->plan.n_recs == 0)
        return;
    c->events_done = true;
    tg_plan_emit_events(&c->plan, c->request_id, c->principal.tenant_id, c->route.name, 0);
}

static void record_failure(call_t *c, const tg_classified_t *cls)
{
    uint64_t lat = tg_now_us() - c->attempt_start_us;
    c->attempt_open = false;
    tg_plan_record(&c->plan, tg_now_ms(), cls, lat); /* also observes the attempt histogram */
    TG_LOG(TG_LOG_WARN, "upstream_attempt_failed", TG_KV_STR("request_id", c->request_id),
           TG_KV_STR("target", c->target->target_key), TG_KV_STR("outcome", tg_outcome_name(cls->cls)),
           TG_KV_STR("reason", cls->reason), TG_KV_INT("http_status", cls->status),
           TG_KV_INT("latency_us", lat));
}

/* The attempt serves the client: latency (TTFT for streams, total otherwise) feeds the breaker. */
static void record_success(call_t *c)
{
    uint64_t now = tg_now_us();
    uint64_t lat = now - c->attempt_start_us;
    tg_classified_t cls = {.cls = TG_OUTCOME_SUCCESS, .status = c->up_status, .retry_after_ms = -1};
    snprintf(cls.reason, sizeof(cls.reason), "ok");
    c->attempt_open = false;
    /* the planner feeds the latency to the breaker and observes the attempt histogram; a stream's
     * verdict for the breaker waits for its end (tg_plan_settle) */
    if (c->stream)
        tg_plan_record_stream_start(&c->plan, tg_now_ms(), &cls, lat);
    else
        tg_plan_record(&c->plan, tg_now_ms(), &cls, lat);
    c->served = c->target;
    note_new_recs(c);
    plan_events(c);
    route_comment(c, "tollgate served %s", c->served->target_key);
}

/* ---------------------------------------------------------------------------- stream relay */

static void flush(call_t *c)
{
    h2o_timeout_unlink(&c->flush_entry); /* this flush takes what a deferred one would have */
    if (c->req == NULL || !c->committed || c->inflight.len != 0)
        return; /* h2o still owns the previous piece: proceed calls us again */
    if (c->pending.len == 0 && !c->finishing)
        return;
    tg_buf_t t = c->inflight;
    c->inflight = c->pending;
    c->pending = t;
    h2o_iovec_t v = h2o_iovec_init(c->inflight.data, c->inflight.len);
    if (c->finishing) {
        /* The call stays alive (guard reference) until h2o disposes the request, so inflight
         * remains valid for as long as h2o writes it. */
        send_final(c, &v, v.len != 0 ? 1 : 0, c->send_error ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
        return;
    }
    h2o_send(c->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
}

/* Stream output leaves once per loop turn: what one read of the upstream socket produced, and
 * the end of the stream when it came with it, go out in one h2o_send (one write, one packet to
 * the client) instead of one per curl callback. The zero-duration list runs in the same loop turn,
 * after the socket callbacks, so nothing waits for another epoll round. */
static __thread h2o_loop_t *flush_loop;
static __thread h2o_timeout_t flush_list;

static void on_flush_due(h2o_timeout_entry_t *e)
{
    call_t *c = H2O_STRUCT_FROM_MEMBER(call_t, flush_entry, e);
    call_ref(c);
    flush(c);
    call_unref(c);
}

static void flush_soon(call_t *c)
{
    if (h2o_timeout_is_linked(&c->flush_entry))
        return;
    h2o_loop_t *loop = c->worker->ctx.loop;
    if (flush_loop != loop) {
        h2o_timeout_init(loop, &flush_list, 0);
        flush_loop = loop;
    }
    c->flush_entry.cb = on_flush_due;
    h2o_timeout_link(loop, &flush_list, &c->flush_entry);
}

static void gen_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    call_t *c = H2O_STRUCT_FROM_MEMBER(call_t, gen, gen);
    if (c->req == NULL)
        return;
    tg_buf_reset(&c->inflight);
    call_ref(c);
    if (c->paused && c->transfer != NULL && c->pending.len < c->cfg->stream_buffer_bytes / 4) {
        c->paused = false;
        tg_transfer_resume(c->transfer); /* may deliver data (and flush) synchronously */
    }
    flush(c);
    call_unref(c);
}

/* The point of no return for a stream: status and headers go out with the first send. */
static void commit_stream(call_t *c)
{
    record_success(c);
    h2o_req_t *req = c->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    add_route_headers(c);
    c->status = 200;
    c->gen.proceed = gen_proceed;
    c->gen.stop = gen_stop;
    h2o_start_response(req, &c->gen);
    c->committed = true;
    h2o_timeout_unlink(&c->poll_entry); /* from now on a hang-up shows as a failed write */
    if (c->route_events && c->route_log.len > 0) {
        /* pending is empty here: the comments precede the first content chunk */
        if (tg_buf_append(&c->pending, c->route_log.data, c->route_log.len) != 0)
            tg_buf_reset(&c->pending);
    }
}

static int on_chunk(void *ud, json_t *chunk)
{
    call_t *c = ud;
    json_t *copy = NULL;
    json_t *out = chunk;
    if (!c->client_usage && json_object_get(chunk, "usage") != NULL) {
        /* The client did not ask for usage: strip it, and drop a chunk left with nothing else.
         * The chunk is borrowed, so a shallow copy is edited instead. */
        copy = json_copy(chunk);
        if (copy == NULL) {
            c->stream_rc = TG_ENOMEM;
            return -1;
        }
        json_object_del(copy, "usage");
        out = copy;
        if (json_array_size(json_object_get(out, "choices")) == 0) {
            json_decref(copy);
            return 0;
        }
    }
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(copy);
    if (s == NULL) {
        c->stream_rc = TG_ENOMEM;
        return -1;
    }
    if (!c->committed)
        commit_stream(c);
    int rc = tg_sse_write_data(&c->pending, s, strlen(s));
    free(s);
    if (rc != 0) {
        c->stream_rc = rc;
        return -1;
    }
    return 0;
}

static int on_sse_event(void *ud, const tg_sse_event_t *ev)
{
    call_t *c = ud;
    if (c->ended)
        return 0; /* anything after the provider's end signal is ignored */
    if (c->adapter->kind == TG_KIND_OPENAI && c->st != NULL && c->stream_rc == 0) {
        /* Pass-through chunks are spliced, not parsed and re-serialised (openai.c). */
        bool drop = false;
        tg_buf_reset(&c->scratch);
        int prc = tg_openai_stream_passthrough(c->resp_in.model, ev->data, ev->data_len, c->client_usage,
                                               &c->scratch, &drop, &c->usage);
        if (prc == 0) {
            if (drop)
                return 0;
            if (!c->committed)
                commit_stream(c);
            int wrc = tg_sse_write_data(&c->pending, c->scratch.data, c->scratch.len);
            if (wrc != 0) {
                c->stream_rc = wrc;
                return wrc;
            }
            return 0;
        }
    }
    int rc = c->adapter->stream_event(c->st, ev, on_chunk, c, &c->usage, &c->stream_err);
    if (rc == 1) {
        c->ended = true;
        if (!c->committed)
            commit_stream(c); /* a stream with no content chunk: still a whole, valid answer */
        if (tg_sse_write_done(&c->pending) != 0) {
            c->stream_rc = TG_ETOO_LARGE;
            return TG_ETOO_LARGE;
        }
        return 0;
    }
    if (rc < 0 || c->stream_rc != 0) {
        if (c->stream_rc == 0)
            c->stream_rc = rc;
        return c->stream_rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------ transfer callbacks */

static void on_head(void *ud, int status, const char *content_type, const char *retry_after)
{
    call_t *c = ud;
    c->up_status = status;
    if (retry_after != NULL) {
        snprintf(c->retry_after, sizeof(c->retry_after), "%s", retry_after);
        c->has_retry_after = true;
    }
    if (status / 100 == 2 && c->stream) {
        tg_sse_parser_init(&c->sse, c->cfg->max_sse_event_bytes);
        c->sse_live = true;
        c->resp_in.model = c->target->name;
        c->resp_in.request_id = c->request_id;
        c->resp_in.created = tg_unix_now();
        c->st = c->adapter->stream_create(&c->resp_in);
        if (c->st == NULL)
            c->stream_rc = TG_ENOMEM;
    }
}

static int on_data(void *ud, const char *p, size_t n)
{
    call_t *c = ud;
    if (c->up_status / 100 != 2) {
        /* error body: only read for classification, so a long one is cut, not failed */
        size_t room = c->body_buf.len < CHAT_ERROR_BODY_MAX ? CHAT_ERROR_BODY_MAX - c->body_buf.len : 0;
        TG_IGNORE_RESULT(tg_buf_append(&c->body_buf, p, n < room ? n : room));
        return 0;
    }
    if (!c->stream) {
        if (tg_buf_append(&c->body_buf, p, n) != 0) {
            c->body_overflow = true;
            return -1;
        }
        return 0;
    }
    if (c->stream_rc != 0)
        return -1;
    if (c->ended)
        return 0;
    int rc = tg_sse_parser_feed(&c->sse, p, n, on_sse_event, c);
    if (rc != 0 && c->stream_rc == 0)
        c->stream_rc = rc < 0 ? rc : TG_EUPSTREAM_PROTOCOL;
    if (c->stream_rc != 0)
        return -1; /* on_done follows and decides: failover or an error event */
    if (c->committed && c->pending.len > 0)
        flush_soon(c);
    if (c->committed && c->pending.len > c->cfg->stream_buffer_bytes) {
        c->paused = true; /* this chunk is consumed; the transfer pauses until proceed drains us */
        return 1;
    }
    return 0;
}

/* A stream that breaks after the first byte: an error event, no [DONE], a clean end. */
static void end_broken_stream(call_t *c, const char *why)
{
    tg_buf_t ev;
    tg_buf_init(&ev, 1024);
    c->mid_stream_failed = true;
    if (tg_http_error_json(&ev, tg_err_public_msg(TG_ESTREAM_BROKEN), "upstream_error", "stream_broken",
                           NULL) != 0 ||
        tg_sse_write_data(&c->pending, ev.data, ev.len) != 0)
        c->send_error = true; /* could not say it: abort the response so it cannot look whole */
    tg_buf_dispose(&ev);
    char reason[40];
    snprintf(reason, sizeof(reason), "mid_stream:%s", why);
    /* a provider that cuts its streams must trip its breaker like one that fails them outright */
    tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_FAILURE);
    emit_event(c, TG_EV_FAILED, c->served, NULL, reason, c->up_status, tg_now_us() - c->start_us);
    TG_LOG(TG_LOG_WARN, "stream_broken", TG_KV_STR("request_id", c->request_id),
           TG_KV_STR("target", c->served->target_key), TG_KV_STR("reason", why),
           TG_KV_INT("completion_tokens", c->usage.completion_tokens));
    c->finishing = true;
    flush(c);
}

static const char *stream_fail_reason(call_t *c, int rc, const char *timeout_kind, tg_classified_t *cls)
{
    memset(cls, 0, sizeof(*cls));
    cls->retry_after_ms = -1;
    if (c->stream_rc == TG_EUPSTREAM_FAILED) {
        /* an error event from the provider inside the stream */
        cls->cls = TG_OUTCOME_SERVER;
        cls->status = c->up_status;
        snprintf(cls->reason, sizeof(cls->reason), "stream_error");
        snprintf(cls->type, sizeof(cls->type), "upstream_error");
        snprintf(cls->code, sizeof(cls->code), "upstream_failed");
        snprintf(cls->message, sizeof(cls->message), "%s", tg_err_public_msg(TG_EUPSTREAM_FAILED));
    } else if (c->stream_rc != 0) {
        tg_classify_transport(TG_EUPSTREAM_PROTOCOL, NULL, cls);
        snprintf(cls->reason, sizeof(cls->reason), "%s",
                 c->stream_rc == TG_ETOO_LARGE ? "stream_event_too_large" : "stream_malformed");
    } else if (rc != 0) {
        tg_classify_transport(rc, timeout_kind, cls);
    } else {
        tg_classify_transport(TG_ESTREAM_BROKEN, NULL, cls);
        snprintf(cls->reason, sizeof(cls->reason), "stream_truncated");
    }
    return cls->reason;
}

static void finish_non_stream(call_t *c)
{
    if (c->adapter->kind == TG_KIND_OPENAI) {
        /* Pass-through: validate and read usage without a tree, send the provider's bytes. */
        tg_buf_t out;
        bool same = false;
        tg_buf_init(&out, c->body_buf.len + 1024);
        int prc =
            tg_openai_passthrough(&c->resp_in, c->body_buf.data, c->body_buf.len, &out, &same, &c->usage);
        if (prc == 0) {
            record_success(c);
            add_route_headers(c);
            if (same)
                respond_raw(c, 200, c->body_buf.data, c->body_buf.len);
            else
                respond_raw(c, 200, out.data, out.len);
            tg_buf_dispose(&out);
            return;
        }
        tg_buf_dispose(&out); /* anything unusual: the generic path below decides */
    }
    json_t *resp = NULL;
    tg_error_t err = {0};
    int rc = c->adapter->parse_response(&c->resp_in, c->body_buf.data != NULL ? c->body_buf.data : "",
                                        c->body_buf.len, &resp, &c->usage, &err);
    if (rc != 0 || resp == NULL) {
        json_decref(resp);
        tg_classified_t cls;
        tg_classify_transport(TG_EUPSTREAM_PROTOCOL, NULL, &cls);
        snprintf(cls.reason, sizeof(cls.reason), "bad_response");
        record_failure(c, &cls);
        drive(c);
        return;
    }
    char *s = json_dumps(resp, JSON_COMPACT);
    json_decref(resp);
    if (s == NULL) {
        respond_error(c, TG_ENOMEM, NULL, NULL, 0);
        return;
    }
    record_success(c);
    add_route_headers(c);
    respond_raw(c, 200, s, strlen(s));
    free(s);
}

static void on_done(void *ud, int rc, const char *timeout_kind)
{
    call_t *c = ud;
    c->transfer = NULL;
    if (c->req == NULL)
        return; /* cannot happen: abandon() cancels first */
    call_ref(c);
    tg_classified_t cls;
    if (c->committed) {
        if (c->ended && c->stream_rc == 0) {
            tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_SUCCESS);
            c->finishing = true;
            flush(c);
        } else {
            end_broken_stream(c, stream_fail_reason(c, rc, timeout_kind, &cls));
        }
    } else if (c->up_status / 100 == 2) {
        if (c->stream) {
            stream_fail_reason(c, rc, timeout_kind, &cls);
            record_failure(c, &cls);
            drive(c);
        } else if (rc != 0 || c->body_overflow) {
            tg_classify_transport(c->body_overflow ? TG_EUPSTREAM_PROTOCOL : rc, timeout_kind, &cls);
            if (c->body_overflow)
                snprintf(cls.reason, sizeof(cls.reason), "response_too_large");
            record_failure(c, &cls);
            drive(c);
        } else {
            c->resp_in.model = c->target->name;
            c->resp_in.request_id = c->request_id;
            c->resp_in.created = tg_unix_now();
            finish_non_stream(c);
        }
    } else if (c->up_status > 0) {
        c->adapter->classify(c->up_status, c->has_retry_after ? c->retry_after : NULL,
                             c->body_buf.data != NULL ? c->body_buf.data : "", c->body_buf.len, &cls);
        record_failure(c, &cls);
        drive(c);
    } else {
        tg_classify_transport(rc != 0 ? rc : TG_EUPSTREAM_FAILED, timeout_kind, &cls);
        record_failure(c, &cls);
        drive(c);
    }
    call_unref(c);
}

static const tg_transfer_cbs_t transfer_cbs = {.on_head = on_head, .on_data = on_data, .on_done = on_done};

/* ----------------------------------------------------------------------------- the attempt loop */

/* Starts an attempt; returns 0 when the transfer runs, or records the failure and returns -1. */
static int start_attempt(call_t *c, const tg_model_cfg_t *target)
{
    tg_classified_t cls;
    reset_attempt(c);
    c->target = target;
    c->adapter = tg_adapter_for(target->provider->kind);
    c->attempt_start_us = tg_now_us();
    c->attempt_open = true;
    route_comment(c, "tollgate trying %s", target->target_key);
    if (c->adapter == NULL) {
        tg_classify_transport(TG_EINTERNAL, NULL, &cls);
        snprintf(cls.reason, sizeof(cls.reason), "no_adapter");
        record_failure(c, &cls);
        return -1;
    }

    tg_upstream_req_t ureq;
    memset(&ureq, 0, sizeof(ureq));
    tg_build_in_t in = {.provider = target->provider,
                        .upstream_model = target->upstream,
                        .api_key = target->provider->api_key,
                        .stream = c->stream,
                        .raw = c->req != NULL ? c->req->entity.base : NULL,
                        .raw_len = c->req != NULL ? c->req->entity.len : 0};
    tg_error_t err = {0};
    int rc = tg_prov_build_bounded(c->adapter, &in, c->body, c->cfg->body_memory_factor, &ureq, &err);
    if (rc != 0) {
        tg_upstream_req_dispose(&ureq);
        memset(&cls, 0, sizeof(cls));
        cls.retry_after_ms = -1;
        if (rc == TG_EINVALID_REQUEST || rc == TG_EUNSUPPORTED_PARAM || rc == TG_EBODY_TOO_COMPLEX) {
            /* the request cannot be expressed for this provider: the caller's error */
            cls.cls = TG_OUTCOME_CALLER;
            cls.status = tg_err_http_status(rc);
            snprintf(cls.reason, sizeof(cls.reason), "invalid_request");
            snprintf(cls.type, sizeof(cls.type), "invalid_request_error");
            snprintf(cls.code, sizeof(cls.code), "%s", tg_err_code(rc));
            snprintf(cls.message, sizeof(cls.message), "%s",
                     err.detail[0] != '\0' ? err.detail : tg_err_public_msg(rc));
        } else {
            tg_classify_transport(TG_EINTERNAL, NULL, &cls);
            snprintf(cls.reason, sizeof(cls.reason), "build_failed");
        }
        record_failure(c, &cls);
        return -1;
    }
    snprintf(c->dropped, sizeof(c->dropped), "%s", ureq.dropped);
    if (ureq.body != NULL && ureq.body_len > c->cfg->max_body_bytes * 4 + 65536) {
        /* translation cannot blow a request up this much; refuse rather than send it */
        tg_upstream_req_dispose(&ureq);
        tg_classify_transport(TG_EINTERNAL, NULL, &cls);
        snprintf(cls.reason, sizeof(cls.reason), "build_failed");
        record_failure(c, &cls);
        return -1;
    }
    c->transfer =
        tg_transfer_start(c->worker->upstream, &ureq, &target->provider->timeouts, &transfer_cbs, c);
    if (c->transfer == NULL) {
        tg_classify_transport(TG_EUPSTREAM_UNREACHABLE, NULL, &cls);
        snprintf(cls.reason, sizeof(cls.reason), "start_failed");
        record_failure(c, &cls);
        return -1;
    }
    return 0;
}

/* One zero-duration timeout list per loop thread, entries kept sorted by deadline: h2o 2.2.5
 * timeouts have one fixed duration per list, and Retry-After waits vary (c-stack.md 3.3). */
static __thread h2o_loop_t *wait_loop;
static __thread h2o_timeout_t wait_list;

static void on_wait_done(h2o_timeout_entry_t *e)
{
    call_t *c = H2O_STRUCT_FROM_MEMBER(call_t, wait_entry, e);
    call_ref(c);
    tg_plan_waited(&c->plan, c->wait_ms);
    drive(c);
    call_unref(c);
}

static void arm_wait(call_t *c, uint32_t ms)
{
    h2o_loop_t *loop = c->worker->ctx.loop;
    if (wait_loop != loop) {
        h2o_timeout_init(loop, &wait_list, 0);
        wait_loop = loop;
    }
    c->wait_ms = ms;
    c->wait_entry.cb = on_wait_done;
    h2o_timeout_link(loop, &wait_list, &c->wait_entry);
    uint64_t deadline = h2o_now(loop) + ms;
    c->wait_entry.registered_at = deadline;
    /* move the entry (appended last) before the first one that expires later */
    h2o_linklist_unlink(&c->wait_entry._link);
    h2o_linklist_t *pos = wait_list._entries.next;
    while (pos != &wait_list._entries &&
           H2O_STRUCT_FROM_MEMBER(h2o_timeout_entry_t, _link, pos)->registered_at <= deadline)
        pos = pos->next;
    h2o_linklist_insert(pos, &c->wait_entry._link);
}

/*
 * A chain whose only attempt failed below HTTP (unreachable, timed out, unreadable answer) and
 * skipped nothing answers with that failure's own status (502/504, issue #2), not the planner's
 * 503: there was no failover to report. Returns the TG_E* code, or 0 when the planner's answer
 * applies (HTTP errors from the provider, several attempts, skips, caller errors).
 */
static int single_transport_failure(const tg_plan_t *p, const tg_attempt_rec_t **rec)
{
    const tg_attempt_rec_t *only = NULL;
    for (size_t i = 0; i < p->n_recs; i++) {
        if (p->recs[i].skipped || only != NULL)
            return 0;
        only = &p->recs[i];
    }
    if (only == NULL)
        return 0;
    *rec = only;
    if (only->out.cls == TG_OUTCOME_TIMEOUT)
        return TG_EUPSTREAM_TIMEOUT;
    if (only->out.cls != TG_OUTCOME_TRANSPORT || only->out.status != 0)
        return 0;
    return strcmp(only->out.reason, "connect_error") == 0 ? TG_EUPSTREAM_UNREACHABLE : TG_EUPSTREAM_PROTOCOL;
}

/* Failed answers name the last target tried (or skipped), so a client can tell where it failed. */
static void add_failure_headers(call_t *c)
{
    const tg_model_cfg_t *m = c->plan.n_recs > 0 ? c->plan.recs[c->plan.n_recs - 1].target : NULL;
    if (m == NULL && c->route.n_targets > 0)
        m = c->route.targets[0];
    if (c->req == NULL || m == NULL)
        return;
    tg_http_add_header(c->req, "x-tollgate-model", m->name);
    tg_http_add_header(c->req, "x-tollgate-provider", m->provider->name);
    add_header_u(c->req, "x-tollgate-attempts", (unsigned long)tg_plan_attempt_count(&c->plan));
}

static void respond_plan_failure(call_t *c)
{
    add_failure_headers(c);
    const tg_attempt_rec_t *rec = NULL;
    int terr = single_transport_failure(&c->plan, &rec);
    if (terr != 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s (%s)", tg_err_public_msg(terr), rec->out.reason);
        respond_error(c, terr, msg, NULL, 0);
        return;
    }
    int status = 503;
    uint32_t retry_after_s = 0;
    tg_buf_t body;
    tg_buf_init(&body, 16384);
    if (tg_plan_final_error(&c->plan, tg_now_ms(), &status, &body, &retry_after_s) != 0 || body.len == 0) {
        tg_buf_dispose(&body);
        respond_error(c, TG_ENO_TARGET, NULL, NULL, 0);
        return;
    }
    if (c->req != NULL && retry_after_s > 0)
        add_header_u(c->req, "retry-after", retry_after_s);
    respond_raw(c, status, body.data, body.len);
    tg_buf_dispose(&body);
}

static void drive(call_t *c)
{
    for (int steps = 0; c->req != NULL; steps++) {
        if (steps == CHAT_MAX_STEPS) {
            respond_error(c, TG_EINTERNAL, NULL, NULL, 0);
            return;
        }
        tg_step_t step = tg_plan_next(&c->plan, tg_now_ms());
        switch (step.kind) {
        case TG_STEP_ATTEMPT:
            note_new_recs(c);
            if (start_attempt(c, step.target) == 0)
                return;
            break; /* recorded as failed: ask the plan again */
        case TG_STEP_WAIT:
            arm_wait(c, step.wait_ms);
            return;
        case TG_STEP_FAIL:
            note_new_recs(c);
            plan_events(c);
            respond_plan_failure(c);
            return;
        }
    }
}

/*
 * h2o 2.2.5 stops reading an HTTP/1 connection while its request is being handled, so a client
 * that hangs up before the answer starts goes unnoticed until we write, possibly a whole
 * first-byte timeout later, holding an upstream transfer (and counting against a breaker) for
 * nothing. Until the answer starts, peek at the socket now and then: EOF or a reset means the
 * client is gone. HTTP/2 needs none of this: h2o sees RST_STREAM and disposes the request.
 */
static __thread h2o_loop_t *poll_loop;
static __thread h2o_timeout_t poll_list;

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

static void arm_poll(call_t *c)
{
    h2o_loop_t *loop = c->worker->ctx.loop;
    if (c->req == NULL || c->req->version >= 0x200 || c->committed || h2o_timeout_is_linked(&c->poll_entry))
        return;
    if (poll_loop != loop) {
        h2o_timeout_init(loop, &poll_list, CHAT_CLIENT_POLL_MS);
        poll_loop = loop;
    }
    c->poll_entry.cb = poll_client;
    h2o_timeout_link(loop, &poll_list, &c->poll_entry);
}

static void poll_client(h2o_timeout_entry_t *e)
{
    call_t *c = H2O_STRUCT_FROM_MEMBER(call_t, poll_entry, e);
    if (c->req == NULL || c->committed)
        return;
    if (!client_hung_up(c->req)) {
        arm_poll(c);
        return;
    }
    /* Stop the work first, then answer into the closed socket so h2o tears the request down. */
    h2o_req_t *req = c->req;
    call_ref(c);
    abandon(c);
    c->status = 499;
    static const char body[] =
        "{\"error\":{\"message\":\"client closed the request\",\"type\":\"invalid_request_error\","
        "\"code\":\"client_closed\",\"param\":null}}";
    tg_http_send_raw_json(req, 499, body, sizeof(body) - 1);
    call_unref(c);
}

/* ----------------------------------------------------------------------------------- handlers */

static void start_chat(call_t *c)
{
    h2o_req_t *req = c->req;
    json_error_t jerr;
    int jrc;
    size_t budget = tg_jsonmem_budget(req->entity.len, c->cfg->body_memory_factor);
    c->body = tg_json_load_bounded(req->entity.base != NULL ? req->entity.base : "", req->entity.len, budget,
                                   JSON_REJECT_DUPLICATES, &jerr, &jrc, NULL);
    if (c->body == NULL) {
        if (jrc == TG_EBODY_TOO_COMPLEX)
            tg_jsonmem_explain(jerr.text, sizeof(jerr.text), req->entity.len, c->cfg->body_memory_factor);
        respond_error(c, jrc, jerr.text, NULL, 0);
        return;
    }
    if (!json_is_object(c->body)) {
        respond_error(c, TG_EINVALID_REQUEST, "request body must be a JSON object", NULL, 0);
        return;
    }
    /* A per-request chain may stand in for "model"; the canonical format still wants one. */
    json_t *models = json_object_get(c->body, "models");
    if (json_object_get(c->body, "model") == NULL && json_is_string(json_array_get(models, 0)))
        json_object_set(c->body, "model", json_array_get(models, 0));

    char param[128] = "";
    tg_error_t err = {0};
    if (tg_canon_validate(c->body, param, sizeof(param), &err) != 0) {
        respond_error(c, TG_EINVALID_REQUEST, err.detail[0] != '\0' ? err.detail : NULL,
                      param[0] != '\0' ? param : NULL, 0);
        return;
    }
    c->stream = json_is_true(json_object_get(c->body, "stream"));
    c->client_usage = c->stream && json_is_true(json_object_get(json_object_get(c->body, "stream_options"),
                                                                "include_usage"));
    const h2o_iovec_t *re = tg_http_header(req, "x-tollgate-route-events");
    c->route_events = c->stream && re != NULL && re->len == 4 && strncasecmp(re->base, "true", 4) == 0;

    if (tg_router_resolve(c->cfg, c->body, &c->route, param, sizeof(param), &err) != 0) {
        respond_error(c, err.code != 0 ? err.code : TG_EINVALID_REQUEST,
                      err.detail[0] != '\0' ? err.detail : NULL, param[0] != '\0' ? param : NULL, 0);
        return;
    }
    json_object_del(c->body, "models"); /* tollgate's own field: never sent upstream */

    for (size_t i = 0; i < c->route.n_targets; i++)
        c->breakers[i] =
            tg_breaker_get(c->route.targets[i]->target_key, &c->route.targets[i]->provider->breaker);
    const tg_model_cfg_t *cf = c->route.context_fallback;
    if (cf != NULL)
        c->ctx_breaker = tg_breaker_get(cf->target_key, &cf->provider->breaker);
    tg_plan_opts_t opts = {.max_attempts_per_target = c->cfg->max_attempts_per_target,
                           .retry_wait_cap_ms = c->cfg->retry_wait_cap_ms,
                           .short_wait_ms = CHAT_SHORT_WAIT_MS};
    tg_plan_init(&c->plan, c->route.targets, c->breakers, c->route.n_targets, cf, c->ctx_breaker, &opts);
    drive(c);
}

static void send_models(call_t *c)
{
    json_t *data = json_array();
    json_t *root = json_pack("{s:s,s:o}", "object", "list", "data", data);
    if (root == NULL) {
        respond_error(c, TG_ENOMEM, NULL, NULL, 0);
        return;
    }
    for (size_t i = 0; i < c->cfg->n_models; i++)
        json_array_append_new(data,
                              json_pack("{s:s,s:s,s:i,s:s}", "id", c->cfg->models[i].name, "object", "model",
                                        "created", 0, "owned_by", c->cfg->models[i].provider->name));
    for (size_t i = 0; i < c->cfg->n_chains; i++)
        json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id", c->cfg->chains[i].name, "object",
                                              "model", "created", 0, "owned_by", "tollgate"));
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL) {
        respond_error(c, TG_ENOMEM, NULL, NULL, 0);
        return;
    }
    respond_raw(c, 200, s, strlen(s));
    free(s);
}

static void authenticated(call_t *c)
{
    if (c->kind == CALL_MODELS)
        send_models(c);
    else
        start_chat(c);
}

static void on_auth(void *arg, int rc, const tg_principal_t *p)
{
    call_t *c = arg;
    if (c->req != NULL) {
        if (rc == 0 && p != NULL) {
            c->principal = *p;
            authenticated(c);
        } else {
            respond_error(c, rc == TG_EDB_UNAVAILABLE ? TG_EDB_UNAVAILABLE : TG_EUNAUTHENTICATED, NULL, NULL,
                          0);
        }
    }
    call_unref(c); /* the lookup's reference */
}

static void authenticate(call_t *c)
{
    const h2o_iovec_t *h = tg_http_header(c->req, "authorization");
    if (h == NULL || h->len <= 7 || strncasecmp(h->base, "Bearer ", 7) != 0) {
        respond_error(c, TG_EUNAUTHENTICATED, NULL, NULL, 0);
        return;
    }
    const char *key = h->base + 7;
    size_t len = h->len - 7;
    while (len > 0 && *key == ' ')
        key++, len--;
    while (len > 0 && key[len - 1] == ' ')
        len--;
    call_ref(c); /* held by the lookup until its callback (if one comes) */
    int rc = tg_auth_lookup(c->worker->pg, c->cfg->key_pepper, c->cfg->key_cache_ttl_ms, tg_now_ms(), key,
                            len, &c->principal, on_auth, c);
    if (rc == 0)
        return; /* on_auth follows */
    if (rc == 1)
        authenticated(c);
    else
        respond_error(c, rc == TG_EDB_UNAVAILABLE ? TG_EDB_UNAVAILABLE : TG_EUNAUTHENTICATED, NULL, NULL, 0);
    call_unref(c);
}

static int handle(h2o_req_t *req, call_kind_t kind)
{
    char rid[TG_REQUEST_ID_LEN + 1];
    tg_request_id(rid);
    tg_http_add_header(req, "x-tollgate-request-id", rid);

    call_t *c = call_alloc();
    call_guard_t *g = c != NULL ? h2o_mem_alloc_shared(&req->pool, sizeof(*g), on_guard_dispose) : NULL;
    if (g == NULL) {
        if (c != NULL)
            call_free(c);
        tg_http_send_error(req, TG_ENOMEM, NULL, NULL, 1);
        return 0;
    }
    g->call = c;
    c->guard = g;
    c->refs = 1; /* the request's, dropped by on_guard_dispose */
    c->kind = kind;
    c->req = req;
    c->worker = tg_worker_of(req);
    c->worker->inflight++;
    c->start_us = tg_now_us();
    memcpy(c->request_id, rid, sizeof(rid));
    c->cfg = tg_config_acquire();
    tg_buf_init(&c->route_log, CHAT_ROUTE_LOG_MAX);
    /* limits of this snapshot, fixed for the call's life; the pending buffer holds the pause
     * threshold plus room for what one more upstream chunk can produce */
    size_t max_up = c->cfg != NULL ? c->cfg->max_upstream_body_bytes : 0;
    size_t pend_max = c->cfg != NULL ? c->cfg->stream_buffer_bytes + 2 * c->cfg->max_sse_event_bytes +
                                           CHAT_ROUTE_LOG_MAX + 65536
                                     : 0;
    tg_buf_init(&c->body_buf, max_up > CHAT_ERROR_BODY_MAX ? max_up : CHAT_ERROR_BODY_MAX);
    tg_buf_init(&c->pending, pend_max);
    tg_buf_init(&c->inflight, pend_max);
    tg_buf_init(&c->scratch, c->cfg != NULL ? c->cfg->max_sse_event_bytes + 1024 : 0);

    if (tg_server_draining()) {
        respond_error(c, TG_ESHUTTING_DOWN, NULL, NULL, 1);
        return 0;
    }
    if (c->cfg == NULL) {
        respond_error(c, TG_ECONFIG, NULL, NULL, 0);
        return 0;
    }
    if (kind == CALL_CHAT ? !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))
                          : !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        respond_error(c, TG_EMETHOD_NOT_ALLOWED, NULL, NULL, 0);
        return 0;
    }
    if (kind == CALL_CHAT)
        arm_poll(c);
    authenticate(c);
    return 0;
}

int tg_chat_handle(h2o_req_t *req)
{
    return handle(req, CALL_CHAT);
}

int tg_models_handle(h2o_req_t *req)
{
    return handle(req, CALL_MODELS);
}
