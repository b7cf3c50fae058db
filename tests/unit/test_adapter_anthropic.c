/*
 * test_adapter_anthropic.c - OpenAI <-> Messages translation: the full
 * request fixture (system, multi-turn, images, tools, tool results, params,
 * dropped params), responses (text, tool_use, max_tokens, cache usage),
 * streams (text, tool-call deltas, error event) at several chunkings.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../fixtures/fixture_util.h"

static const tg_adapter_t *AD = &tg_adapter_anthropic;

static void test_build_full(void **state)
{
    (void)state;
    json_t *canon = fx_json("canon/chat_full.json");
    json_t *want = fx_json("anthropic/request_full.expected.json");
    tg_upstream_req_t req;
    int rc;
    json_t *b = fx_build(AD, canon, false, &req, &rc);
    assert_int_equal(rc, 0);
    assert_non_null(want);
    if (!json_equal(b, want)) {
        char *s = json_dumps(b, JSON_INDENT(1));
        fprintf(stderr, "got: %s\n", s);
        free(s);
        fail();
    }
    assert_string_equal(req.url, "https://api.example.com/base/v1/messages");
    assert_string_equal(fx_header(&req, "x-api-key"), "sk-testkey-123456");
    assert_string_equal(fx_header(&req, "anthropic-version"), "2023-06-01");
    assert_null(fx_header(&req, "Authorization"));
    assert_string_equal(req.dropped, "seed,presence_penalty,logit_bias,response_format");
    json_decref(b);
    json_decref(want);
    json_decref(canon);
    tg_upstream_req_dispose(&req);
}

static void test_build_defaults_and_choices(void **state)
{
    (void)state;
    json_t *canon =
        json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}], s:b, s:f, s:s, s:i, s:[{s:s, s:{s:s}}],"
                  " s:{s:s, s:{s:s}}, s:b}",
                  "model", "m", "messages", "role", "user", "content", "a", "role", "user", "content", "b",
                  "role", "assistant", "content", "c", "stream", 1, "temperature", 1.5, "stop", "X", "n", 2,
                  "tools", "type", "function", "function", "name", "f", "tool_choice", "type", "function",
                  "function", "name", "f", "parallel_tool_calls", 0);
    tg_upstream_req_t req;
    int rc;
    json_t *b = fx_build(AD, canon, true, &req, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 4096);
    assert_true(json_is_true(json_object_get(b, "stream")));
    assert_null(json_object_get(b, "temperature")); /* 1.5 has no Messages equivalent */
    assert_string_equal(req.dropped, "temperature,n");
    json_t *want_msgs = json_pack("[{s:s, s:[{s:s, s:s}, {s:s, s:s}]}, {s:s, s:[{s:s, s:s}]}]", "role",
                                  "user", "content", "type", "text", "text", "a", "type", "text", "text", "b",
                                  "role", "assistant", "content", "type", "text", "text", "c");
    assert_true(json_equal(json_object_get(b, "messages"), want_msgs)); /* consecutive user turns merged */
    json_t *want_tc =
        json_pack("{s:s, s:s, s:b}", "type", "tool", "name", "f", "disable_parallel_tool_use", 1);
    assert_true(json_equal(json_object_get(b, "tool_choice"), want_tc));
    json_t *want_tools =
        json_pack("[{s:s, s:{s:s, s:{}}}]", "name", "f", "input_schema", "type", "object", "properties");
    assert_true(json_equal(json_object_get(b, "tools"), want_tools));
    json_t *stops = json_object_get(b, "stop_sequences");
    assert_int_equal(json_array_size(stops), 1);
    assert_string_equal(json_string_value(json_array_get(stops, 0)), "X");
    json_decref(want_msgs);
    json_decref(want_tc);
    json_decref(want_tools);
    json_decref(b);
    json_decref(canon);
    tg_upstream_req_dispose(&req);
}

static void test_build_bad_image(void **state)
{
    (void)state;
    json_t *canon = json_pack("{s:s, s:[{s:s, s:[{s:s, s:{s:s}}]}]}", "model", "m", "messages", "role",
                              "user", "content", "type", "image_url", "image_url", "url", "ftp://x/y.png");
    tg_provider_cfg_t prov = {.base_url = "http://h"};
    tg_build_in_t in = {.provider = &prov, .upstream_model = "u"};
    tg_upstream_req_t req = {0};
    tg_error_t err = {0};
    assert_int_equal(AD->build_request(&in, canon, &req, &err), TG_EINVALID_REQUEST);
    assert_string_equal(err.detail,
                        "messages[0].content[0].image_url.url must be an http(s) URL or a base64 data URL");
    tg_upstream_req_dispose(&req);
    json_decref(canon);
}

static json_t *parse(const char *file, tg_usage_t *u)
{
    size_t len = 0;
    char *body = fx_read(file, &len);
    tg_resp_in_t in = {.model = "client-model", .request_id = "req9", .created = 77};
    json_t *out = NULL;
    tg_error_t err;
    memset(u, 0, sizeof(*u));
    int rc = AD->parse_response(&in, body, len, &out, u, &err);
    free(body);
    assert_int_equal(rc, 0);
    return out;
}

static void test_parse_text_with_cache_usage(void **state)
{
    (void)state;
    tg_usage_t u;
    json_t *out = parse("anthropic/response_text.json", &u);
    json_t *want =
        json_pack("{s:s, s:s, s:i, s:s, s:[{s:i, s:{s:s, s:s}, s:n, s:s}], s:{s:i, s:i, s:i, s:{s:i}}}", "id",
                  "chatcmpl-req9", "object", "chat.completion", "created", 77, "model", "client-model",
                  "choices", "index", 0, "message", "role", "assistant", "content", "Hi! My name is Claude.",
                  "logprobs", "finish_reason", "stop", "usage", "prompt_tokens", 3995, "completion_tokens",
                  503, "total_tokens", 4498, "prompt_tokens_details", "cached_tokens", 1800);
    assert_true(json_equal(out, want));
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 2095 + 1800 + 100);
    assert_int_equal(u.cached_tokens, 1800);
    assert_int_equal(u.completion_tokens, 503);
    json_decref(want);
    json_decref(out);
}

static void test_parse_tool_use(void **state)
{
    (void)state;
    tg_usage_t u;
    json_t *out = parse("anthropic/response_tool_use.json", &u);
    json_t *c0 = json_array_get(json_object_get(out, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    json_t *msg = json_object_get(c0, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")),
                        "I'll check the weather in San Francisco.");
    json_t *want = json_pack("[{s:s, s:s, s:{s:s, s:s}}]", "id", "toolu_01A09q90qw90lq917835lq9", "type",
                             "function", "function", "name", "get_weather", "arguments",
                             "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}");
    assert_true(json_equal(json_object_get(msg, "tool_calls"), want));
    assert_int_equal(u.prompt_tokens, 472);
    assert_int_equal(u.completion_tokens, 89);
    json_decref(want);
    json_decref(out);

    out = parse("anthropic/response_max_tokens.json", &u);
    c0 = json_array_get(json_object_get(out, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "length");
    json_decref(out);
}

static void test_stream_text(void **state)
{
    (void)state;
    size_t steps[] = {0, 1, 5, 64};
    for (size_t i = 0; i < 4; i++) {
        fx_stream_t r;
        assert_int_equal(fx_run_stream(AD, "anthropic/stream_text.sse", steps[i], &r), 0);
        assert_int_equal(r.end_rc, 1);
        assert_int_equal(r.bad_shape, 0);
        assert_true(r.role_first);
        assert_string_equal(r.content, "Hello!");
        assert_string_equal(r.finish, "stop");
        assert_int_equal(r.n_usage_chunks, 1);
        assert_int_equal(r.usage.prompt_tokens, 35);
        assert_int_equal(r.usage.cached_tokens, 10);
        assert_int_equal(r.usage.completion_tokens, 15);
        assert_int_equal(json_integer_value(json_object_get(r.usage_json, "total_tokens")), 50);
        assert_int_equal(json_array_size(r.tools), 0);
        fx_stream_dispose(&r);
    }
}

static void test_stream_tool_use(void **state)
{
    (void)state;
    fx_stream_t r;
    assert_int_equal(fx_run_stream(AD, "anthropic/stream_tool_use.sse", 3, &r), 0);
    assert_int_equal(r.end_rc, 1);
    assert_string_equal(r.content, "Okay, let's check the weather.");
    assert_string_equal(r.finish, "tool_calls");
    json_t *want =
        json_pack("[{s:s, s:s, s:s}]", "id", "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name", "get_weather",
                  "arguments", "{\"location\": \"San Francisco, CA\", \"unit\": \"fahrenheit\"}");
    assert_true(json_equal(r.tools, want));
    assert_int_equal(r.usage.prompt_tokens, 472);
    assert_int_equal(r.usage.completion_tokens, 89);
    json_decref(want);
    fx_stream_dispose(&r);
}

static void test_stream_error_event(void **state)
{
    (void)state;
    fx_stream_t r;
    assert_int_equal(fx_run_stream(AD, "anthropic/stream_error.sse", 2, &r), 0);
    assert_int_equal(r.end_rc, TG_EUPSTREAM_FAILED);
    assert_string_equal(r.err.detail, "Overloaded");
    assert_string_equal(r.content, "Par");
    assert_int_equal(r.n_usage_chunks, 0);
    assert_int_equal(r.usage.prompt_tokens, 8); /* usage so far is still known */
    fx_stream_dispose(&r);
}

static void test_stream_garbage(void **state)
{
    (void)state;
    tg_resp_in_t in = {.model = "m", .request_id = "r"};
    tg_stream_t *s = AD->stream_create(&in);
    tg_usage_t u = {0};
    tg_error_t err;
    tg_sse_event_t ev = {
        .event = "", .data = "{\"type\":\"content_block_start\",\"index\":99999}", .data_len = 45};
    assert_int_equal(AD->stream_event(s, &ev, NULL, NULL, &u, &err), TG_EUPSTREAM_PROTOCOL);
    tg_sse_event_t ev2 = {.event = "", .data = "[1,2]", .data_len = 5};
    assert_int_equal(AD->stream_event(s, &ev2, NULL, NULL, &u, &err), TG_EUPSTREAM_PROTOCOL);
    AD->stream_destroy(s);
}

static void test_probe(void **state)
{
    (void)state;
    tg_provider_cfg_t p = {.base_url = "https://api.anthropic.com", .anthropic_version = "2024-01-01"};
    tg_upstream_req_t req = {0};
    tg_error_t err;
    assert_int_equal(AD->build_probe(&p, "k", &req, &err), 0);
    assert_string_equal(req.method, "GET");
    assert_string_equal(req.url, "https://api.anthropic.com/v1/models");
    assert_string_equal(fx_header(&req, "x-api-key"), "k");
    assert_string_equal(fx_header(&req, "anthropic-version"), "2024-01-01");
    tg_upstream_req_dispose(&req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_full),      cmocka_unit_test(test_build_defaults_and_choices),
        cmocka_unit_test(test_build_bad_image), cmocka_unit_test(test_parse_text_with_cache_usage),
        cmocka_unit_test(test_parse_tool_use),  cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_tool_use), cmocka_unit_test(test_stream_error_event),
        cmocka_unit_test(test_stream_garbage),  cmocka_unit_test(test_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
