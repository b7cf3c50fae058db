/*
 * test_classify.c - every documented error of every provider (fixtures under
 * tests/fixtures/<provider>/errors/) maps to the right outcome class, reason,
 * Retry-After and normalised fields; plus Retry-After parsing, and the outcomes
 * of outcome.h that are not HTTP answers (transport failures, broken streams,
 * the call code's own outcomes).
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

/* ---- outcome.h: every outcome that is not an HTTP answer ---- */

static void test_outcome_constructors(void **state)
{
    (void)state;
    tg_classified_t c;
    tg_outcome_success(&c, 200);
    assert_int_equal(c.cls, TG_OUTCOME_SUCCESS);
    assert_int_equal(c.status, 200);
    assert_string_equal(c.reason, "ok");
    assert_int_equal(c.retry_after_ms, -1);

    tg_outcome_client_gone(&c);
    assert_int_equal(c.cls, TG_OUTCOME_CALLER);
    assert_string_equal(c.reason, "client_gone");
    assert_int_equal(tg_outcome_breaker_result(c.cls), TG_RESULT_NEUTRAL);

    tg_outcome_caller_error(&c, TG_EUNSUPPORTED_PARAM, "messages[0].content[1]: not supported");
    assert_int_equal(c.cls, TG_OUTCOME_CALLER);
    assert_int_equal(c.status, 400);
    assert_string_equal(c.reason, "invalid_request");
    assert_string_equal(c.type, tg_err_type(TG_EUNSUPPORTED_PARAM));
    assert_string_equal(c.code, tg_err_code(TG_EUNSUPPORTED_PARAM));
    assert_string_equal(c.message, "messages[0].content[1]: not supported");
    tg_outcome_caller_error(&c, TG_EINVALID_REQUEST, "");
    assert_string_equal(c.message, tg_err_public_msg(TG_EINVALID_REQUEST));

    static const struct {
        tg_internal_t why;
        const char *reason;
    } internal[] = {{TG_INTERNAL_NO_ADAPTER, "no_adapter"},
                    {TG_INTERNAL_BUILD_FAILED, "build_failed"},
                    {TG_INTERNAL_START_FAILED, "start_failed"}};
    for (size_t i = 0; i < sizeof(internal) / sizeof(internal[0]); i++) {
        tg_outcome_internal(&c, internal[i].why);
        assert_int_equal(c.cls, TG_OUTCOME_TRANSPORT);
        assert_int_equal(c.status, 0);
        assert_string_equal(c.reason, internal[i].reason);
    }
}

static int client_err_of(const tg_classified_t *c)
{
    tg_attempt_out_t o;
    tg_outcome_compact(&o, c);
    assert_string_equal(o.reason, c->reason);
    return tg_outcome_client_err(&o);
}

static void test_outcome_transport(void **state)
{
    (void)state;
    tg_classified_t c;
    /* before the provider answered */
    tg_outcome_transport(&c, TG_EUPSTREAM_UNREACHABLE, NULL, false);
    assert_string_equal(c.reason, "connect_error");
    assert_int_equal(client_err_of(&c), TG_EUPSTREAM_UNREACHABLE);
    tg_outcome_transport(&c, TG_EUPSTREAM_TIMEOUT, "first_byte", false);
    assert_int_equal(c.cls, TG_OUTCOME_TIMEOUT);
    assert_string_equal(c.reason, "timeout_first_byte");
    assert_int_equal(client_err_of(&c), TG_EUPSTREAM_TIMEOUT);
    tg_outcome_transport(&c, TG_EUPSTREAM_PROTOCOL, NULL, false);
    assert_string_equal(c.reason, "protocol_error");
    assert_int_equal(client_err_of(&c), TG_EUPSTREAM_PROTOCOL);
    tg_outcome_transport(&c, TG_EUPSTREAM_FAILED, NULL, false);
    assert_string_equal(c.reason, "transport_error");
    assert_string_equal(c.code, tg_err_code(TG_EUPSTREAM_FAILED));
    assert_int_equal(client_err_of(&c), TG_EUPSTREAM_PROTOCOL);

    /* After the head: curl's receive error (a reset) or partial file (a close) mid-body is the
     * provider closing the connection, not a connect error (issue #9: "mid_stream:connect_error"). */
    tg_outcome_transport(&c, TG_EUPSTREAM_UNREACHABLE, NULL, true);
    assert_int_equal(c.cls, TG_OUTCOME_TRANSPORT);
    assert_string_equal(c.reason, "upstream_closed");
    assert_int_equal(client_err_of(&c), TG_EUPSTREAM_PROTOCOL);
    tg_outcome_transport(&c, TG_EUPSTREAM_FAILED, NULL, true);
    assert_string_equal(c.reason, "upstream_closed");
    tg_outcome_transport(&c, TG_EUPSTREAM_TIMEOUT, "idle", true);
    assert_string_equal(c.reason, "timeout_idle");

    /* an HTTP answer is never reduced to a transport code */
    tg_classified_t h;
    tg_adapter_openai.classify(503, NULL, "", 0, &h);
    assert_int_equal(client_err_of(&h), 0);
}

static void test_outcome_streams(void **state)
{
    (void)state;
    tg_classified_t c;
    /* the provider cut the stream after two chunks (sim drop_after_chunks: curl reports a receive
     * error or a partial file): named for what happened, on every provider kind */
    tg_outcome_stream_failure(&c, 0, TG_EUPSTREAM_UNREACHABLE, NULL, 200);
    assert_string_equal(c.reason, "upstream_closed");
    assert_int_equal(tg_outcome_breaker_result(c.cls), TG_RESULT_FAILURE);
    tg_outcome_mid_stream(&c);
    assert_string_equal(c.reason, "mid_stream:upstream_closed");
    tg_outcome_stream_failure(&c, 0, TG_EUPSTREAM_FAILED, NULL, 200);
    assert_string_equal(c.reason, "upstream_closed");
    tg_outcome_stream_failure(&c, 0, TG_EUPSTREAM_TIMEOUT, "idle", 200);
    assert_string_equal(c.reason, "timeout_idle");
    tg_outcome_stream_failure(&c, 0, 0, NULL, 200);
    assert_string_equal(c.reason, "stream_truncated");
    /* what the relay saw in the stream wins over how the transfer ended */
    tg_outcome_stream_failure(&c, TG_ETOO_LARGE, TG_EUPSTREAM_FAILED, NULL, 200);
    assert_int_equal(c.cls, TG_OUTCOME_TRANSPORT);
    assert_string_equal(c.reason, "stream_event_too_large");
    assert_int_equal(client_err_of(&c), TG_EUPSTREAM_PROTOCOL);
    tg_outcome_mid_stream(&c);
    assert_string_equal(c.reason, "mid_stream:stream_event_too_large");
    tg_outcome_stream_failure(&c, TG_EUPSTREAM_PROTOCOL, 0, NULL, 200);
    assert_string_equal(c.reason, "stream_malformed");
    tg_outcome_stream_failure(&c, TG_EUPSTREAM_FAILED, TG_EUPSTREAM_FAILED, NULL, 200);
    assert_int_equal(c.cls, TG_OUTCOME_SERVER);
    assert_int_equal(c.status, 200);
    assert_string_equal(c.reason, "stream_error");
    assert_int_equal(client_err_of(&c), 0); /* the planner's 503 names it */

    /* whole answers */
    tg_outcome_answer_failure(&c, 0, NULL, true);
    assert_string_equal(c.reason, "response_too_large");
    tg_outcome_answer_failure(&c, 0, NULL, false);
    assert_string_equal(c.reason, "bad_response");
    tg_outcome_answer_failure(&c, TG_EUPSTREAM_UNREACHABLE, NULL, false);
    assert_string_equal(c.reason, "upstream_closed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_documented_error), cmocka_unit_test(test_message_and_param_normalised),
        cmocka_unit_test(test_secrets_redacted),       cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_outcome_constructors),   cmocka_unit_test(test_outcome_transport),
        cmocka_unit_test(test_outcome_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
