/*
 * relay.c - RELAY of a stream: upstream events become the client's SSE, with backpressure.
 *
 * The first chunk that carries something for the client (content, a tool call, a refusal, a
 * finish reason, usage) commits the response (status, headers, h2o_start_response): from then on
 * the call is in RELAY and nothing fails over. Opening chunks that carry nothing yet (OpenAI's
 * role chunk with empty content, Anthropic's message_start) are held until then, so a failure
 * between them and the first content still fails over, whatever the provider kind. Chunks are serialised into
 * `pending` (bounded); h2o owns `inflight` from h2o_send until proceed; the two swap. Above
 * limits.stream_buffer_bytes pending bytes the upstream transfer is paused, and resumed once
 * pending drains below a quarter of it.
 *
 * Output leaves once per loop turn: what one read of the upstream socket produced, and the end
 * of the stream when it came with it, go out in one h2o_send (one write, one packet to the
 * client) instead of one per curl callback. A zero-delay deadline runs in the same loop turn,
 * after the socket callbacks, so nothing waits for another epoll round.
 *
 * The RELAY stage is the pump: it hands what is pending to h2o and waits (pending) until the last
 * piece has been handed over; proceed, the end-of-turn flush and the transfer's end bring it back
 * through tg_call_resume.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "ledger.h"
#include "clock.h"
#include "err.h"
#include "events.h"
#include "log.h"
#include "retention.h"

/* ----------------------------------------------------------------------------- output */

/* Hands the last piece to h2o, once the call is charged. h2o may dispose req->pool inside h2o_send (running
 * the guard), so the back-pointer is cleared first and a reference keeps the call alive until we return. */
static void send_final(tg_call_t *c, h2o_iovec_t *bufs, size_t n, h2o_send_state_t state)
{
    tg_settle_charge(c); /* journaled before the stream's last bytes leave */
    h2o_req_t *req = c->req;
    c->req = NULL;
    c->final_sent = true;
    tg_call_ref(c);
    h2o_send(req, bufs, n, state);
    tg_call_unref(c);
}

void tg_relay_pump(tg_call_t *c)
{
    tg_deadline_cancel(&c->flush_due); /* this pump takes what a deferred one would have */
    if (c->req == NULL || !c->committed || c->final_sent || c->inflight.len != 0)
        return; /* h2o still owns the previous piece: proceed brings us back */
    if (c->paused && c->transfer != NULL && c->pending.len < c->cfg->stream_buffer_bytes / 4) {
        c->paused = false;
        tg_transfer_resume(c->transfer); /* may deliver data (into pending) synchronously */
    }
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

int tg_stage_relay(void *call)
{
    tg_call_t *c = call;
    if (!c->stream)
        return tg_respond_whole(c);
    tg_relay_pump(c);
    return c->final_sent || c->req == NULL ? TG_STAGE_GO : TG_STAGE_PENDING;
}

static void on_flush_due(tg_deadline_t *d)
{
    tg_call_t *c = H2O_STRUCT_FROM_MEMBER(tg_call_t, flush_due, d);
    tg_call_resume(c, TG_STAGE_RELAY, 0);
}

static void flush_soon(tg_call_t *c)
{
    if (!tg_deadline_armed(&c->flush_due))
        tg_deadline_arm(tg_call_flushes(c), &c->flush_due, 0, on_flush_due);
}

static void gen_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    tg_call_t *c = H2O_STRUCT_FROM_MEMBER(tg_call_t, gen, gen);
    tg_buf_reset(&c->inflight); /* h2o is done with it */
    tg_call_resume(c, TG_STAGE_RELAY, 0);
}

static void gen_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    tg_call_t *c = H2O_STRUCT_FROM_MEMBER(tg_call_t, gen, gen);
    /* After stop h2o must not be sent to again; the guard still holds the reference. */
    if (c->req != NULL)
        tg_call_gone(c);
}

/* ----------------------------------------------------------------------------- commit */

/* The point of no return for a stream: status and headers go out with the first send. */
static void commit_stream(tg_call_t *c)
{
    tg_attempt_served(c);
    h2o_req_t *req = c->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    tg_respond_route_headers(c);
    tg_ledger_headers(c, 200, false); /* x-tollgate-credits-remaining as the stream starts */
    c->status = 200;
    c->gen.proceed = gen_proceed;
    c->gen.stop = gen_stop;
    h2o_start_response(req, &c->gen);
    c->committed = true;
    tg_pipeline_enter(&c->pipe, TG_STAGE_RELAY);
    h2o_timeout_unlink(&c->poll_entry); /* from now on a hang-up shows as a failed write */
    if (c->route_events && c->route_log.len > 0) {
        /* pending is empty here: the comments precede the first content chunk */
        if (tg_buf_append(&c->pending, c->route_log.data, c->route_log.len) != 0)
            tg_buf_reset(&c->pending);
    }
    if (c->held.len > 0 && tg_buf_append(&c->pending, c->held.data, c->held.len) != 0)
        c->stream_rc = TG_ETOO_LARGE; /* cannot happen: pending's room is far above the held cap */
    tg_buf_reset(&c->held);
}

/* Whether a canonical chunk carries something for the client, or only opens the answer. */
static bool chunk_substantive(const json_t *chunk)
{
    const json_t *u = json_object_get(chunk, "usage");
    if (u != NULL && !json_is_null(u))
        return true;
    const json_t *ch;
    size_t i;
    json_array_foreach(json_object_get(chunk, "choices"), i, ch)
    {
        const json_t *delta = json_object_get(ch, "delta");
        const json_t *fr = json_object_get(ch, "finish_reason");
        if ((fr != NULL && !json_is_null(fr)) || json_string_length(json_object_get(delta, "content")) > 0 ||
            json_string_length(json_object_get(delta, "refusal")) > 0 ||
            json_array_size(json_object_get(delta, "tool_calls")) > 0)
            return true;
    }
    return false;
}

/* Before the commit, an opening chunk with nothing for the client waits in `held` (true when it
 * was taken); a full hold commits instead (it cannot fill with opening chunks alone). */
static bool hold(tg_call_t *c, const char *data, size_t len)
{
    return tg_sse_write_data(&c->held, data, len) == 0;
}

/* ------------------------------------------------------------------------------ input */

/*
 * What reached the client is counted as it goes (content, refusal and tool-call argument text; the
 * pass-through scan counts the bytes of those strings, openai.c), so a stream that ends without the
 * provider's usage (cut, drained, the client gone) is still charged for what it delivered (settle.c).
 */
static uint64_t chunk_chars(const json_t *chunk)
{
    uint64_t n = 0;
    const json_t *choices = json_object_get(chunk, "choices"), *ch;
    size_t i, j;
    json_array_foreach(choices, i, ch)
    {
        const json_t *delta = json_object_get(ch, "delta"), *tc;
        n += json_string_length(json_object_get(delta, "content")) +
             json_string_length(json_object_get(delta, "refusal"));
        json_array_foreach(json_object_get(delta, "tool_calls"), j, tc) n +=
            json_string_length(json_object_get(json_object_get(tc, "function"), "arguments"));
    }
    return n;
}

static int on_chunk(void *ud, json_t *chunk)
{
    tg_call_t *c = ud;
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
    int64_t cost;
    json_t *u = json_object_get(out, "usage");
    if (c->client_usage && json_is_object(u) && tg_ledger_usage_cost(c, &cost)) {
        /* the usage chunk says what the call costs (the chunk is borrowed: edit a copy) */
        copy = json_copy(chunk);
        json_t *uc = copy != NULL ? json_copy(u) : NULL;
        if (uc == NULL || json_object_set_new(uc, "cost", json_integer(cost)) != 0 ||
            json_object_set_new(copy, "usage", uc) != 0) {
            json_decref(copy);
            c->stream_rc = TG_ENOMEM;
            return -1;
        }
        out = copy;
    }
    char *s = json_dumps(out, JSON_COMPACT);
    json_decref(copy);
    if (s == NULL) {
        c->stream_rc = TG_ENOMEM;
        return -1;
    }
    if (!c->committed && !chunk_substantive(chunk) && hold(c, s, strlen(s))) {
        free(s);
        return 0;
    }
    if (!c->committed)
        commit_stream(c);
    int rc = tg_sse_write_data(&c->pending, s, strlen(s));
    tg_retention_capture(c, s, strlen(s)); /* nothing for a zero-retention call */
    free(s);
    c->delivered_chars += chunk_chars(chunk); /* `out` may be gone: same content */
    if (rc != 0) {
        c->stream_rc = rc;
        return -1;
    }
    return 0;
}

static int on_sse_event(void *ud, const tg_sse_event_t *ev)
{
    tg_call_t *c = ud;
    if (c->ended)
        return 0; /* anything after the provider's end signal is ignored */
    if (c->adapter->kind == TG_KIND_OPENAI && c->st != NULL && c->stream_rc == 0) {
        /* Pass-through chunks are spliced, not parsed and re-serialised (openai.c). */
        bool drop = false;
        tg_buf_reset(&c->scratch);
        tg_chunk_info_t info = {0};
        int prc = tg_openai_stream_passthrough(c->resp_in.model, ev->data, ev->data_len, c->client_usage,
                                               &c->scratch, &drop, &c->usage, &info);
        if (prc == 0) {
            if (drop)
                return 0;
            int64_t cost;
            if (c->client_usage && c->usage.present && tg_ledger_usage_cost(c, &cost) &&
                tg_ledger_splice_cost(&c->scratch, cost) != 0) {
                c->stream_rc = TG_ENOMEM;
                return TG_ENOMEM;
            }
            if (!c->committed && !info.substantive && hold(c, c->scratch.data, c->scratch.len))
                return 0;
            if (!c->committed)
                commit_stream(c);
            int wrc = tg_sse_write_data(&c->pending, c->scratch.data, c->scratch.len);
            tg_retention_capture(c, c->scratch.data, c->scratch.len);
            if (wrc != 0) {
                c->stream_rc = wrc;
                return wrc;
            }
            c->delivered_chars += info.text_bytes;
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

int tg_relay_feed(tg_call_t *c, const char *p, size_t n)
{
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

/* ------------------------------------------------------------------------------- end */

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A stream that breaks after the first byte: an error event, no [DONE], a clean end. */
static void end_broken(tg_call_t *c, const char *why, bool provider_fault)
{
    tg_buf_t ev;
    tg_buf_init(&ev, 1024);
    c->mid_stream_failed = true;
    int err = provider_fault ? TG_ESTREAM_BROKEN : TG_ESHUTTING_DOWN;
    if (tg_http_error_json(&ev, tg_err_public_msg(err), tg_err_type(err), tg_err_code(err), NULL) != 0 ||
        tg_sse_write_data(&c->pending, ev.data, ev.len) != 0)
        c->send_error = true; /* could not say it: abort the response so it cannot look whole */
    else
        tg_retention_capture(c, ev.data, ev.len);
    tg_buf_dispose(&ev);
    if (provider_fault) {
        /* a provider that cuts its streams must trip its breaker like one that fails them outright */
        tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_FAILURE);
        tg_failover_event_t fe;
        memset(&fe, 0, sizeof(fe));
        fe.kind = TG_EV_FAILED;
        tg_str_copy(fe.request_id, sizeof(fe.request_id), c->request_id);
        fe.tenant_id = c->principal.tenant_id;
        tg_str_copy(fe.chain, sizeof(fe.chain), c->route.name);
        tg_str_copy(fe.from_target, sizeof(fe.from_target), c->served->target_key);
        tg_str_copy(fe.reason, sizeof(fe.reason), why);
        fe.status = c->up_status;
        fe.added_latency_us = tg_now_us() - c->start_us;
        fe.at_unix_ms = unix_ms();
        tg_events_emit(&fe);
    }
    TG_LOG(TG_LOG_WARN, "stream_broken", TG_KV_STR("request_id", c->request_id),
           TG_KV_STR("target", c->served->target_key), TG_KV_STR("reason", why),
           TG_KV_INT("completion_tokens", c->usage.completion_tokens));
}

void tg_relay_end(tg_call_t *c, const char *why, bool provider_fault)
{
    if (c->finishing)
        return;
    if (why != NULL)
        end_broken(c, why, provider_fault);
    c->finishing = true;
}
