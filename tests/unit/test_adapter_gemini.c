/*
 * test_adapter_gemini.c - OpenAI <-> generateContent translation: the full
 * request fixture (systemInstruction, images, functionCall/functionResponse,
 * toolConfig, generationConfig, JSON mode), responses (text with thinking
 * and cached tokens, parallel function calls, finish reasons, blocked
 * prompt), streams (text, function call, error object).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../fixtures/fixture_util.h"

static const tg_adapter_t *AD = &tg_adapter_gemini;

static void test_build_full(void **state)
{
    (void)state;
    json_t *canon = fx_json("canon/chat_full.json");
    json_t *want = fx_json("gemini/request_full.expected.json");
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
    assert_string_equal(req.url, "https://api.example.com/base/v1beta/models/up-model:generateContent");
    assert_string_equal(fx_header(&req, "x-goog-api-key"), "sk-testkey-123456");
    assert_null(strstr(req.url, "key=")); /* the key never goes in the URL (URLs get logged) */
    assert_string_equal(req.dropped, "logit_bias,user");
    json_decref(b);
    json_decref(want);
    json_decref(canon);
    tg_upstream_req_dispose(&req);
}

static void test_build_stream_schema_and_choice(void **state)
{
    (void)state;
    json_t *canon =
        json_pack("{s:s, s:[{s:s, s:s}], s:{s:s, s:{s:s, s:{s:s, s:{}, s:b}}}, s:[{s:s, s:{s:s}}],"
                  " s:{s:s, s:{s:s}}, s:i, s:b}",
                  "model", "m", "messages", "role", "user", "content", "hi", "response_format", "type",
                  "json_schema", "json_schema", "name", "x", "schema", "type", "object", "properties",
                  "additionalProperties", 0, "tools", "type", "function", "function", "name", "f",
                  "tool_choice", "type", "function", "function", "name", "f", "n", 3, "logprobs", 1);
    tg_upstream_req_t req;
    int rc;
    json_t *b = fx_build(AD, canon, true, &req, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(req.url,
                        "https://api.example.com/base/v1beta/models/up-model:streamGenerateContent?alt=sse");
    json_t *gc = json_object_get(b, "generationConfig");
    assert_string_equal(json_string_value(json_object_get(gc, "responseMimeType")), "application/json");
    json_t *want_schema = json_pack("{s:s, s:{}}", "type", "object", "properties");
    assert_true(json_equal(json_object_get(gc, "responseSchema"), want_schema));
    json_t *want_tc =
        json_pack("{s:{s:s, s:[s]}}", "functionCallingConfig", "mode", "ANY", "allowedFunctionNames", "f");
    assert_true(json_equal(json_object_get(b, "toolConfig"), want_tc));
    json_t *want_tools = json_pack("[{s:[{s:s}]}]", "functionDeclarations", "name", "f");
    assert_true(json_equal(json_object_get(b, "tools"), want_tools));
    assert_string_equal(req.dropped, "n,logprobs");
    json_decref(want_schema);
    json_decref(want_tc);
    json_decref(want_tools);
    json_decref(b);
    json_decref(canon);
    tg_upstream_req_dispose(&req);
}

static void test_build_schema_property_names_kept(void **state)
{
    (void)state;
    json_t *canon = json_pack("{s:s, s:[{s:s, s:s}], s:[{s:s, s:{s:s, s:{s:s, s:{s:{s:s}}, s:b}}}]}", "model",
                              "m", "messages", "role", "user", "content", "hi", "tools", "type", "function",
                              "function", "name", "f", "parameters", "type", "object", "properties", "strict",
                              "type", "boolean", "additionalProperties", 0);
    tg_upstream_req_t req;
    int rc;
    json_t *b = fx_build(AD, canon, false, &req, &rc);
    assert_int_equal(rc, 0);
    json_t *want =
        json_pack("{s:s, s:{s:{s:s}}}", "type", "object", "properties", "strict", "type", "boolean");
    json_t *got = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(b, "tools"), 0), "functionDeclarations"), 0),
        "parameters");
    assert_true(json_equal(got, want));
    json_decref(want);
    json_decref(b);
    json_decref(canon);
    tg_upstream_req_dispose(&req);
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

static const char *finish_of(const json_t *out)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(out, "choices"), 0), "finish_reason"));
}

static void test_parse_text(void **state)
{
    (void)state;
    tg_usage_t u;
    json_t *out = parse("gemini/response_text.json", &u);
    json_t *want = json_pack(
        "{s:s, s:s, s:i, s:s, s:[{s:i, s:{s:s, s:s}, s:n, s:s}], s:{s:i, s:i, s:i, s:{s:i}}}", "id",
        "chatcmpl-req9", "object", "chat.completion", "created", 77, "model", "client-model", "choices",
        "index", 0, "message", "role", "assistant", "content", "AI learns patterns from data.", "logprobs",
        "finish_reason", "stop", "usage", "prompt_tokens", 8, "completion_tokens", 27, "total_tokens", 35,
        "prompt_tokens_details", "cached_tokens", 4);
    assert_true(json_equal(out, want));
    assert_int_equal(u.prompt_tokens, 8);
    assert_int_equal(u.completion_tokens, 7 + 20); /* thinking tokens are output */
    assert_int_equal(u.cached_tokens, 4);
    json_decref(want);
    json_decref(out);
}

static void test_parse_function_calls(void **state)
{
    (void)state;
    tg_usage_t u;
    json_t *out = parse("gemini/response_function_call.json", &u);
    assert_string_equal(finish_of(out), "tool_calls");
    json_t *msg = json_object_get(json_array_get(json_object_get(out, "choices"), 0), "message");
    assert_true(json_is_null(json_object_get(msg, "content")));
    json_t *want = json_pack("[{s:s, s:s, s:{s:s, s:s}}, {s:s, s:s, s:{s:s, s:s}}]", "id", "call_req9_0",
                             "type", "function", "function", "name", "get_current_temperature", "arguments",
                             "{\"location\":\"London\"}", "id", "call_req9_1", "type", "function", "function",
                             "name", "get_current_temperature", "arguments", "{\"location\":\"Paris\"}");
    assert_true(json_equal(json_object_get(msg, "tool_calls"), want));
    assert_int_equal(u.prompt_tokens, 58);
    assert_int_equal(u.completion_tokens, 12);
    json_decref(want);
    json_decref(out);
}

static void test_parse_finish_reasons(void **state)
{
    (void)state;
    tg_usage_t u;
    json_t *out = parse("gemini/response_max_tokens.json", &u);
    assert_string_equal(finish_of(out), "length");
    json_decref(out);
    out = parse("gemini/response_safety.json", &u);
    assert_string_equal(finish_of(out), "content_filter");
    assert_int_equal(u.prompt_tokens, 11);
    assert_int_equal(u.completion_tokens, 0);
    json_decref(out);
    out = parse("gemini/response_prompt_blocked.json", &u);
    assert_string_equal(finish_of(out), "content_filter");
    json_decref(out);
}

static void test_parse_errors(void **state)
{
    (void)state;
    tg_resp_in_t in = {.model = "m", .request_id = "r"};
    json_t *out = NULL;
    tg_usage_t u = {0};
    tg_error_t err;
    assert_int_equal(AD->parse_response(&in, "{}", 2, &out, &u, &err), TG_EUPSTREAM_PROTOCOL);
    const char *e = "{\"error\":{\"code\":500,\"message\":\"boom\",\"status\":\"INTERNAL\"}}";
    assert_int_equal(AD->parse_response(&in, e, strlen(e), &out, &u, &err), TG_EUPSTREAM_FAILED);
    assert_string_equal(err.detail, "boom");
    assert_null(out);
}

static void test_stream_text(void **state)
{
    (void)state;
    size_t steps[] = {0, 1, 9};
    for (size_t i = 0; i < 3; i++) {
        fx_stream_t r;
        assert_int_equal(fx_run_stream(AD, "gemini/stream_text.sse", steps[i], &r), 0);
        assert_int_equal(r.end_rc, 1);
        assert_int_equal(r.bad_shape, 0);
        assert_true(r.role_first);
        assert_string_equal(r.content, "The cat sat on the mat.");
        assert_string_equal(r.finish, "stop");
        assert_int_equal(r.n_usage_chunks, 1);
        assert_int_equal(r.usage.prompt_tokens, 10);
        assert_int_equal(r.usage.completion_tokens, 6);
        assert_int_equal(r.usage.cached_tokens, 2);
        assert_int_equal(json_integer_value(json_object_get(r.usage_json, "total_tokens")), 16);
        fx_stream_dispose(&r);
    }
}

static void test_stream_function_call(void **state)
{
    (void)state;
    fx_stream_t r;
    assert_int_equal(fx_run_stream(AD, "gemini/stream_function_call.sse", 4, &r), 0);
    assert_int_equal(r.end_rc, 1);
    assert_string_equal(r.finish, "tool_calls");
    json_t *want = json_pack("[{s:s, s:s, s:s}]", "id", "call_req123_0", "name", "get_weather", "arguments",
                             "{\"city\":\"Paris\",\"unit\":\"celsius\"}");
    assert_true(json_equal(r.tools, want));
    assert_int_equal(r.usage.prompt_tokens, 40);
    assert_int_equal(r.usage.completion_tokens, 9);
    json_decref(want);
    fx_stream_dispose(&r);
}

static void test_stream_error(void **state)
{
    (void)state;
    fx_stream_t r;
    assert_int_equal(fx_run_stream(AD, "gemini/stream_error.sse", 0, &r), 0);
    assert_int_equal(r.end_rc, TG_EUPSTREAM_FAILED);
    assert_string_equal(r.content, "Par");
    assert_string_equal(r.err.detail, "The model is overloaded. Please try again later.");
    fx_stream_dispose(&r);
}

static void test_probe(void **state)
{
    (void)state;
    tg_provider_cfg_t p = {.base_url = "https://generativelanguage.googleapis.com"};
    tg_upstream_req_t req = {0};
    tg_error_t err;
    assert_int_equal(AD->build_probe(&p, "AIzaKey", &req, &err), 0);
    assert_string_equal(req.method, "GET");
    assert_string_equal(req.url, "https://generativelanguage.googleapis.com/v1beta/models");
    assert_string_equal(fx_header(&req, "x-goog-api-key"), "AIzaKey");
    tg_upstream_req_dispose(&req);
    assert_ptr_equal(tg_adapter_for(TG_KIND_GEMINI), AD);
    assert_ptr_equal(tg_adapter_for(TG_KIND_ANTHROPIC), &tg_adapter_anthropic);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_full),
        cmocka_unit_test(test_build_stream_schema_and_choice),
        cmocka_unit_test(test_build_schema_property_names_kept),
        cmocka_unit_test(test_parse_text),
        cmocka_unit_test(test_parse_function_calls),
        cmocka_unit_test(test_parse_finish_reasons),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_function_call),
        cmocka_unit_test(test_stream_error),
        cmocka_unit_test(test_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
