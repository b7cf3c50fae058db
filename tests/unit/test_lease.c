/*
 * test_lease.c - the lease engine of billing/lease.h, with `now` as an argument: reservations against
 * a lease, settlement (under, over and exactly the hold), renewal before the slice runs out,
 * draining and extension near expiry, idle close, the fall back to exact reservations when the
 * wallet is too small (refused or short grants, full slots), and two engines (two gateway
 * instances) sharing one wallet through a fake database that grants leases as tollgate_lease_open
 * does: whatever the interleaving, no wallet is overspent and every charge lands.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "lease.h"

static tg_lease_opts_t opts(void)
{
    tg_lease_opts_t o;
    tg_lease_opts_default(&o, 1000);
    o.min_slice = 100;
    o.ttl_ms = 60000;
    o.drain_before_ms = 15000;
    o.renew_before_ms = 5000;
    o.extend_before_ms = 10000;
    o.idle_ms = 20000;
    o.exact_ms = 2000;
    o.renew_pct = 25;
    return o;
}

/* Runs tg_lease_next once and checks what it asks. */
static tg_lease_action_t expect_next(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now,
                                     tg_lease_action_kind_t kind)
{
    tg_lease_action_t act;
    tg_lease_action_kind_t got = tg_lease_next(a, o, now, &act);
    if (got != kind || act.kind != kind)
        fail_msg("at %lld: tg_lease_next gave %d (lease %lld), not %d", (long long)now, (int)got,
                 (long long)act.lease_id, (int)kind);
    return act;
}

static void test_reserve_settle(void **state)
{
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h;
    assert_int_equal(tg_lease_reserve(&a, &o, 0, 0, &h), TG_EINVALID_REQUEST);
    /* no lease yet: the request waits for one; one open is asked, for a slice */
    assert_int_equal(tg_lease_reserve(&a, &o, 300, 0, &h), TG_LEASE_WAIT);
    tg_lease_action_t act = expect_next(&a, &o, 0, TG_LEASE_OPEN);
    assert_int_equal(act.amount, 1000);
    assert_int_equal(act.seq, 0);
    expect_next(&a, &o, 0, TG_LEASE_NONE); /* one open at a time */
    assert_int_equal(tg_lease_reserve(&a, &o, 300, 1, &h), TG_LEASE_WAIT);
    tg_lease_granted(&a, &o, 11, 1000, 60000, 5);
    assert_int_equal(tg_lease_free(&a, &o, 5), 1000);

    assert_int_equal(tg_lease_reserve(&a, &o, 300, 10, &h), TG_LEASE_HELD);
    assert_int_equal(h.lease_id, 11);
    assert_int_equal(h.amount, 300);
    assert_false(h.exact);
    tg_hold_t h2, h3;
    assert_int_equal(tg_lease_reserve(&a, &o, 600, 10, &h2), TG_LEASE_HELD);
    assert_int_equal(tg_lease_free(&a, &o, 10), 100);
    /* 100 left: a 200 reservation does not fit and waits */
    assert_int_equal(tg_lease_reserve(&a, &o, 200, 10, &h3), TG_LEASE_WAIT);

    /* under the hold: the actual cost is charged, the rest freed */
    assert_int_equal(tg_lease_settle(&a, &h, 120, 20), 120);
    assert_int_equal(tg_lease_free(&a, &o, 20), 280);
    /* settled twice by mistake: nothing more is charged or freed */
    assert_int_equal(tg_lease_settle(&a, &h, 120, 20), 0);
    assert_int_equal(tg_lease_free(&a, &o, 20), 280);
    /* an explicit zero costs nothing and frees the whole hold */
    assert_int_equal(tg_lease_settle(&a, &h2, 0, 21), 0);
    assert_int_equal(tg_lease_free(&a, &o, 21), 880);
    assert_int_equal(a.lease[0].charged, 120);
    assert_int_equal(a.lease[0].held, 0);
    assert_int_equal(a.lease[0].holds, 0);
}

static void test_over_the_hold(void **state)
{
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h, g;
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 0, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 0, TG_LEASE_OPEN);
    tg_lease_granted(&a, &o, 3, 1000, 60000, 0);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 0, &h), TG_LEASE_HELD);
    assert_int_equal(tg_lease_reserve(&a, &o, 700, 0, &g), TG_LEASE_HELD);
    /* an underestimated request takes from the lease's free room (200), never from other holds */
    assert_int_equal(tg_lease_settle(&a, &h, 450, 1), 300);
    assert_int_equal(a.lease[0].charged, 300);
    assert_int_equal(tg_lease_settle(&a, &g, 900, 1), 700);
    assert_int_equal(a.lease[0].charged, 1000); /* the lease is spent, not more */
    assert_int_equal(tg_lease_free(&a, &o, 1), 0);

    /* an exact hold (a per-request lease in the database) covers only itself */
    tg_hold_t x;
    tg_lease_hold_exact(&x, 99, 250);
    assert_true(x.exact);
    assert_int_equal(tg_lease_settle(&a, &x, 400, 2), 250);
    assert_int_equal(tg_lease_settle(&a, &x, 400, 2), 0); /* once */
    tg_lease_hold_exact(&x, 99, 250);
    assert_int_equal(tg_lease_settle(&a, &x, 40, 2), 40);
    tg_lease_hold_exact(&x, 99, 250);
    assert_int_equal(tg_lease_settle(&a, &x, -5, 2), 0);
}

static void test_renewal_before_empty(void **state)
{
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h;
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 0, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 0, TG_LEASE_OPEN);
    tg_lease_granted(&a, &o, 1, 1000, 60000, 0);
    assert_int_equal(tg_lease_reserve(&a, &o, 700, 0, &h), TG_LEASE_HELD);
    expect_next(&a, &o, 0, TG_LEASE_NONE); /* 300 free: above 25% of the slice */
    tg_hold_t h2;
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 1, &h2), TG_LEASE_HELD);
    /* 200 free, under 250: the next lease is asked before anything has to wait */
    tg_lease_action_t act = expect_next(&a, &o, 1, TG_LEASE_OPEN);
    assert_int_equal(act.amount, 1000);
    assert_int_equal(act.seq, 1);
    tg_lease_granted(&a, &o, 2, 1000, 70000, 2);
    /* the older lease is used first (it expires first) */
    tg_hold_t h3;
    assert_int_equal(tg_lease_reserve(&a, &o, 150, 3, &h3), TG_LEASE_HELD);
    assert_int_equal(h3.lease_id, 1);
    assert_int_equal(tg_lease_reserve(&a, &o, 150, 3, &h3), TG_LEASE_HELD);
    assert_int_equal(h3.lease_id, 2);
    /* a request bigger than a slice asks for its own size */
    assert_int_equal(tg_lease_reserve(&a, &o, 5000, 4, &h3), TG_LEASE_WAIT);
    act = expect_next(&a, &o, 4, TG_LEASE_OPEN);
    assert_int_equal(act.amount, 5000);
}

/* A busy lease's successor is asked renew_before_ms before the lease drains, so the switch costs
 * no request a wait; a quiet account's lease is not renewed. */
static void test_renewal_before_drain(void **state)
{
    (void)state;
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h;
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 0, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 0, TG_LEASE_OPEN);
    tg_lease_granted(&a, &o, 1, 1000, 60000, 0);
    /* drains at 45000; its successor is asked from 40000 on, while it still takes reservations */
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 39999, &h), TG_LEASE_HELD);
    expect_next(&a, &o, 39999, TG_LEASE_NONE);
    assert_int_equal(tg_lease_settle(&a, &h, 10, 40000), 10);
    tg_lease_action_t act = expect_next(&a, &o, 40000, TG_LEASE_OPEN);
    assert_int_equal(act.amount, 1000);
    expect_next(&a, &o, 40001, TG_LEASE_NONE); /* one open at a time */
    tg_lease_granted(&a, &o, 2, 1000, 100050, 40050);
    expect_next(&a, &o, 40100, TG_LEASE_NONE); /* the successor's room counts: no third lease */
    /* until it drains the old lease is used (it expires first), then the new one, with no wait */
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 44999, &h), TG_LEASE_HELD);
    assert_int_equal(h.lease_id, 1);
    assert_int_equal(tg_lease_settle(&a, &h, 10, 44999), 10);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 45000, &h), TG_LEASE_HELD);
    assert_int_equal(h.lease_id, 2);
    /* the drained lease, holding nothing, is closed */
    act = expect_next(&a, &o, 45000, TG_LEASE_CLOSE);
    assert_int_equal(act.lease_id, 1);
    assert_int_equal(tg_lease_settle(&a, &h, 10, 45001), 10);

    /* a lease nobody has used for idle_ms is not renewed as its drain nears: it is closed */
    tg_lease_acct_t q;
    tg_lease_acct_init(&q, 8);
    assert_int_equal(tg_lease_reserve(&q, &o, 100, 0, &h), TG_LEASE_WAIT);
    expect_next(&q, &o, 0, TG_LEASE_OPEN);
    tg_lease_granted(&q, &o, 3, 1000, 60000, 0);
    assert_int_equal(tg_lease_reserve(&q, &o, 100, 1, &h), TG_LEASE_HELD);
    assert_int_equal(tg_lease_settle(&q, &h, 10, 2), 10);
    act = expect_next(&q, &o, 40000, TG_LEASE_CLOSE); /* idle since 1 */
    assert_int_equal(act.lease_id, 3);
    expect_next(&q, &o, 40000, TG_LEASE_NONE);
}

static void test_drain_extend_close(void **state)
{
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h, h2;
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 0, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 0, TG_LEASE_OPEN);
    tg_lease_granted(&a, &o, 5, 1000, 60000, 0);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 40000, &h), TG_LEASE_HELD);
    /* from expiry - drain_before (45000) the lease takes no new reservation */
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 45000, &h2), TG_LEASE_WAIT);
    assert_int_equal(tg_lease_free(&a, &o, 45000), 0);
    tg_lease_action_t act = expect_next(&a, &o, 45000, TG_LEASE_OPEN);
    tg_lease_granted(&a, &o, 6, 1000, 105000, 45001);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 45002, &h2), TG_LEASE_HELD);
    assert_int_equal(h2.lease_id, 6);
    assert_int_equal(tg_lease_settle(&a, &h2, 100, 46000), 100);
    /* the draining lease still holds a long request: extended before it expires (50000), once */
    expect_next(&a, &o, 49999, TG_LEASE_NONE);
    act = expect_next(&a, &o, 50000, TG_LEASE_EXTEND);
    assert_int_equal(act.lease_id, 5);
    expect_next(&a, &o, 50001, TG_LEASE_NONE);
    tg_lease_extended(&a, 5, 110000);
    assert_int_equal(a.lease[0].expires_ms, 110000);
    /* lease 6, reserved against last at 45002, is idle for idle_ms at 65002: closed */
    expect_next(&a, &o, 65001, TG_LEASE_NONE);
    act = expect_next(&a, &o, 65002, TG_LEASE_CLOSE);
    assert_int_equal(act.lease_id, 6);
    /* a failed extend keeps the expiry and may be asked again */
    act = expect_next(&a, &o, 100000, TG_LEASE_EXTEND);
    assert_int_equal(act.lease_id, 5);
    tg_lease_extended(&a, 5, 0);
    assert_int_equal(a.lease[0].expires_ms, 110000);
    /* its last hold settles: the draining lease is closed (what it did not charge goes back) */
    assert_int_equal(tg_lease_settle(&a, &h, 80, 100001), 80);
    act = expect_next(&a, &o, 100001, TG_LEASE_CLOSE);
    assert_int_equal(act.lease_id, 5);
    assert_true(tg_lease_idle(&a));
    /* an idle account does not ask for leases on its own */
    expect_next(&a, &o, 200000, TG_LEASE_NONE);
}

/* A quiet tenant's lease, which no request drives: closable once nothing holds it and it idled,
 * with what it did not charge; then the account is idle (may be dropped). */
static void test_take_closable(void **state)
{
    (void)state;
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h;
    int64_t unspent = -1;
    assert_int_equal(tg_lease_take_closable(&a, &o, 0, &unspent), 0); /* nothing to close */
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 0, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 0, TG_LEASE_OPEN);
    tg_lease_granted(&a, &o, 9, 1000, 60000, 0);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 10, &h), TG_LEASE_HELD);
    /* held by a request in flight: never, however long it idles */
    assert_int_equal(tg_lease_take_closable(&a, &o, 30000, &unspent), 0);
    assert_int_equal(tg_lease_settle(&a, &h, 70, 30001), 70);
    /* settled and idle since its reservation at 10: closed, with what it did not charge */
    assert_int_equal(tg_lease_take_closable(&a, &o, 30001, &unspent), 9);
    assert_int_equal(unspent, 930);
    assert_true(tg_lease_idle(&a));
    /* the next lease, reserved against at 30003: closable idle_ms after that, not before */
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 30002, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 30002, TG_LEASE_OPEN);
    tg_lease_granted(&a, &o, 10, 1000, 90002, 30002);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 30003, &h), TG_LEASE_HELD);
    assert_int_equal(tg_lease_settle(&a, &h, 100, 30004), 100);
    assert_int_equal(tg_lease_take_closable(&a, &o, 50002, &unspent), 0);
    assert_false(tg_lease_idle(&a));
    assert_int_equal(tg_lease_take_closable(&a, &o, 50003, &unspent), 10);
    assert_int_equal(unspent, 900);
    assert_int_equal(tg_lease_take_closable(&a, &o, 50004, &unspent), 0);
}

static void test_too_small_to_lease(void **state)
{
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h;
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 0, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 0, TG_LEASE_OPEN);
    /* the wallet is below the minimum lease: requests are reserved exactly in the database */
    tg_lease_refused(&a, &o, 10);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 10, &h), TG_LEASE_EXACT);
    expect_next(&a, &o, 11, TG_LEASE_NONE);
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 2009, &h), TG_LEASE_EXACT);
    /* after exact_ms a lease is tried again (a top-up may have come) */
    assert_int_equal(tg_lease_reserve(&a, &o, 100, 2010, &h), TG_LEASE_WAIT);
    expect_next(&a, &o, 2010, TG_LEASE_OPEN);
    /* a short grant (the wallet had 400 of the 1000 asked): smaller requests use it, larger ones
     * go exact for a while instead of asking again and again */
    tg_lease_granted(&a, &o, 9, 400, 62010, 2011);
    assert_int_equal(tg_lease_reserve(&a, &o, 300, 2012, &h), TG_LEASE_HELD);
    tg_hold_t h2;
    assert_int_equal(tg_lease_reserve(&a, &o, 300, 2013, &h2), TG_LEASE_WAIT); /* 100 left, 300 <= 400 */
    assert_int_equal(tg_lease_reserve(&a, &o, 500, 2013, &h2), TG_LEASE_EXACT);
    /* a failed open (database down) is asked again, under the same key: it may have been granted */
    tg_lease_action_t act = expect_next(&a, &o, 2014, TG_LEASE_OPEN);
    tg_lease_failed(&a);
    assert_false(a.asking);
    assert_int_equal(a.need, 0);
    assert_int_equal(tg_lease_reserve(&a, &o, 300, 2015, &h2), TG_LEASE_WAIT);
    tg_lease_action_t again = expect_next(&a, &o, 2015, TG_LEASE_OPEN);
    assert_int_equal(again.seq, act.seq);
    tg_lease_granted(&a, &o, 10, 1000, 62015, 2016);
    assert_int_equal(tg_lease_reserve(&a, &o, 900, 4100, &h2), TG_LEASE_HELD);
    /* ... and the next open after an answer has a new key */
    act = expect_next(&a, &o, 4100, TG_LEASE_OPEN);
    assert_int_equal(act.seq, again.seq + 1);
}

static void test_slots_full(void **state)
{
    tg_lease_opts_t o = opts();
    tg_lease_acct_t a;
    tg_lease_acct_init(&a, 7);
    tg_hold_t h;
    /* every slot holds a lease with a request in flight and no room left */
    for (int i = 0; i < TG_LEASE_SLOTS; i++) {
        assert_int_equal(tg_lease_reserve(&a, &o, 1000, 0, &h), TG_LEASE_WAIT);
        expect_next(&a, &o, 0, TG_LEASE_OPEN);
        tg_lease_granted(&a, &o, 100 + i, 1000, 60000, 0);
        assert_int_equal(tg_lease_reserve(&a, &o, 1000, 0, &h), TG_LEASE_HELD);
    }
    expect_next(&a, &o, 0, TG_LEASE_NONE); /* no slot for another lease */
    assert_int_equal(tg_lease_reserve(&a, &o, 10, 0, &h), TG_LEASE_EXACT);
}

/* ---- two engines, one wallet ------------------------------------------------------------------
 * The fake database keeps what migration 0007 keeps for one wallet and grants leases by the rule of
 * tollgate_lease_open. Each instance settles into its own pending batch, committed at random times;
 * a close is committed behind its instance's pending charges, as lease.h requires. */

#define FAKE_LEASES 131072

typedef struct fake_db {
    int64_t balance, reserved, spent;
    struct {
        int64_t amount, charged;
        bool open;
    } lease[FAKE_LEASES];
    int64_t n_leases;
} fake_db_t;

static void fake_check(const fake_db_t *db)
{
    assert_true(db->reserved >= 0);
    assert_true(db->balance >= db->reserved); /* wallets_no_overspend */
    int64_t held = 0;
    for (int64_t i = 1; i <= db->n_leases; i++) {
        assert_true(db->lease[i].charged <= db->lease[i].amount); /* leases_charged_within */
        if (db->lease[i].open)
            held += db->lease[i].amount - db->lease[i].charged;
    }
    assert_int_equal(held, db->reserved);
}

/* tollgate_lease_open: at most want, at most share% of available (but min when available), never
 * more than available; 0 below min. */
static int64_t fake_open(fake_db_t *db, int64_t want, int64_t min, int64_t share)
{
    int64_t avail = db->balance - db->reserved;
    int64_t g = avail * share / 100;
    if (g < min)
        g = min;
    if (g > want)
        g = want;
    if (g > avail)
        g = avail;
    if (g < min || g < 1)
        return 0;
    assert_true(db->n_leases + 1 < FAKE_LEASES);
    int64_t id = ++db->n_leases;
    db->lease[id].amount = g;
    db->lease[id].open = true;
    db->reserved += g;
    fake_check(db);
    return id;
}

static void fake_charge(fake_db_t *db, int64_t id, int64_t c)
{
    assert_true(id >= 1 && id <= db->n_leases);
    assert_true(db->lease[id].open); /* the engine never closes a lease before its charges land */
    db->lease[id].charged += c;
    db->balance -= c;
    db->reserved -= c;
    db->spent += c;
    fake_check(db);
}

static void fake_close(fake_db_t *db, int64_t id)
{
    if (!db->lease[id].open)
        return;
    db->reserved -= db->lease[id].amount - db->lease[id].charged;
    db->lease[id].open = false;
    fake_check(db);
}

typedef struct pending {
    int64_t lease_id, charge;
    bool close;
} pending_t;

typedef struct inst {
    tg_lease_acct_t acct;
    tg_hold_t flight[64];
    int64_t est[64];
    int n_flight;
    pending_t batch[256];
    int n_batch;
} inst_t;

static uint64_t rng = 88172645463325252ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void flush(fake_db_t *db, inst_t *in)
{
    for (int i = 0; i < in->n_batch; i++) {
        if (in->batch[i].close)
            fake_close(db, in->batch[i].lease_id);
        else if (in->batch[i].charge > 0)
            fake_charge(db, in->batch[i].lease_id, in->batch[i].charge);
    }
    in->n_batch = 0;
}

static void run_actions(fake_db_t *db, inst_t *in, const tg_lease_opts_t *o, int64_t now)
{
    tg_lease_action_t act;
    while (tg_lease_next(&in->acct, o, now, &act) != TG_LEASE_NONE) {
        if (act.kind == TG_LEASE_OPEN) {
            int64_t id = fake_open(db, act.amount, o->min_slice, o->share_pct);
            if (id == 0)
                tg_lease_refused(&in->acct, o, now);
            else
                tg_lease_granted(&in->acct, o, id, db->lease[id].amount, now + o->ttl_ms, now);
        } else if (act.kind == TG_LEASE_EXTEND) {
            tg_lease_extended(&in->acct, act.lease_id, now + o->ttl_ms);
        } else {
            assert_true(in->n_batch < 256);
            in->batch[in->n_batch++] = (pending_t){.lease_id = act.lease_id, .close = true};
        }
        if (in->n_batch > 200)
            flush(db, in);
    }
}

static void test_two_engines_one_wallet(void **state)
{
    const int64_t wallet = 5000000;
    fake_db_t *db = test_calloc(1, sizeof(*db));
    db->balance = wallet;
    tg_lease_opts_t o = opts();
    o.slice = 5000;
    o.min_slice = 200;
    inst_t inst[2];
    memset(inst, 0, sizeof(inst));
    tg_lease_acct_init(&inst[0].acct, 1);
    tg_lease_acct_init(&inst[1].acct, 1);
    int64_t charged = 0, served = 0, refused = 0, exact = 0, exact_rich = 0, rich = 0, over = 0;
    int64_t now = 0;
    for (int step = 0; step < 200000; step++) {
        now += (int64_t)(rnd() % 50);
        inst_t *in = &inst[rnd() % 2];
        uint64_t what = rnd() % 10;
        if (what < 5 && in->n_flight < 64) { /* a request arrives */
            int64_t est = 1 + (int64_t)(rnd() % 900);
            tg_hold_t h;
            int rc = tg_lease_reserve(&in->acct, &o, est, now, &h);
            if (rc == TG_LEASE_WAIT) {
                run_actions(db, in, &o, now);
                rc = tg_lease_reserve(&in->acct, &o, est, now, &h);
                if (rc == TG_LEASE_WAIT) /* the new lease was too small for it */
                    rc = TG_LEASE_EXACT;
            }
            if (rc == TG_LEASE_EXACT) {
                /* tollgate_lease_open for this request alone: all of it or nothing (402) */
                flush(db, in);
                int64_t id = fake_open(db, est, est, 100);
                if (id == 0) {
                    refused++;
                    continue;
                }
                tg_lease_hold_exact(&h, id, est);
                exact++;
                if (db->balance - db->reserved > 20 * o.slice)
                    exact_rich++;
            } else {
                assert_int_equal(rc, TG_LEASE_HELD);
            }
            if (db->balance - db->reserved > 20 * o.slice)
                rich++;
            in->est[in->n_flight] = est;
            in->flight[in->n_flight++] = h;
        } else if (what < 9 && in->n_flight > 0) { /* a request ends: 0 to 1.5x its estimate */
            int i = (int)(rnd() % (uint64_t)in->n_flight);
            tg_hold_t h = in->flight[i];
            int64_t cost = (int64_t)(rnd() % (uint64_t)(in->est[i] * 3 / 2 + 1));
            if (cost > in->est[i])
                over++;
            int64_t c = tg_lease_settle(&in->acct, &h, cost, now);
            assert_true(c >= 0 && c <= cost);
            if (h.exact) {
                assert_true(c <= h.amount);
                if (c > 0)
                    fake_charge(db, h.lease_id, c);
                fake_close(db, h.lease_id); /* tollgate_settle closes a per-request lease */
            } else {
                assert_true(in->n_batch < 256);
                in->batch[in->n_batch++] = (pending_t){.lease_id = h.lease_id, .charge = c};
            }
            charged += c;
            served++;
            in->flight[i] = in->flight[--in->n_flight];
            in->est[i] = in->est[in->n_flight];
        } else { /* housekeeping and the group commit */
            run_actions(db, in, &o, now);
            if (rnd() % 3 == 0)
                flush(db, in);
        }
        /* whatever is in memory, the database never lets more be spent than the wallet held */
        assert_true(db->spent <= wallet);
        assert_true(charged <= wallet);
    }
    /* everything in flight ends, every batch lands, every lease is given back */
    for (int k = 0; k < 2; k++) {
        inst_t *in = &inst[k];
        while (in->n_flight > 0) {
            tg_hold_t h = in->flight[--in->n_flight];
            int64_t c = tg_lease_settle(&in->acct, &h, in->est[in->n_flight], now);
            if (h.exact) {
                if (c > 0)
                    fake_charge(db, h.lease_id, c);
                fake_close(db, h.lease_id);
            } else {
                in->batch[in->n_batch++] = (pending_t){.lease_id = h.lease_id, .charge = c};
            }
            charged += c;
        }
        run_actions(db, in, &o, now + 10000000);
        flush(db, in);
        assert_true(tg_lease_idle(&in->acct));
    }
    assert_int_equal(db->reserved, 0);
    assert_int_equal(db->spent, charged);            /* every charge landed, once */
    assert_int_equal(db->balance, wallet - charged); /* balance = sum of entries */
    assert_true(db->balance >= 0);
    /* the run went through every path: leases, exact reservations, refusals, underestimates, and
     * the wallet ran nearly dry */
    print_message("reserved while the wallet was rich: %lld, of them exactly: %lld\n", (long long)rich,
                  (long long)exact_rich);
    print_message(
        "served %lld (exact %lld, over their estimate %lld), refused %lld, leases %lld, left %lld\n",
        (long long)served, (long long)exact, (long long)over, (long long)refused, (long long)db->n_leases,
        (long long)db->balance);
    assert_true(served > 1000);
    assert_true(exact > 0);
    assert_true(refused > 0);
    assert_true(over > 0);
    assert_true(db->n_leases > 10);
    assert_true(db->balance < 1000);
    /* and while the wallet was large, leases (not the database) took almost every reservation */
    assert_true(exact_rich * 50 < rich);
    test_free(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_settle),       cmocka_unit_test(test_over_the_hold),
        cmocka_unit_test(test_renewal_before_empty), cmocka_unit_test(test_renewal_before_drain),
        cmocka_unit_test(test_drain_extend_close),   cmocka_unit_test(test_too_small_to_lease),
        cmocka_unit_test(test_slots_full),           cmocka_unit_test(test_two_engines_one_wallet),
        cmocka_unit_test(test_take_closable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
