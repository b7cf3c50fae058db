/*
 * test_jsonmem.c - the per-call JSON memory budget (core/jsonmem.c), its use around the
 * adapters' translations (tg_prov_build_bounded), its setting (limits.body_memory_factor) and the
 * idle trimmer's decision (memtrim.c).
 *
 * The budget's boundary is exact: a body whose parse counts N bytes passes with a budget of N
 * and is refused with N - 1, on both sides of the pre-scan threshold. The pre-scan's estimate is
 * a lower bound of what jansson really allocates (checked here, so a jansson that allocates less
 * fails this test rather than refusing requests). Translations fail cleanly at every budget
 * below what they need (run under ASan: no crash, no leak).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fixtures/fixture_util.h"
#include "config.h"
#include "err.h"
#include "jsonmem.h"
#include "memtrim.h"

/* A body of n bytes of `{"model":"m","messages":[...],"x":[1,1,...]}`: the attack. */
static char *ones_body(size_t n, size_t *len)
{
    char *b = malloc(n + 64);
    assert_non_null(b);
    size_t k = (size_t)snprintf(b, 64, "{\"model\":\"m\",\"messages\":[],\"x\":[1");
    while (k + 4 < n) {
        memcpy(b + k, ",1", 2);
        k += 2;
    }
    memcpy(b + k, "]}", 3);
    *len = k + 2;
    return b;
}

/* An ordinary conversation of about n bytes: turns of a few hundred characters. */
static char *chat_body(size_t n, size_t *len)
{
    char *b = malloc(n + 1024);
    assert_non_null(b);
    size_t k = (size_t)snprintf(b, 64, "{\"model\":\"m\",\"messages\":[");
    for (unsigned i = 0; k + 600 < n; i++) {
        k += (size_t)snprintf(b + k, 64, "%s{\"role\":\"%s\",\"content\":\"", i > 0 ? "," : "",
                              i % 2 ? "assistant" : "user");
        static const char *const piece[] = {"word ", "\\\"quoted\\\" ", "more text, ", "caf\\u00e9 "};
        for (unsigned j = 0; j < 60; j++) {
            size_t pl = strlen(piece[(i + j) % 4]);
            memcpy(b + k, piece[(i + j) % 4], pl);
            k += pl;
        }
        memcpy(b + k, "\"}", 2);
        k += 2;
    }
    memcpy(b + k, "]}", 3);
    *len = k + 2;
    return b;
}

static size_t cost_of(const char *buf, size_t len)
{
    json_error_t je;
    int rc;
    size_t used = 0;
    json_t *v = tg_json_load_bounded(buf, len, SIZE_MAX, JSON_REJECT_DUPLICATES, &je, &rc, &used);
    if (rc != 0)
        fail_msg("%s: %s", buf, je.text);
    assert_non_null(v);
    json_decref(v);
    return used;
}

static void assert_boundary(const char *buf, size_t len)
{
    size_t n = cost_of(buf, len);
    json_error_t je;
    int rc;
    size_t used = 0;
    json_t *v = tg_json_load_bounded(buf, len, n, JSON_REJECT_DUPLICATES, &je, &rc, &used);
    assert_non_null(v);
    assert_int_equal(rc, 0);
    assert_int_equal(used, n);
    json_decref(v);
    v = tg_json_load_bounded(buf, len, n - 1, JSON_REJECT_DUPLICATES, &je, &rc, &used);
    assert_null(v);
    assert_int_equal(rc, TG_EBODY_TOO_COMPLEX);
}

static void test_exact_boundary(void **state)
{
    (void)state;
    static const char *const small[] = {
        "{}", "[1]", "{\"a\":\"b\"}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        "[[[[{\"k\":[1.5,-2,true,null,\"x\\\"y\"]}]]]]"};
    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++)
        assert_boundary(small[i], strlen(small[i]));
    /* above TG_JSONMEM_PRESCAN_MIN: the pre-scan runs first and must not refuse at the boundary */
    size_t len;
    char *b = ones_body(200 << 10, &len);
    assert_true(len > TG_JSONMEM_PRESCAN_MIN);
    assert_boundary(b, len);
    free(b);
    b = chat_body(300 << 10, &len);
    assert_boundary(b, len);
    free(b);
}

static void test_estimate_is_a_lower_bound(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{}",
        "[]",
        "[{},{},{},[],[[]],{\"a\":{}}]",
        "[1,2,3,-4,5.5,6e7,-0.1E+2]",
        "[\"a\",\"bc\",\"\\\"\",\"\\\\\",\"\\\\\\\"\",\"\\u0041\"]",
        "{\"a\":1,\"bb\":\"x\",\"c\" : [true,false,null],\"d\":{\"e\":{\"f\":[]}}}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"t\"}]}]"
        "}",
        "  [ 1 , \"x\" , { \"k\" :\t\"v\" } ]  ",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        size_t n = cost_of(docs[i], strlen(docs[i]));
        size_t est = tg_jsonmem_estimate(docs[i], strlen(docs[i]), SIZE_MAX);
        if (est > n)
            fail_msg("estimate %zu above the cost %zu of %s", est, n, docs[i]);
    }
    size_t len;
    char *b = ones_body(256 << 10, &len);
    size_t est = tg_jsonmem_estimate(b, len, SIZE_MAX);
    assert_true(est <= cost_of(b, len));
    assert_true(est > 10 * len); /* close enough to refuse the attack without parsing it */
    free(b);
    b = chat_body(256 << 10, &len);
    assert_true(tg_jsonmem_estimate(b, len, SIZE_MAX) <= cost_of(b, len));
    free(b);
    /* an escaped quote does not end a string: one string, not two plus garbage */
    assert_int_equal(tg_jsonmem_estimate("\"a\\\"b\"", 6, SIZE_MAX),
                     tg_jsonmem_estimate("\"ab\"", 4, SIZE_MAX));
    /* an unterminated string or escape at the end stops the scan without reading past it */
    assert_true(tg_jsonmem_estimate("[\"abc\\", 6, SIZE_MAX) > 0);
    /* the scan stops once it is above stop_above */
    assert_true(tg_jsonmem_estimate("[{},{},{},{}]", 13, 100) <
                tg_jsonmem_estimate("[{},{},{},{}]", 13, SIZE_MAX));
}

static void test_attack_refused_without_parsing(void **state)
{
    (void)state;
    size_t len;
    char *b = ones_body(1 << 20, &len);
    json_error_t je;
    int rc;
    size_t used = 1;
    json_t *v =
        tg_json_load_bounded(b, len, tg_jsonmem_budget(len, 10), JSON_REJECT_DUPLICATES, &je, &rc, &used);
    assert_null(v);
    assert_int_equal(rc, TG_EBODY_TOO_COMPLEX);
    assert_int_equal(used, 0); /* the pre-scan refused it: no tree was started */
    free(b);
    /* an ordinary 1 MiB conversation passes the default budget */
    b = chat_body(1 << 20, &len);
    v = tg_json_load_bounded(b, len, tg_jsonmem_budget(len, 10), JSON_REJECT_DUPLICATES, &je, &rc, &used);
    assert_non_null(v);
    assert_int_equal(rc, 0);
    assert_true(used < 3 * len);
    json_decref(v);
    free(b);
}

static void test_invalid_json_and_unarmed(void **state)
{
    (void)state;
    json_error_t je;
    int rc;
    size_t used;
    assert_null(tg_json_load_bounded("{\"a\":", 5, SIZE_MAX, 0, &je, &rc, &used));
    assert_int_equal(rc, TG_EINVALID_JSON);
    assert_null(
        tg_json_load_bounded("{\"a\":1,\"a\":2}", 13, SIZE_MAX, JSON_REJECT_DUPLICATES, &je, &rc, NULL));
    assert_int_equal(rc, TG_EINVALID_JSON);
    /* unarmed, jansson allocates freely and nothing is counted */
    json_t *big = json_array();
    for (int i = 0; i < 10000; i++)
        assert_int_equal(json_array_append_new(big, json_integer(i)), 0);
    json_decref(big);
    tg_jsonmem_arm(100);
    bool exceeded = true;
    assert_int_equal(tg_jsonmem_disarm(&exceeded), 0);
    assert_false(exceeded);
    /* once an allocation is refused, smaller ones are refused too: the budget is spent */
    tg_jsonmem_arm(100);
    json_t *a = json_array();    /* 104 bytes: over */
    json_t *i = json_integer(1); /* 24 bytes: would fit, refused all the same */
    size_t n = tg_jsonmem_disarm(&exceeded);
    assert_null(a);
    assert_null(i);
    assert_true(exceeded);
    assert_true(n <= 100);
}

/* jansson's lexer aborts on a failed allocation while it scans a number (load.c, an assertion
 * that Debian keeps): a parse under a budget must never let it see one, at any budget. Found by
 * fuzz_jsonmem ("500000000800000 " as a whole document). */
static void test_parse_never_aborts(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "500000000800000 ",
        "[1,\"abc\",123456789012345678,true,false,null,-1.5e10,{\"k\":1234567890.123456789e-3}]",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"seed\":"
        "12345678901234567,\"temperature\":0.700000000000000000000001}",
    };
    for (size_t d = 0; d < sizeof(docs) / sizeof(docs[0]); d++) {
        size_t len = strlen(docs[d]), need;
        json_error_t je;
        int rc;
        json_t *v = tg_json_load_bounded(docs[d], len, SIZE_MAX, JSON_DECODE_ANY, &je, &rc, &need);
        assert_non_null(v);
        json_decref(v);
        for (size_t budget = 0; budget <= need; budget++) {
            v = tg_json_load_bounded(docs[d], len, budget, JSON_DECODE_ANY, &je, &rc, NULL);
            assert_int_equal(rc, budget < need ? TG_EBODY_TOO_COMPLEX : 0);
            json_decref(v);
        }
    }
}

static void test_budget_and_error_entry(void **state)
{
    (void)state;
    assert_int_equal(tg_jsonmem_budget(0, 10), TG_JSONMEM_FLOOR);
    assert_int_equal(tg_jsonmem_budget(1000, 10), TG_JSONMEM_FLOOR + 10000);
    assert_int_equal(tg_jsonmem_budget(1000, 0), SIZE_MAX);
    assert_int_equal(tg_jsonmem_budget(SIZE_MAX / 2, 10), SIZE_MAX);
    assert_int_equal(tg_err_http_status(TG_EBODY_TOO_COMPLEX), 413);
    assert_string_equal(tg_err_code(TG_EBODY_TOO_COMPLEX), "request_too_complex");
    assert_string_equal(tg_err_type(TG_EBODY_TOO_COMPLEX), "invalid_request_error");
    char msg[JSON_ERROR_TEXT_LENGTH];
    tg_jsonmem_explain(msg, sizeof(msg), 1048576, 10);
    assert_non_null(strstr(msg, "1048576 bytes"));
    assert_non_null(strstr(msg, "11534336 bytes")); /* the limit, named */
    assert_true(strlen(msg) < sizeof(msg) - 1);     /* not cut */
}

/* Every budget below what a translation needs fails it cleanly (ASan: no crash, no leak). */
static void torture_build(const tg_adapter_t *ad, const json_t *canon, bool stream)
{
    static tg_provider_cfg_t prov = {.name = "p", .base_url = "https://api.example.com/base"};
    tg_build_in_t in = {.provider = &prov, .upstream_model = "up", .api_key = "k", .stream = stream};
    tg_upstream_req_t req = {0};
    tg_error_t err0 = {0};
    tg_jsonmem_arm(SIZE_MAX);
    int rc = ad->build_request(&in, canon, &req, &err0);
    size_t need = tg_jsonmem_disarm(NULL);
    assert_int_equal(rc, 0);
    tg_upstream_req_dispose(&req);
    size_t step = need / 20000 + 1; /* every allocation boundary of the fixtures below */
    for (size_t budget = 0; budget <= need; budget += step) {
        tg_error_t err = {0};
        memset(&req, 0, sizeof(req));
        tg_jsonmem_arm(budget);
        rc = ad->build_request(&in, canon, &req, &err);
        bool exceeded;
        tg_jsonmem_disarm(&exceeded);
        assert_true(rc != 0 || exceeded || budget >= need);
        tg_upstream_req_dispose(&req);
    }
}

static void test_translation_fails_cleanly(void **state)
{
    (void)state;
    /* tool arguments and results are parsed during translation: long numbers in them too */
    json_t *tools =
        json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:n, s:[{s:s, s:s, s:{s:s, s:s}}]}, {s:s, s:s, s:s}]}", "model",
                  "m", "messages", "role", "user", "content", "hi", "role", "assistant", "content",
                  "tool_calls", "id", "c1", "type", "function", "function", "name", "f", "arguments",
                  "{\"n\":123456789012345678,\"x\":[1.25e10,true,null,\"s\"]}", "role", "tool",
                  "tool_call_id", "c1", "content", "{\"result\":98765432109876543,\"ok\":false}");
    assert_non_null(tools);
    for (int stream = 0; stream < 2; stream++) {
        torture_build(&tg_adapter_anthropic, tools, stream);
        torture_build(&tg_adapter_gemini, tools, stream);
    }
    json_decref(tools);
    json_t *canon = fx_json("canon/chat_full.json");
    assert_non_null(canon);
    for (int stream = 0; stream < 2; stream++) {
        torture_build(&tg_adapter_anthropic, canon, stream);
        torture_build(&tg_adapter_gemini, canon, stream);
        torture_build(&tg_adapter_openai, canon, stream); /* the tree path: in.raw is NULL */
    }
    json_decref(canon);
}

static void test_translation_bounded(void **state)
{
    (void)state;
    /* 20,000 one-word turns: the translation builds a container per block and per turn */
    json_t *msgs = json_array();
    for (int i = 0; i < 20000; i++)
        json_array_append_new(msgs,
                              json_pack("{s:s,s:s}", "role", i % 2 ? "assistant" : "user", "content", "hi"));
    json_t *canon = json_pack("{s:s,s:o}", "model", "m", "messages", msgs);
    static tg_provider_cfg_t prov = {.name = "p", .base_url = "https://api.example.com/base"};
    tg_build_in_t in = {.provider = &prov, .upstream_model = "up", .raw_len = 0};
    tg_upstream_req_t req = {0};
    tg_error_t err = {0};
    /* budget 3 x (1 MiB + 1 x 0): the Anthropic tree of 20,000 turns is larger */
    assert_int_equal(tg_prov_build_bounded(&tg_adapter_anthropic, &in, canon, 1, &req, &err),
                     TG_EBODY_TOO_COMPLEX);
    assert_null(req.body);
    assert_int_equal(err.code, TG_EBODY_TOO_COMPLEX);
    /* a 1 MiB body's budget allows it (it needs 27 MB, 3 x 11.5 MB are allowed) */
    in.raw_len = 1 << 20;
    memset(&req, 0, sizeof(req));
    assert_int_equal(tg_prov_build_bounded(&tg_adapter_anthropic, &in, canon, 10, &req, &err), 0);
    assert_non_null(req.body);
    tg_upstream_req_dispose(&req);
    json_decref(canon);
}

/* limits.body_memory_factor: default 10, 0 allowed (no budget), above 1000 refused by name. */
static void test_config_factor(void **state)
{
    (void)state;
    static const char *const ok[] = {"{}", "{\"limits\": {\"body_memory_factor\": 0}}",
                                     "{\"limits\": {\"body_memory_factor\": 1000}}"};
    static const uint32_t want[] = {10, 0, 1000};
    for (size_t i = 0; i < 3; i++) {
        tg_buf_t errs;
        tg_buf_init(&errs, 1 << 16);
        tg_config_t *c = NULL;
        assert_int_equal(tg_config_parse(ok[i], strlen(ok[i]), "t.json", &c, &errs), 0);
        assert_int_equal(c->body_memory_factor, want[i]);
        tg_config_unref(c);
        tg_buf_dispose(&errs);
    }
    const char *bad = "{\"limits\": {\"body_memory_factor\": 1001}}";
    tg_buf_t errs;
    tg_buf_init(&errs, 1 << 16);
    tg_config_t *c = NULL;
    assert_int_equal(tg_config_parse(bad, strlen(bad), "t.json", &c, &errs), TG_ECONFIG);
    assert_null(c);
    assert_non_null(errs.data);
    assert_non_null(strstr(errs.data, "limits.body_memory_factor"));
    tg_buf_dispose(&errs);
}

static void test_memtrim_decision(void **state)
{
    (void)state;
    tg_memtrim_state_t s = {.last_trim_ms = 1000};
    uint64_t t = 1000;
    /* idle from the start and nothing seen: no trim before the period */
    for (int i = 0; i < 5; i++)
        assert_false(tg_memtrim_tick(&s, false, t += 1000));
    /* a burst, then idle: trims after TG_MEMTRIM_IDLE_TICKS idle ticks, once */
    assert_false(tg_memtrim_tick(&s, true, t += 1000));
    assert_false(tg_memtrim_tick(&s, true, t += 1000));
    for (int i = 1; i < TG_MEMTRIM_IDLE_TICKS; i++)
        assert_false(tg_memtrim_tick(&s, false, t += 1000));
    assert_true(tg_memtrim_tick(&s, false, t += 1000));
    assert_false(tg_memtrim_tick(&s, false, t += 1000));
    /* a busy tick resets the idle count */
    assert_false(tg_memtrim_tick(&s, true, t += 1000));
    assert_false(tg_memtrim_tick(&s, false, t += 1000));
    assert_false(tg_memtrim_tick(&s, true, t += 1000));
    for (int i = 1; i < TG_MEMTRIM_IDLE_TICKS; i++)
        assert_false(tg_memtrim_tick(&s, false, t += 1000));
    assert_true(tg_memtrim_tick(&s, false, t += 1000));
    /* idle with nothing seen: once per period, for bursts that fell between two ticks */
    uint64_t last = t;
    while (t + 1000 - last < TG_MEMTRIM_PERIOD_MS)
        assert_false(tg_memtrim_tick(&s, false, t += 1000));
    assert_true(tg_memtrim_tick(&s, false, t += 1000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_boundary),
        cmocka_unit_test(test_estimate_is_a_lower_bound),
        cmocka_unit_test(test_attack_refused_without_parsing),
        cmocka_unit_test(test_invalid_json_and_unarmed),
        cmocka_unit_test(test_parse_never_aborts),
        cmocka_unit_test(test_budget_and_error_entry),
        cmocka_unit_test(test_translation_fails_cleanly),
        cmocka_unit_test(test_translation_bounded),
        cmocka_unit_test(test_config_factor),
        cmocka_unit_test(test_memtrim_decision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
