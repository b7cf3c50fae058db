/*
 * test_usage_query.c - GET /v1/usage's parameters and page cursor (gateway/src/usage_query.h):
 * times (RFC 3339 with offsets and fractions, unix seconds, impossible dates), the cursor's round
 * trip and its refusals, and every bad parameter named. The endpoint itself is
 * integration.tenant_money's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "err.h"
#include "usage_query.h"

static int64_t t(const char *s)
{
    int64_t us = -42;
    return tg_usage_time_parse(s, strlen(s), &us) == 0 ? us : -1;
}

static void test_time(void **state)
{
    (void)state;
    assert_int_equal(t("2026-11-02T10:00:00Z"), INT64_C(1793613600) * 1000000);
    assert_int_equal(t("2026-11-02t10:00:00z"), INT64_C(1793613600) * 1000000);
    assert_int_equal(t("2026-11-02T11:00:00+01:00"), INT64_C(1793613600) * 1000000);
    assert_int_equal(t("2026-11-02T09:30:00-00:30"), INT64_C(1793613600) * 1000000);
    assert_int_equal(t("2026-11-02T10:00:00.5Z"), INT64_C(1793613600) * 1000000 + 500000);
    assert_int_equal(t("2026-11-02T10:00:00.123456789Z"), INT64_C(1793613600) * 1000000 + 123456);
    assert_int_equal(t("1793613600"), INT64_C(1793613600) * 1000000);
    assert_int_equal(t("0"), 0);
    assert_int_equal(t("2024-02-29T00:00:00Z") > 0, 1); /* a leap day */
    const char *bad[] = {"",
                         "yesterday",
                         "2026-02-30T00:00:00Z", /* no such day */
                         "2025-02-29T00:00:00Z",
                         "2026-13-01T00:00:00Z",
                         "2026-11-02T24:00:00Z",
                         "2026-11-02T10:00:00",  /* no zone */
                         "2026-11-02 10:00:00Z", /* a space */
                         "2026-11-02T10:00:00.Z",
                         "2026-11-02T10:00:00+1:00",
                         "2026-11-02T10:00:00+25:00",
                         "1969-12-31T23:59:59Z",
                         "-1",
                         "9999999999999",
                         "12.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(t(bad[i]), -1);
}

static void test_cursor(void **state)
{
    (void)state;
    char cur[TG_USAGE_CURSOR_MAX + 1], rid[TG_USAGE_RID_MAX + 1];
    int64_t us = 0;
    tg_usage_cursor_make(INT64_C(1793613600123456), "req_abcdefghijklmnopqrstuv", cur);
    assert_null(strpbrk(cur, "+/=&?% ")); /* safe in a query string as it is */
    assert_int_equal(tg_usage_cursor_parse(cur, strlen(cur), &us, rid), 0);
    assert_int_equal(us, INT64_C(1793613600123456));
    assert_string_equal(rid, "req_abcdefghijklmnopqrstuv");
    const char *bad[] = {"", "not-a-cursor", "!!!!", "MTIz" /* "123": no request id */,
                         "OnJlcQ" /* ":req": no time */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tg_usage_cursor_parse(bad[i], strlen(bad[i]), &us, rid), -1);
}

static int parse(const char *qs, tg_usage_query_t *q, char *param)
{
    char msg[200];
    return tg_usage_query_parse(qs, qs != NULL ? strlen(qs) : 0, q, param, 64, msg, sizeof(msg));
}

static void test_query_values(void **state)
{
    (void)state;
    tg_usage_query_t q;
    char param[64];
    assert_int_equal(
        parse("from=2026-11-02T10:00:00Z&to=2026-11-02T12:00:00%2B01:00&model=gpt%2D4o&limit=100&&", &q,
              param),
        0);
    assert_int_equal(q.to_us - q.from_us, INT64_C(3600) * 1000000);
    assert_string_equal(q.model, "gpt-4o");
    assert_int_equal(q.limit, 100);
    /* '+' is itself: a plainly written offset works */
    assert_int_equal(parse("to=2026-11-02T12:00:00+01:00", &q, param), 0);
    assert_int_equal(q.to_us, INT64_C(1793613600) * 1000000 + INT64_C(3600) * 1000000);
}

static void test_query_refusals(void **state)
{
    (void)state;
    struct {
        const char *qs, *param;
    } cases[] = {
        {"limit=0", "limit"},
        {"limit=101", "limit"},
        {"limit=-1", "limit"},
        {"limit=1e2", "limit"},
        {"limit", "limit"},
        {"limit=", "limit"},
        {"from=2026-11-02T10:00:00Z&to=2026-11-02T10:00:00Z", "from"},
        {"to=yesterday", "to"},
        {"model=", "model"},
        {"cursor=abc", "cursor"},
        {"model=a&model=b", "model"},
        {"from=%2", "from"},
        {"from=%00", "from"},
        {"page=2", "page"},
        {"Limit=2", "Limit"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tg_usage_query_t q;
        char param[64] = "";
        assert_int_equal(parse(cases[i].qs, &q, param), TG_EINVALID_REQUEST);
        assert_string_equal(param, cases[i].param);
    }
    char model[TG_USAGE_MODEL_MAX + 8] = "model=";
    memset(model + 6, 'm', TG_USAGE_MODEL_MAX);
    model[6 + TG_USAGE_MODEL_MAX] = '\0';
    tg_usage_query_t q;
    char param[64];
    assert_int_equal(parse(model, &q, param), 0);
    strcat(model, "m");
    assert_int_equal(parse(model, &q, param), TG_EINVALID_REQUEST);
    assert_string_equal(param, "model");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_query_values),
        cmocka_unit_test(test_query_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
