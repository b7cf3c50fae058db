/*
 * test_pipeline.c - the call's state machine driven by fake stages, no sockets: every exit path
 * (served, an error in any stage, the client gone while any stage waits or inside a stage, drain,
 * late callbacks, and a seeded random walk over all of them) reaches SETTLE exactly once, then
 * LOG exactly once, `fail` at most once, and nothing before SETTLE runs after it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "pipeline.h"

/* ---------------------------------------------------------------- a scripted fake call */

typedef enum {
    ACT_GO,
    ACT_PENDING,
    ACT_ERROR,
    ACT_GOTO,
    ACT_GONE_INSIDE,
    ACT_RESUME_INSIDE,
    ACT_ABORT_INSIDE
} act_t;

typedef struct fake {
    tg_pipeline_t p;
    act_t act[TG_STAGE_COUNT];         /* what each stage does the next time it runs */
    tg_stage_t target[TG_STAGE_COUNT]; /* ACT_GOTO / ACT_RESUME_INSIDE: where to */
    int runs[TG_STAGE_COUNT];
    int fails, fail_err;
    bool settled, logged;
    bool ran_after_settle; /* a stage before SETTLE ran once SETTLE had started */
    bool log_before_settle;
    int order; /* SETTLE's and LOG's positions, to check the order */
    int settle_at, log_at;
} fake_t;

static int stage_fn(fake_t *f, tg_stage_t s)
{
    f->runs[s]++;
    f->order++;
    if (s < TG_STAGE_SETTLE && f->settled)
        f->ran_after_settle = true;
    if (s == TG_STAGE_SETTLE) {
        f->settled = true;
        f->settle_at = f->order;
    }
    if (s == TG_STAGE_LOG) {
        if (!f->settled)
            f->log_before_settle = true;
        f->logged = true;
        f->log_at = f->order;
    }
    switch (f->act[s]) {
    case ACT_GO:
        return TG_STAGE_GO;
    case ACT_PENDING:
        return TG_STAGE_PENDING;
    case ACT_ERROR:
        return TG_EINVALID_REQUEST;
    case ACT_GOTO:
        tg_pipeline_goto(&f->p, f->target[s]);
        return TG_STAGE_GO;
    case ACT_GONE_INSIDE:
        tg_pipeline_gone(&f->p);
        return TG_STAGE_PENDING;
    case ACT_RESUME_INSIDE:
        f->act[s] = ACT_GO; /* once: the stage it resumes to may be this one */
        tg_pipeline_resume(&f->p, f->target[s], 0);
        return TG_STAGE_PENDING;
    case ACT_ABORT_INSIDE:
        tg_pipeline_abort(&f->p, TG_ESHUTTING_DOWN);
        return TG_STAGE_PENDING;
    }
    return TG_STAGE_GO;
}

#define STAGE_FN(S)                        \
    static int st_##S(void *ud)            \
    {                                      \
        return stage_fn(ud, TG_STAGE_##S); \
    }
STAGE_FN(ADMIT)
STAGE_FN(AUTH)
STAGE_FN(PARSE)
STAGE_FN(POLICY)
STAGE_FN(ROUTE)
STAGE_FN(LIMIT)
STAGE_FN(RESERVE)
STAGE_FN(ATTEMPT)
STAGE_FN(WAIT)
STAGE_FN(RELAY)
STAGE_FN(SETTLE)
STAGE_FN(LOG)

static void on_fail(void *ud, int err)
{
    fake_t *f = ud;
    f->fails++;
    f->fail_err = err;
}

static const tg_pipeline_ops_t ops = {
    .stage = {st_ADMIT, st_AUTH, st_PARSE, st_POLICY, st_ROUTE, st_LIMIT, st_RESERVE, st_ATTEMPT, st_WAIT,
              st_RELAY, st_SETTLE, st_LOG},
    .fail = on_fail,
};

static void fake_init(fake_t *f)
{
    memset(f, 0, sizeof(*f));
}

/* The invariants of every ended call. */
static void assert_ended_once(const fake_t *f)
{
    assert_true(tg_pipeline_done(&f->p));
    assert_int_equal(f->runs[TG_STAGE_SETTLE], 1);
    assert_int_equal(f->runs[TG_STAGE_LOG], 1);
    assert_true(f->settle_at < f->log_at);
    assert_false(f->ran_after_settle);
    assert_false(f->log_before_settle);
    assert_true(f->fails <= 1);
}

/* ---------------------------------------------------------------------------------- paths */

static void test_served_stream(void **state)
{
    (void)state;
    fake_t f;
    fake_init(&f);
    f.act[TG_STAGE_AUTH] = ACT_PENDING; /* a key cache miss */
    f.act[TG_STAGE_ATTEMPT] = ACT_PENDING;
    f.act[TG_STAGE_RELAY] = ACT_PENDING;
    tg_pipeline_start(&f.p, &ops, &f);
    assert_int_equal(f.p.stage, TG_STAGE_AUTH);
    assert_true(f.p.pending);
    tg_pipeline_resume(&f.p, TG_STAGE_PARSE, 0);
    assert_int_equal(f.p.stage, TG_STAGE_ATTEMPT);
    /* the first chunk arrives inside the transfer: the call is in RELAY from then on */
    tg_pipeline_enter(&f.p, TG_STAGE_RELAY);
    assert_int_equal(f.p.stage, TG_STAGE_RELAY);
    tg_pipeline_resume(&f.p, TG_STAGE_RELAY, 0); /* the pump runs; still streaming */
    assert_int_equal(f.runs[TG_STAGE_RELAY], 1);
    f.act[TG_STAGE_RELAY] = ACT_GO; /* the end of the stream is handed to the client */
    tg_pipeline_resume(&f.p, TG_STAGE_RELAY, 0);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 0);
    assert_int_equal(f.p.err, 0);
    for (tg_stage_t s = TG_STAGE_ADMIT; s < TG_STAGE_RELAY; s++)
        assert_int_equal(f.runs[s], s == TG_STAGE_WAIT ? 0 : 1);
    /* late callbacks and a late hang-up change nothing */
    tg_pipeline_resume(&f.p, TG_STAGE_ATTEMPT, 0);
    tg_pipeline_gone(&f.p);
    tg_pipeline_abort(&f.p, TG_ESHUTTING_DOWN);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 0);
}

static void test_attempt_wait_loop_then_chain_exhausted(void **state)
{
    (void)state;
    fake_t f;
    fake_init(&f);
    f.act[TG_STAGE_ATTEMPT] = ACT_PENDING;
    f.act[TG_STAGE_WAIT] = ACT_PENDING;
    tg_pipeline_start(&f.p, &ops, &f);
    assert_int_equal(f.p.stage, TG_STAGE_ATTEMPT);
    tg_pipeline_resume(&f.p, TG_STAGE_ATTEMPT, 0); /* failed: ask the plan again */
    tg_pipeline_resume(&f.p, TG_STAGE_WAIT, 0);    /* the plan says wait */
    assert_int_equal(f.p.stage, TG_STAGE_WAIT);
    tg_pipeline_resume(&f.p, TG_STAGE_ATTEMPT, 0); /* the wait is over */
    assert_int_equal(f.runs[TG_STAGE_ATTEMPT], 3);
    f.act[TG_STAGE_ATTEMPT] = ACT_ERROR; /* nothing left */
    tg_pipeline_resume(&f.p, TG_STAGE_ATTEMPT, 0);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 1);
    assert_int_equal(f.fail_err, TG_EINVALID_REQUEST);
    assert_int_equal(f.runs[TG_STAGE_RELAY], 0);
}

/* An error in any stage before SETTLE answers once and skips to SETTLE. */
static void test_error_in_each_stage(void **state)
{
    (void)state;
    for (tg_stage_t s = TG_STAGE_ADMIT; s < TG_STAGE_SETTLE; s++) {
        fake_t f;
        fake_init(&f);
        f.act[s] = ACT_ERROR;
        tg_pipeline_start(&f.p, &ops, &f);
        if (s == TG_STAGE_WAIT) { /* reached only from ATTEMPT */
            assert_int_equal(f.runs[TG_STAGE_WAIT], 1);
        }
        assert_ended_once(&f);
        assert_int_equal(f.fails, 1);
        assert_int_equal(f.p.err, TG_EINVALID_REQUEST);
        for (tg_stage_t later = s + 1; later < TG_STAGE_SETTLE; later++)
            assert_int_equal(f.runs[later], 0);
    }
    /* an error from the end stages does not repeat them or answer again */
    fake_t f;
    fake_init(&f);
    f.act[TG_STAGE_SETTLE] = ACT_ERROR;
    tg_pipeline_start(&f.p, &ops, &f);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 0);
}

/* The client leaves while each stage that can wait is waiting: no answer, one SETTLE. */
static void test_gone_while_pending(void **state)
{
    (void)state;
    const tg_stage_t waiting[] = {TG_STAGE_AUTH, TG_STAGE_ATTEMPT, TG_STAGE_WAIT, TG_STAGE_RELAY};
    for (size_t i = 0; i < sizeof(waiting) / sizeof(waiting[0]); i++) {
        fake_t f;
        fake_init(&f);
        f.act[waiting[i]] = ACT_PENDING;
        if (waiting[i] == TG_STAGE_WAIT) {
            f.act[TG_STAGE_ATTEMPT] = ACT_GOTO;
            f.target[TG_STAGE_ATTEMPT] = TG_STAGE_WAIT;
        }
        tg_pipeline_start(&f.p, &ops, &f);
        assert_int_equal(f.p.stage, waiting[i]);
        assert_int_equal(f.runs[TG_STAGE_SETTLE], 0);
        tg_pipeline_gone(&f.p);
        assert_ended_once(&f);
        assert_int_equal(f.fails, 0);
        tg_pipeline_resume(&f.p, TG_STAGE_ATTEMPT, 0); /* the cancelled I/O's callback, late */
        tg_pipeline_gone(&f.p);
        assert_ended_once(&f);
    }
}

static void test_gone_and_resume_inside_a_stage(void **state)
{
    (void)state;
    fake_t f;
    fake_init(&f);
    f.act[TG_STAGE_ATTEMPT] = ACT_GONE_INSIDE; /* h2o disposed the request inside a send */
    tg_pipeline_start(&f.p, &ops, &f);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 0);
    assert_int_equal(f.runs[TG_STAGE_RELAY], 0);

    fake_init(&f);
    f.act[TG_STAGE_ATTEMPT] = ACT_RESUME_INSIDE; /* the transfer failed synchronously */
    f.target[TG_STAGE_ATTEMPT] = TG_STAGE_ATTEMPT;
    tg_pipeline_start(&f.p, &ops, &f);
    assert_ended_once(&f);
    assert_int_equal(f.runs[TG_STAGE_ATTEMPT], 2);

    fake_init(&f);
    f.act[TG_STAGE_RELAY] = ACT_ERROR; /* an error after a gone client: nobody to answer */
    f.act[TG_STAGE_ATTEMPT] = ACT_PENDING;
    tg_pipeline_start(&f.p, &ops, &f);
    f.p.gone = true; /* noticed without a transition (the flag only) */
    tg_pipeline_resume(&f.p, TG_STAGE_RELAY, 0);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 0);
}

/* Drain: a call waiting anywhere is ended with shutting_down, answered once. */
static void test_abort(void **state)
{
    (void)state;
    fake_t f;
    fake_init(&f);
    f.act[TG_STAGE_RELAY] = ACT_PENDING;
    tg_pipeline_start(&f.p, &ops, &f);
    tg_pipeline_abort(&f.p, TG_ESHUTTING_DOWN);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 1);
    assert_int_equal(f.fail_err, TG_ESHUTTING_DOWN);

    fake_init(&f);
    f.act[TG_STAGE_WAIT] = ACT_ABORT_INSIDE;
    f.act[TG_STAGE_ATTEMPT] = ACT_GOTO;
    f.target[TG_STAGE_ATTEMPT] = TG_STAGE_WAIT;
    tg_pipeline_start(&f.p, &ops, &f);
    assert_ended_once(&f);
    assert_int_equal(f.fails, 1);
    assert_int_equal(f.fail_err, TG_ESHUTTING_DOWN);

    fake_init(&f); /* an out-of-memory resume: the callback could not go on */
    f.act[TG_STAGE_AUTH] = ACT_PENDING;
    tg_pipeline_start(&f.p, &ops, &f);
    tg_pipeline_resume(&f.p, TG_STAGE_PARSE, TG_ENOMEM);
    assert_ended_once(&f);
    assert_int_equal(f.fail_err, TG_ENOMEM);
    assert_int_equal(f.runs[TG_STAGE_PARSE], 0);
}

/* A seeded random walk: random stage behaviour, random callbacks, random hang-ups and aborts,
 * late and duplicate events. Whatever happens, the invariants hold once the call has ended. */
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static void test_random_walk(void **state)
{
    (void)state;
    int ended_by[4] = {0};
    for (int iter = 0; iter < 200000; iter++) {
        fake_t f;
        fake_init(&f);
        for (tg_stage_t s = TG_STAGE_ADMIT; s < TG_STAGE_SETTLE; s++) {
            f.act[s] = (act_t)rnd(7);
            f.target[s] = (tg_stage_t)rnd(TG_STAGE_SETTLE);
        }
        tg_pipeline_start(&f.p, &ops, &f);
        for (int ev = 0; ev < 6 && !tg_pipeline_done(&f.p); ev++) {
            /* the stage runs differently next time, as real stages do */
            tg_stage_t s = (tg_stage_t)rnd(TG_STAGE_SETTLE);
            f.act[s] = (act_t)rnd(7);
            switch (rnd(6)) {
            case 0:
                tg_pipeline_gone(&f.p);
                break;
            case 1:
                tg_pipeline_abort(&f.p, TG_ESHUTTING_DOWN);
                break;
            case 2:
                tg_pipeline_resume(&f.p, (tg_stage_t)rnd(TG_STAGE_DONE + 1), -(int)rnd(3));
                break;
            default:
                tg_pipeline_resume(&f.p, (tg_stage_t)rnd(TG_STAGE_SETTLE), 0);
                break;
            }
            if (!f.p.pending && !tg_pipeline_done(&f.p))
                fail_msg("the engine stopped without a pending stage at %s", tg_stage_name(f.p.stage));
        }
        if (!tg_pipeline_done(&f.p)) {
            tg_pipeline_gone(&f.p); /* the guard's dispose always comes in the end */
            ended_by[3]++;
        } else {
            ended_by[f.p.gone ? 0 : f.fails > 0 ? 1 : 2]++;
        }
        assert_ended_once(&f);
        tg_pipeline_resume(&f.p, TG_STAGE_ATTEMPT, 0);
        tg_pipeline_gone(&f.p);
        tg_pipeline_abort(&f.p, TG_ESHUTTING_DOWN);
        assert_ended_once(&f);
    }
    print_message("endings: gone %d, failed %d, served %d, never ended %d\n", ended_by[0], ended_by[1],
                  ended_by[2], ended_by[3]);
    /* the walk really exercised every kind of ending */
    for (int i = 0; i < 4; i++)
        assert_true(ended_by[i] > 10);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(tg_stage_name(TG_STAGE_ADMIT), "ADMIT");
    assert_string_equal(tg_stage_name(TG_STAGE_RESERVE), "RESERVE");
    assert_string_equal(tg_stage_name(TG_STAGE_SETTLE), "SETTLE");
    assert_string_equal(tg_stage_name(TG_STAGE_DONE), "DONE");
    assert_string_equal(tg_stage_name((tg_stage_t)99), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_served_stream),
        cmocka_unit_test(test_attempt_wait_loop_then_chain_exhausted),
        cmocka_unit_test(test_error_in_each_stage),
        cmocka_unit_test(test_gone_while_pending),
        cmocka_unit_test(test_gone_and_resume_inside_a_stage),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_random_walk),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
