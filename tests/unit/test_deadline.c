/*
 * test_deadline.c - deadlines of different durations on one sorted list fire in deadline order,
 * never before their time, once each; re-arming replaces, cancelling is idempotent.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "deadline.h"

typedef struct {
    tg_deadline_t d;
    int id;
    uint64_t due;
} timer_t_;

static int fired[16];
static size_t n_fired;
static h2o_loop_t *loop;
static bool too_early;

static void on_fire(tg_deadline_t *d)
{
    timer_t_ *t = H2O_STRUCT_FROM_MEMBER(timer_t_, d, d);
    if (h2o_now(loop) < t->due)
        too_early = true;
    fired[n_fired++] = t->id;
}

static void run_until(size_t n)
{
    while (n_fired < n)
        assert_int_equal(h2o_evloop_run(loop, INT32_MAX), 0);
}

static void arm(tg_timers_t *tl, timer_t_ *t, int id, uint64_t ms)
{
    t->id = id;
    t->due = h2o_now(loop) + ms;
    tg_deadline_arm(tl, &t->d, ms, on_fire);
}

static void test_order_and_cancel(void **state)
{
    (void)state;
    loop = h2o_evloop_create();
    tg_timers_t tl;
    tg_timers_init(&tl, loop);
    timer_t_ t[6];
    memset(t, 0, sizeof(t));
    n_fired = 0;
    too_early = false;
    tg_deadline_cancel(&t[5].d); /* never armed: a no-op */
    arm(&tl, &t[0], 0, 40);
    arm(&tl, &t[1], 1, 10);
    arm(&tl, &t[2], 2, 25);
    arm(&tl, &t[3], 3, 0);
    arm(&tl, &t[4], 4, 10); /* equal deadlines fire in arming order */
    arm(&tl, &t[5], 5, 15);
    assert_true(tg_deadline_armed(&t[5].d));
    tg_deadline_cancel(&t[5].d);
    tg_deadline_cancel(&t[5].d);
    assert_false(tg_deadline_armed(&t[5].d));
    arm(&tl, &t[2], 2, 5); /* re-arm: earlier now, and only once */
    run_until(5);
    int want[] = {3, 2, 1, 4, 0};
    assert_memory_equal(fired, want, sizeof(want));
    assert_false(too_early);
    for (size_t i = 0; i < 6; i++)
        assert_false(tg_deadline_armed(&t[i].d));
    tg_timers_dispose(&tl);
    h2o_evloop_destroy(loop);
}

static timer_t_ chain;
static tg_timers_t *chain_list;

static void on_chain(tg_deadline_t *d)
{
    on_fire(d);
    if (n_fired < 3) {
        chain.due = h2o_now(loop) + 3;
        tg_deadline_arm(chain_list, d, 3, on_chain); /* re-arming from its own callback */
    }
}

static void test_rearm_in_callback(void **state)
{
    (void)state;
    loop = h2o_evloop_create();
    tg_timers_t tl;
    tg_timers_init(&tl, loop);
    chain_list = &tl;
    n_fired = 0;
    too_early = false;
    memset(&chain, 0, sizeof(chain));
    chain.id = 7;
    chain.due = h2o_now(loop) + 2;
    tg_deadline_arm(&tl, &chain.d, 2, on_chain);
    run_until(3);
    assert_int_equal(n_fired, 3);
    assert_false(too_early);
    assert_false(tg_deadline_armed(&chain.d));
    tg_timers_dispose(&tl);
    h2o_evloop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_cancel),
        cmocka_unit_test(test_rearm_in_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
