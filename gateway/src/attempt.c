/*
 * attempt.c - ATTEMPT ⇄ WAIT: the failover planner's steps, one upstream transfer at a time.
 *
 * ATTEMPT asks the planner what next: an attempt (the adapter builds the provider request, the
 * worker's upstream runs it: the stage waits for the transfer), a Retry-After wait (WAIT arms a
 * deadline), or the end of the plan (the call fails; respond.c words the answer from the plan).
 * The transfer's callbacks classify what came back: a failure goes back to ATTEMPT, a whole
 * answer to RELAY (respond.c), and a stream to relay.c from its first chunk on (relay.c commits
 * the response there, after which nothing fails over).
 *
 * Every outcome is recorded in the plan exactly once per attempt (attempt_open says whether one
 * is due): a failure here, a success when the answer starts, a neutral one when the call stops
 * while the attempt runs (a half-open probe slot must not leak because its client hung up).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "call_internal.h"
#include "clock.h"
#include "credential.h"
#include "err.h"
#include "log.h"
#include "retention.h"

/* ---------------------------------------------------------------- the attempt's state */

void tg_attempt_reset(tg_call_t *c)
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
    tg_buf_reset(&c->held); /* an attempt that fails before its commit sent nothing of them */
    c->body_overflow = false;
    c->up_status = 0;
    c->has_retry_after = false;
    c->retry_after[0] = '\0';
    c->stream_rc = 0;
    memset(&c->stream_err, 0, sizeof(c->stream_err));
    c->ended = false;
}

/* ------------------------------------------------------------------ events and records */

void tg_attempt_route_comment(tg_call_t *c, const char *fmt, ...)
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

/* Route comments for plan records added since the last look (skips and failed attempts). */
static void note_new_recs(tg_call_t *c)
{
    for (; c->recs_seen < c->plan.n_recs; c->recs_seen++) {
        const tg_attempt_rec_t *r = &c->plan.recs[c->recs_seen];
        if (r->target == NULL)
            continue;
        if (r->skipped)
            tg_attempt_route_comment(c, "tollgate skipped %s breaker_open", r->target->target_key);
        else if (r->out.cls != TG_OUTCOME_SUCCESS && r->out.cls != TG_OUTCOME_CALLER)
            tg_attempt_route_comment(c, "tollgate failed %s %s %d", r->target->target_key, r->out.reason,
                                     r->out.status);
    }
}

void tg_attempt_plan_events(tg_call_t *c)
{
    if (c->events_done || c->plan.n_recs == 0)
        return;
    c->events_done = true;
    tg_plan_emit_events(&c->plan, c->request_id, c->principal.tenant_id, c->route.name, 0);
}

static void record_failure(tg_call_t *c, const tg_classified_t *cls)
{
    uint64_t lat = tg_now_us() - c->attempt_start_us;
    c->attempt_open = false;
    /* the planner's next step reads the same clock: a millisecond tick between the two would cut
     * a Retry-After wait short by one */
    c->record_ms = tg_now_ms();
    tg_plan_record(&c->plan, c->record_ms, cls, lat); /* also observes the attempt histogram */
    TG_LOG(TG_LOG_WARN, "upstream_attempt_failed", TG_KV_STR("request_id", c->request_id),
           TG_KV_STR("target", c->target->target_key), TG_KV_STR("outcome", tg_outcome_name(cls->cls)),
           TG_KV_STR("reason", cls->reason), TG_KV_INT("http_status", cls->status),
           TG_KV_INT("latency_us", lat));
}

void tg_attempt_failed(tg_call_t *c, const tg_classified_t *cls)
{
    record_failure(c, cls);
}

/* A transfer that failed sends the call back to the planner. */
static void attempt_failed(tg_call_t *c, const tg_classified_t *cls)
{
    record_failure(c, cls);
    tg_call_resume(c, TG_STAGE_ATTEMPT, 0);
}

void tg_attempt_served(tg_call_t *c)
{
    uint64_t lat = tg_now_us() - c->attempt_start_us;
    tg_classified_t cls;
    tg_outcome_success(&cls, c->up_status);
    c->attempt_open = false;
    /* the planner feeds the latency (TTFT for streams, total otherwise) to the breaker and observes
     * the attempt histogram; a stream's verdict for the breaker waits for its end (tg_plan_settle) */
    if (c->stream)
        tg_plan_record_stream_start(&c->plan, tg_now_ms(), &cls, lat);
    else
        tg_plan_record(&c->plan, tg_now_ms(), &cls, lat);
    c->served = c->target;
    c->served_byok = c->attempt_byok;
    note_new_recs(c);
    tg_attempt_plan_events(c);
    tg_attempt_route_comment(c, "tollgate served %s", c->served->target_key);
}

void tg_attempt_stop(tg_call_t *c)
{
    if (c->transfer != NULL) {
        tg_transfer_cancel(c->transfer);
        c->transfer = NULL;
    }
    tg_deadline_cancel(&c->wait_due);
    if (c->attempt_open) {
        /* neutral: says nothing of the provider, but frees a half-open probe slot */
        tg_classified_t cls;
        tg_outcome_client_gone(&cls);
        c->attempt_open = false;
        tg_plan_record(&c->plan, tg_now_ms(), &cls, tg_now_us() - c->attempt_start_us);
        c->recs_seen = c->plan.n_recs;
    }
}

/* ------------------------------------------------------------------- transfer callbacks */

static void on_head(void *ud, int status, const char *content_type, const char *retry_after)
{
    (void)content_type;
    tg_call_t *c = ud;
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
    tg_call_t *c = ud;
    if (c->up_status / 100 != 2) {
        /* error body: only read for classification, so a long one is cut, not failed */
        size_t room = c->body_buf.len < TG_CALL_ERROR_BODY_MAX ? TG_CALL_ERROR_BODY_MAX - c->body_buf.len : 0;
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
    return tg_relay_feed(c, p, n);
}

/* Why a 2xx stream failed (outcome.c words it); a provider's in-stream error is logged with its
 * own words, the only account of what went wrong (the client gets the table's). */
static tg_classified_t *stream_failure(tg_call_t *c, int rc, const char *timeout_kind, tg_classified_t *cls)
{
    tg_outcome_stream_failure(cls, c->stream_rc, rc, timeout_kind, c->up_status);
    if (c->stream_rc == TG_EUPSTREAM_FAILED) {
        /* the provider's words may quote the prompt: withheld for a zero-retention call */
        const char *msg = tg_retention_provider_text(tg_retention_is_zero(c), c->stream_err.detail);
        TG_LOG(TG_LOG_WARN, "upstream_stream_error", TG_KV_STR("request_id", c->request_id),
               TG_KV_STR("target", c->target->target_key), TG_KV_INT("http_status", c->up_status),
               TG_KV_INT("committed", c->committed), TG_KV_STR("message", msg));
    }
    return cls;
}

static void on_done(void *ud, int rc, const char *timeout_kind)
{
    tg_call_t *c = ud;
    c->transfer = NULL;
    tg_classified_t cls;
    if (c->committed) {
        if (c->ended && c->stream_rc == 0) {
            tg_plan_settle(&c->plan, tg_now_ms(), TG_RESULT_SUCCESS);
            tg_relay_end(c, NULL, false);
        } else {
            tg_outcome_mid_stream(stream_failure(c, rc, timeout_kind, &cls)); /* "mid_stream:<why>" */
            tg_relay_end(c, cls.reason, true);
        }
        tg_call_resume(c, TG_STAGE_RELAY, 0);
    } else if (c->up_status / 100 == 2) {
        if (c->stream) {
            attempt_failed(c, stream_failure(c, rc, timeout_kind, &cls));
        } else if (rc != 0 || c->body_overflow) {
            tg_outcome_answer_failure(&cls, rc, timeout_kind, c->body_overflow);
            attempt_failed(c, &cls);
        } else {
            c->resp_in.model = c->target->name;
            c->resp_in.request_id = c->request_id;
            c->resp_in.created = tg_unix_now();
            tg_call_resume(c, TG_STAGE_RELAY, 0); /* respond.c translates the whole answer */
        }
    } else if (c->up_status > 0) {
        c->adapter->classify(c->up_status, c->has_retry_after ? c->retry_after : NULL,
                             c->body_buf.data != NULL ? c->body_buf.data : "", c->body_buf.len, &cls);
        tg_credential_classify(c, &cls); /* a 401/403 to the tenant's own key is the tenant's */
        attempt_failed(c, &cls);
    } else {
        tg_outcome_transport(&cls, rc != 0 ? rc : TG_EUPSTREAM_FAILED, timeout_kind, false);
        attempt_failed(c, &cls);
    }
}

static const tg_transfer_cbs_t transfer_cbs = {.on_head = on_head, .on_data = on_data, .on_done = on_done};

/* ------------------------------------------------------------------------ ATTEMPT, WAIT */

/* Starts an attempt; returns 0 when the transfer runs, or records the failure and returns -1. */
static int start_attempt(tg_call_t *c, const tg_model_cfg_t *target, uint32_t first_byte_ms)
{
    tg_classified_t cls;
    tg_attempt_reset(c);
    c->target = target;
    c->adapter = tg_adapter_for(target->provider->kind);
    c->attempt_start_us = tg_now_us();
    c->attempt_open = true;
    tg_attempt_route_comment(c, "tollgate trying %s", target->target_key);
    if (c->adapter == NULL) {
        tg_outcome_internal(&cls, TG_INTERNAL_NO_ADAPTER);
        record_failure(c, &cls);
        return -1;
    }

    tg_secret_t *byok_key = NULL; /* the tenant's own key (BYOK), wiped as soon as the request is built */
    if (tg_credential_open(c, target, &byok_key, &cls) != 0) {
        record_failure(c, &cls);
        return -1;
    }
    tg_upstream_req_t ureq;
    memset(&ureq, 0, sizeof(ureq));
    tg_build_in_t in = {.provider = target->provider,
                        .upstream_model = target->upstream,
                        .api_key = byok_key != NULL ? byok_key->s : target->provider->api_key,
                        .stream = c->stream,
                        .zero_retention = tg_retention_is_zero(c),
                        /* the client's bytes, unless a stage rewrote the body since (POLICY) */
                        .raw = c->req != NULL && !c->body_rewritten ? c->req->entity.base : NULL,
                        .raw_len = c->req != NULL && !c->body_rewritten ? c->req->entity.len : 0};
    tg_error_t err = {0};
    int rc = tg_prov_build_bounded(c->adapter, &in, c->body, c->cfg->body_memory_factor, &ureq, &err);
    tg_secret_free(byok_key); /* only the request's header holds it now (wiped on dispose) */
    if (rc != 0) {
        tg_upstream_req_dispose(&ureq);
        if (rc == TG_EINVALID_REQUEST || rc == TG_EUNSUPPORTED_PARAM || rc == TG_EBODY_TOO_COMPLEX)
            tg_outcome_caller_error(&cls, rc, err.detail); /* cannot be expressed for this provider */
        else
            tg_outcome_internal(&cls, TG_INTERNAL_BUILD_FAILED);
        record_failure(c, &cls);
        return -1;
    }
    snprintf(c->dropped, sizeof(c->dropped), "%s", ureq.dropped);
    if (ureq.body != NULL && ureq.body_len > c->cfg->max_body_bytes * 4 + 65536) {
        /* translation cannot blow a request up this much; refuse rather than send it */
        tg_upstream_req_dispose(&ureq);
        tg_outcome_internal(&cls, TG_INTERNAL_BUILD_FAILED);
        record_failure(c, &cls);
        return -1;
    }
    /* the plan's first-byte timeout for this attempt: cut to the request's budget, or a probe's */
    tg_timeouts_t to = target->provider->timeouts;
    to.first_byte_ms = first_byte_ms;
    c->transfer = tg_transfer_start(c->worker->upstream, &ureq, &to, &transfer_cbs, c);
    if (c->transfer == NULL) {
        tg_outcome_internal(&cls, TG_INTERNAL_START_FAILED);
        record_failure(c, &cls);
        return -1;
    }
    return 0;
}

int tg_stage_attempt(void *call)
{
    tg_call_t *c = call;
    /* right after a failure (the same synchronous chain) the plan is asked at the failure's time;
     * after a wait, or for the first attempt, at the present */
    uint64_t now = c->record_ms != 0 ? c->record_ms : tg_now_ms();
    c->record_ms = 0;
    tg_step_t step = tg_plan_next(&c->plan, now);
    switch (step.kind) {
    case TG_STEP_ATTEMPT:
        note_new_recs(c);
        if (start_attempt(c, step.target, step.first_byte_ms) == 0)
            return TG_STAGE_PENDING;                  /* the transfer's on_done moves the call on */
        tg_pipeline_goto(&c->pipe, TG_STAGE_ATTEMPT); /* recorded as failed: ask the plan again */
        return TG_STAGE_GO;
    case TG_STEP_WAIT:
        c->wait_ms = step.wait_ms;
        tg_pipeline_goto(&c->pipe, TG_STAGE_WAIT);
        return TG_STAGE_GO;
    case TG_STEP_FAIL:
        break;
    }
    note_new_recs(c);
    tg_attempt_plan_events(c);
    c->plan_failed = true; /* respond.c words the answer from the plan */
    return TG_ENO_TARGET;
}

static void on_wait_done(tg_deadline_t *d)
{
    tg_call_t *c = H2O_STRUCT_FROM_MEMBER(tg_call_t, wait_due, d);
    c->record_ms = 0;
    tg_plan_waited(&c->plan, c->wait_ms);
    tg_call_resume(c, TG_STAGE_ATTEMPT, 0);
}

int tg_stage_wait(void *call)
{
    tg_call_t *c = call;
    tg_deadline_arm(tg_call_waits(c), &c->wait_due, c->wait_ms, on_wait_done);
    return TG_STAGE_PENDING;
}
