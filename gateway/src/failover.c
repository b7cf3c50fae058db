/*
 * failover.c - the attempt planner: which target next, when to wait, when to
 * give up, and the final error. Pure apart from the breakers it consults and
 * the metrics it counts; the rules are in failover.h and FAILOVER.md.
 */
#include "failover.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "events.h"
#include "metrics.h"

#define CUR_NONE (-1)
#define CUR_CTX  (-2) /* the context fallback is being attempted */

static const tg_plan_opts_t default_opts = {
    .max_attempts_per_target = 1, .retry_wait_cap_ms = 10000, .short_wait_ms = 2000};

/* Less budget than this left is none: no provider answers its first byte that fast, and the attempt
 * would only open a connection to cancel it. */
#define PLAN_MIN_FIRST_BYTE_MS 50

/* A probe that streams holds its slot for its provider's total timeout; this one when none is set. */
#define PLAN_DEFAULT_TOTAL_MS 600000u

void tg_plan_init(tg_plan_t *p, const tg_model_cfg_t *const *targets, tg_breaker_t *const *breakers, size_t n,
                  const tg_model_cfg_t *ctx_fallback, tg_breaker_t *ctx_fallback_breaker,
                  const tg_plan_opts_t *opts)
{
    /* Field by field, not memset: the plan is ~3 KiB and built per request; everything below is
     * what the planner reads before writing (see tg_plan_t). Every loop stops at _n. */
    if (n > TG_PLAN_MAX_TARGETS)
        n = TG_PLAN_MAX_TARGETS;
    for (size_t i = 0; i < n; i++) {
        p->_targets[i] = targets[i];
        p->_breakers[i] = breakers != NULL ? breakers[i] : NULL;
        p->_tries[i] = 0;
        p->_not_before_ms[i] = 0;
        p->_retry_ok[i] = false;
        p->_skipped[i] = false;
        p->_busy[i] = false;
    }
    p->n_recs = 0;
    p->_n = n;
    p->_ctx_fallback = ctx_fallback;
    p->_ctx_fallback_breaker = ctx_fallback_breaker;
    p->_ctx_fallback_armed = false;
    p->_ctx_fallback_used = false;
    p->_done = false;
    p->_waited_ms = 0;
    p->_cur_admit = TG_ADMIT_YES;
    p->_pending_breaker = NULL;
    p->_caller_error = NULL;
    p->_served = false;
    p->_opts = opts != NULL ? *opts : default_opts;
    if (p->_opts.max_attempts_per_target == 0)
        p->_opts.max_attempts_per_target = 1;
    if (p->_opts.max_attempts_per_target > 8) /* _tries is 8 bits; recs are bounded anyway */
        p->_opts.max_attempts_per_target = 8;
    p->_cur = CUR_NONE;
    p->_cur_cut = TG_CUT_NONE;
    p->_budget_spent = false;
    p->_deadline_ms =
        p->_opts.request_first_byte_ms > 0 ? p->_opts.start_ms + p->_opts.request_first_byte_ms : 0;
}

uint32_t tg_plan_request_budget(const tg_config_t *cfg, const char *route_name)
{
    const tg_chain_cfg_t *ch = route_name != NULL ? tg_config_find_chain(cfg, route_name) : NULL;
    return ch != NULL && ch->request_first_byte_ms > 0 ? ch->request_first_byte_ms
                                                       : cfg->request_first_byte_ms;
}

bool tg_plan_budget_spent(const tg_plan_t *p)
{
    return p->_budget_spent;
}

/* What is left of the request's first-byte budget (UINT64_MAX: no budget). */
static uint64_t budget_left(const tg_plan_t *p, uint64_t now_ms)
{
    if (p->_deadline_ms == 0)
        return UINT64_MAX;
    return p->_deadline_ms > now_ms ? p->_deadline_ms - now_ms : 0;
}

/* Room for one more record, keeping the last slot for an attempt's outcome. */
static bool room_for_skip(const tg_plan_t *p)
{
    return p->n_recs + 1 < TG_PLAN_MAX_ATTEMPTS;
}

static void add_skip(tg_plan_t *p, const tg_model_cfg_t *t)
{
    tg_attempt_rec_t *r = &p->recs[p->n_recs++];
    r->target = t;
    r->skipped = true;
    r->waited_ms = 0;
    r->latency_us = 0;
    /* cls means nothing for a skip (callers test `skipped` first); the reason names it */
    r->out.cls = TG_OUTCOME_SERVER;
    r->out.status = 0;
    r->out.err = 0;
    memcpy(r->out.reason, "breaker_open", sizeof("breaker_open"));
}

static tg_admit_t admit(tg_breaker_t *b, uint64_t now_ms)
{
    return b != NULL ? tg_breaker_admit(b, now_ms) : TG_ADMIT_YES;
}

static tg_step_t step_fail(tg_plan_t *p)
{
    p->_done = true;
    return (tg_step_t){.kind = TG_STEP_FAIL};
}

static tg_step_t step_attempt(tg_plan_t *p, int cur, tg_admit_t a, uint64_t now_ms)
{
    p->_cur = cur;
    p->_cur_admit = a;
    const tg_model_cfg_t *t = cur == CUR_CTX ? p->_ctx_fallback : p->_targets[cur];
    bool probe = a == TG_ADMIT_PROBE || a == TG_ADMIT_EXTRA;
    /* The attempt's first-byte timeout: its provider's, cut by a probe's own short timeout (one
     * hanging probe must not hold a breaker half-open for a whole first-byte timeout) and by what
     * is left of the request's budget (the chain moves on, and the client gets an answer, in
     * bounded time). */
    uint64_t fb = t->provider != NULL && t->provider->timeouts.first_byte_ms > 0
                      ? t->provider->timeouts.first_byte_ms
                      : UINT32_MAX;
    tg_cut_t cut = TG_CUT_NONE;
    if (probe && t->provider != NULL && t->provider->breaker.probe_timeout_ms > 0 &&
        t->provider->breaker.probe_timeout_ms < fb) {
        fb = t->provider->breaker.probe_timeout_ms;
        cut = TG_CUT_PROBE;
    }
    uint64_t left = budget_left(p, now_ms);
    if (left < fb) {
        fb = left;
        cut = TG_CUT_BUDGET;
    }
    p->_cur_cut = cut;
    return (tg_step_t){
        .kind = TG_STEP_ATTEMPT, .target = t, .probe = probe, .first_byte_ms = (uint32_t)fb, .cut = cut};
}

/* A skip that may still become an extra probe: the breaker is half-open with its probe out. */
static void note_busy(tg_plan_t *p, size_t i, uint64_t now_ms)
{
    p->_busy[i] =
        p->_breakers[i] != NULL && tg_breaker_state(p->_breakers[i], now_ms) == TG_BREAKER_HALF_OPEN;
}

tg_step_t tg_plan_next(tg_plan_t *p, uint64_t now_ms)
{
    if (p->_done || p->_served || p->n_recs >= TG_PLAN_MAX_ATTEMPTS)
        return step_fail(p);
    if (p->_cur != CUR_NONE) /* the previous attempt was never recorded: count it as neutral */
        tg_breaker_record(p->_cur == CUR_CTX ? p->_ctx_fallback_breaker : p->_breakers[p->_cur], now_ms,
                          p->_cur_admit, TG_RESULT_NEUTRAL);
    p->_cur = CUR_NONE;

    /* The request's first-byte budget is spent: no attempt could get a byte in time. */
    if (p->_budget_spent || budget_left(p, now_ms) < PLAN_MIN_FIRST_BYTE_MS) {
        p->_budget_spent = true;
        return step_fail(p);
    }

    /* After a context-length error only the larger-context fallback may serve. */
    if (p->_ctx_fallback_armed) {
        if (p->_ctx_fallback_used)
            return step_fail(p);
        p->_ctx_fallback_used = true;
        tg_admit_t a = admit(p->_ctx_fallback_breaker, now_ms);
        if (a == TG_ADMIT_SKIP && p->_ctx_fallback_breaker != NULL)
            a = tg_breaker_admit_extra(p->_ctx_fallback_breaker, now_ms); /* it is the only one left */
        if (a == TG_ADMIT_SKIP) {
            add_skip(p, p->_ctx_fallback);
            return step_fail(p);
        }
        return step_attempt(p, CUR_CTX, a, now_ms);
    }

    /* Fresh tries: targets with fewer tries first (round r), healthy before degraded,
     * chain order within each. A target waiting on its Retry-After is not due yet. */
    for (uint32_t r = 0; r < p->_opts.max_attempts_per_target; r++) {
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < p->_n; i++) {
                if (p->_skipped[i] || p->_tries[i] != r || p->_not_before_ms[i] > (int64_t)now_ms)
                    continue;
                bool degraded = p->_breakers[i] != NULL && tg_breaker_is_degraded_at(p->_breakers[i], now_ms);
                if (degraded != (pass == 1))
                    continue;
                if (!room_for_skip(p))
                    return step_fail(p);
                tg_admit_t a = admit(p->_breakers[i], now_ms);
                if (a == TG_ADMIT_SKIP) {
                    p->_skipped[i] = true;
                    note_busy(p, i, now_ms);
                    add_skip(p, p->_targets[i]);
                    continue;
                }
                p->_tries[i]++;
                p->_retry_ok[i] = false;
                return step_attempt(p, (int)i, a, now_ms);
            }
        }
    }

    /* No fresh target is left. A target skipped because its half-open breaker's probe was out
     * may still be healthy (its fault may be minutes old): rather than fail the request, try it
     * as an extra probe (FAILOVER.md, "Half-open and the last usable target"). Once per target. */
    for (size_t i = 0; i < p->_n; i++) {
        if (!p->_busy[i])
            continue;
        p->_busy[i] = false;
        if (!room_for_skip(p))
            return step_fail(p);
        tg_admit_t a = tg_breaker_admit_extra(p->_breakers[i], now_ms);
        if (a == TG_ADMIT_SKIP)
            continue; /* re-opened meanwhile, or too many extra probes out: its skip stands */
        /* skipped a moment ago on the way here: it was not skipped after all (the events would
         * otherwise show a hop from it to itself) */
        if (p->n_recs > 0 && p->recs[p->n_recs - 1].skipped &&
            p->recs[p->n_recs - 1].target == p->_targets[i])
            p->n_recs--;
        p->_tries[i]++;
        return step_attempt(p, (int)i, a, now_ms);
    }

    /* No other target is usable: a target that asked for a short Retry-After may be tried
     * once more, after its wait, within the request's waiting budget. */
    int best = -1;
    for (size_t i = 0; i < p->_n; i++) {
        if (!p->_retry_ok[i] || p->_skipped[i])
            continue;
        if (p->_not_before_ms[i] <= (int64_t)now_ms) {
            if (!room_for_skip(p))
                return step_fail(p);
            p->_retry_ok[i] = false;
            tg_admit_t a = admit(p->_breakers[i], now_ms);
            if (a == TG_ADMIT_SKIP) {
                p->_skipped[i] = true;
                add_skip(p, p->_targets[i]);
                continue;
            }
            p->_tries[i]++;
            return step_attempt(p, (int)i, a, now_ms);
        }
        if (best < 0 || p->_not_before_ms[i] < p->_not_before_ms[best])
            best = (int)i;
    }
    if (best >= 0) {
        uint64_t wait = (uint64_t)(p->_not_before_ms[best] - (int64_t)now_ms);
        uint64_t left =
            p->_opts.retry_wait_cap_ms > p->_waited_ms ? p->_opts.retry_wait_cap_ms - p->_waited_ms : 0;
        /* a wait that would end when the budget is spent leaves no time for the retry */
        uint64_t budget = budget_left(p, now_ms);
        if (wait <= left && wait + PLAN_MIN_FIRST_BYTE_MS <= budget)
            return (tg_step_t){.kind = TG_STEP_WAIT, .wait_ms = (uint32_t)wait};
        if (wait <= left)
            p->_budget_spent = true;
    }
    return step_fail(p);
}

static void record(tg_plan_t *p, uint64_t now_ms, const tg_classified_t *out, uint64_t latency_us, bool defer)
{
    if (p->_cur == CUR_NONE || p->n_recs >= TG_PLAN_MAX_ATTEMPTS)
        return;
    int cur = p->_cur;
    p->_cur = CUR_NONE;
    const tg_model_cfg_t *t = cur == CUR_CTX ? p->_ctx_fallback : p->_targets[cur];
    tg_breaker_t *b = cur == CUR_CTX ? p->_ctx_fallback_breaker : p->_breakers[cur];
    tg_result_t verdict = tg_outcome_breaker_result(out->cls);
    tg_classified_t cut;
    if (p->_cur_cut == TG_CUT_BUDGET && tg_outcome_is_first_byte_timeout(out)) {
        /* The request ran out of time, not the provider: it never had its whole first-byte
         * timeout, so its breaker does not count it (a probe's slot is freed). */
        tg_outcome_budget_cut(&cut);
        out = &cut;
        verdict = TG_RESULT_NEUTRAL;
        /* Spent, whatever the clock says now: the transfer's timer runs on the loop's cached time
         * and may fire a few milliseconds before `now` reaches the deadline. */
        p->_budget_spent = true;
    }

    tg_attempt_rec_t *r = &p->recs[p->n_recs++];
    r->target = t;
    r->skipped = false;
    tg_outcome_compact(&r->out, out);
    r->waited_ms = 0;
    r->latency_us = latency_us;

    if (b != NULL) {
        if (defer && out->cls == TG_OUTCOME_SUCCESS) {
            p->_pending_breaker = b; /* the verdict comes with tg_plan_settle */
            p->_pending_admit = p->_cur_admit;
            if (p->_cur_admit == TG_ADMIT_PROBE || p->_cur_admit == TG_ADMIT_EXTRA)
                tg_breaker_probe_streaming(b, now_ms,
                                           t->provider != NULL && t->provider->timeouts.total_ms > 0
                                               ? t->provider->timeouts.total_ms
                                               : PLAN_DEFAULT_TOTAL_MS);
        } else {
            tg_breaker_record(b, now_ms, p->_cur_admit, verdict);
        }
        if (out->cls == TG_OUTCOME_SUCCESS && t->provider != NULL && t->provider->latency_threshold_ms > 0)
            tg_breaker_latency_at(b, now_ms, latency_us, t->provider->latency_threshold_ms);
    }
    if (t->target_key != NULL) {
        char labels[320] = "";
        tg_metrics_label(labels, sizeof(labels), "target", t->target_key);
        tg_metrics_label(labels, sizeof(labels), "outcome", tg_outcome_name(out->cls));
        tg_metrics_observe("tollgate_attempt_duration_seconds", labels, (double)latency_us / 1e6);
    }

    switch (out->cls) {
    case TG_OUTCOME_SUCCESS:
        p->_served = true;
        p->_done = true;
        break;
    case TG_OUTCOME_RATE_LIMITED:
        if (cur >= 0 && out->retry_after_ms >= 0) {
            p->_not_before_ms[cur] = (int64_t)now_ms + out->retry_after_ms;
            /* a short wait may retry this target (only if nothing else is usable, see next);
             * a long one just fails over */
            p->_retry_ok[cur] = p->_tries[cur] <= p->_opts.max_attempts_per_target && /* one retry */
                                (uint64_t)out->retry_after_ms <= p->_opts.short_wait_ms &&
                                p->_waited_ms + (uint64_t)out->retry_after_ms <= p->_opts.retry_wait_cap_ms;
        }
        break;
    case TG_OUTCOME_CONTEXT_LENGTH:
        if (cur != CUR_CTX && p->_ctx_fallback != NULL && p->_ctx_fallback != t && !p->_ctx_fallback_armed) {
            p->_ctx_fallback_armed = true;
        } else {
            p->_caller_copy = *out;
            p->_caller_error = &p->_caller_copy;
            p->_done = true;
        }
        break;
    case TG_OUTCOME_CALLER:
        p->_caller_copy = *out;
        p->_caller_error = &p->_caller_copy;
        p->_done = true;
        break;
    case TG_OUTCOME_TRANSPORT:
    case TG_OUTCOME_TIMEOUT:
    case TG_OUTCOME_SERVER:
    case TG_OUTCOME_MISCONFIGURED:
        break; /* fail over; the breaker already counted it */
    }
}

void tg_plan_record(tg_plan_t *p, uint64_t now_ms, const tg_classified_t *out, uint64_t latency_us)
{
    record(p, now_ms, out, latency_us, false);
}

void tg_plan_record_stream_start(tg_plan_t *p, uint64_t now_ms, const tg_classified_t *out,
                                 uint64_t latency_us)
{
    record(p, now_ms, out, latency_us, true);
}

void tg_plan_settle(tg_plan_t *p, uint64_t now_ms, tg_result_t r)
{
    tg_breaker_t *b = p->_pending_breaker;
    if (b == NULL)
        return;
    p->_pending_breaker = NULL;
    tg_breaker_record(b, now_ms, p->_pending_admit, r);
}

void tg_plan_waited(tg_plan_t *p, uint32_t ms)
{
    p->_waited_ms += ms;
    /* For the events a wait is latency added by the hop after which it happened, and a skip adds
     * none: it goes to the last attempt that was not a skip (the 429 that asked for it, or an
     * attempt made while its Retry-After ran). */
    for (size_t i = p->n_recs; i > 0; i--) {
        tg_attempt_rec_t *r = &p->recs[i - 1];
        if (!r->skipped) {
            r->waited_ms = ms > UINT32_MAX - r->waited_ms ? UINT32_MAX : r->waited_ms + ms;
            break;
        }
    }
}

size_t tg_plan_attempt_count(const tg_plan_t *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n_recs; i++)
        if (!p->recs[i].skipped)
            n++;
    return n;
}

const char *tg_plan_fallback_reason(const tg_plan_t *p)
{
    if (p->n_recs == 0 || (!p->recs[0].skipped && p->recs[0].out.cls == TG_OUTCOME_SUCCESS))
        return NULL;
    return p->recs[0].out.reason;
}

static const char *target_name(const tg_model_cfg_t *t)
{
    if (t == NULL)
        return "";
    return t->target_key != NULL ? t->target_key : (t->name != NULL ? t->name : "");
}

static json_t *str_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? json_string(s) : json_null();
}

/* {"error":{...}} from an upstream's normalised caller error. */
static json_t *caller_error_body(const tg_classified_t *c)
{
    int fallback = c->cls == TG_OUTCOME_CONTEXT_LENGTH ? TG_ECONTEXT_LENGTH : TG_EINVALID_REQUEST;
    json_t *e = json_object();
    json_object_set_new(e, "message",
                        json_string(c->message[0] != '\0' ? c->message : tg_err_public_msg(fallback)));
    json_object_set_new(e, "type", json_string(c->type[0] != '\0' ? c->type : tg_err_type(fallback)));
    json_object_set_new(
        e, "code",
        c->code[0] != '\0'
            ? json_string(c->code)
            : (c->cls == TG_OUTCOME_CONTEXT_LENGTH ? json_string("context_length_exceeded") : json_null()));
    json_object_set_new(e, "param", str_or_null(c->param));
    json_t *root = json_object();
    json_object_set_new(root, "error", e);
    return root;
}

static json_t *all_failed_body(const tg_plan_t *p)
{
    tg_buf_t msg;
    tg_buf_init(&msg, 4096);
    int rc = tg_buf_append_str(&msg, "all targets failed");
    json_t *attempts = json_array();
    for (size_t i = 0; i < p->n_recs; i++) {
        const tg_attempt_rec_t *r = &p->recs[i];
        const char *name = target_name(r->target);
        if (rc == 0)
            rc = tg_buf_appendf(&msg, "%s %s: %s", i == 0 ? ":" : ";", name, r->out.reason);
        if (rc == 0 && r->skipped)
            rc = tg_buf_append_str(&msg, " (skipped)");
        else if (rc == 0 && r->out.status > 0)
            rc = tg_buf_appendf(&msg, " (%d)", r->out.status);
        json_t *a = json_object();
        json_object_set_new(a, "target", json_string(name));
        json_object_set_new(a, "reason", json_string(r->out.reason));
        json_object_set_new(a, "status", r->out.status > 0 ? json_integer(r->out.status) : json_null());
        json_object_set_new(a, "skipped", json_boolean(r->skipped));
        json_array_append_new(attempts, a);
    }
    if (p->n_recs == 0 && rc == 0 && !p->_budget_spent)
        rc = tg_buf_append_str(&msg, ": no target in the chain");
    if (p->_budget_spent && rc == 0)
        rc = tg_buf_appendf(&msg, "%s request first-byte budget of %u ms spent", p->n_recs == 0 ? ":" : ";",
                            p->_opts.request_first_byte_ms);
    /* a message too long for its cap ends with what fit: the attempts array has it all */
    json_t *e = json_object();
    json_object_set_new(e, "message", json_string(msg.data != NULL ? msg.data : "all targets failed"));
    json_object_set_new(e, "type", json_string(tg_err_type(TG_ENO_TARGET)));
    json_object_set_new(e, "code", json_string(tg_err_code(TG_ENO_TARGET)));
    json_object_set_new(e, "param", json_null());
    json_object_set_new(e, "attempts", attempts);
    tg_buf_dispose(&msg);
    json_t *root = json_object();
    json_object_set_new(root, "error", e);
    return root;
}

/* Seconds until the first breaker of the chain lets a probe through, or 0 when some target
 * is closed (a retry now could be served, so no Retry-After). */
static uint32_t all_open_retry_after_s(const tg_plan_t *p, uint64_t now_ms)
{
    if (p->_n == 0)
        return 0;
    uint64_t min_ms = UINT64_MAX;
    for (size_t i = 0; i < p->_n; i++) {
        tg_breaker_t *b = p->_breakers[i];
        if (b == NULL)
            return 0;
        tg_breaker_state_t s = tg_breaker_state(b, now_ms);
        if (s == TG_BREAKER_CLOSED)
            return 0;
        /* half-open: its probe slot may be taken; tell the client to come back soon */
        uint64_t in = s == TG_BREAKER_OPEN ? tg_breaker_retry_in_ms(b, now_ms) : 0;
        if (in < min_ms)
            min_ms = in;
    }
    uint64_t s = (min_ms + 999) / 1000;
    return s == 0 ? 1 : (uint32_t)s;
}

int tg_plan_final_error(const tg_plan_t *p, uint64_t now_ms, int *status, tg_buf_t *body,
                        uint32_t *retry_after_s)
{
    json_t *root;
    *retry_after_s = 0;
    if (p->_caller_error != NULL) {
        int st = p->_caller_error->status;
        *status = st >= 400 && st <= 499 ? st : 400;
        root = caller_error_body(p->_caller_error);
    } else {
        *status = 503;
        root = all_failed_body(p);
        *retry_after_s = all_open_retry_after_s(p, now_ms);
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text == NULL)
        return TG_ENOMEM;
    int rc = tg_buf_append_str(body, text);
    free(text);
    return rc;
}

/* A hop the request moved on from: a skip or a failed attempt (a success or the caller's own
 * error ends the plan there). */
static bool is_hop(const tg_attempt_rec_t *r)
{
    return r->skipped || (r->out.cls != TG_OUTCOME_SUCCESS && r->out.cls != TG_OUTCOME_CALLER);
}

void tg_plan_emit_events(const tg_plan_t *p, const char *request_id, int64_t tenant_id, const char *chain,
                         int64_t at_unix_ms)
{
    /* One row per hop, no summary row: the hop into the serving target says all a summary did
     * (served = true), and with a dead primary a second row per request doubled what PostgreSQL
     * had to store during exactly the storms the events exist for. */
    tg_failover_event_t ev;
    bool head_done = false;
    for (size_t i = 0; i < p->n_recs; i++) {
        const tg_attempt_rec_t *r = &p->recs[i];
        if (!is_hop(r))
            continue;
        if (!head_done) {
            /* once per request: the fields every row shares; the rest is overwritten per row */
            memset(&ev, 0, sizeof(ev));
            tg_str_copy(ev.request_id, sizeof(ev.request_id), request_id);
            ev.tenant_id = tenant_id;
            tg_str_copy(ev.chain, sizeof(ev.chain), chain);
            ev.at_unix_ms = at_unix_ms;
            head_done = true;
        }
        const tg_attempt_rec_t *next = i + 1 < p->n_recs ? &p->recs[i + 1] : NULL;
        ev.kind = r->skipped ? TG_EV_SKIPPED : TG_EV_FAILED;
        tg_str_copy(ev.from_target, sizeof(ev.from_target), target_name(r->target));
        tg_str_copy(ev.to_target, sizeof(ev.to_target), next != NULL ? target_name(next->target) : "");
        tg_str_copy(ev.reason, sizeof(ev.reason), r->out.reason);
        ev.status = r->skipped ? 0 : r->out.status;
        ev.served = next != NULL && !next->skipped && next->out.cls == TG_OUTCOME_SUCCESS;
        ev.added_latency_us = r->skipped ? 0 : r->latency_us + (uint64_t)r->waited_ms * 1000u;
        tg_events_emit(&ev);
    }
}
