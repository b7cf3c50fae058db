/*
 * test_breaker.c - the circuit breaker state machine with an injected clock,
 * the registry, the latency tracker, and exactly-one-probe under concurrency.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "breaker.h"
#include "metrics.h"

static const tg_breaker_opts_t opts3 = {.failure_threshold = 3, .open_ms = 1000, .half_open_probes = 1};

static tg_breaker_t *open_breaker(uint64_t at)
{
    tg_breaker_t *b = tg_breaker_create("p/m", &opts3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tg_breaker_admit(b, at), TG_ADMIT_YES);
        tg_breaker_record(b, at, TG_ADMIT_YES, TG_RESULT_FAILURE);
    }
    assert_int_equal(tg_breaker_state(b, at), TG_BREAKER_OPEN);
    return b;
}

static void test_three_failures_open(void **state)
{
    tg_breaker_t *b = tg_breaker_create("p/m", &opts3);
    tg_breaker_record(b, 100, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(b, 100, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(b, 100), TG_BREAKER_CLOSED);
    assert_int_equal(tg_breaker_admit(b, 100), TG_ADMIT_YES);
    tg_breaker_record(b, 100, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(b, 100), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_admit(b, 100), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_admit(b, 1099), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_retry_in_ms(b, 100), 1000);
    assert_int_equal(tg_breaker_retry_in_ms(b, 600), 500);
    tg_breaker_destroy(b);
}

static void test_success_resets_the_count(void **state)
{
    tg_breaker_t *b = tg_breaker_create("p/m", &opts3);
    tg_breaker_record(b, 1, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(b, 1, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(b, 1, TG_ADMIT_YES, TG_RESULT_SUCCESS);
    tg_breaker_record(b, 1, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(b, 1, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(b, 1), TG_BREAKER_CLOSED);
    /* neutral outcomes (caller errors) neither count nor reset */
    tg_breaker_record(b, 1, TG_ADMIT_YES, TG_RESULT_NEUTRAL);
    assert_int_equal(tg_breaker_state(b, 1), TG_BREAKER_CLOSED);
    tg_breaker_record(b, 1, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(b, 1), TG_BREAKER_OPEN);
    tg_breaker_destroy(b);
}

static void test_half_open_exactly_one_probe(void **state)
{
    tg_breaker_t *b = open_breaker(0);
    assert_int_equal(tg_breaker_state(b, 999), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_state(b, 1000), TG_BREAKER_HALF_OPEN);
    assert_int_equal(tg_breaker_retry_in_ms(b, 1000), 0);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_PROBE);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_admit(b, 5000), TG_ADMIT_SKIP);
    /* a late failure of a request admitted before the opening does not decide anything */
    tg_breaker_record(b, 1001, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_admit(b, 1001), TG_ADMIT_SKIP);
    tg_breaker_record(b, 1002, TG_ADMIT_PROBE, TG_RESULT_SUCCESS);
    assert_int_equal(tg_breaker_state(b, 1002), TG_BREAKER_CLOSED);
    assert_int_equal(tg_breaker_admit(b, 1002), TG_ADMIT_YES);
    /* closed again from zero: it takes three new failures to open */
    tg_breaker_record(b, 1003, TG_ADMIT_YES, TG_RESULT_FAILURE);
    tg_breaker_record(b, 1003, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(b, 1003), TG_BREAKER_CLOSED);
    tg_breaker_destroy(b);
}

static void test_probe_failure_reopens(void **state)
{
    tg_breaker_t *b = open_breaker(0);
    assert_int_equal(tg_breaker_admit(b, 1500), TG_ADMIT_PROBE);
    tg_breaker_record(b, 1600, TG_ADMIT_PROBE, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(b, 1600), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_retry_in_ms(b, 1600), 1000);
    assert_int_equal(tg_breaker_admit(b, 2599), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_admit(b, 2600), TG_ADMIT_PROBE);
    tg_breaker_destroy(b);
}

static void test_neutral_probe_frees_the_slot(void **state)
{
    tg_breaker_t *b = open_breaker(0);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_PROBE);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_SKIP);
    tg_breaker_record(b, 1000, TG_ADMIT_PROBE, TG_RESULT_NEUTRAL);
    assert_int_equal(tg_breaker_state(b, 1000), TG_BREAKER_HALF_OPEN);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_PROBE);
    tg_breaker_destroy(b);
}

static void test_two_probes_when_configured(void **state)
{
    tg_breaker_opts_t o = opts3;
    o.half_open_probes = 2;
    tg_breaker_t *b = tg_breaker_create("p/m", &o);
    tg_breaker_record(b, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_PROBE);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_PROBE);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_SKIP);
    tg_breaker_destroy(b);
}

static void test_failure_open_opens_at_once(void **state)
{
    tg_breaker_t *b = tg_breaker_create("p/m", &opts3);
    assert_int_equal(tg_breaker_admit(b, 10), TG_ADMIT_YES);
    tg_breaker_record(b, 10, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    assert_int_equal(tg_breaker_state(b, 10), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_admit(b, 11), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_retry_in_ms(b, 10), 1000);
    /* and a half-open probe that hits it again re-opens */
    assert_int_equal(tg_breaker_admit(b, 1010), TG_ADMIT_PROBE);
    tg_breaker_record(b, 1010, TG_ADMIT_PROBE, TG_RESULT_FAILURE_OPEN);
    assert_int_equal(tg_breaker_state(b, 1010), TG_BREAKER_OPEN);
    tg_breaker_destroy(b);
}

static void test_health_probes(void **state)
{
    /* failing probes count like failures */
    tg_breaker_t *b = tg_breaker_create("p/m", &opts3);
    tg_breaker_health(b, 0, false);
    tg_breaker_health(b, 0, false);
    assert_int_equal(tg_breaker_state(b, 0), TG_BREAKER_CLOSED);
    tg_breaker_health(b, 0, false);
    assert_int_equal(tg_breaker_state(b, 0), TG_BREAKER_OPEN);
    /* a passing probe of an open breaker brings the half-open probe forward */
    tg_breaker_health(b, 200, true);
    assert_int_equal(tg_breaker_state(b, 200), TG_BREAKER_HALF_OPEN);
    assert_int_equal(tg_breaker_retry_in_ms(b, 200), 0);
    assert_int_equal(tg_breaker_admit(b, 200), TG_ADMIT_PROBE);
    assert_int_equal(tg_breaker_admit(b, 200), TG_ADMIT_SKIP);
    tg_breaker_record(b, 210, TG_ADMIT_PROBE, TG_RESULT_SUCCESS);
    assert_int_equal(tg_breaker_state(b, 210), TG_BREAKER_CLOSED);
    /* a passing probe does not touch a closed breaker */
    tg_breaker_health(b, 220, true);
    assert_int_equal(tg_breaker_admit(b, 220), TG_ADMIT_YES);
    tg_breaker_destroy(b);

    /* a failing probe cancels a brought-forward probe; past open_ms it re-opens */
    b = open_breaker(0);
    tg_breaker_health(b, 100, true);
    tg_breaker_health(b, 150, false);
    assert_int_equal(tg_breaker_state(b, 150), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_admit(b, 150), TG_ADMIT_SKIP);
    tg_breaker_health(b, 1200, false);
    assert_int_equal(tg_breaker_state(b, 1200), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_retry_in_ms(b, 1200), 1000);
    tg_breaker_destroy(b);
}

static void test_reset(void **state)
{
    tg_breaker_t *b = open_breaker(0);
    tg_breaker_latency_at(b, 0, 900000, 100);
    assert_true(tg_breaker_is_degraded_at(b, 0));
    tg_breaker_reset(b);
    assert_int_equal(tg_breaker_state(b, 1), TG_BREAKER_CLOSED);
    assert_int_equal(tg_breaker_admit(b, 1), TG_ADMIT_YES);
    assert_false(tg_breaker_is_degraded_at(b, 1));
    tg_breaker_destroy(b);
}

static void test_latency_degrade_and_restore(void **state)
{
    const uint32_t thr = 100; /* ms */
    tg_breaker_t *b = tg_breaker_create("p/m", &(tg_breaker_opts_t){3, 60000, 1});
    tg_breaker_latency_at(b, 0, 50000, thr);
    assert_false(tg_breaker_is_degraded_at(b, 0));
    for (int i = 0; i < 10; i++)
        tg_breaker_latency_at(b, 10, 400000, thr);
    assert_true(tg_breaker_is_degraded_at(b, 10));
    /* hysteresis: an average just under the threshold (above 80% of it) stays degraded */
    for (int i = 0; i < 40; i++)
        tg_breaker_latency_at(b, 20, 90000, thr);
    assert_true(tg_breaker_latency_us(b) < 100000);
    assert_true(tg_breaker_is_degraded_at(b, 20));
    for (int i = 0; i < 40; i++)
        tg_breaker_latency_at(b, 30, 10000, thr);
    assert_false(tg_breaker_is_degraded_at(b, 30));
    assert_false(tg_breaker_is_degraded(b));

    /* a degraded mark without a confirming sample expires after open_ms */
    tg_breaker_latency_at(b, 100, 5000000, thr);
    assert_true(tg_breaker_is_degraded_at(b, 100));
    assert_true(tg_breaker_is_degraded_at(b, 60099));
    assert_false(tg_breaker_is_degraded_at(b, 60100));
    /* ...and measuring starts afresh */
    tg_breaker_latency_at(b, 60100, 20000, thr);
    assert_false(tg_breaker_is_degraded_at(b, 60100));
    assert_int_equal(tg_breaker_latency_us(b), 20000);

    /* threshold 0 disables it */
    tg_breaker_latency_at(b, 60200, 9000000, 0);
    assert_false(tg_breaker_is_degraded_at(b, 60200));
    tg_breaker_destroy(b);
}

static void test_json(void **state)
{
    tg_breaker_t *b = open_breaker(0);
    tg_buf_t out;
    tg_buf_init(&out, 4096);
    assert_int_equal(tg_breaker_to_json(b, 400, &out), 0);
    assert_string_equal(out.data, "{\"target\":\"p/m\",\"state\":\"open\",\"consecutive_failures\":3,"
                                  "\"degraded\":false,\"retry_in_ms\":600,\"latency_us\":0}");
    tg_buf_dispose(&out);
    tg_buf_init(&out, 10); /* too small: fails and leaves the buffer as it was */
    assert_int_equal(tg_breaker_to_json(b, 400, &out), TG_ETOO_LARGE);
    assert_int_equal(out.len, 0);
    tg_buf_dispose(&out);
    tg_breaker_destroy(b);
}

static void count_cb(void *ud, tg_breaker_t *b)
{
    if (strncmp(tg_breaker_key(b), "reg/", 4) == 0)
        (*(int *)ud)++;
}

static void test_registry(void **state)
{
    tg_breaker_t *a = tg_breaker_get("reg/a", &opts3);
    tg_breaker_t *a2 = tg_breaker_get("reg/a", NULL);
    tg_breaker_t *c = tg_breaker_get("reg/c", &opts3);
    assert_non_null(a);
    assert_ptr_equal(a, a2);
    assert_ptr_not_equal(a, c);
    assert_ptr_equal(tg_breaker_find("reg/c"), c);
    assert_null(tg_breaker_find("reg/none"));
    int n = 0;
    tg_breaker_foreach(count_cb, &n);
    assert_int_equal(n, 2);

    /* state survives a re-get with new options (a reload) */
    tg_breaker_record(a, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    tg_breaker_t *a3 = tg_breaker_get("reg/a", &(tg_breaker_opts_t){5, 200, 1});
    assert_ptr_equal(a3, a);
    assert_int_equal(tg_breaker_state(a, 100), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_state(a, 200), TG_BREAKER_HALF_OPEN); /* new open_ms applies */

    /* metrics: the render hook publishes every breaker's state */
    tg_buf_t out;
    tg_buf_init(&out, 1 << 20);
    assert_int_equal(tg_metrics_render(&out), 0);
    assert_non_null(strstr(out.data, "# TYPE tollgate_breaker_state gauge\n"));
    assert_non_null(strstr(out.data, "tollgate_breaker_state{target=\"reg/c\"} 0\n"));
    tg_buf_dispose(&out);
}

/* ---- concurrency ---- */

#define NTHREADS 16
#define NITER    2000

typedef struct conc {
    tg_breaker_t *b;
    pthread_barrier_t bar;
    _Atomic int probes, yes, skips;
} conc_t;

static void *admit_around_half_open(void *arg)
{
    conc_t *c = arg;
    pthread_barrier_wait(&c->bar);
    for (int i = 0; i < NITER; i++) {
        uint64_t now = 990 + (uint64_t)(i % 20); /* straddles the half-open moment (1000) */
        tg_admit_t a = tg_breaker_admit(c->b, now);
        if (a == TG_ADMIT_PROBE)
            atomic_fetch_add(&c->probes, 1); /* the probe is held: never reported */
        else if (a == TG_ADMIT_YES)
            atomic_fetch_add(&c->yes, 1);
        else
            atomic_fetch_add(&c->skips, 1);
        /* late outcomes of requests admitted before the breaker opened arrive meanwhile */
        tg_breaker_record(c->b, now, TG_ADMIT_YES, (i & 1) ? TG_RESULT_FAILURE : TG_RESULT_SUCCESS);
        (void)tg_breaker_state(c->b, now);
    }
    return NULL;
}

static void *fail_many(void *arg)
{
    conc_t *c = arg;
    pthread_barrier_wait(&c->bar);
    for (int i = 0; i < NITER; i++)
        tg_breaker_record(c->b, 5000, TG_ADMIT_YES, TG_RESULT_FAILURE);
    return NULL;
}

static void test_concurrent_exactly_one_probe(void **state)
{
    conc_t c = {.b = open_breaker(0)};
    pthread_t th[NTHREADS];
    pthread_barrier_init(&c.bar, NULL, NTHREADS);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, admit_around_half_open, &c), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&c.bar);
    assert_int_equal(atomic_load(&c.probes), 1);
    assert_int_equal(atomic_load(&c.yes), 0);
    assert_int_equal(atomic_load(&c.skips), NTHREADS * NITER - 1);
    assert_int_equal(tg_breaker_state(c.b, 1010), TG_BREAKER_HALF_OPEN);
    tg_breaker_destroy(c.b);

    /* no lost update: threshold-1 concurrent failures keep it closed, one more opens it */
    tg_breaker_opts_t o = {.failure_threshold = NTHREADS * NITER + 1, .open_ms = 1000, .half_open_probes = 1};
    conc_t d = {.b = tg_breaker_create("p/many", &o)};
    pthread_barrier_init(&d.bar, NULL, NTHREADS);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, fail_many, &d), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&d.bar);
    assert_int_equal(tg_breaker_state(d.b, 5000), TG_BREAKER_CLOSED);
    tg_breaker_record(d.b, 5000, TG_ADMIT_YES, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(d.b, 5000), TG_BREAKER_OPEN);
    tg_breaker_destroy(d.b);
}

/* A probe whose owner never reports holds its slot for a bounded lease only: probe_timeout_ms (the
 * probe's first-byte timeout) plus a grace; a probe that streams holds it for its stream's lease.
 * Without the lease a vanished probe kept the breaker half-open and every request skipped it. */
static void test_probe_lease(void **state)
{
    const tg_breaker_opts_t o = {
        .failure_threshold = 3, .open_ms = 1000, .half_open_probes = 1, .probe_timeout_ms = 500};
    tg_breaker_t *b = tg_breaker_create("p/lease", &o);
    tg_breaker_record(b, 0, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_PROBE); /* never reported */
    uint64_t lease_end = 1000 + 500 + TG_BREAKER_LEASE_GRACE_MS;
    assert_int_equal(tg_breaker_admit(b, lease_end - 1), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_state(b, lease_end - 1), TG_BREAKER_HALF_OPEN);
    assert_int_equal(tg_breaker_admit(b, lease_end), TG_ADMIT_PROBE); /* the slot came back */

    /* a probe that streams keeps its slot for its stream's lease */
    tg_breaker_probe_streaming(b, lease_end + 100, 60000);
    assert_int_equal(tg_breaker_admit(b, lease_end + 100 + 60000), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_admit(b, lease_end + 100 + 60000 + TG_BREAKER_LEASE_GRACE_MS),
                     TG_ADMIT_PROBE);
    /* a late result of a presumed-lost probe still decides */
    tg_breaker_record(b, lease_end + 70000, TG_ADMIT_PROBE, TG_RESULT_SUCCESS);
    assert_int_equal(tg_breaker_state(b, lease_end + 70000), TG_BREAKER_CLOSED);

    /* a long stream lease of an earlier half-open period does not hold the next probe */
    tg_breaker_record(b, lease_end + 70001, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    tg_breaker_record(b, lease_end + 71001, TG_ADMIT_YES, TG_RESULT_NEUTRAL);
    assert_int_equal(tg_breaker_admit(b, lease_end + 71001), TG_ADMIT_PROBE);
    tg_breaker_probe_streaming(b, lease_end + 71001, 600000);
    tg_breaker_record(b, lease_end + 72000, TG_ADMIT_PROBE, TG_RESULT_FAILURE); /* re-opens */
    assert_int_equal(tg_breaker_admit(b, lease_end + 73000), TG_ADMIT_PROBE);   /* never reported */
    assert_int_equal(tg_breaker_admit(b, lease_end + 73000 + 500 + TG_BREAKER_LEASE_GRACE_MS),
                     TG_ADMIT_PROBE);

    /* the lease also frees a health check's view of "a probe is in flight" */
    tg_breaker_record(b, 100000, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    assert_int_equal(tg_breaker_admit(b, 101000), TG_ADMIT_PROBE);
    tg_breaker_health(b, 101000 + 500 + TG_BREAKER_LEASE_GRACE_MS, false);
    assert_int_equal(tg_breaker_state(b, 101000 + 500 + TG_BREAKER_LEASE_GRACE_MS), TG_BREAKER_OPEN);
    tg_breaker_destroy(b);
}

/* Extra probes (a request with no other usable target): admitted while half-open with the probe
 * out, bounded, and deciding like a probe. */
static void test_extra_probes(void **state)
{
    tg_breaker_t *b = open_breaker(0);
    /* closed and open breakers: as admit */
    tg_breaker_t *c = tg_breaker_create("p/closed", &opts3);
    assert_int_equal(tg_breaker_admit_extra(c, 0), TG_ADMIT_YES);
    tg_breaker_destroy(c);
    assert_int_equal(tg_breaker_admit_extra(b, 10), TG_ADMIT_SKIP);
    /* half-open with a free slot: the probe itself */
    assert_int_equal(tg_breaker_admit_extra(b, 1000), TG_ADMIT_PROBE);
    assert_int_equal(tg_breaker_admit(b, 1000), TG_ADMIT_SKIP);
    for (int i = 0; i < TG_BREAKER_MAX_EXTRA; i++)
        assert_int_equal(tg_breaker_admit_extra(b, 1000), TG_ADMIT_EXTRA);
    assert_int_equal(tg_breaker_admit_extra(b, 1000), TG_ADMIT_SKIP); /* bounded */
    /* a neutral extra frees an extra slot, not the probe's */
    tg_breaker_record(b, 1001, TG_ADMIT_EXTRA, TG_RESULT_NEUTRAL);
    assert_int_equal(tg_breaker_admit(b, 1001), TG_ADMIT_SKIP);
    assert_int_equal(tg_breaker_admit_extra(b, 1001), TG_ADMIT_EXTRA);
    /* an extra probe's success closes the breaker */
    tg_breaker_record(b, 1002, TG_ADMIT_EXTRA, TG_RESULT_SUCCESS);
    assert_int_equal(tg_breaker_state(b, 1002), TG_BREAKER_CLOSED);
    /* and its failure re-opens it: later extras are skipped, late results ignored */
    tg_breaker_record(b, 2000, TG_ADMIT_YES, TG_RESULT_FAILURE_OPEN);
    assert_int_equal(tg_breaker_admit_extra(b, 3000), TG_ADMIT_PROBE);
    assert_int_equal(tg_breaker_admit_extra(b, 3000), TG_ADMIT_EXTRA);
    tg_breaker_record(b, 3001, TG_ADMIT_EXTRA, TG_RESULT_FAILURE);
    assert_int_equal(tg_breaker_state(b, 3001), TG_BREAKER_OPEN);
    assert_int_equal(tg_breaker_admit_extra(b, 3002), TG_ADMIT_SKIP);
    tg_breaker_record(b, 3003, TG_ADMIT_PROBE, TG_RESULT_SUCCESS); /* late: the breaker is open */
    assert_int_equal(tg_breaker_state(b, 3003), TG_BREAKER_OPEN);
    tg_breaker_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_failures_open),
        cmocka_unit_test(test_success_resets_the_count),
        cmocka_unit_test(test_half_open_exactly_one_probe),
        cmocka_unit_test(test_probe_failure_reopens),
        cmocka_unit_test(test_neutral_probe_frees_the_slot),
        cmocka_unit_test(test_two_probes_when_configured),
        cmocka_unit_test(test_failure_open_opens_at_once),
        cmocka_unit_test(test_health_probes),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_latency_degrade_and_restore),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_concurrent_exactly_one_probe),
        cmocka_unit_test(test_probe_lease),
        cmocka_unit_test(test_extra_probes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
