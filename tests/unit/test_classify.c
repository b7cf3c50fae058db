/*
 * test_classify.c - every documented error of every provider (fixtures under
 * tests/fixtures/<provider>/errors/) maps to the right outcome class, reason,
 * Retry-After and normalised fields; plus Retry-After parsing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../fixtures/fixture_util.h"

typedef struct {
    const tg_adapter_t *ad;
    int status;
    const char *retry_after;
    const char *file;
    tg_outcome_class_t cls;
    const char *reason;
    int64_t retry_ms;
    const char *code; /* expected normalised code ("" = none) */
} case_t;

#define OA &tg_adapter_openai
#define AN &tg_adapter_anthropic
#define GM &tg_adapter_gemini

static const case_t CASES[] = {
    {OA, 400, NULL, "openai/errors/400_invalid_type.json", TG_OUTCOME_CALLER, "http_400", -1, "invalid_type"},
    {OA, 400, NULL, "openai/errors/400_context_length.json", TG_OUTCOME_CONTEXT_LENGTH, "context_length", -1,
     "context_length_exceeded"},
    {OA, 401, NULL, "openai/errors/401_invalid_api_key.json", TG_OUTCOME_MISCONFIGURED, "unauthorized", -1,
     "invalid_api_key"},
    {OA, 403, NULL, "openai/errors/403_unsupported_country.json", TG_OUTCOME_MISCONFIGURED, "forbidden", -1,
     "unsupported_country_region_territory"},
    {OA, 404, NULL, "openai/errors/404_model_not_found.json", TG_OUTCOME_MISCONFIGURED, "model_not_found", -1,
     "model_not_found"},
    {OA, 429, "2", "openai/errors/429_rate_limit.json", TG_OUTCOME_RATE_LIMITED, "rate_limited", 2000,
     "rate_limit_exceeded"},
    {OA, 429, NULL, "openai/errors/429_insufficient_quota.json", TG_OUTCOME_RATE_LIMITED, "rate_limited", -1,
     "insufficient_quota"},
    {OA, 500, NULL, "openai/errors/500_server_error.json", TG_OUTCOME_SERVER, "http_500", -1, ""},
    {OA, 502, NULL, "openai/errors/502_html.txt", TG_OUTCOME_SERVER, "http_502", -1, ""},
    {OA, 503, "1", "openai/errors/503_overloaded.json", TG_OUTCOME_SERVER, "http_503", 1000, ""},
    {OA, 504, NULL, NULL, TG_OUTCOME_SERVER, "http_504", -1, ""},
    {OA, 529, NULL, NULL, TG_OUTCOME_SERVER, "http_529", -1, ""},

    {AN, 400, NULL, "anthropic/errors/400_invalid_request.json", TG_OUTCOME_CALLER, "http_400", -1,
     "invalid_request_error"},
    {AN, 400, NULL, "anthropic/errors/400_prompt_too_long.json", TG_OUTCOME_CONTEXT_LENGTH, "context_length",
     -1, "context_length_exceeded"},
    {AN, 401, NULL, "anthropic/errors/401_authentication.json", TG_OUTCOME_MISCONFIGURED, "unauthorized", -1,
     "authentication_error"},
    {AN, 403, NULL, "anthropic/errors/403_permission.json", TG_OUTCOME_MISCONFIGURED, "forbidden", -1,
     "permission_error"},
    {AN, 404, NULL, "anthropic/errors/404_not_found.json", TG_OUTCOME_MISCONFIGURED, "not_found", -1,
     "not_found_error"},
    {AN, 413, NULL, "anthropic/errors/413_request_too_large.json", TG_OUTCOME_CALLER, "http_413", -1,
     "request_too_large"},
    {AN, 429, "30", "anthropic/errors/429_rate_limit.json", TG_OUTCOME_RATE_LIMITED, "rate_limited", 30000,
     "rate_limit_error"},
    {AN, 500, NULL, "anthropic/errors/500_api_error.json", TG_OUTCOME_SERVER, "http_500", -1, "api_error"},
    {AN, 529, NULL, "anthropic/errors/529_overloaded.json", TG_OUTCOME_SERVER, "overloaded", -1,
     "overloaded_error"},

    {GM, 400, NULL, "gemini/errors/400_invalid_argument.json", TG_OUTCOME_CALLER, "http_400", -1,
     "INVALID_ARGUMENT"},
    {GM, 400, NULL, "gemini/errors/400_api_key_invalid.json", TG_OUTCOME_MISCONFIGURED, "unauthorized", -1,
     "INVALID_ARGUMENT"},
    {GM, 400, NULL, "gemini/errors/400_failed_precondition.json", TG_OUTCOME_MISCONFIGURED,
     "failed_precondition", -1, "FAILED_PRECONDITION"},
    {GM, 400, NULL, "gemini/errors/400_token_count_exceeded.json", TG_OUTCOME_CONTEXT_LENGTH,
     "context_length", -1, "context_length_exceeded"},
    {GM, 401, NULL, "gemini/errors/401_unauthenticated_array.json", TG_OUTCOME_MISCONFIGURED, "unauthorized",
     -1, "UNAUTHENTICATED"},
    {GM, 403, NULL, "gemini/errors/403_permission_denied.json", TG_OUTCOME_MISCONFIGURED, "forbidden", -1,
     "PERMISSION_DENIED"},
    {GM, 404, NULL, "gemini/errors/404_not_found.json", TG_OUTCOME_MISCONFIGURED, "not_found", -1,
     "NOT_FOUND"},
    {GM, 429, NULL, "gemini/errors/429_resource_exhausted.json", TG_OUTCOME_RATE_LIMITED, "rate_limited",
     22000, "RESOURCE_EXHAUSTED"},
    {GM, 429, "5", "gemini/errors/429_resource_exhausted.json", TG_OUTCOME_RATE_LIMITED, "rate_limited", 5000,
     "RESOURCE_EXHAUSTED"},
    {GM, 500, NULL, "gemini/errors/500_internal.json", TG_OUTCOME_SERVER, "http_500", -1, "INTERNAL"},
    {GM, 503, NULL, "gemini/errors/503_unavailable.json", TG_OUTCOME_SERVER, "http_503", -1, "UNAVAILABLE"},
    {GM, 504, NULL, "gemini/errors/504_deadline_exceeded.json", TG_OUTCOME_SERVER, "deadline_exceeded", -1,
     "DEADLINE_EXCEEDED"},
};

static void test_every_documented_error(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        const case_t *c = &CASES[i];
        size_t len = 0;
        char *body = c->file != NULL ? fx_read(c->file, &len) : NULL;
        if (c->file != NULL)
            assert_non_null(body);
        tg_classified_t out;
        memset(&out, 0x5a, sizeof(out)); /* classify must fill every field */
        c->ad->classify(c->status, c->retry_after, body, len, &out);
        printf("%-45s -> %s/%s\n", c->file ? c->file : "(no body)", tg_outcome_name(out.cls), out.reason);
        assert_int_equal(out.cls, c->cls);
        assert_string_equal(out.reason, c->reason);
        assert_int_equal(out.status, c->status);
        assert_int_equal(out.retry_after_ms, c->retry_ms);
        assert_string_equal(out.code, c->code);
        assert_true(out.message[0] != '\0');
        assert_true(out.type[0] != '\0');
        /* no credential, not even a masked one, survives into the message */
        assert_null(strstr(out.message, "sk-"));
        assert_null(strstr(out.message, "abcd"));
        free(body);
    }
}

static void test_message_and_param_normalised(void **state)
{
    (void)state;
    size_t len = 0;
    char *body = fx_read("openai/errors/400_invalid_type.json", &len);
    tg_classified_t out;
    tg_adapter_openai.classify(400, NULL, body, len, &out);
    assert_string_equal(out.type, "invalid_request_error");
    assert_string_equal(out.param, "messages[0].content");
    assert_non_null(strstr(out.message, "expected one of a string"));
    free(body);

    body = fx_read("anthropic/errors/529_overloaded.json", &len);
    tg_adapter_anthropic.classify(529, NULL, body, len, &out);
    assert_string_equal(out.message, "Overloaded");
    assert_string_equal(out.type, "server_error");
    free(body);
}

static void test_secrets_redacted(void **state)
{
    (void)state;
    const char *b = "{\"error\":{\"message\":\"key sk-live-abcdefghijkl and AIzaSyA1234567890 are bad\"}}";
    tg_classified_t out;
    tg_adapter_openai.classify(400, NULL, b, strlen(b), &out);
    assert_string_equal(out.message, "key [redacted] and [redacted] are bad");
}

static void test_retry_after(void **state)
{
    (void)state;
    assert_int_equal(tg_parse_retry_after_ms(NULL, 0), -1);
    assert_int_equal(tg_parse_retry_after_ms("", 0), -1);
    assert_int_equal(tg_parse_retry_after_ms("abc", 0), -1);
    assert_int_equal(tg_parse_retry_after_ms("-1", 0), -1);
    assert_int_equal(tg_parse_retry_after_ms("120", 0), 120000);
    assert_int_equal(tg_parse_retry_after_ms(" 7 ", 0), 7000);
    assert_int_equal(tg_parse_retry_after_ms("0.5", 0), 500);
    /* Wed, 21 Oct 2015 07:28:00 GMT = 1445412480 */
    assert_int_equal(tg_parse_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 30), 30000);
    assert_int_equal(tg_parse_retry_after_ms("Wednesday, 21-Oct-15 07:28:00 GMT", 1445412480 - 2), 2000);
    assert_int_equal(tg_parse_retry_after_ms("Wed Oct 21 07:28:00 2015", 1445412480 - 1), 1000);
    assert_int_equal(tg_parse_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 + 100), 0);
    assert_int_equal(tg_parse_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT junk", 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_documented_error),
        cmocka_unit_test(test_message_and_param_normalised),
        cmocka_unit_test(test_secrets_redacted),
        cmocka_unit_test(test_retry_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
