/*
 * test_ratelimit.c - the rate limiter of ratelimit.h, with `now` as an argument and the database
 * played by a model of the lease statement of ratelease.c (grant `want` as far as the limit
 * allows when `need` fits, else nothing): window arithmetic, slices, exact bursts on one and two
 * instances (answers in order and out of order, threads), known exhaustion refused without a
 * lease, token corrections (give-back, debt, release), the database down (local limits, the debt
 * charged when it answers again), window roll-over, eviction, and the header values.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "ratelimit.h"

#define W    60000u           /* window length */
#define T0   1800000000000ull /* a window start: a multiple of W */
#define REQS TG_RL_REQUESTS
#define TOKS TG_RL_TOKENS

/* ------------------------------------------------------------------ the database's model */

typedef struct fake_db {
    pthread_mutex_t mu;
    uint64_t window;
    uint64_t leased[TG_RL_DIMS];
    uint64_t seq;
    unsigned leases; /* round trips */
} fake_db_t;

static void db_init(fake_db_t *db)
{
    memset(db, 0, sizeof(*db));
    pthread_mutex_init(&db->mu, NULL);
}

/* The lease statement of ratelease.c on one row. */
static void db_lease(fake_db_t *db, const tg_rl_charge_t *ch, const tg_rl_lease_t *l, tg_rl_answer_t *a)
{
    pthread_mutex_lock(&db->mu);
    if (db->window != ch->window) {
        db->window = ch->window;
        memset(db->leased, 0, sizeof(db->leased));
    }
    db->leases++;
    a->seq = ++db->seq;
    for (int d = 0; d < TG_RL_DIMS; d++) {
        uint64_t max = ch->lim.max[d] != 0 ? ch->lim.max[d] : TG_RL_LIMIT_MAX;
        a->granted[d] = 0;
        if (db->leased[d] + l->need[d] <= max) {
            uint64_t nl = db->leased[d] + l->want[d] < max ? db->leased[d] + l->want[d] : max;
            a->granted[d] = nl - db->leased[d];
            db->leased[d] = nl;
        }
        a->total[d] = db->leased[d];
    }
    pthread_mutex_unlock(&db->mu);
}

/* The give-back statement; the answer goes to the table as ratelease's callback does. */
static void db_give_back(fake_db_t *db, tg_rl_t *rl, const tg_rl_charge_t *ch, uint64_t tokens)
{
    db->leased[TOKS] -= tokens < db->leased[TOKS] ? tokens : db->leased[TOKS];
    tg_rl_answer_t a = {.seq = ++db->seq, .total = {db->leased[REQS], db->leased[TOKS]}};
    tg_rl_released(rl, ch, tokens, &a);
}

static tg_rl_charge_t charge_of(tg_rl_kind_t kind, int64_t id, uint64_t max_req, uint64_t max_tok,
                                uint64_t tokens)
{
    tg_rl_charge_t ch = {.kind = kind, .id = id};
    ch.lim.max[REQS] = max_req;
    ch.lim.max[TOKS] = max_tok;
    ch.amount[REQS] = 1;
    ch.amount[TOKS] = tokens;
    return ch;
}

/* One call, answered at once: the verdict after the database (if asked). */
static tg_rl_result_t admit(tg_rl_t *rl, fake_db_t *db, tg_rl_charge_t *ch, uint64_t now)
{
    tg_rl_lease_t l;
    tg_rl_result_t r = tg_rl_charge(rl, ch, now, W, false, &l);
    if (r.verdict != TG_RL_LEASE)
        return r;
    tg_rl_answer_t a;
    db_lease(db, ch, &l, &a);
    return tg_rl_granted(rl, ch, &l, &a, now);
}

/* ------------------------------------------------------------------------------- tests */

static void test_window_arithmetic(void **state)
{
    (void)state;
    assert_int_equal(tg_rl_window(T0, W), T0 / W);
    assert_int_equal(tg_rl_window(T0 + W - 1, W), T0 / W);
    assert_int_equal(tg_rl_window(T0 + W, W), T0 / W + 1);
    assert_int_equal(tg_rl_reset_ms(T0, W), W); /* a window that just began */
    assert_int_equal(tg_rl_reset_ms(T0 + 17800, W), 42200);
    assert_int_equal(tg_rl_reset_ms(T0 + W - 1, W), 1);
    /* slices: one unit for small limits, a 32nd of large ones */
    assert_int_equal(tg_rl_slice(1), 1);
    assert_int_equal(tg_rl_slice(10), 1);
    assert_int_equal(tg_rl_slice(64), 2);
    assert_int_equal(tg_rl_slice(1000000), 31250);
}

static void test_header_values(void **state)
{
    (void)state;
    static const struct {
        uint64_t ms;
        const char *s;
    } cases[] = {
        {0, "0s"},          {1, "1ms"},       {250, "250ms"},      {999, "999ms"},         {1000, "1s"},
        {1500, "1.5s"},     {1250, "1.25s"},  {1005, "1.005s"},    {59020, "59.02s"},      {60000, "1m0s"},
        {90500, "1m30.5s"}, {360000, "6m0s"}, {3600000, "1h0m0s"}, {3723004, "1h2m3.004s"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[32];
        size_t n = tg_rl_duration(out, sizeof(out), cases[i].ms);
        assert_string_equal(out, cases[i].s);
        assert_int_equal(n, strlen(cases[i].s));
    }
    char tiny[4];
    assert_int_equal(tg_rl_duration(tiny, sizeof(tiny), 3723004), 3); /* truncated, terminated */
    assert_int_equal(tiny[3], '\0');

    assert_int_equal(tg_rl_retry_after_s(0), 1);
    assert_int_equal(tg_rl_retry_after_s(1), 1);
    assert_int_equal(tg_rl_retry_after_s(1000), 1);
    assert_int_equal(tg_rl_retry_after_s(1001), 2);
    assert_int_equal(tg_rl_retry_after_s(42150), 43);

    /* a call's view: per dimension the scope with the least left */
    tg_rl_view_t v = {0}, key = {.max = {10, 0}, .remaining = {4, 0}, .reset_ms = 5000},
                 tenant = {.max = {100, 5000}, .remaining = {2, 300}, .reset_ms = 5000};
    tg_rl_view_merge(&v, &key);
    assert_int_equal(v.max[REQS], 10);
    assert_int_equal(v.remaining[REQS], 4);
    assert_int_equal(v.max[TOKS], 0);
    tg_rl_view_merge(&v, &tenant);
    assert_int_equal(v.max[REQS], 100);
    assert_int_equal(v.remaining[REQS], 2);
    assert_int_equal(v.max[TOKS], 5000);
    assert_int_equal(v.remaining[TOKS], 300);
    assert_int_equal(v.reset_ms, 5000);
}

/* 40 calls against 10 requests, every lease out at once: the database takes them in order or
 * backwards, and the answers are read in the database's order or the other way round. */
static void burst_one_instance(bool backwards, bool answers_reversed)
{
    tg_rl_t *rl = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    tg_rl_charge_t ch[40];
    tg_rl_lease_t l[40];
    tg_rl_result_t r[40];
    uint64_t now = T0 + 1000;
    for (int i = 0; i < 40; i++) {
        ch[i] = charge_of(TG_RL_KEY, 7, 10, 0, 0);
        r[i] = tg_rl_charge(rl, &ch[i], now, W, false, &l[i]);
        assert_int_equal(r[i].verdict, TG_RL_LEASE); /* nothing leased yet: each asks for its own */
        assert_int_equal(l[i].need[REQS], 1);
        assert_int_equal(l[i].want[REQS], 1); /* a small limit's slice is one request */
        assert_int_equal(l[i].need[TOKS], 0);
    }
    unsigned admitted = 0;
    tg_rl_answer_t a[40];
    for (int k = 0; k < 40; k++) {
        int i = backwards ? 39 - k : k;
        db_lease(&db, &ch[i], &l[i], &a[i]);
    }
    for (int k = 0; k < 40; k++) {
        int i = backwards != answers_reversed ? 39 - k : k;
        r[i] = tg_rl_granted(rl, &ch[i], &l[i], &a[i], now);
        if (r[i].verdict == TG_RL_ADMITTED) {
            admitted++;
            assert_int_not_equal(ch[i].slot_gen, 0);
            /* the headers count the admitted calls, not those still waiting */
            if (!answers_reversed)
                assert_int_equal(r[i].view.remaining[REQS], 10 - admitted);
        } else {
            assert_int_equal(r[i].verdict, TG_RL_REFUSED);
            assert_int_equal(r[i].refused_dim, TG_RL_REQUESTS);
            assert_false(r[i].too_big);
            assert_int_equal(ch[i].slot_gen, 0); /* rolled back */
            /* the database says none is left, whatever this instance has read of it yet */
            assert_int_equal(r[i].view.remaining[REQS], 0);
        }
    }
    assert_int_equal(admitted, 10);
    assert_int_equal(db.leased[REQS], 10);
    /* the window is known to be exhausted: the next call is refused without a lease */
    unsigned before = db.leases;
    tg_rl_charge_t more = charge_of(TG_RL_KEY, 7, 10, 0, 0);
    tg_rl_lease_t ml;
    tg_rl_result_t mr = tg_rl_charge(rl, &more, now + 20000, W, false, &ml);
    assert_int_equal(mr.verdict, TG_RL_REFUSED);
    assert_int_equal(mr.view.max[REQS], 10);
    assert_int_equal(mr.view.remaining[REQS], 0);
    assert_int_equal(mr.view.reset_ms, W - 21000);
    assert_int_equal(db.leases, before);
    /* the next window refills */
    mr = admit(rl, &db, &more, now + W);
    assert_int_equal(mr.verdict, TG_RL_ADMITTED);
    assert_int_equal(mr.view.remaining[REQS], 9);
    tg_rl_destroy(rl);
}

static void test_burst_one_instance(void **state)
{
    (void)state;
    burst_one_instance(false, false);
    burst_one_instance(true, false);
    burst_one_instance(false, true);
    burst_one_instance(true, true);
}

/* Two instances (two tables) on one database, calls alternating, leases answered in a shuffled
 * order: together exactly the limit. */
static void test_burst_two_instances(void **state)
{
    (void)state;
    tg_rl_t *ia = tg_rl_create(64), *ib = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    enum { N = 40 };
    tg_rl_charge_t ch[N];
    tg_rl_lease_t l[N];
    tg_rl_result_t r[N];
    bool waiting[N] = {false};
    uint64_t now = T0 + 5;
    unsigned admitted = 0, answered = 0;
    for (int i = 0; i < N; i++) {
        ch[i] = charge_of(TG_RL_TENANT, 3, 10, 0, 0);
        r[i] = tg_rl_charge(i % 2 ? ib : ia, &ch[i], now, W, false, &l[i]);
        waiting[i] = r[i].verdict == TG_RL_LEASE;
        admitted += r[i].verdict == TG_RL_ADMITTED;
        /* now and then the leases so far are answered (7 is prime to 40: a shuffled order) */
        if (i % 3 == 2) {
            for (int k = 0; k < N; k++) {
                int j = (k * 7) % N;
                if (!waiting[j])
                    continue;
                tg_rl_answer_t a;
                db_lease(&db, &ch[j], &l[j], &a);
                r[j] = tg_rl_granted(j % 2 ? ib : ia, &ch[j], &l[j], &a, now);
                waiting[j] = false;
                answered++;
                admitted += r[j].verdict == TG_RL_ADMITTED;
            }
        }
    }
    for (int j = 0; j < N; j++) {
        if (!waiting[j])
            continue;
        tg_rl_answer_t a;
        db_lease(&db, &ch[j], &l[j], &a);
        r[j] = tg_rl_granted(j % 2 ? ib : ia, &ch[j], &l[j], &a, now);
        admitted += r[j].verdict == TG_RL_ADMITTED;
    }
    assert_int_equal(admitted, 10);
    assert_int_equal(db.leased[REQS], 10);
    tg_rl_destroy(ia);
    tg_rl_destroy(ib);
}

/* A large limit leases slices: few round trips, never past the limit. */
static void test_slices_of_a_large_limit(void **state)
{
    (void)state;
    tg_rl_t *a = tg_rl_create(64), *b = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    unsigned admitted = 0;
    for (int i = 0; i < 1200; i++) {
        tg_rl_charge_t ch = charge_of(TG_RL_KEY, 1, 1000, 0, 0);
        admitted += admit(i % 2 ? b : a, &db, &ch, T0 + (uint64_t)i).verdict == TG_RL_ADMITTED;
    }
    assert_true(admitted <= 1000);
    /* each instance may strand less than a slice (31) of the limit */
    assert_true(admitted >= 1000 - 2 * 31);
    assert_true(db.leases < 100); /* not one round trip per call */
    tg_rl_destroy(a);
    tg_rl_destroy(b);
}

/* Tokens: a call's shortfall is granted whole or not at all; a smaller call may still fit. */
static void test_tokens_counted_at_admission(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    uint64_t now = T0 + 10;
    /* parallel calls of 3000 tokens against 10000: three fit, the rest are refused up front */
    tg_rl_charge_t ch[6];
    tg_rl_lease_t l[6];
    for (int i = 0; i < 6; i++) {
        ch[i] = charge_of(TG_RL_KEY, 9, 0, 10000, 3000);
        assert_int_equal(tg_rl_charge(rl, &ch[i], now, W, false, &l[i]).verdict, TG_RL_LEASE);
        assert_int_equal(l[i].need[TOKS], 3000);
        assert_int_equal(l[i].want[TOKS], 3000); /* the slice (312) is smaller than the need */
        assert_int_equal(l[i].need[REQS], 0);    /* no request limit: not asked */
    }
    unsigned admitted = 0;
    for (int i = 0; i < 6; i++) {
        tg_rl_answer_t a;
        db_lease(&db, &ch[i], &l[i], &a);
        tg_rl_result_t r = tg_rl_granted(rl, &ch[i], &l[i], &a, now);
        if (r.verdict == TG_RL_ADMITTED)
            admitted++;
        else
            assert_int_equal(r.refused_dim, TG_RL_TOKENS);
    }
    assert_int_equal(admitted, 3);
    assert_int_equal(db.leased[TOKS], 9000); /* nothing granted partly */
    /* a call of 1000 still fits (the window's remainder is exactly that) */
    tg_rl_charge_t small = charge_of(TG_RL_KEY, 9, 0, 10000, 1000);
    tg_rl_result_t r = admit(rl, &db, &small, now);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    assert_int_equal(r.view.remaining[TOKS], 0);
    /* a call larger than the limit itself never fits */
    tg_rl_charge_t huge = charge_of(TG_RL_KEY, 9, 0, 10000, 10001);
    r = tg_rl_charge(rl, &huge, now, W, false, &(tg_rl_lease_t){0});
    assert_int_equal(r.verdict, TG_RL_REFUSED);
    assert_true(r.too_big);
    assert_int_equal(huge.slot_gen, 0);
    tg_rl_destroy(rl);
}

/* The correction: less than counted frees the difference here; more is a debt that the next lease
 * pays first; a large surplus goes back to the database. */
static void test_correction(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    uint64_t now = T0 + 100;
    tg_rl_charge_t ca = charge_of(TG_RL_KEY, 5, 0, 10000, 4000);
    assert_int_equal(admit(rl, &db, &ca, now).verdict, TG_RL_ADMITTED);
    tg_rl_charge_t b = charge_of(TG_RL_KEY, 5, 0, 10000, 4000);
    assert_int_equal(admit(rl, &db, &b, now).verdict, TG_RL_ADMITTED);
    tg_rl_charge_t c = charge_of(TG_RL_KEY, 5, 0, 10000, 4000);
    assert_int_equal(admit(rl, &db, &c, now).verdict, TG_RL_REFUSED); /* 8000 + 4000 > 10000 */

    /* ca answered with 100 tokens: 3900 free again; more than two slices spare (2 x 312), so all
     * but one slice goes back to the database */
    uint64_t back = tg_rl_correct(rl, &ca, 100, now);
    assert_int_equal(back, 3900 - 312);
    db_give_back(&db, rl, &ca, back);
    assert_int_equal(db.leased[TOKS], 8000 - back);
    assert_int_equal(ca.amount[TOKS], 100);
    /* now c fits: first from the spare slice, the rest leased again */
    c = charge_of(TG_RL_KEY, 5, 0, 10000, 4000);
    tg_rl_result_t r = admit(rl, &db, &c, now);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    assert_int_equal(r.view.remaining[TOKS], 10000 - 100 - 4000 - 4000);

    /* b produced more than counted (a prompt underestimated): 1500 more is a debt... */
    assert_int_equal(tg_rl_correct(rl, &b, 5500, now), 0);
    /* ...which the next lease pays before the call's own need */
    tg_rl_charge_t d = charge_of(TG_RL_KEY, 5, 0, 10000, 100);
    tg_rl_lease_t l;
    r = tg_rl_charge(rl, &d, now, W, false, &l);
    assert_int_equal(r.verdict, TG_RL_LEASE);
    assert_int_equal(l.need[TOKS], 1500 + 100);
    tg_rl_answer_t a;
    db_lease(&db, &d, &l, &a);
    r = tg_rl_granted(rl, &d, &l, &a, now);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    /* the database now counts the actual usage: 100 + 5500 + 4000 + 100 */
    assert_int_equal(db.leased[TOKS], 9700);
    assert_int_equal(r.view.remaining[TOKS], 300);
    /* and what is left is known: a call of 400 is refused without a round trip */
    unsigned before = db.leases;
    tg_rl_charge_t e = charge_of(TG_RL_KEY, 5, 0, 10000, 400);
    r = tg_rl_charge(rl, &e, now, W, false, &l);
    assert_int_equal(r.verdict, TG_RL_REFUSED);
    assert_int_equal(r.refused_dim, TG_RL_TOKENS);
    assert_int_equal(db.leases, before);
    /* ...until that knowledge is old: tokens may have been given back elsewhere meanwhile */
    r = tg_rl_charge(rl, &e, now + TG_RL_RECHECK_MS, W, false, &l);
    assert_int_equal(r.verdict, TG_RL_LEASE);
    tg_rl_uncharge(rl, &e);

    /* a correction after the window is over changes nothing */
    assert_int_equal(tg_rl_correct(rl, &c, 0, now + W), 0);
    tg_rl_destroy(rl);
}

/* Answers that overtake each other, and a lease that the database writes before a give-back sent
 * earlier: the row's version keeps the headers exact on one instance (no phantom "others"). */
static void test_answers_out_of_order(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    uint64_t now = T0 + 50;
    tg_rl_charge_t x = charge_of(TG_RL_KEY, 6, 0, 10000, 4000);
    assert_int_equal(admit(rl, &db, &x, now).verdict, TG_RL_ADMITTED);
    uint64_t back = tg_rl_correct(rl, &x, 0, now); /* x served nothing */
    assert_int_equal(back, 4000 - 312);
    /* the next call's lease reaches the database before the give-back */
    tg_rl_charge_t y = charge_of(TG_RL_KEY, 6, 0, 10000, 4000);
    tg_rl_lease_t l;
    assert_int_equal(tg_rl_charge(rl, &y, now, W, false, &l).verdict, TG_RL_LEASE);
    tg_rl_answer_t a;
    db_lease(&db, &y, &l, &a);
    assert_int_equal(a.total[TOKS], 4000 + 3688); /* the given-back tokens still counted there */
    tg_rl_result_t r = tg_rl_granted(rl, &y, &l, &a, now);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    assert_int_equal(r.view.remaining[TOKS], 6000); /* not 6000 - 3688 */
    db_give_back(&db, rl, &x, back);
    tg_rl_charge_t z = charge_of(TG_RL_KEY, 6, 0, 10000, 100);
    r = admit(rl, &db, &z, now);
    assert_int_equal(r.view.remaining[TOKS], 5900);

    /* two leases answered in the other order than the database wrote them */
    tg_rl_charge_t p = charge_of(TG_RL_KEY, 6, 0, 10000, 2000), q = charge_of(TG_RL_KEY, 6, 0, 10000, 2000);
    tg_rl_lease_t lp, lq;
    assert_int_equal(tg_rl_charge(rl, &p, now, W, false, &lp).verdict, TG_RL_LEASE);
    assert_int_equal(tg_rl_charge(rl, &q, now, W, false, &lq).verdict, TG_RL_LEASE);
    tg_rl_answer_t ap, aq;
    db_lease(&db, &p, &lp, &ap);
    db_lease(&db, &q, &lq, &aq);
    r = tg_rl_granted(rl, &q, &lq, &aq, now);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    r = tg_rl_granted(rl, &p, &lp, &ap, now); /* the older answer last: its total is stale */
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    assert_int_equal(r.view.remaining[TOKS], 10000 - 4000 - 100 - 2000 - 2000);
    tg_rl_destroy(rl);
}

/* Requests never come back to the database; tokens the correction frees serve the next calls. */
static void test_give_back_whole_charge(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    uint64_t now = T0 + 7;
    tg_rl_charge_t a = charge_of(TG_RL_TENANT, 2, 2, 0, 0);
    assert_int_equal(admit(rl, &db, &a, now).verdict, TG_RL_ADMITTED);
    tg_rl_charge_t b = charge_of(TG_RL_TENANT, 2, 2, 0, 0);
    assert_int_equal(admit(rl, &db, &b, now).verdict, TG_RL_ADMITTED);
    /* b never ran (another scope refused it): its request is free again, here */
    tg_rl_uncharge(rl, &b);
    assert_int_equal(b.slot_gen, 0);
    unsigned before = db.leases;
    tg_rl_charge_t c = charge_of(TG_RL_TENANT, 2, 2, 0, 0);
    tg_rl_result_t r = tg_rl_charge(rl, &c, now, W, false, &(tg_rl_lease_t){0});
    assert_int_equal(r.verdict, TG_RL_ADMITTED); /* from the slice, no round trip */
    assert_int_equal(db.leases, before);
    assert_int_equal(r.view.remaining[REQS], 0);
    tg_rl_destroy(rl);
}

/* The database down: each instance keeps the limit alone; what it admitted meanwhile is charged by
 * the window's next lease. */
static void test_offline(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    uint64_t now = T0 + 3;
    tg_rl_charge_t first = charge_of(TG_RL_KEY, 4, 5, 0, 0);
    assert_int_equal(admit(rl, &db, &first, now).verdict, TG_RL_ADMITTED);
    /* a lease that fails: the charge stands while this instance stays within the limit */
    tg_rl_charge_t x = charge_of(TG_RL_KEY, 4, 5, 0, 0);
    tg_rl_lease_t l;
    assert_int_equal(tg_rl_charge(rl, &x, now, W, false, &l).verdict, TG_RL_LEASE);
    tg_rl_result_t r = tg_rl_lease_failed(rl, &x, &l, now);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    assert_true(r.local);
    /* then offline: two more without asking */
    for (int i = 0; i < 2; i++) {
        tg_rl_charge_t y = charge_of(TG_RL_KEY, 4, 5, 0, 0);
        r = tg_rl_charge(rl, &y, now, W, true, &l);
        assert_int_equal(r.verdict, TG_RL_ADMITTED);
        assert_true(r.local);
    }
    assert_int_equal(db.leased[REQS], 1); /* the database knows of the first only */
    /* back online in the same window: the next lease pays the debt (three requests admitted
     * without one) before the call's own request */
    tg_rl_charge_t z = charge_of(TG_RL_KEY, 4, 5, 0, 0);
    r = tg_rl_charge(rl, &z, now, W, false, &l);
    assert_int_equal(r.verdict, TG_RL_LEASE);
    assert_int_equal(l.need[REQS], 4);
    tg_rl_answer_t a;
    db_lease(&db, &z, &l, &a);
    r = tg_rl_granted(rl, &z, &l, &a, now);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    assert_int_equal(db.leased[REQS], 5); /* exactly the limit */
    tg_rl_charge_t over = charge_of(TG_RL_KEY, 4, 5, 0, 0);
    assert_int_equal(admit(rl, &db, &over, now).verdict, TG_RL_REFUSED);

    /* offline, an instance alone admits up to the limit, then refuses */
    unsigned admitted = 0;
    for (int i = 0; i < 8; i++) {
        tg_rl_charge_t y = charge_of(TG_RL_TENANT, 4, 5, 0, 0);
        r = tg_rl_charge(rl, &y, now, W, true, &l);
        assert_int_not_equal(r.verdict, TG_RL_LEASE);
        admitted += r.verdict == TG_RL_ADMITTED;
    }
    assert_int_equal(admitted, 5);
    assert_int_equal(r.view.remaining[REQS], 0);
    /* a lease that fails past the limit is refused and rolled back */
    tg_rl_charge_t w = charge_of(TG_RL_TENANT, 4, 5, 0, 0);
    r = tg_rl_charge(rl, &w, now, W, false, &l);
    assert_int_equal(r.verdict, TG_RL_LEASE); /* the database never answered for this scope */
    r = tg_rl_lease_failed(rl, &w, &l, now);
    assert_int_equal(r.verdict, TG_RL_REFUSED);
    assert_int_equal(w.slot_gen, 0);
    tg_rl_destroy(rl);
}

/* A lease answered after its window ended leaves the new window alone. */
static void test_window_roll(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(64);
    fake_db_t db;
    db_init(&db);
    tg_rl_charge_t old = charge_of(TG_RL_KEY, 8, 3, 0, 0);
    tg_rl_lease_t l;
    assert_int_equal(tg_rl_charge(rl, &old, T0 + W - 1, W, false, &l).verdict, TG_RL_LEASE);
    /* the next window begins before the answer */
    tg_rl_charge_t now1 = charge_of(TG_RL_KEY, 8, 3, 0, 0);
    tg_rl_result_t r = admit(rl, &db, &now1, T0 + W);
    assert_int_equal(r.verdict, TG_RL_ADMITTED);
    assert_int_equal(now1.window, T0 / W + 1);
    assert_int_equal(r.view.remaining[REQS], 2);
    tg_rl_answer_t a = {.seq = 99, .granted = {1, 0}, .total = {1, 0}};
    r = tg_rl_granted(rl, &old, &l, &a, T0 + W + 1);
    assert_int_equal(r.verdict, TG_RL_ADMITTED); /* the database counted it in its own window */
    tg_rl_charge_t now2 = charge_of(TG_RL_KEY, 8, 3, 0, 0);
    r = admit(rl, &db, &now2, T0 + W + 2);
    assert_int_equal(r.view.remaining[REQS], 1); /* the late grant did not land in this window */
    /* giving back the old charge does not touch this window either */
    tg_rl_uncharge(rl, &old);
    tg_rl_charge_t now3 = charge_of(TG_RL_KEY, 8, 3, 0, 0);
    r = admit(rl, &db, &now3, T0 + W + 3);
    assert_int_equal(r.view.remaining[REQS], 0);
    tg_rl_destroy(rl);
}

/* A full probe window forgets its least recently used scope; its old charges change nothing. */
static void test_eviction(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(16); /* one slot per shard: every new scope of a shard evicts */
    fake_db_t db;
    db_init(&db);
    tg_rl_charge_t kept = charge_of(TG_RL_KEY, 1, 100, 0, 0);
    assert_int_equal(admit(rl, &db, &kept, T0).verdict, TG_RL_ADMITTED);
    /* many other scopes, later (each its own row: a database of their own in this model): some
     * share the shard and take the slot */
    for (int64_t id = 2; id < 200; id++) {
        fake_db_t other;
        db_init(&other);
        tg_rl_charge_t o = charge_of(TG_RL_KEY, id, 100, 0, 0);
        assert_int_equal(admit(rl, &other, &o, T0 + 10 + (uint64_t)id).verdict, TG_RL_ADMITTED);
        assert_int_equal(other.leases, 1);
    }
    /* the scope starts over here: it leases again (the database still counts its first slice) */
    tg_rl_charge_t again = charge_of(TG_RL_KEY, 1, 100, 0, 0);
    tg_rl_lease_t l;
    tg_rl_result_t r = tg_rl_charge(rl, &again, T0 + 1000, W, false, &l);
    assert_int_equal(r.verdict, TG_RL_LEASE);
    tg_rl_answer_t a;
    db_lease(&db, &again, &l, &a);
    assert_int_equal(tg_rl_granted(rl, &again, &l, &a, T0 + 1000).verdict, TG_RL_ADMITTED);
    /* the forgotten charge is gone with its slot: giving it back or correcting it is harmless */
    tg_rl_uncharge(rl, &kept);
    assert_int_equal(tg_rl_correct(rl, &kept, 0, T0 + 1000), 0);
    tg_rl_charge_t next = charge_of(TG_RL_KEY, 1, 100, 0, 0);
    r = tg_rl_charge(rl, &next, T0 + 1001, W, false, &l);
    assert_int_equal(r.verdict, TG_RL_ADMITTED); /* from the new slice */
    /* others hold nothing; this instance: two slices of 3 leased, 3 used (1 forgotten, 2 here) */
    assert_int_equal(r.view.remaining[REQS], 100 - 3 - 2);
    tg_rl_destroy(rl);
}

/* Workers on many threads charging one scope at once: exactly the limit. */
typedef struct worker_arg {
    tg_rl_t *rl;
    fake_db_t *db;
    unsigned admitted;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *w = p;
    for (int i = 0; i < 500; i++) {
        tg_rl_charge_t ch = charge_of(TG_RL_TENANT, 77, 1000, 0, 0);
        w->admitted += admit(w->rl, w->db, &ch, T0 + 20).verdict == TG_RL_ADMITTED;
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    tg_rl_t *rl = tg_rl_create(0);
    fake_db_t db;
    db_init(&db);
    pthread_t th[4];
    worker_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg_t){.rl = rl, .db = &db};
        pthread_create(&th[i], NULL, worker, &args[i]);
    }
    unsigned admitted = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        admitted += args[i].admitted;
    }
    assert_int_equal(admitted, 1000);
    assert_int_equal(db.leased[REQS], 1000);
    tg_rl_destroy(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_arithmetic),
        cmocka_unit_test(test_header_values),
        cmocka_unit_test(test_burst_one_instance),
        cmocka_unit_test(test_burst_two_instances),
        cmocka_unit_test(test_slices_of_a_large_limit),
        cmocka_unit_test(test_tokens_counted_at_admission),
        cmocka_unit_test(test_correction),
        cmocka_unit_test(test_answers_out_of_order),
        cmocka_unit_test(test_give_back_whole_charge),
        cmocka_unit_test(test_offline),
        cmocka_unit_test(test_window_roll),
        cmocka_unit_test(test_eviction),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
