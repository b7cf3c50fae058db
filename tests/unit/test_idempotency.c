/*
 * test_idempotency.c - the pure parts of the Idempotency-Key (gateway/src/idempotency.h): the key's
 * bounds and forms, the keyed fingerprint of the canonical body, the verdict on a claimed row, the
 * 409 wording, the recorded headers; and the config block. The claim, the record, the replay and
 * their races are integration.idempotency's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "err.h"
#include "idempotency.h"

static void test_key(void **state)
{
    (void)state;
    char k[TG_IDEM_KEY_MAX + 1];
    assert_int_equal(tg_idem_key_parse("abc-123", 7, k), 0);
    assert_string_equal(k, "abc-123");
    /* the draft's structured-field string and surrounding spaces */
    assert_int_equal(tg_idem_key_parse(" \"8e03978e-40d5\" ", 17, k), 0);
    assert_string_equal(k, "8e03978e-40d5");
    char longest[TG_IDEM_KEY_MAX + 2];
    memset(longest, 'k', sizeof(longest));
    assert_int_equal(tg_idem_key_parse(longest, TG_IDEM_KEY_MAX, k), 0);
    assert_int_equal(strlen(k), TG_IDEM_KEY_MAX);
    assert_int_equal(tg_idem_key_parse(longest, TG_IDEM_KEY_MAX + 1, k), TG_EINVALID_REQUEST);
    const char *bad[] = {"",        "  ",          "\"\"",     "has space", "tab\there",
                         "quo\"te", "back\\slash", "\xc3\xa9", "\x01"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tg_idem_key_parse(bad[i], strlen(bad[i]), k), TG_EINVALID_REQUEST);
}

static void fp_of(const char *json, const uint8_t key[32], char out[TG_IDEM_FP_HEX + 1])
{
    json_t *b = json_loads(json, 0, NULL);
    assert_non_null(b);
    assert_int_equal(tg_idem_fingerprint(b, key, out), 0);
    json_decref(b);
}

static void test_fingerprint(void **state)
{
    (void)state;
    uint8_t k1[32] = {1}, k2[32] = {2};
    char a[TG_IDEM_FP_HEX + 1], b[TG_IDEM_FP_HEX + 1], c[TG_IDEM_FP_HEX + 1], d[TG_IDEM_FP_HEX + 1];
    fp_of("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":5}", k1, a);
    /* other spacing, key order and an escape that means the same character: the same request */
    fp_of("{ \"max_tokens\" : 5, \"messages\":[{\"content\":\"h\\u0069\",\"role\":\"user\"}], "
          "\"model\":\"m\" }",
          k1, b);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), TG_IDEM_FP_HEX);
    for (size_t i = 0; i < TG_IDEM_FP_HEX; i++)
        assert_true((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
    /* any change of value is another request */
    fp_of("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":6}", k1, c);
    assert_string_not_equal(a, c);
    /* keyed: another deployment's pepper gives another hash of the same body */
    fp_of("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":5}", k2, d);
    assert_string_not_equal(a, d);
}

static void test_verdict(void **state)
{
    (void)state;
    const char *me = "req_me", *fp = "aaaa", *other = "bbbb";
    tg_idem_row_t r = {.request_id = "req_me", .fingerprint = "aaaa", .running = true};
    assert_int_equal(tg_idem_verdict(&r, me, fp), TG_IDEM_RUN);
    r.request_id = "req_first";
    assert_int_equal(tg_idem_verdict(&r, me, fp), TG_IDEM_IN_PROGRESS);
    r.lapsed = true;
    assert_int_equal(tg_idem_verdict(&r, me, fp), TG_IDEM_INTERRUPTED);
    /* another body is 422 whatever the first call's state */
    assert_int_equal(tg_idem_verdict(&r, me, other), TG_IDEM_MISMATCH);
    r = (tg_idem_row_t){.request_id = "req_first", .fingerprint = "aaaa", .has_answer = true};
    assert_int_equal(tg_idem_verdict(&r, me, fp), TG_IDEM_REPLAY);
    assert_int_equal(tg_idem_verdict(&r, me, other), TG_IDEM_MISMATCH);
    r.has_answer = false;
    assert_int_equal(tg_idem_verdict(&r, me, fp), TG_IDEM_NO_ANSWER);
}

static void test_messages(void **state)
{
    (void)state;
    assert_non_null(strstr(tg_idem_no_answer_msg("zero_retention"), "zero retention"));
    assert_non_null(strstr(tg_idem_no_answer_msg("stream"), "stream"));
    assert_non_null(strstr(tg_idem_no_answer_msg("too_large"), "larger"));
    assert_non_null(strstr(tg_idem_no_answer_msg("client_gone"), "client left"));
    assert_non_null(tg_idem_no_answer_msg(NULL));
    assert_non_null(tg_idem_no_answer_msg("other"));
    /* each says the retry costs nothing */
    assert_non_null(strstr(tg_idem_no_answer_msg("stream"), "not run or charged again"));
    assert_int_equal(tg_err_http_status(TG_EIDEMPOTENCY_IN_PROGRESS), 409);
    assert_int_equal(tg_err_http_status(TG_EIDEMPOTENCY_NO_REPLAY), 409);
    assert_int_equal(tg_err_http_status(TG_EIDEMPOTENCY_MISMATCH), 422);
}

static void test_headers(void **state)
{
    (void)state;
    const char *kept[] = {"x-tollgate-model",           "x-tollgate-provider",       "x-tollgate-attempts",
                          "x-tollgate-fallback-reason", "x-tollgate-dropped-params", "retry-after"};
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        assert_true(tg_idem_header_kept(kept[i], strlen(kept[i])));
    const char *not_kept[] = {"x-tollgate-request-id", "x-tollgate-cost", "x-tollgate-credits-remaining",
                              "content-type",          "set-cookie",      "x-tollgate-mode"};
    for (size_t i = 0; i < sizeof(not_kept) / sizeof(not_kept[0]); i++)
        assert_false(tg_idem_header_kept(not_kept[i], strlen(not_kept[i])));
}

static tg_config_t *parse(const char *extra, tg_buf_t *errors)
{
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"listen\":{\"data\":\"127.0.0.1:1\",\"admin\":\"127.0.0.1:2\"},"
             "\"secrets\":{\"key_pepper_env\":\"TG_TEST_IDEM_PEPPER\"}%s}",
             extra);
    tg_config_t *cfg = NULL;
    tg_buf_reset(errors);
    int rc = tg_config_parse(json, strlen(json), "t.json", &cfg, errors);
    return rc == 0 ? cfg : NULL;
}

static void test_config(void **state)
{
    (void)state;
    setenv("TG_TEST_IDEM_PEPPER", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", 1);
    tg_buf_t errors;
    tg_buf_init(&errors, 1 << 16);
    tg_config_t *cfg = parse("", &errors);
    assert_non_null(cfg);
    assert_int_equal(cfg->idempotency.ttl_ms, 86400000u);
    assert_int_equal(cfg->idempotency.running_lease_ms, 600000u);
    assert_int_equal(cfg->idempotency.max_answer_bytes, 1u << 20);
    tg_config_unref(cfg);
    /* a short ttl takes the lease down with it when the lease is not given */
    cfg = parse(",\"idempotency\":{\"ttl_ms\":5000,\"max_answer_bytes\":4096,\"purge_interval_ms\":200}",
                &errors);
    assert_non_null(cfg);
    assert_int_equal(cfg->idempotency.running_lease_ms, 5000u);
    assert_int_equal(cfg->idempotency.max_answer_bytes, 4096u);
    assert_int_equal(cfg->idempotency.purge_interval_ms, 200u);
    tg_config_unref(cfg);
    /* a lease longer than the key's life, an unknown field, values out of range: refused, named */
    assert_null(parse(",\"idempotency\":{\"ttl_ms\":5000,\"running_lease_ms\":6000}", &errors));
    assert_non_null(strstr(errors.data, "idempotency.running_lease_ms"));
    assert_null(parse(",\"idempotency\":{\"ttl\":5000}", &errors));
    assert_non_null(strstr(errors.data, "idempotency"));
    assert_null(parse(",\"idempotency\":{\"ttl_ms\":10}", &errors));
    assert_non_null(strstr(errors.data, "idempotency.ttl_ms"));
    tg_buf_dispose(&errors);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),      cmocka_unit_test(test_fingerprint), cmocka_unit_test(test_verdict),
        cmocka_unit_test(test_messages), cmocka_unit_test(test_headers),     cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
