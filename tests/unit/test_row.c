/*
 * test_row.c - billing/row.h: a usage record's stage row, formatted by hand, is byte for byte what
 * the printf / strftime formatting it replaced writes (a sweep of times across leap days, month and
 * year ends, and of field values to the limits); names are escaped; \N for no lease and no error;
 * a buffer too small gives 0, never a cut row.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "row.h"

/* The reference: the formatting the gateway used before row.c (snprintf, gmtime_r, strftime). */
static size_t reference(const tg_usage_row_t *r, char *out, size_t cap)
{
    time_t s = (time_t)(r->created_us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char at[40];
    size_t n = strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(at + n, sizeof(at) - n, ".%06" PRId64 "Z", r->created_us % 1000000);
    char lease[24] = "\\N";
    if (r->lease_id != 0)
        snprintf(lease, sizeof(lease), "%" PRId64, r->lease_id);
    int k =
        snprintf(out, cap,
                 "%" PRId64 "\t%s\t%s\t%" PRId64 "\t%s\t%s\t%c\t%" PRId64 "\t%" PRId64 "\t%" PRId64
                 "\t%c\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%c\t%" PRId64
                 "\t%" PRId64 "\t%s\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%s\n",
                 r->tenant_id, r->request_id, at, r->key_id, r->model, r->provider, r->byok ? 't' : 'f',
                 r->input, r->output, r->cached, r->estimated ? 't' : 'f', r->price_id, r->price_input,
                 r->price_output, r->price_cached, r->platform_fee, r->billed ? 't' : 'f', r->cost, r->charge,
                 lease, r->latency_ms, r->attempts, r->status, r->error != NULL ? r->error : "\\N");
    return (size_t)k;
}

static tg_usage_row_t sample(int64_t us)
{
    return (tg_usage_row_t){.tenant_id = 42,
                            .request_id = "req_0123456789abcdef",
                            .created_us = us,
                            .key_id = 7,
                            .model = "gpt-4o-mini",
                            .provider = "sim-openai",
                            .byok = false,
                            .estimated = true,
                            .billed = true,
                            .input = 1000,
                            .output = 250,
                            .cached = 100,
                            .price_id = 3,
                            .price_input = 150000,
                            .price_output = 600000,
                            .price_cached = 75000,
                            .platform_fee = 2000,
                            .cost = 293,
                            .charge = 293,
                            .lease_id = 99,
                            .latency_ms = 120,
                            .attempts = 2,
                            .status = 200,
                            .error = NULL};
}

static void expect_same(const tg_usage_row_t *r)
{
    char got[TG_ROW_MAX], want[TG_ROW_MAX];
    size_t n = tg_usage_row_format(r, got, sizeof(got));
    size_t m = reference(r, want, sizeof(want));
    assert_int_equal(n, m);
    assert_string_equal(got, want);
}

static void test_times(void **state)
{
    (void)state;
    /* around every month end of 1999-2001 (2000: a leap year of the 400 rule) and 2096-2101
     * (2100: not a leap year), each second of the last and first minute, with microseconds */
    const int years[] = {1970, 1999, 2000, 2001, 2024, 2026, 2096, 2099, 2100, 2101, 2399, 2400};
    for (size_t y = 0; y < sizeof(years) / sizeof(years[0]); y++) {
        for (int mon = 0; mon < 12; mon++) {
            struct tm tm = {.tm_year = years[y] - 1900, .tm_mon = mon, .tm_mday = 1};
            int64_t start = (int64_t)timegm(&tm);
            for (int64_t s = start - 61; s <= start + 61; s++) {
                if (s < 0)
                    continue;
                tg_usage_row_t r = sample(s * 1000000 + (s % 7) * 142857);
                expect_same(&r);
            }
        }
    }
    /* one step of 3h7m11s from 1970 to 2300: every day of the year goes by */
    for (int64_t s = 0; s < 10413792000LL; s += 11231) {
        tg_usage_row_t r = sample(s * 1000000 + 999999);
        expect_same(&r);
    }
}

static void test_fields(void **state)
{
    (void)state;
    tg_usage_row_t r = sample(1764892800123456);
    expect_same(&r);
    r.lease_id = 0; /* none: \N */
    r.error = "upstream_timeout";
    r.byok = true;
    r.billed = false;
    r.estimated = false;
    r.cost = r.charge = 0;
    expect_same(&r);
    r.tenant_id = INT64_MAX;
    r.input = 1000000000;
    r.price_input = 1000000000000;
    r.status = 499;
    r.latency_ms = 0;
    expect_same(&r);

    /* names are COPY text: a tab, a newline and a backslash cannot break the row */
    r.model = "a\tb\nc\\d";
    char got[TG_ROW_MAX];
    size_t n = tg_usage_row_format(&r, got, sizeof(got));
    assert_true(n > 0);
    assert_non_null(strstr(got, "\ta\\tb\\nc\\\\d\t"));
    size_t tabs = 0;
    for (size_t i = 0; i < n; i++)
        tabs += got[i] == '\t';
    assert_int_equal(tabs, TG_ROW_FIELDS - 1);
    assert_int_equal(got[n - 1], '\n');
    assert_int_equal(strchr(got, '\n'), got + n - 1);

    /* too small: 0, whatever the size, never a row without its end */
    for (size_t cap = 0; cap <= n; cap++)
        assert_int_equal(tg_usage_row_format(&r, got, cap), 0);
    assert_int_equal(tg_usage_row_format(&r, got, n + 1), n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
