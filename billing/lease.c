/*
 * lease.c - the lease engine's decisions (lease.h; the protocol is in billing/README.md).
 *
 * What keeps the wallet whole, on this side: a reservation is only made against a lease's free
 * room (amount - held - charged), and a settlement charges at most the hold plus that free room, so
 * a lease's charges never pass its amount, which the database took out of the available credits
 * when it granted the lease. Everything else here is about asking for leases early enough
 * (renewal), giving unused credits back soon enough (idle close, drain before expiry) and falling
 * back to exact per-request reservations when the wallet is too small to slice.
 */
#include "lease.h"

#include <string.h>

void tg_lease_opts_default(tg_lease_opts_t *o, int64_t slice)
{
    memset(o, 0, sizeof(*o));
    o->slice = slice > 0 ? slice : 1;
    o->min_slice = o->slice / 100 > 0 ? o->slice / 100 : 1;
    o->share_pct = 50;
    o->ttl_ms = 60000;
    o->renew_pct = 25;
    o->drain_before_ms = 15000;
    o->renew_before_ms = 5000;
    o->extend_before_ms = 10000;
    o->idle_ms = 20000;
    o->exact_ms = 2000;
}

void tg_lease_acct_init(tg_lease_acct_t *a, int64_t tenant_id)
{
    memset(a, 0, sizeof(*a));
    a->tenant_id = tenant_id;
}

static int64_t room(const tg_lease_t *l)
{
    return l->amount - l->held - l->charged;
}

/* A lease near its expiry takes no new reservation: what it holds must settle before the database
 * may expire it (and it is extended while it still holds requests). A lease with less room than a
 * minimum lease is spent: it drains too, so its slot and its last credits come back as soon as its
 * requests end instead of after idle_ms. */
static void mark_draining(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now)
{
    for (int i = 0; i < TG_LEASE_SLOTS; i++) {
        tg_lease_t *l = &a->lease[i];
        if (l->id != 0 && !l->draining &&
            (now >= l->expires_ms - (int64_t)o->drain_before_ms || room(l) < o->min_slice))
            l->draining = true;
    }
}

static tg_lease_t *find(tg_lease_acct_t *a, int64_t id)
{
    for (int i = 0; i < TG_LEASE_SLOTS; i++)
        if (a->lease[i].id == id && id != 0)
            return &a->lease[i];
    return NULL;
}

static tg_lease_t *empty_slot(tg_lease_acct_t *a)
{
    for (int i = 0; i < TG_LEASE_SLOTS; i++)
        if (a->lease[i].id == 0)
            return &a->lease[i];
    return NULL;
}

int tg_lease_reserve(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t amount, int64_t now,
                     tg_hold_t *out)
{
    if (amount <= 0)
        return TG_EINVALID_REQUEST;
    mark_draining(a, o, now);
    /* the lease that expires first: old slices drain before new ones are cut into */
    tg_lease_t *best = NULL;
    for (int i = 0; i < TG_LEASE_SLOTS; i++) {
        tg_lease_t *l = &a->lease[i];
        if (l->id != 0 && !l->draining && room(l) >= amount &&
            (best == NULL || l->expires_ms < best->expires_ms))
            best = l;
    }
    if (best != NULL) {
        best->held += amount;
        best->holds++;
        best->last_used_ms = now;
        *out = (tg_hold_t){.lease_id = best->id, .amount = amount, .exact = false};
        return TG_LEASE_HELD;
    }
    /* the wallet recently could not give a lease this large: the database reserves it exactly */
    if (now < a->exact_until_ms && (a->grant_cap == 0 || amount > a->grant_cap))
        return TG_LEASE_EXACT;
    /* every slot holds a lease still draining and nothing is being asked: no lease can come */
    if (!a->asking && empty_slot(a) == NULL)
        return TG_LEASE_EXACT;
    if (amount > a->need)
        a->need = amount;
    return TG_LEASE_WAIT;
}

void tg_lease_hold_exact(tg_hold_t *out, int64_t lease_id, int64_t amount)
{
    *out = (tg_hold_t){.lease_id = lease_id, .amount = amount, .exact = true};
}

int64_t tg_lease_settle(tg_lease_acct_t *a, tg_hold_t *h, int64_t cost, int64_t now)
{
    (void)now;
    if (h->settled) /* a second settle must not free another request's hold */
        return 0;
    h->settled = true;
    if (cost < 0)
        cost = 0;
    if (h->exact) /* the per-request lease covers only itself */
        return cost < h->amount ? cost : h->amount;
    tg_lease_t *l = find(a, h->lease_id);
    /* cannot happen: a lease leaves the account only once its holds are settled */
    if (l == NULL || l->holds == 0 || l->held < h->amount)
        return 0;
    l->held -= h->amount;
    l->holds--;
    int64_t cover = room(l); /* the hold itself, now freed, plus the lease's free room */
    int64_t charge = cost < cover ? cost : cover;
    l->charged += charge;
    return charge;
}

/* The room that keeps a busy account from asking for another lease: a lease about to drain
 * (within renew_before_ms) no longer counts, so that its successor is granted before it stops
 * taking reservations and no request waits at the switch (each tenant's lease drains once per
 * lease life: with many tenants, those waits were a steady stream). */
static int64_t usable_room(const tg_lease_acct_t *a, int64_t now, bool *active, const tg_lease_opts_t *o)
{
    int64_t sum = 0;
    *active = false;
    for (int i = 0; i < TG_LEASE_SLOTS; i++) {
        const tg_lease_t *l = &a->lease[i];
        if (l->id == 0)
            continue;
        if (l->holds > 0 || now - l->last_used_ms < (int64_t)o->idle_ms)
            *active = true;
        if (!l->draining && now < l->expires_ms - (int64_t)o->drain_before_ms - (int64_t)o->renew_before_ms)
            sum += room(l);
    }
    return sum;
}

int64_t tg_lease_take_closable(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now, int64_t *unspent)
{
    mark_draining(a, o, now);
    for (int i = 0; i < TG_LEASE_SLOTS; i++) {
        tg_lease_t *l = &a->lease[i];
        if (l->id == 0 || l->holds > 0)
            continue;
        if (l->draining || now - l->last_used_ms >= (int64_t)o->idle_ms) {
            int64_t id = l->id;
            if (unspent != NULL)
                *unspent = l->amount - l->charged;
            memset(l, 0, sizeof(*l));
            return id;
        }
    }
    return 0;
}

tg_lease_action_kind_t tg_lease_next(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now,
                                     tg_lease_action_t *out)
{
    memset(out, 0, sizeof(*out));
    int64_t closable = tg_lease_take_closable(a, o, now, NULL);
    if (closable != 0) {
        out->kind = TG_LEASE_CLOSE;
        out->lease_id = closable;
        return out->kind;
    }
    for (int i = 0; i < TG_LEASE_SLOTS; i++) {
        tg_lease_t *l = &a->lease[i];
        if (l->id != 0 && l->holds > 0 && !l->extending &&
            now >= l->expires_ms - (int64_t)o->extend_before_ms) {
            l->extending = true;
            out->kind = TG_LEASE_EXTEND;
            out->lease_id = l->id;
            return out->kind;
        }
    }
    if (a->asking || empty_slot(a) == NULL)
        return TG_LEASE_NONE;
    bool active;
    int64_t free_room = usable_room(a, now, &active, o);
    bool low = active && free_room < o->slice * (int64_t)o->renew_pct / 100;
    if (a->need == 0 && (!low || now < a->exact_until_ms))
        return TG_LEASE_NONE;
    /* at least a slice, the waiting request, and what is in flight now: a busy tenant's next lease
     * carries as many requests as its last ones did, so slots do not run out under concurrency */
    int64_t in_flight = 0;
    for (int i = 0; i < TG_LEASE_SLOTS; i++)
        in_flight += a->lease[i].held;
    int64_t ask = a->need > o->slice ? a->need : o->slice;
    a->asking = true;
    a->ask_amount = in_flight > ask ? in_flight : ask;
    /* an open that failed may have committed (an answer lost with its connection): asking again
     * under the same key returns that lease instead of stranding it until it expires */
    if (!a->retry)
        a->retry_seq = a->asks++;
    a->retry = true;
    out->kind = TG_LEASE_OPEN;
    out->amount = a->ask_amount;
    out->seq = a->retry_seq;
    return out->kind;
}

void tg_lease_granted(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t id, int64_t amount,
                      int64_t expires_ms, int64_t now)
{
    tg_lease_t *l = empty_slot(a);
    a->asking = false;
    a->retry = false;
    a->need = 0; /* waiters retry: they fit, or go exact below */
    if (amount < a->ask_amount) {
        a->exact_until_ms = now + o->exact_ms;
        a->grant_cap = amount;
    }
    if (l == NULL || id == 0 || amount <= 0) /* cannot happen: an open is asked only with a slot free */
        return;
    *l = (tg_lease_t){.id = id, .amount = amount, .expires_ms = expires_ms, .last_used_ms = now};
}

void tg_lease_refused(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now)
{
    a->asking = false;
    a->retry = false;
    a->need = 0;
    a->exact_until_ms = now + o->exact_ms;
    a->grant_cap = 0;
}

void tg_lease_failed(tg_lease_acct_t *a)
{
    a->asking = false;
    a->need = 0;
}

void tg_lease_extended(tg_lease_acct_t *a, int64_t id, int64_t expires_ms)
{
    tg_lease_t *l = find(a, id);
    if (l == NULL)
        return;
    l->extending = false;
    if (expires_ms > l->expires_ms)
        l->expires_ms = expires_ms;
}

int64_t tg_lease_free(const tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now)
{
    int64_t sum = 0;
    for (int i = 0; i < TG_LEASE_SLOTS; i++) {
        const tg_lease_t *l = &a->lease[i];
        if (l->id != 0 && !l->draining && now < l->expires_ms - (int64_t)o->drain_before_ms)
            sum += room(l);
    }
    return sum;
}

bool tg_lease_idle(const tg_lease_acct_t *a)
{
    if (a->asking)
        return false;
    for (int i = 0; i < TG_LEASE_SLOTS; i++)
        if (a->lease[i].id != 0)
            return false;
    return true;
}
