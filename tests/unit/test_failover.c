/*
 * test_failover.c - the attempt planner against real breakers and an injected
 * clock: every row of the outcome table, every planner rule, the final error
 * bodies and the transport classification.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "events.h"
#include "failover.h"
#include "metrics.h"

static tg_provider_cfg_t prov_p = {.name = "p", .kind = TG_KIND_OPENAI};
static tg_provider_cfg_t prov_q = {.name = "q", .kind = TG_KIND_ANTHROPIC, .latency_threshold_ms = 100};

static tg_model_cfg_t mod_a = {.name = "a", .upstream = "ua", .provider = &prov_p, .target_key = "p/ua"};
static tg_model_cfg_t mod_b = {.name = "b", .upstream = "ub", .provider = &prov_q, .target_key = "q/ub"};
static tg_model_cfg_t mod_c = {.name = "c", .upstream = "uc", .provider = &prov_q, .target_key = "q/uc"};

static const tg_breaker_opts_t bopts = {.failure_threshold = 3, .open_ms = 30000, .half_open_probes = 1};

typedef struct fx {
    tg_breaker_t *ba, *bb, *bc;
    const tg_model_cfg_t *targets[3];
    tg_breaker_t *breakers[3];
    tg_plan_t plan;
} fx_t;

static int setup(void **state)
{
    static fx_t f;
    memset(&f, 0, sizeof(f));
    f.ba = tg_breaker_create("p/ua", &bopts);
    f.bb = tg_breaker_create("q/ub", &bopts);
    f.bc = tg_breaker_create("q/uc", &bopts);
    f.targets[0] = &mod_a;
    f.targets[1] = &mod_b;
    f.targets[2] = &mod_c;
    f.breakers[0] = f.ba;
    f.breakers[1] = f.bb;
    f.breakers[2] = f.bc;
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    tg_breaker_destroy(f->ba);
    tg_breaker_destroy(f->bb);
    tg_breaker_destroy(f->bc);
    return 0;
}

static tg_classified_t out_of(tg_outcome_class_t cls, int status, const char *reason, int64_t retry_after_ms)
{
    tg_classified_t c;
    memset(&c, 0, sizeof(c));
    c.cls = cls;
    c.status = status;
    c.retry_after_ms = retry_after_ms;
    snprintf(c.reason, sizeof(c.reason), "%s", reason);
    return c;
}

static const tg_classified_t OK = {
    .cls = TG_OUTCOME_SUCCESS, .status = 200, .retry_after_ms = -1, .reason = "ok"};

static void init2(fx_t *f, const tg_plan_opts_t *o)
{
    tg_plan_init(&f->plan, f->targets, f->breakers, 2, NULL, NULL, o);
}

static void expect_attempt(tg_plan_t *p, uint64_t now, const tg_model_cfg_t *t, bool probe)
{
    tg_step_t s = tg_plan_next(p, now);
    assert_int_equal(s.kind, TG_STEP_ATTEMPT);
    assert_ptr_equal(s.target, t);
    assert_int_equal(s.probe, probe);
}

static void expect_fail(tg_plan_t *p, uint64_t now)
{
    tg_step_t s = tg_plan_next(p, now);
    assert_int_equal(s.kind, TG_STEP_FAIL);
}

static void test_served_by_first(void **state)
{
    fx_t *f = *state;
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &OK, 1000);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 1);
    assert_null(tg_plan_fallback_reason(&f->plan));
    expect_fail(&f->plan, 0); /* done: nothing more to do */
}

/* Rows of the outcome table that fail over and count against the breaker. */
static void test_failover_rows(void **state)
{
    fx_t *f = *state;
    struct {
        tg_outcome_class_t cls;
        int status;
        const char *reason;
        tg_breaker_state_t after; /* the failed target's breaker after one failure */
    } rows[] = {
        {TG_OUTCOME_TRANSPORT, 0, "connect_error", TG_BREAKER_CLOSED},
        {TG_OUTCOME_TIMEOUT, 0, "timeout_first_byte", TG_BREAKER_CLOSED},
        {TG_OUTCOME_SERVER, 500, "http_500", TG_BREAKER_CLOSED},
        {TG_OUTCOME_SERVER, 503, "http_503", TG_BREAKER_CLOSED},
        {TG_OUTCOME_SERVER, 529, "overloaded", TG_BREAKER_CLOSED},
        {TG_OUTCOME_RATE_LIMITED, 429, "rate_limited", TG_BREAKER_CLOSED},
        {TG_OUTCOME_MISCONFIGURED, 401, "http_401", TG_BREAKER_OPEN},
        {TG_OUTCOME_MISCONFIGURED, 404, "model_not_found", TG_BREAKER_OPEN},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        tg_breaker_reset(f->ba);
        tg_breaker_reset(f->bb);
        init2(f, NULL);
        expect_attempt(&f->plan, 0, &mod_a, false);
        tg_classified_t o = out_of(rows[i].cls, rows[i].status, rows[i].reason, -1);
        tg_plan_record(&f->plan, 0, &o, 2000);
        assert_int_equal(tg_breaker_state(f->ba, 0), rows[i].after);
        expect_attempt(&f->plan, 0, &mod_b, false);
        tg_plan_record(&f->plan, 0, &OK, 1000);
        assert_int_equal(tg_plan_attempt_count(&f->plan), 2);
        assert_string_equal(tg_plan_fallback_reason(&f->plan), rows[i].reason);
        assert_int_equal(f->plan.n_recs, 2);
        assert_false(f->plan.recs[0].skipped);
        assert_int_equal(f->plan.recs[0].out.status, rows[i].status);
    }
    /* counted failures: the third one opens the breaker */
    tg_breaker_reset(f->ba);
    for (int k = 0; k < 3; k++) {
        init2(f, NULL);
        expect_attempt(&f->plan, 0, &mod_a, false);
        tg_classified_t o = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
        tg_plan_record(&f->plan, 0, &o, 10);
    }
    assert_int_equal(tg_breaker_state(f->ba, 0), TG_BREAKER_OPEN);
}

static void test_caller_error_no_failover(void **state)
{
    fx_t *f = *state;
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_CALLER, 422, "http_422", -1);
    snprintf(o.message, sizeof(o.message), "temperature must be <= 2");
    snprintf(o.type, sizeof(o.type), "invalid_request_error");
    snprintf(o.param, sizeof(o.param), "temperature");
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 1);
    /* not counted against the breaker */
    for (int i = 0; i < 5; i++)
        tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_NEUTRAL);
    assert_int_equal(tg_breaker_state(f->ba, 0), TG_BREAKER_CLOSED);

    int status = 0;
    uint32_t ra = 99;
    tg_buf_t body;
    tg_buf_init(&body, 65536);
    assert_int_equal(tg_plan_final_error(&f->plan, 0, &status, &body, &ra), 0);
    assert_int_equal(status, 422);
    assert_int_equal(ra, 0);
    assert_string_equal(body.data, "{\"error\":{\"message\":\"temperature must be <= 2\",\"type\":"
                                   "\"invalid_request_error\",\"code\":null,\"param\":\"temperature\"}}");
    tg_buf_dispose(&body);
}

static void test_context_length_goes_to_fallback_only(void **state)
{
    fx_t *f = *state;
    tg_plan_init(&f->plan, f->targets, f->breakers, 2, &mod_c, f->bc, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_CONTEXT_LENGTH, 400, "context_length", -1);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_c, false); /* not b */
    tg_plan_record(&f->plan, 0, &OK, 10);
    assert_string_equal(tg_plan_fallback_reason(&f->plan), "context_length");
    assert_int_equal(tg_breaker_state(f->ba, 0), TG_BREAKER_CLOSED);

    /* the fallback failing too ends the plan: b is still not tried */
    tg_plan_init(&f->plan, f->targets, f->breakers, 2, &mod_c, f->bc, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_c, false);
    tg_classified_t e = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 0, &e, 10);
    expect_fail(&f->plan, 0);
    int status;
    uint32_t ra;
    tg_buf_t body;
    tg_buf_init(&body, 65536);
    assert_int_equal(tg_plan_final_error(&f->plan, 0, &status, &body, &ra), 0);
    assert_int_equal(status, 503);
    tg_buf_dispose(&body);
}

static void test_context_length_without_fallback(void **state)
{
    fx_t *f = *state;
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_CONTEXT_LENGTH, 400, "context_length", -1);
    snprintf(o.message, sizeof(o.message), "This model's maximum context length is 128000 tokens");
    snprintf(o.type, sizeof(o.type), "invalid_request_error");
    snprintf(o.code, sizeof(o.code), "context_length_exceeded");
    snprintf(o.param, sizeof(o.param), "messages");
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);
    int status;
    uint32_t ra;
    tg_buf_t body;
    tg_buf_init(&body, 65536);
    assert_int_equal(tg_plan_final_error(&f->plan, 0, &status, &body, &ra), 0);
    assert_int_equal(status, 400);
    assert_int_equal(ra, 0);
    assert_string_equal(body.data, "{\"error\":{\"message\":\"This model's maximum context length is 128000 "
                                   "tokens\",\"type\":\"invalid_request_error\",\"code\":\"context_length_"
                                   "exceeded\",\"param\":\"messages\"}}");
    tg_buf_dispose(&body);
}

static void test_open_breaker_is_skipped(void **state)
{
    fx_t *f = *state;
    tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    init2(f, NULL);
    expect_attempt(&f->plan, 10, &mod_b, false);
    assert_int_equal(f->plan.n_recs, 1);
    assert_true(f->plan.recs[0].skipped);
    assert_ptr_equal(f->plan.recs[0].target, &mod_a);
    assert_string_equal(f->plan.recs[0].out.reason, "breaker_open");
    tg_plan_record(&f->plan, 10, &OK, 10);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 1);
    assert_string_equal(tg_plan_fallback_reason(&f->plan), "breaker_open");

    /* after open_ms the next plan is the half-open probe; a concurrent one skips it */
    init2(f, NULL);
    expect_attempt(&f->plan, 30000, &mod_a, true);
    tg_plan_t other;
    tg_plan_init(&other, f->targets, f->breakers, 2, NULL, NULL, NULL);
    expect_attempt(&other, 30000, &mod_b, false);
    assert_true(other.recs[0].skipped);
    tg_plan_record(&f->plan, 30001, &OK, 10);
    assert_int_equal(tg_breaker_state(f->ba, 30001), TG_BREAKER_CLOSED);
}

static void test_degraded_after_healthy(void **state)
{
    fx_t *f = *state;
    tg_breaker_latency_at(f->ba, 0, 5000000, 100);
    assert_true(tg_breaker_is_degraded_at(f->ba, 0));
    init2(f, NULL);
    expect_attempt(&f->plan, 1, &mod_b, false);
    tg_classified_t o = out_of(TG_OUTCOME_SERVER, 502, "http_502", -1);
    tg_plan_record(&f->plan, 1, &o, 10);
    expect_attempt(&f->plan, 1, &mod_a, false); /* still tried, last */
    tg_plan_record(&f->plan, 1, &OK, 10);

    /* a success feeds the latency tracker of a provider with a threshold (q: 100 ms) */
    init2(f, NULL);
    expect_attempt(&f->plan, 2, &mod_b, false);
    tg_plan_record(&f->plan, 2, &OK, 900000);
    assert_true(tg_breaker_is_degraded_at(f->bb, 2));
}

static void test_max_attempts_per_target(void **state)
{
    fx_t *f = *state;
    tg_classified_t o = out_of(TG_OUTCOME_SERVER, 500, "http_500", -1);
    init2(f, NULL); /* default: one each */
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 2);

    tg_breaker_reset(f->ba);
    tg_breaker_reset(f->bb);
    tg_plan_opts_t two = {.max_attempts_per_target = 2, .retry_wait_cap_ms = 10000, .short_wait_ms = 2000};
    init2(f, &two); /* round robin: every target once before any twice */
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &o, 10);
    /* two counted failures: still closed (the threshold is three) */
    assert_int_equal(tg_breaker_state(f->ba, 0), TG_BREAKER_CLOSED);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);
}

static void test_retry_after_short_wait_same_target(void **state)
{
    fx_t *f = *state;
    tg_plan_init(&f->plan, f->targets, f->breakers, 1, NULL, NULL, NULL);
    expect_attempt(&f->plan, 100, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_RATE_LIMITED, 429, "rate_limited", 1000);
    tg_plan_record(&f->plan, 100, &o, 10);
    tg_step_t s = tg_plan_next(&f->plan, 100);
    assert_int_equal(s.kind, TG_STEP_WAIT);
    assert_int_equal(s.wait_ms, 1000);
    tg_plan_waited(&f->plan, 1000);
    expect_attempt(&f->plan, 1100, &mod_a, false);
    /* one retry only: a second 429 ends the plan */
    tg_plan_record(&f->plan, 1100, &o, 10);
    expect_fail(&f->plan, 1100);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 2);
}

static void test_retry_after_fails_over_first(void **state)
{
    fx_t *f = *state;
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_RATE_LIMITED, 429, "rate_limited", 500);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_b, false); /* another target is usable: no waiting */
    tg_classified_t e = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 200, &e, 10);
    tg_step_t s = tg_plan_next(&f->plan, 200);
    assert_int_equal(s.kind, TG_STEP_WAIT);
    assert_int_equal(s.wait_ms, 300); /* what is left of a's Retry-After */
    tg_plan_waited(&f->plan, 300);
    expect_attempt(&f->plan, 500, &mod_a, false);
    tg_plan_record(&f->plan, 500, &OK, 10);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 3);
}

static void test_retry_after_long_or_capped(void **state)
{
    fx_t *f = *state;
    /* a long Retry-After fails over (here: nothing left) */
    tg_plan_init(&f->plan, f->targets, f->breakers, 1, NULL, NULL, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_RATE_LIMITED, 429, "rate_limited", 5000);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);

    /* no Retry-After at all: no retry */
    tg_breaker_reset(f->ba);
    tg_plan_init(&f->plan, f->targets, f->breakers, 1, NULL, NULL, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    o.retry_after_ms = -1;
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);

    /* the total waiting cap */
    tg_breaker_reset(f->ba);
    tg_plan_opts_t cap = {.max_attempts_per_target = 1, .retry_wait_cap_ms = 800, .short_wait_ms = 2000};
    tg_plan_init(&f->plan, f->targets, f->breakers, 1, NULL, NULL, &cap);
    expect_attempt(&f->plan, 0, &mod_a, false);
    o.retry_after_ms = 1000;
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);
}

static void test_all_failed_body(void **state)
{
    fx_t *f = *state;
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_classified_t t;
    tg_outcome_transport(&t, TG_EUPSTREAM_TIMEOUT, "first_byte", false);
    tg_plan_record(&f->plan, 0, &t, 10);
    expect_fail(&f->plan, 0);

    int status;
    uint32_t ra = 7;
    tg_buf_t body;
    tg_buf_init(&body, 65536);
    assert_int_equal(tg_plan_final_error(&f->plan, 0, &status, &body, &ra), 0);
    assert_int_equal(status, 503);
    assert_int_equal(ra, 0); /* breakers still closed: a retry could be served */
    json_error_t jerr;
    json_t *root = json_loads(body.data, 0, &jerr);
    assert_non_null(root);
    json_t *e = json_object_get(root, "error");
    assert_string_equal(json_string_value(json_object_get(e, "message")),
                        "all targets failed: p/ua: http_503 (503); q/ub: timeout_first_byte");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "service_unavailable");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "no_target_available");
    assert_true(json_is_null(json_object_get(e, "param")));
    json_t *att = json_object_get(e, "attempts");
    assert_int_equal(json_array_size(att), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(att, 1), "reason")),
                        "timeout_first_byte");
    assert_true(json_is_null(json_object_get(json_array_get(att, 1), "status")));
    assert_int_equal(json_integer_value(json_object_get(json_array_get(att, 0), "status")), 503);
    assert_true(json_is_false(json_object_get(json_array_get(att, 0), "skipped")));
    json_decref(root);
    tg_buf_dispose(&body);
}

static void test_everything_down_retry_after(void **state)
{
    fx_t *f = *state;
    /* a's breaker opened at 0, b's at 20000: b's probe is the soonest, at 50000 */
    tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    init2(f, NULL);
    expect_attempt(&f->plan, 20000, &mod_b, false);
    tg_classified_t o = out_of(TG_OUTCOME_MISCONFIGURED, 401, "http_401", -1);
    tg_plan_record(&f->plan, 20000, &o, 10);
    expect_fail(&f->plan, 20000);
    int status;
    uint32_t ra;
    tg_buf_t body;
    tg_buf_init(&body, 65536);
    assert_int_equal(tg_plan_final_error(&f->plan, 20000, &status, &body, &ra), 0);
    assert_int_equal(status, 503);
    assert_int_equal(ra, 10); /* a's probe is due at 30000 */
    assert_non_null(
        strstr(body.data, "all targets failed: p/ua: breaker_open (skipped); q/ub: http_401 (401)"));
    tg_buf_dispose(&body);

    /* a plan where every breaker is open does no I/O at all */
    init2(f, NULL);
    expect_fail(&f->plan, 20001);
    assert_int_equal(f->plan.n_recs, 2);
    assert_true(f->plan.recs[0].skipped && f->plan.recs[1].skipped);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 0);
    tg_buf_init(&body, 65536);
    assert_int_equal(tg_plan_final_error(&f->plan, 29500, &status, &body, &ra), 0);
    assert_int_equal(ra, 1); /* 500 ms rounds up to one second */
    tg_buf_dispose(&body);
}

static void test_unrecorded_probe_is_released(void **state)
{
    fx_t *f = *state;
    tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    init2(f, NULL);
    expect_attempt(&f->plan, 30000, &mod_a, true);
    /* the caller asks again without recording (cancelled): the probe slot is given back */
    expect_attempt(&f->plan, 30000, &mod_b, false);
    assert_int_equal(tg_breaker_admit(f->ba, 30000), TG_ADMIT_PROBE);
}

static void test_outcome_breaker_results(void **state)
{
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_SUCCESS), TG_RESULT_SUCCESS);
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_TRANSPORT), TG_RESULT_FAILURE);
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_TIMEOUT), TG_RESULT_FAILURE);
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_SERVER), TG_RESULT_FAILURE);
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_RATE_LIMITED), TG_RESULT_FAILURE);
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_MISCONFIGURED), TG_RESULT_FAILURE_OPEN);
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_CONTEXT_LENGTH), TG_RESULT_NEUTRAL);
    assert_int_equal(tg_outcome_breaker_result(TG_OUTCOME_CALLER), TG_RESULT_NEUTRAL);
}

static void test_classify_transport(void **state)
{
    tg_classified_t c;
    tg_outcome_transport(&c, TG_EUPSTREAM_UNREACHABLE, NULL, false);
    assert_int_equal(c.cls, TG_OUTCOME_TRANSPORT);
    assert_string_equal(c.reason, "connect_error");
    assert_int_equal(c.status, 0);
    assert_int_equal(c.retry_after_ms, -1);
    assert_string_equal(c.code, "upstream_unreachable");
    const char *kinds[] = {"connect", "first_byte", "idle", "total"};
    for (size_t i = 0; i < 4; i++) {
        char want[40];
        snprintf(want, sizeof(want), "timeout_%s", kinds[i]);
        tg_outcome_transport(&c, TG_EUPSTREAM_TIMEOUT, kinds[i], false);
        assert_int_equal(c.cls, TG_OUTCOME_TIMEOUT);
        assert_string_equal(c.reason, want);
        assert_string_equal(c.type, "timeout_error");
    }
    tg_outcome_transport(&c, TG_EUPSTREAM_TIMEOUT, NULL, false);
    assert_string_equal(c.reason, "timeout_total");
    tg_outcome_transport(&c, TG_EUPSTREAM_PROTOCOL, NULL, false);
    assert_int_equal(c.cls, TG_OUTCOME_TRANSPORT);
    assert_string_equal(c.reason, "protocol_error");
    tg_outcome_transport(&c, TG_ESTREAM_BROKEN, NULL, false);
    assert_int_equal(c.cls, TG_OUTCOME_TRANSPORT);
    assert_string_equal(c.reason, "stream_broken");
    tg_outcome_transport(&c, TG_EUPSTREAM_FAILED, NULL, false);
    assert_int_equal(c.cls, TG_OUTCOME_TRANSPORT);
}

/* Emits the plan's events into a paused queue and copies them out (at most cap); returns how many
 * were emitted. The caller starts the queue (no database) and stops it. */
static size_t emit_and_peek(const tg_plan_t *p, tg_failover_event_t *out, size_t cap)
{
    tg_events_pause(true);
    tg_events_stats_t st0, st1;
    tg_events_stats(&st0);
    tg_plan_emit_events(p, "req_1", 7, "smart", 1700000000000);
    tg_events_stats(&st1);
    size_t n = (size_t)(st1.emitted - st0.emitted);
    assert_int_equal(st1.queued, st0.queued + n); /* nothing dropped */
    for (size_t i = 0; i < n && i < cap; i++)
        assert_true(tg_events_peek(st0.queued + i, &out[i]));
    tg_events_pause(false);
    tg_events_flush();
    return n;
}

static void expect_row(const tg_failover_event_t *e, tg_event_kind_t kind, const char *from, const char *to,
                       const char *reason, int status, bool served, uint64_t added_us)
{
    assert_int_equal(e->kind, kind);
    assert_string_equal(e->from_target, from);
    assert_string_equal(e->to_target, to);
    assert_string_equal(e->reason, reason);
    assert_int_equal(e->status, status);
    assert_int_equal(e->served, served);
    assert_int_equal(e->added_latency_us, added_us);
    assert_string_equal(e->request_id, "req_1");
    assert_int_equal(e->tenant_id, 7);
    assert_string_equal(e->chain, "smart");
    assert_int_equal(e->at_unix_ms, 1700000000000);
}

/* "failed a, skipped b, served by c" is two rows, the last flagged served; no summary row. */
static void test_events_and_metrics(void **state)
{
    fx_t *f = *state;
    assert_int_equal(tg_events_start(NULL, 64), 0);
    tg_plan_init(&f->plan, f->targets, f->breakers, 3, NULL, NULL, NULL);
    tg_breaker_record(f->bb, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 0, &o, 1500);
    expect_attempt(&f->plan, 0, &mod_c, false); /* b skipped */
    tg_plan_record(&f->plan, 0, &OK, 700);
    assert_string_equal(tg_plan_fallback_reason(&f->plan), "http_503");

    double before =
        tg_metrics_get("tollgate_failovers_total", "from=\"p/ua\",to=\"q/ub\",reason=\"http_503\"");
    double before_skip =
        tg_metrics_get("tollgate_failovers_total", "from=\"q/ub\",to=\"q/uc\",reason=\"breaker_open\"");
    tg_failover_event_t ev[4];
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 2);
    expect_row(&ev[0], TG_EV_FAILED, "p/ua", "q/ub", "http_503", 503, false, 1500);
    expect_row(&ev[1], TG_EV_SKIPPED, "q/ub", "q/uc", "breaker_open", 0, true, 0);
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.emitted, 2);
    assert_int_equal(st.written, 2);
    assert_int_equal(st.dropped, 0);
    assert_true(tg_metrics_get("tollgate_failovers_total", "from=\"p/ua\",to=\"q/ub\",reason=\"http_503\"") ==
                before + 1);
    assert_true(tg_metrics_get("tollgate_failovers_total",
                               "from=\"q/ub\",to=\"q/uc\",reason=\"breaker_open\"") == before_skip + 1);
    assert_true(
        tg_metrics_get("tollgate_attempt_duration_seconds", "target=\"p/ua\",outcome=\"server_error\"") >= 1);
    tg_events_stop();
}

/* A dead primary (breaker open) costs one row per request: the skip, served by the next target. */
static void test_events_dead_primary_one_row(void **state)
{
    fx_t *f = *state;
    assert_int_equal(tg_events_start(NULL, 64), 0);
    tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_plan_record(&f->plan, 0, &OK, 900);
    tg_failover_event_t ev[4];
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 1);
    expect_row(&ev[0], TG_EV_SKIPPED, "p/ua", "q/ub", "breaker_open", 0, true, 0);

    /* served by the first target: no row at all */
    tg_breaker_reset(f->ba);
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &OK, 900);
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 0);
    tg_events_stop();
}

/* A plan that ends without service has no served row, and a caller error is no hop. */
static void test_events_unserved(void **state)
{
    fx_t *f = *state;
    assert_int_equal(tg_events_start(NULL, 64), 0);
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 0, &o, 100);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_classified_t t = out_of(TG_OUTCOME_TIMEOUT, 0, "timeout_first_byte", -1);
    tg_plan_record(&f->plan, 0, &t, 2000);
    expect_fail(&f->plan, 0);
    tg_failover_event_t ev[4];
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 2);
    expect_row(&ev[0], TG_EV_FAILED, "p/ua", "q/ub", "http_503", 503, false, 100);
    expect_row(&ev[1], TG_EV_FAILED, "q/ub", "", "timeout_first_byte", 0, false, 2000);

    /* a 503, then the fallback answers with the caller's own 400: one hop, into no service */
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &o, 100);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_classified_t c = out_of(TG_OUTCOME_CALLER, 400, "http_400", -1);
    tg_plan_record(&f->plan, 0, &c, 50);
    expect_fail(&f->plan, 0);
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 1);
    expect_row(&ev[0], TG_EV_FAILED, "p/ua", "q/ub", "http_503", 503, false, 100);
    tg_events_stop();
}

/* Retry-After waits belong to the hop after which they happened, so a request's rows add up to its
 * added latency (attempts that failed plus waits). */
static void test_events_wait_attribution(void **state)
{
    fx_t *f = *state;
    assert_int_equal(tg_events_start(NULL, 64), 0);
    /* one target: 429 with a short Retry-After, the wait, then served by the same target */
    tg_plan_init(&f->plan, f->targets, f->breakers, 1, NULL, NULL, NULL);
    expect_attempt(&f->plan, 100, &mod_a, false);
    tg_classified_t r = out_of(TG_OUTCOME_RATE_LIMITED, 429, "rate_limited", 1000);
    tg_plan_record(&f->plan, 100, &r, 40);
    tg_step_t s = tg_plan_next(&f->plan, 100);
    assert_int_equal(s.kind, TG_STEP_WAIT);
    tg_plan_waited(&f->plan, 1000);
    expect_attempt(&f->plan, 1100, &mod_a, false);
    tg_plan_record(&f->plan, 1100, &OK, 30);
    tg_failover_event_t ev[4];
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 1);
    expect_row(&ev[0], TG_EV_FAILED, "p/ua", "p/ua", "rate_limited", 429, true, 40 + 1000 * 1000);

    /* a 429 (Retry-After 500 ms), b fails over at 200 ms, the rest of a's wait, a serves: the wait
     * happened after b's attempt, so b's row carries it */
    tg_breaker_reset(f->ba);
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    r = out_of(TG_OUTCOME_RATE_LIMITED, 429, "rate_limited", 500);
    tg_plan_record(&f->plan, 0, &r, 10);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_classified_t e = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 200, &e, 20);
    s = tg_plan_next(&f->plan, 200);
    assert_int_equal(s.kind, TG_STEP_WAIT);
    assert_int_equal(s.wait_ms, 300);
    tg_plan_waited(&f->plan, 300);
    expect_attempt(&f->plan, 500, &mod_a, false);
    tg_plan_record(&f->plan, 500, &OK, 10);
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 2);
    expect_row(&ev[0], TG_EV_FAILED, "p/ua", "q/ub", "rate_limited", 429, false, 10);
    expect_row(&ev[1], TG_EV_FAILED, "q/ub", "p/ua", "http_503", 503, true, 20 + 300 * 1000);

    /* a 429 (short Retry-After), b skipped (open), the wait, a serves: a skip adds nothing, the
     * wait stays with the attempt that asked for it */
    tg_breaker_reset(f->ba);
    tg_breaker_record(f->bb, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    init2(f, NULL);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 0, &r, 10);
    s = tg_plan_next(&f->plan, 0); /* b is skipped on the way */
    assert_int_equal(s.kind, TG_STEP_WAIT);
    assert_int_equal(s.wait_ms, 500);
    tg_plan_waited(&f->plan, 500);
    expect_attempt(&f->plan, 500, &mod_a, false);
    tg_plan_record(&f->plan, 500, &OK, 10);
    assert_int_equal(emit_and_peek(&f->plan, ev, 4), 2);
    expect_row(&ev[0], TG_EV_FAILED, "p/ua", "q/ub", "rate_limited", 429, false, 10 + 500 * 1000);
    expect_row(&ev[1], TG_EV_SKIPPED, "q/ub", "p/ua", "breaker_open", 0, true, 0);
    tg_events_stop();
}

/*
 * call.c reuses calls without zeroing the plan, and tg_plan_init writes only what the planner
 * reads: whatever garbage or a previous request left in the plan must not change a decision.
 */
static void test_init_on_dirty_plan(void **state)
{
    fx_t *f = *state;
    memset(&f->plan, 0xA5, sizeof(f->plan));
    tg_plan_init(&f->plan, f->targets, f->breakers, 3, NULL, NULL, NULL);
    assert_int_equal(f->plan.n_recs, 0);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t o = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_attempt(&f->plan, 0, &mod_b, false);
    tg_plan_record(&f->plan, 0, &OK, 20);
    assert_int_equal(f->plan.n_recs, 2);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 2);
    assert_string_equal(tg_plan_fallback_reason(&f->plan), "http_503");
    assert_false(f->plan.recs[0].skipped);
    assert_int_equal(f->plan.recs[0].out.status, 503);
    assert_int_equal(f->plan.recs[1].out.cls, TG_OUTCOME_SUCCESS);
    assert_int_equal(f->plan.recs[1].latency_us, 20);
    expect_fail(&f->plan, 0);

    /* the same memory for the next request: a caller error on the first target; its full text
     * (kept outside the slim records) makes the body */
    tg_plan_init(&f->plan, f->targets, f->breakers, 3, NULL, NULL, NULL);
    assert_int_equal(f->plan.n_recs, 0);
    expect_attempt(&f->plan, 0, &mod_a, false);
    o = out_of(TG_OUTCOME_CALLER, 422, "http_422", -1);
    snprintf(o.message, sizeof(o.message), "%s", "messages[0].content: expected a string or an array");
    snprintf(o.type, sizeof(o.type), "invalid_request_error");
    snprintf(o.param, sizeof(o.param), "messages[0].content");
    tg_plan_record(&f->plan, 0, &o, 10);
    expect_fail(&f->plan, 0);
    int status = 0;
    uint32_t ra = 99;
    tg_buf_t body;
    tg_buf_init(&body, 4096);
    assert_int_equal(tg_plan_final_error(&f->plan, 0, &status, &body, &ra), 0);
    assert_int_equal(status, 422);
    assert_int_equal(ra, 0);
    assert_string_equal(body.data, "{\"error\":{\"message\":\"messages[0].content: expected a string or an "
                                   "array\",\"type\":\"invalid_request_error\",\"code\":null,\"param\":"
                                   "\"messages[0].content\"}}");
    tg_buf_dispose(&body);

    /* the records stay small: a plan per request must not be tens of KiB again */
    assert_true(sizeof(tg_attempt_rec_t) <= 80);
    assert_true(sizeof(tg_plan_t) <= 4096);
}

/* A stream's breaker verdict waits for its end: broken streams count, whole ones reset. */
static void test_stream_verdict_deferred(void **state)
{
    fx_t *f = *state;
    tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE);
    /* two failures in a row; a stream starts: its first byte must not wipe them */
    init2(f, NULL);
    expect_attempt(&f->plan, 1, &mod_a, false);
    tg_plan_record_stream_start(&f->plan, 1, &OK, 1000);
    assert_int_equal(tg_breaker_state(f->ba, 1), TG_BREAKER_CLOSED);
    tg_plan_settle(&f->plan, 2, TG_RESULT_FAILURE); /* it broke: the third failure opens */
    assert_int_equal(tg_breaker_state(f->ba, 2), TG_BREAKER_OPEN);
    tg_plan_settle(&f->plan, 3, TG_RESULT_FAILURE); /* settled already: no-op */
    tg_breaker_reset(f->ba);

    /* a whole stream resets the run like any success */
    tg_breaker_record(f->ba, 10, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(f->ba, 10, TG_ADMIT_YES, TG_RESULT_FAILURE);
    init2(f, NULL);
    expect_attempt(&f->plan, 11, &mod_a, false);
    tg_plan_record_stream_start(&f->plan, 11, &OK, 1000);
    tg_plan_settle(&f->plan, 12, TG_RESULT_SUCCESS);
    tg_breaker_record(f->ba, 13, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(f->ba, 13, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(f->ba, 13), TG_BREAKER_CLOSED);
}

/* A half-open probe that streams is proven only by a whole answer; a client that leaves frees it. */
static void test_stream_probe_verdict(void **state)
{
    fx_t *f = *state;
    for (int i = 0; i < 3; i++)
        tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE);
    uint64_t t = 30000; /* open_ms later: the next admit is the probe */
    init2(f, NULL);
    expect_attempt(&f->plan, t, &mod_a, true);
    tg_plan_record_stream_start(&f->plan, t, &OK, 1000);
    /* while the probe streams, everyone else skips the target */
    assert_int_equal(tg_breaker_admit(f->ba, t + 1), TG_ADMIT_SKIP);
    tg_plan_settle(&f->plan, t + 2, TG_RESULT_NEUTRAL); /* the client left: the slot is free again */
    tg_admit_t a = tg_breaker_admit(f->ba, t + 3);
    assert_int_equal(a, TG_ADMIT_PROBE);
    tg_breaker_record(f->ba, t + 3, a, TG_RESULT_NEUTRAL);

    init2(f, NULL);
    expect_attempt(&f->plan, t + 4, &mod_a, true);
    tg_plan_record_stream_start(&f->plan, t + 4, &OK, 1000);
    assert_int_equal(tg_breaker_state(f->ba, t + 5), TG_BREAKER_HALF_OPEN);
    tg_plan_settle(&f->plan, t + 6, TG_RESULT_SUCCESS);
    assert_int_equal(tg_breaker_state(f->ba, t + 6), TG_BREAKER_CLOSED);
}

/* ---- the request's first-byte budget (issue #9 item 5) ---- */

static tg_plan_opts_t budget_opts(uint32_t budget_ms, uint64_t start_ms)
{
    return (tg_plan_opts_t){.max_attempts_per_target = 1,
                            .retry_wait_cap_ms = 10000,
                            .short_wait_ms = 2000,
                            .request_first_byte_ms = budget_ms,
                            .start_ms = start_ms};
}

static tg_step_t expect_attempt_fb(tg_plan_t *p, uint64_t now, const tg_model_cfg_t *t, bool probe,
                                   uint32_t fb, tg_cut_t cut)
{
    tg_step_t s = tg_plan_next(p, now);
    assert_int_equal(s.kind, TG_STEP_ATTEMPT);
    assert_ptr_equal(s.target, t);
    assert_int_equal(s.probe, probe);
    assert_int_equal(s.first_byte_ms, fb);
    assert_int_equal(s.cut, cut);
    return s;
}

/* Both targets of a two-target chain hang: the first uses its own first-byte timeout, the second
 * what is left of the budget, and the plan ends when it is spent (before: 2 x first_byte_ms). */
static void test_budget_two_hanging_targets(void **state)
{
    fx_t *f = *state;
    prov_p.timeouts.first_byte_ms = 800;
    prov_q.timeouts.first_byte_ms = 800;
    tg_plan_opts_t o = budget_opts(1000, 5000);
    init2(f, &o);
    expect_attempt_fb(&f->plan, 5000, &mod_a, false, 800, TG_CUT_NONE);
    tg_classified_t t;
    tg_outcome_transport(&t, TG_EUPSTREAM_TIMEOUT, "first_byte", false);
    tg_plan_record(&f->plan, 5800, &t, 800000);
    expect_attempt_fb(&f->plan, 5800, &mod_b, false, 200, TG_CUT_BUDGET);
    /* the transfer's timer runs on the loop's cached clock: it may fire a little before the
     * planner's clock reaches the deadline; the budget is spent all the same */
    tg_plan_record(&f->plan, 5997, &t, 197000);
    expect_fail(&f->plan, 5997);
    assert_true(tg_plan_budget_spent(&f->plan));
    assert_string_equal(f->plan.recs[0].out.reason, "timeout_first_byte");
    /* the second one was cut by the budget: named so, and not counted against its breaker */
    assert_string_equal(f->plan.recs[1].out.reason, "timeout_request_budget");
    assert_int_equal(f->plan.recs[1].out.cls, TG_OUTCOME_TIMEOUT);
    for (int i = 0; i < 3; i++) {
        tg_plan_init(&f->plan, f->targets + 1, f->breakers + 1, 1, NULL, NULL, &o);
        expect_attempt_fb(&f->plan, 5900, &mod_b, false, 100, TG_CUT_BUDGET);
        tg_plan_record(&f->plan, 6000, &t, 100000);
    }
    assert_int_equal(tg_breaker_state(f->bb, 6000), TG_BREAKER_CLOSED);

    int status = 0;
    uint32_t ra = 0;
    tg_buf_t body;
    tg_buf_init(&body, 65536);
    init2(f, &o);
    expect_attempt_fb(&f->plan, 5000, &mod_a, false, 800, TG_CUT_NONE);
    tg_plan_record(&f->plan, 5800, &t, 800000);
    expect_attempt_fb(&f->plan, 5800, &mod_b, false, 200, TG_CUT_BUDGET);
    tg_plan_record(&f->plan, 6000, &t, 200000);
    expect_fail(&f->plan, 6000);
    assert_int_equal(tg_plan_final_error(&f->plan, 6000, &status, &body, &ra), 0);
    assert_int_equal(status, 503);
    assert_non_null(strstr(body.data, "p/ua: timeout_first_byte"));
    assert_non_null(strstr(body.data, "q/ub: timeout_request_budget"));
    assert_non_null(strstr(body.data, "request first-byte budget of 1000 ms spent"));
    tg_buf_dispose(&body);
    prov_p.timeouts.first_byte_ms = 0;
    prov_q.timeouts.first_byte_ms = 0;
}

/* A spent budget ends the plan before the next target is even asked; a failure that is not a
 * first-byte timeout keeps its own reason. */
static void test_budget_spent_before_next_target(void **state)
{
    fx_t *f = *state;
    tg_plan_opts_t o = budget_opts(1000, 0);
    tg_plan_init(&f->plan, f->targets, f->breakers, 3, NULL, NULL, &o);
    expect_attempt_fb(&f->plan, 0, &mod_a, false, 1000, TG_CUT_BUDGET); /* no provider timeout: the budget */
    tg_classified_t e = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 1000, &e, 1000000);
    expect_fail(&f->plan, 1000);
    assert_true(tg_plan_budget_spent(&f->plan));
    assert_int_equal(f->plan.n_recs, 1);
    assert_string_equal(f->plan.recs[0].out.reason, "http_503");
    /* less than 50 ms left is no budget: no attempt is started with a few milliseconds */
    tg_plan_init(&f->plan, f->targets, f->breakers, 3, NULL, NULL, &o);
    expect_attempt_fb(&f->plan, 0, &mod_a, false, 1000, TG_CUT_BUDGET);
    tg_plan_record(&f->plan, 951, &e, 951000);
    expect_fail(&f->plan, 951);
    assert_true(tg_plan_budget_spent(&f->plan));
    tg_plan_init(&f->plan, f->targets, f->breakers, 3, NULL, NULL, &o);
    expect_attempt_fb(&f->plan, 0, &mod_a, false, 1000, TG_CUT_BUDGET);
    tg_plan_record(&f->plan, 950, &e, 950000);
    expect_attempt_fb(&f->plan, 950, &mod_b, false, 50, TG_CUT_BUDGET);
    /* no budget: no cut, never spent */
    init2(f, NULL);
    tg_step_t s = tg_plan_next(&f->plan, 1u << 30);
    assert_int_equal(s.kind, TG_STEP_ATTEMPT);
    assert_int_equal(s.cut, TG_CUT_NONE);
    assert_false(tg_plan_budget_spent(&f->plan));
}

/* A Retry-After wait never runs past the budget. */
static void test_budget_bounds_waits(void **state)
{
    fx_t *f = *state;
    tg_plan_opts_t o = budget_opts(1500, 0);
    init2(f, &o);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_classified_t rl = out_of(TG_OUTCOME_RATE_LIMITED, 429, "rate_limited", 1000);
    tg_plan_record(&f->plan, 100, &rl, 100000);
    expect_attempt(&f->plan, 100, &mod_b, false);
    tg_classified_t e = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 600, &e, 500000);
    /* a is due at 1100; the budget ends at 1500: the wait fits, the retry gets the rest */
    tg_step_t s = tg_plan_next(&f->plan, 600);
    assert_int_equal(s.kind, TG_STEP_WAIT);
    assert_int_equal(s.wait_ms, 500);
    tg_plan_waited(&f->plan, 500);
    expect_attempt_fb(&f->plan, 1100, &mod_a, false, 400, TG_CUT_BUDGET);

    /* the same with a budget that ends before a is due: fail now, do not wait */
    o = budget_opts(1000, 0);
    init2(f, &o);
    expect_attempt(&f->plan, 0, &mod_a, false);
    tg_plan_record(&f->plan, 100, &rl, 100000);
    expect_attempt(&f->plan, 100, &mod_b, false);
    tg_plan_record(&f->plan, 600, &e, 500000);
    expect_fail(&f->plan, 600);
    assert_true(tg_plan_budget_spent(&f->plan));
}

/* A half-open probe gets its breaker's short probe timeout; when it times out the breaker
 * re-opens at once instead of staying half-open for a whole first-byte timeout. */
static void test_probe_timeout(void **state)
{
    fx_t *f = *state;
    prov_p.timeouts.first_byte_ms = 60000;
    prov_p.breaker.probe_timeout_ms = 300;
    tg_breaker_record(f->ba, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    tg_plan_opts_t o = budget_opts(90000, 30000);
    init2(f, &o);
    expect_attempt_fb(&f->plan, 30000, &mod_a, true, 300, TG_CUT_PROBE);
    tg_classified_t t;
    tg_outcome_transport(&t, TG_EUPSTREAM_TIMEOUT, "first_byte", false);
    tg_plan_record(&f->plan, 30300, &t, 300000);
    assert_string_equal(f->plan.recs[0].out.reason, "timeout_first_byte");
    assert_int_equal(tg_breaker_state(f->ba, 30300), TG_BREAKER_OPEN);
    expect_attempt_fb(&f->plan, 30300, &mod_b, false, 89700, TG_CUT_BUDGET);
    /* a closed target is not cut by the probe timeout */
    tg_plan_record(&f->plan, 30400, &OK, 100);
    init2(f, NULL);
    tg_breaker_reset(f->ba);
    expect_attempt_fb(&f->plan, 30400, &mod_a, false, 60000, TG_CUT_NONE);
    tg_plan_record(&f->plan, 30401, &OK, 1);
    prov_p.timeouts.first_byte_ms = 0;
    prov_p.breaker.probe_timeout_ms = 0;
}

/* Issue #9 item 7: the primary fails while the fallback is half-open with its probe out (from an
 * old fault). The fallback is the last usable target: the request becomes an extra probe of it
 * instead of a 503 "all targets failed". */
static void test_half_open_fallback_extra_probe(void **state)
{
    fx_t *f = *state;
    tg_breaker_record(f->bb, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    /* another request holds b's probe */
    tg_plan_t other;
    tg_plan_init(&other, f->targets + 1, f->breakers + 1, 1, NULL, NULL, NULL);
    expect_attempt(&other, 30000, &mod_b, true);

    init2(f, NULL);
    expect_attempt(&f->plan, 30001, &mod_a, false);
    tg_classified_t e = out_of(TG_OUTCOME_SERVER, 503, "http_503", -1);
    tg_plan_record(&f->plan, 30002, &e, 1000);
    /* before: FAIL (503 all targets failed). Now: b as an extra probe (the skip it met on the
     * way is not kept: the hop is a -> b, served) */
    expect_attempt(&f->plan, 30002, &mod_b, true);
    assert_int_equal(f->plan.n_recs, 1);
    tg_plan_record(&f->plan, 30003, &OK, 1000);
    assert_int_equal(tg_plan_attempt_count(&f->plan), 2);
    assert_string_equal(tg_plan_fallback_reason(&f->plan), "http_503");
    assert_int_equal(tg_breaker_state(f->bb, 30003), TG_BREAKER_CLOSED); /* proven healthy */
    tg_plan_record(&other, 30004, &OK, 1000); /* the first probe's late result changes nothing */
    assert_int_equal(tg_breaker_state(f->bb, 30004), TG_BREAKER_CLOSED);

    /* an open (not half-open) fallback stays skipped: the plan fails */
    tg_breaker_reset(f->ba);
    tg_breaker_record(f->bb, 40000, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    init2(f, NULL);
    expect_attempt(&f->plan, 40001, &mod_a, false);
    tg_plan_record(&f->plan, 40002, &e, 1000);
    expect_fail(&f->plan, 40002);

    /* the extra probe fails: the breaker re-opens and the plan ends */
    tg_breaker_reset(f->ba);
    tg_plan_init(&other, f->targets + 1, f->breakers + 1, 1, NULL, NULL, NULL);
    expect_attempt(&other, 70000, &mod_b, true);
    init2(f, NULL);
    expect_attempt(&f->plan, 70001, &mod_a, false);
    tg_plan_record(&f->plan, 70002, &e, 1000);
    expect_attempt(&f->plan, 70002, &mod_b, true);
    tg_plan_record(&f->plan, 70003, &e, 1000);
    assert_int_equal(tg_breaker_state(f->bb, 70003), TG_BREAKER_OPEN);
    expect_fail(&f->plan, 70003);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_served_by_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_verdict_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_probe_verdict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_caller_error_no_failover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_context_length_goes_to_fallback_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_context_length_without_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_breaker_is_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_degraded_after_healthy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_attempts_per_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_short_wait_same_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_fails_over_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_long_or_capped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_failed_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_everything_down_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unrecorded_probe_is_released, setup, teardown),
        cmocka_unit_test(test_outcome_breaker_results),
        cmocka_unit_test(test_classify_transport),
        cmocka_unit_test_setup_teardown(test_events_and_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_dead_primary_one_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_unserved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_wait_attribution, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_on_dirty_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_two_hanging_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_spent_before_next_target, setup, teardown),
        cmocka_unit_test_setup_teardown(test_budget_bounds_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_open_fallback_extra_probe, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
