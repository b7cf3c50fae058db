/*
 * test_canon.c - validation of a client's canonical (OpenAI chat) request:
 * every rule gives a 400 naming the field, and valid requests pass.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../fixtures/fixture_util.h"

typedef struct {
    const char *json;
    const char *param; /* NULL: valid */
    const char *detail;
} case_t;

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static const case_t CASES[] = {
    {"{\"model\":\"m\"," MSGS "}", NULL, NULL},
    {"{\"model\":\"m\"," MSGS ",\"stream\":true,\"temperature\":0.2,\"top_p\":1,\"max_tokens\":5,"
     "\"max_completion_tokens\":9,\"stop\":[\"a\",\"b\"],\"n\":1,\"stream_options\":{\"include_usage\":true},"
     "\"tool_choice\":\"auto\",\"response_format\":{\"type\":\"json_object\"},\"models\":[\"a\",\"b\"],"
     "\"user\":null,\"seed\":1}",
     NULL, NULL},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":["
     "{\"type\":\"text\",\"text\":\"t\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/"
     "y.png\"}}]},"
     "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\","
     "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c\","
     "\"content\":\"r\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}]"
     ","
     "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}",
     NULL, NULL},
    {"[]", "body", "body must be a JSON object"},
    {"{" MSGS "}", "model", "model must be a string"},
    {"{\"model\":5," MSGS "}", "model", "model must be a string"},
    {"{\"model\":\"m\"}", "messages", "messages must be a non-empty array"},
    {"{\"model\":\"m\",\"messages\":[]}", "messages", "messages must be a non-empty array"},
    {"{\"model\":\"m\",\"messages\":[1]}", "messages[0]", "messages[0] must be an object"},
    {"{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", "messages[0].role",
     "messages[0].role must be a string"},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"bot\",\"content\":"
     "\"x\"}]}",
     "messages[1].role",
     "messages[1].role must be one of \"system\", \"developer\", \"user\", \"assistant\", \"tool\""},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":null}]}", "messages[0].content",
     "messages[0].content must be a string or an array of content parts"},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":7}]}", "messages[0].content",
     "messages[0].content must be a string or an array of content parts"},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"audio\"}]}]}",
     "messages[0].content[0].type", "messages[0].content[0].type must be \"text\" or \"image_url\""},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":1}]}]}",
     "messages[0].content[0].text", "messages[0].content[0].text must be a string"},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{}"
     "}]}]}",
     "messages[0].content[0].image_url.url", "messages[0].content[0].image_url.url must be a string"},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"r\"}]}", "messages[0].tool_call_id",
     "messages[0].tool_call_id must be a string"},
    {"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\",\"function\":"
     "{\"name\":\"f\",\"arguments\":{}}}]}]}",
     "messages[0].tool_calls[0].function.arguments",
     "messages[0].tool_calls[0].function.arguments must be a string"},
    {"{\"model\":\"m\"," MSGS ",\"stream\":\"yes\"}", "stream", "stream must be a boolean"},
    {"{\"model\":\"m\"," MSGS ",\"temperature\":\"hot\"}", "temperature", "temperature must be a number"},
    {"{\"model\":\"m\"," MSGS ",\"top_p\":[]}", "top_p", "top_p must be a number"},
    {"{\"model\":\"m\"," MSGS ",\"max_tokens\":0}", "max_tokens", "max_tokens must be a positive integer"},
    {"{\"model\":\"m\"," MSGS ",\"max_completion_tokens\":1.5}", "max_completion_tokens",
     "max_completion_tokens must be a positive integer"},
    {"{\"model\":\"m\"," MSGS ",\"n\":\"2\"}", "n", "n must be a positive integer"},
    {"{\"model\":\"m\"," MSGS ",\"stop\":[\"a\",1]}", "stop", "stop must be a string or an array of strings"},
    {"{\"model\":\"m\"," MSGS ",\"stop\":3}", "stop", "stop must be a string or an array of strings"},
    {"{\"model\":\"m\"," MSGS ",\"tools\":{}}", "tools", "tools must be an array"},
    {"{\"model\":\"m\"," MSGS ",\"tools\":[{\"type\":\"retrieval\"}]}", "tools[0].type",
     "tools[0].type must be \"function\""},
    {"{\"model\":\"m\"," MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{}}]}",
     "tools[0].function.name", "tools[0].function.name must be a string"},
    {"{\"model\":\"m\"," MSGS ",\"tool_choice\":\"always\"}", "tool_choice",
     "tool_choice must be \"auto\", \"none\", \"required\" or an object"},
    {"{\"model\":\"m\"," MSGS ",\"tool_choice\":{\"type\":\"function\"}}", "tool_choice.function.name",
     "tool_choice.function.name must be a string"},
    {"{\"model\":\"m\"," MSGS ",\"response_format\":\"json\"}", "response_format.type",
     "response_format.type must be a string"},
    {"{\"model\":\"m\"," MSGS ",\"stream_options\":true}", "stream_options",
     "stream_options must be an object"},
    {"{\"model\":\"m\"," MSGS ",\"models\":[]}", "models", "models must be a non-empty array of strings"},
    {"{\"model\":\"m\"," MSGS ",\"models\":[\"a\",2]}", "models[1]", "models[1] must be a string"},
};

static void test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        json_error_t je;
        json_t *req = json_loads(CASES[i].json, 0, &je);
        assert_non_null(req);
        char param[64];
        tg_error_t err = {0};
        int rc = tg_canon_validate(req, param, sizeof(param), &err);
        if (CASES[i].param == NULL) {
            if (rc != 0)
                fprintf(stderr, "case %zu: unexpected: %s\n", i, err.detail);
            assert_int_equal(rc, 0);
            assert_string_equal(param, "");
        } else {
            assert_int_equal(rc, TG_EINVALID_REQUEST);
            assert_int_equal(err.code, TG_EINVALID_REQUEST);
            assert_string_equal(param, CASES[i].param);
            assert_string_equal(err.detail, CASES[i].detail);
        }
        json_decref(req);
    }
}

static void test_fixtures_valid(void **state)
{
    (void)state;
    const char *files[] = {"canon/chat_full.json", "canon/chat_minimal.json"};
    for (size_t i = 0; i < 2; i++) {
        json_t *req = fx_json(files[i]);
        char param[64];
        tg_error_t err = {0};
        assert_int_equal(tg_canon_validate(req, param, sizeof(param), &err), 0);
        json_decref(req);
    }
}

static void test_null_param_buffer(void **state)
{
    (void)state;
    json_t *req = json_pack("{s:i}", "model", 1);
    tg_error_t err;
    assert_int_equal(tg_canon_validate(req, NULL, 0, &err), TG_EINVALID_REQUEST);
    assert_int_equal(tg_canon_validate(req, NULL, 0, NULL), TG_EINVALID_REQUEST);
    json_decref(req);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_fixtures_valid),
        cmocka_unit_test(test_null_param_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
