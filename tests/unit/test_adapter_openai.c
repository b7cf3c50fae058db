/*
 * test_adapter_openai.c - the pass-through adapter: request body rewrite,
 * response normalisation and usage, stream relay (usage extracted, usage on a
 * content chunk split off, in-stream errors), probe.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../fixtures/fixture_util.h"

static const tg_adapter_t *AD = &tg_adapter_openai;

static void test_build_stream_forces_usage(void **state)
{
    (void)state;
    json_t *canon = fx_json("canon/chat_minimal.json");
    tg_upstream_req_t req;
    int rc;
    json_t *b = fx_build(AD, canon, true, &req, &rc);
    assert_int_equal(rc, 0);
    json_t *want =
        json_pack("{s:s, s:[{s:s, s:s}], s:b, s:{s:b}}", "model", "up-model", "messages", "role", "user",
                  "content", "Say hello", "stream", 1, "stream_options", "include_usage", 1);
    assert_true(json_equal(b, want));
    assert_string_equal(req.url, "https://api.example.com/base/chat/completions");
    assert_string_equal(req.method, "POST");
    assert_string_equal(fx_header(&req, "Authorization"), "Bearer sk-testkey-123456");
    assert_string_equal(req.dropped, "");
    /* the canonical request is untouched (shallow copy) */
    assert_false(json_is_true(json_object_get(json_object_get(canon, "stream_options"), "include_usage")));
    assert_string_equal(json_string_value(json_object_get(canon, "model")), "gpt-4o-mini");
    assert_non_null(json_object_get(canon, "models"));
    json_decref(want);
    json_decref(b);
    json_decref(canon);
    tg_upstream_req_dispose(&req);
    assert_int_equal(req.n_headers, 0);
    assert_null(req.url);
}

static void test_build_non_stream_full(void **state)
{
    (void)state;
    json_t *canon = fx_json("canon/chat_full.json");
    tg_upstream_req_t req;
    int rc;
    json_t *b = fx_build(AD, canon, false, &req, &rc);
    assert_int_equal(rc, 0);
    /* everything passes through except model (rewritten), models and stream (removed) */
    json_t *want = json_deep_copy(canon);
    json_object_set_new(want, "model", json_string("up-model"));
    json_object_del(want, "models");
    json_object_del(want, "stream");
    assert_true(json_equal(b, want));
    json_decref(want);
    json_decref(b);
    json_decref(canon);
    tg_upstream_req_dispose(&req);
}

static void test_parse_response(void **state)
{
    (void)state;
    size_t len = 0;
    char *body = fx_read("openai/response.json", &len);
    tg_resp_in_t in = {.model = "client-model", .request_id = "r1", .created = 5};
    json_t *out = NULL;
    tg_usage_t u = {0};
    tg_error_t err;
    assert_int_equal(AD->parse_response(&in, body, len, &out, &u, &err), 0);
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 1117);
    assert_int_equal(u.completion_tokens, 46);
    assert_int_equal(u.cached_tokens, 1024);
    assert_string_equal(json_string_value(json_object_get(out, "model")), "client-model");
    assert_string_equal(json_string_value(json_object_get(out, "id")),
                        "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG");
    json_t *msg = json_object_get(json_array_get(json_object_get(out, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")),
                        "The image shows a wooden boardwalk.");
    json_decref(out);
    free(body);

    body = fx_read("openai/response_tool_calls.json", &len);
    memset(&u, 0, sizeof(u));
    assert_int_equal(AD->parse_response(&in, body, len, &out, &u, &err), 0);
    json_t *c0 = json_array_get(json_object_get(out, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c0, "finish_reason")), "tool_calls");
    json_t *tc = json_array_get(json_object_get(json_object_get(c0, "message"), "tool_calls"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
                        "{\n\"location\": \"Boston, MA\"\n}");
    assert_int_equal(u.prompt_tokens, 82);
    assert_int_equal(u.cached_tokens, 0);
    json_decref(out);
    free(body);

    assert_int_equal(AD->parse_response(&in, "nope", 4, &out, &u, &err), TG_EUPSTREAM_PROTOCOL);
    assert_null(out);
    assert_int_equal(AD->parse_response(&in, "{\"error\":{\"message\":\"boom\"}}", 28, &out, &u, &err),
                     TG_EUPSTREAM_FAILED);
    assert_string_equal(err.detail, "boom");
}

static void test_stream_text(void **state)
{
    (void)state;
    size_t steps[] = {0, 1, 7};
    for (size_t i = 0; i < 3; i++) {
        fx_stream_t r;
        assert_int_equal(fx_run_stream(AD, "openai/stream.sse", steps[i], &r), 0);
        assert_int_equal(r.end_rc, 1);
        assert_int_equal(r.bad_shape, 0);
        assert_true(r.role_first);
        assert_string_equal(r.content, "Hello there!");
        assert_string_equal(r.finish, "stop");
        assert_int_equal(r.n_usage_chunks, 1);
        assert_true(r.usage.present);
        assert_int_equal(r.usage.prompt_tokens, 9);
        assert_int_equal(r.usage.completion_tokens, 3);
        fx_stream_dispose(&r);
    }
}

static void test_stream_tool_calls(void **state)
{
    (void)state;
    fx_stream_t r;
    assert_int_equal(fx_run_stream(AD, "openai/stream_tool_calls.sse", 3, &r), 0);
    assert_int_equal(r.end_rc, 1);
    assert_string_equal(r.finish, "tool_calls");
    assert_int_equal(json_array_size(r.tools), 1);
    json_t *t = json_array_get(r.tools, 0);
    assert_string_equal(json_string_value(json_object_get(t, "id")), "call_DdmO9pD3xa9XTPNJ32zg2hcA");
    assert_string_equal(json_string_value(json_object_get(t, "name")), "get_weather");
    assert_string_equal(json_string_value(json_object_get(t, "arguments")),
                        "{\"location\":\"Paris, France\"}");
    assert_int_equal(r.usage.cached_tokens, 32);
    assert_int_equal(r.usage.prompt_tokens, 60);
    fx_stream_dispose(&r);
}

static void test_stream_usage_with_choices_is_split(void **state)
{
    (void)state;
    fx_stream_t r;
    assert_int_equal(fx_run_stream(AD, "openai/stream_usage_with_choices.sse", 1, &r), 0);
    assert_int_equal(r.end_rc, 1);
    assert_string_equal(r.content, "Hi");
    assert_string_equal(r.finish, "stop"); /* the choices of the usage-bearing chunk were relayed */
    assert_int_equal(r.n_usage_chunks, 1);
    assert_int_equal(r.n_chunks, 3);
    assert_int_equal(r.usage.prompt_tokens, 5);
    assert_int_equal(r.usage.completion_tokens, 1);
    assert_int_equal(json_integer_value(json_object_get(r.usage_json, "total_tokens")), 6);
    fx_stream_dispose(&r);
}

static void test_stream_error(void **state)
{
    (void)state;
    fx_stream_t r;
    assert_int_equal(fx_run_stream(AD, "openai/stream_error.sse", 0, &r), 0);
    assert_int_equal(r.end_rc, TG_EUPSTREAM_FAILED);
    assert_string_equal(r.content, "Par");
    assert_non_null(strstr(r.err.detail, "server had an error"));
    fx_stream_dispose(&r);
}

static void test_probe(void **state)
{
    (void)state;
    tg_provider_cfg_t p = {.base_url = "https://api.openai.com/v1"};
    tg_upstream_req_t req = {0};
    tg_error_t err;
    assert_int_equal(AD->build_probe(&p, "sk-x", &req, &err), 0);
    assert_string_equal(req.method, "GET");
    assert_string_equal(req.url, "https://api.openai.com/v1/models");
    assert_string_equal(fx_header(&req, "Authorization"), "Bearer sk-x");
    assert_null(req.body);
    tg_upstream_req_dispose(&req);
    assert_ptr_equal(tg_adapter_for(TG_KIND_OPENAI), AD);
}

static void test_header_limit(void **state)
{
    (void)state;
    tg_upstream_req_t req = {0};
    for (int i = 0; i < TG_UPSTREAM_MAX_HEADERS; i++)
        assert_int_equal(tg_upstream_req_add_header(&req, "X-A", "b"), 0);
    assert_int_equal(tg_upstream_req_add_header(&req, "X-A", "b"), TG_ETOO_LARGE);
    assert_string_equal(req.headers[0], "X-A: b");
    tg_upstream_req_dispose(&req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_stream_forces_usage),
        cmocka_unit_test(test_build_non_stream_full),
        cmocka_unit_test(test_parse_response),
        cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_tool_calls),
        cmocka_unit_test(test_stream_usage_with_choices_is_split),
        cmocka_unit_test(test_stream_error),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_header_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
