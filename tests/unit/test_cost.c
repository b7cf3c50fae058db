/*
 * test_cost.c - the cost arithmetic of billing/cost.h: the rounding rule (one round-up per
 * request), cached tokens at their own rate, BYOK's fee, an explicit zero, the bounds at their
 * extremes without overflow, refusals, and a sweep against a 128-bit reference.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cost.h"

static int64_t cost_of(int64_t in, int64_t cached, int64_t out, int64_t pin, int64_t pcached, int64_t pout)
{
    tg_unit_prices_t p = {.input = pin, .output = pout, .cached_input = pcached, .byok_fee = 7};
    tg_tokens_t t = {.input = in, .cached = cached, .output = out};
    int64_t c = -1;
    assert_int_equal(tg_cost_compute(&p, &t, false, &c), 0);
    return c;
}

static void test_rounding(void **state)
{
    /* 900 x 0.15 + 100 x 0.075 + 200 x 0.6 = 262.5 micro-credits: rounded up once, to 263 */
    assert_int_equal(cost_of(1000, 100, 200, 150000, 75000, 600000), 263);
    /* exact amounts stay exact */
    assert_int_equal(cost_of(1000000, 0, 0, 1, 0, 0), 1);
    assert_int_equal(cost_of(2000000, 0, 1000000, 3, 0, 5), 11);
    /* a millionth of a micro-credit is still one micro-credit */
    assert_int_equal(cost_of(1, 0, 0, 1, 0, 0), 1);
    /* the rule rounds the sum, not each part: two thirds of a micro-credit make one (not two), and
     * three thirds (input, cached and output) make exactly one (not three) */
    assert_int_equal(cost_of(1, 0, 1, 333334, 0, 333333), 1);
    assert_int_equal(cost_of(2, 1, 1, 333334, 333333, 333333), 1);
    /* an explicit zero is zero: no tokens cost nothing, and a zero price is free */
    assert_int_equal(cost_of(0, 0, 0, 150000, 75000, 600000), 0);
    assert_int_equal(cost_of(500, 0, 0, 0, 0, 600000), 0);
}

static void test_cached_rate(void **state)
{
    /* every input token cached: only the cached rate applies */
    assert_int_equal(cost_of(1000000, 1000000, 0, 2500000, 1250000, 10000000), 1250000);
    /* none cached: only the input rate */
    assert_int_equal(cost_of(1000000, 0, 0, 2500000, 1250000, 10000000), 2500000);
}

static void test_byok_fee(void **state)
{
    tg_unit_prices_t p = {.input = 150000, .output = 600000, .cached_input = 75000, .byok_fee = 2000};
    tg_tokens_t t = {.input = 100000, .cached = 0, .output = 50000};
    int64_t c = -1;
    assert_int_equal(tg_cost_compute(&p, &t, true, &c), 0);
    assert_int_equal(c, 2000); /* the fee, whatever the tokens */
    p.byok_fee = 0;
    assert_int_equal(tg_cost_compute(&p, &t, true, &c), 0);
    assert_int_equal(c, 0);
}

static void test_bounds(void **state)
{
    const int64_t T = TG_COST_MAX_TOKENS, P = TG_COST_MAX_PRICE;
    /* 10^9 x 10^12 twice, over 10^6: 2 x 10^15, exact (the products alone would overflow int64) */
    assert_int_equal(cost_of(T, 0, T, P, P, P), INT64_C(2000000000000000));
    assert_int_equal(cost_of(T, T / 2, T, P, P, P), INT64_C(2000000000000000));
    assert_int_equal(cost_of(T, 0, T, P - 1, 0, P - 1), INT64_C(2000000000000000) - 2000);

    tg_unit_prices_t p = {.input = 1, .output = 1, .cached_input = 1};
    tg_tokens_t bad[] = {{.input = -1},
                         {.input = T + 1},
                         {.output = T + 1},
                         {.input = 5, .cached = 6},
                         {.input = 5, .cached = -1},
                         {.output = -1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t c = 42;
        assert_int_equal(tg_cost_compute(&p, &bad[i], false, &c), TG_EINVALID_REQUEST);
        assert_int_equal(c, 42); /* untouched */
    }
    tg_tokens_t ok = {.input = 1};
    tg_unit_prices_t badp[] = {
        {.input = -1}, {.output = P + 1}, {.cached_input = P + 1}, {.byok_fee = P + 1}};
    for (size_t i = 0; i < sizeof(badp) / sizeof(badp[0]); i++) {
        int64_t c = 42;
        assert_false(tg_cost_prices_valid(&badp[i]));
        assert_int_equal(tg_cost_compute(&badp[i], &ok, false, &c), TG_EINVALID_REQUEST);
        assert_int_equal(tg_cost_compute(&badp[i], &ok, true, &c), TG_EINVALID_REQUEST);
    }
    assert_int_equal(tg_cost_add(INT64_MAX - 1, 5), INT64_MAX);
    assert_int_equal(tg_cost_add(40, 2), 42);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Values spread over every magnitude, the bounds and zero included. */
static int64_t pick(int64_t max)
{
    switch (rnd() % 4) {
    case 0:
        return 0;
    case 1:
        return max;
    default: {
        int64_t span = (int64_t)1 << (rnd() % 41);
        int64_t v = (int64_t)(rnd() % (uint64_t)span);
        return v > max ? max : v;
    }
    }
}

static void test_reference_sweep(void **state)
{
    for (int i = 0; i < 200000; i++) {
        int64_t in = pick(TG_COST_MAX_TOKENS), out = pick(TG_COST_MAX_TOKENS);
        int64_t cached = in > 0 ? (int64_t)(rnd() % (uint64_t)(in + 1)) : 0;
        int64_t pin = pick(TG_COST_MAX_PRICE), pc = pick(TG_COST_MAX_PRICE), po = pick(TG_COST_MAX_PRICE);
        __int128 num = (__int128)(in - cached) * pin + (__int128)cached * pc + (__int128)out * po;
        __int128 want = (num + 999999) / 1000000;
        int64_t got = cost_of(in, cached, out, pin, pc, po);
        if ((__int128)got != want)
            fail_msg("in %lld cached %lld out %lld at %lld/%lld/%lld: got %lld", (long long)in,
                     (long long)cached, (long long)out, (long long)pin, (long long)pc, (long long)po,
                     (long long)got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding),        cmocka_unit_test(test_cached_rate),
        cmocka_unit_test(test_byok_fee),        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_reference_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
