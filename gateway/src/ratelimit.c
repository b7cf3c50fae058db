/*
 * ratelimit.c - the rate limiter of one instance, see ratelimit.h.
 *
 * The table is split into shards, each a fixed array of scope slots behind its own mutex (like
 * the key cache): workers rarely contend, and the memory is fixed at creation. A scope maps to
 * a probe window of a few slots in its shard; a new scope takes a free slot of the window, else
 * the least recently used one.
 *
 * Every slot carries a generation, new whenever the slot starts over (another scope, or a new
 * window of the same scope). A charge remembers the generation it was made under: a grant,
 * refusal, give-back or correction for a window that is over, or a scope that was forgotten,
 * finds another generation and leaves the slot alone.
 */
#include "ratelimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS       16u
#define PROBE_WINDOW 8u

typedef struct rl_dim {
    uint64_t leased, used, pending;
    uint64_t held;     /* the part of used charged by calls still waiting for their lease */
    uint64_t total;    /* the window's total in the newest answer (less what we gave back since) */
    uint64_t released; /* given back, the database's answer not yet seen */
    uint64_t others;   /* what the other instances hold, as of the last quiet moment */
} rl_dim_t;

typedef struct rl_slot {
    uint64_t gen; /* 0: free */
    int64_t id;
    tg_rl_kind_t kind;
    uint32_t window_ms;
    uint64_t window;
    uint64_t touched_ms;  /* last charge: the least recent goes first */
    uint64_t answered_ms; /* the database's last answer in this window (0 none) */
    uint64_t seq;         /* the row's version in the newest answer: older ones change no total */
    rl_dim_t d[TG_RL_DIMS];
} rl_slot_t;

typedef struct rl_shard {
    pthread_mutex_t mu;
    rl_slot_t *slots;
} rl_shard_t;

struct tg_rl {
    size_t per_shard;
    _Atomic uint64_t next_gen;
    rl_shard_t shards[SHARDS];
};

tg_rl_t *tg_rl_create(size_t capacity)
{
    if (capacity == 0)
        capacity = TG_RL_DEFAULT_CAPACITY;
    tg_rl_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return NULL;
    rl->per_shard = (capacity + SHARDS - 1) / SHARDS;
    atomic_init(&rl->next_gen, 1);
    for (size_t i = 0; i < SHARDS; i++) {
        rl->shards[i].slots = calloc(rl->per_shard, sizeof(rl_slot_t));
        if (rl->shards[i].slots == NULL) {
            while (i-- > 0)
                free(rl->shards[i].slots);
            free(rl);
            return NULL;
        }
        pthread_mutex_init(&rl->shards[i].mu, NULL);
    }
    return rl;
}

void tg_rl_destroy(tg_rl_t *rl)
{
    if (rl == NULL)
        return;
    for (size_t i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&rl->shards[i].mu);
        free(rl->shards[i].slots);
    }
    free(rl);
}

/* ------------------------------------------------------------------------ arithmetic */

uint64_t tg_rl_window(uint64_t now_ms, uint32_t window_ms)
{
    return window_ms != 0 ? now_ms / window_ms : 0;
}

uint64_t tg_rl_reset_ms(uint64_t now_ms, uint32_t window_ms)
{
    return window_ms != 0 ? window_ms - now_ms % window_ms : 0;
}

uint64_t tg_rl_slice(uint64_t max)
{
    uint64_t s = max / TG_RL_SLICE_DIVISOR;
    return s > 0 ? s : 1;
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static uint64_t lim_of(const tg_rl_limits_t *lim, int d)
{
    return lim->max[d] < TG_RL_LIMIT_MAX ? lim->max[d] : TG_RL_LIMIT_MAX;
}

/* ---------------------------------------------------------------------------- slots */

static uint64_t mix(tg_rl_kind_t kind, int64_t id)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ull ^ (uint64_t)kind * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 29);
}

static rl_shard_t *shard_of(tg_rl_t *rl, tg_rl_kind_t kind, int64_t id, size_t *start)
{
    uint64_t h = mix(kind, id);
    *start = (size_t)((h / SHARDS) % rl->per_shard);
    return &rl->shards[h % SHARDS];
}

static size_t probe_len(const tg_rl_t *rl)
{
    return rl->per_shard < PROBE_WINDOW ? rl->per_shard : PROBE_WINDOW;
}

/* The scope's slot whatever its window, or NULL. Under the shard's lock. */
static rl_slot_t *slot_find(tg_rl_t *rl, rl_shard_t *sh, size_t start, tg_rl_kind_t kind, int64_t id)
{
    for (size_t i = 0; i < probe_len(rl); i++) {
        rl_slot_t *s = &sh->slots[(start + i) % rl->per_shard];
        if (s->gen != 0 && s->kind == kind && s->id == id)
            return s;
    }
    return NULL;
}

static void slot_start(tg_rl_t *rl, rl_slot_t *s, tg_rl_kind_t kind, int64_t id, uint64_t window,
                       uint32_t window_ms)
{
    memset(s, 0, sizeof(*s));
    s->gen = atomic_fetch_add(&rl->next_gen, 1);
    s->kind = kind;
    s->id = id;
    s->window = window;
    s->window_ms = window_ms;
}

/* The scope's slot in the window of now, started afresh when the window moved on (or the
 * scope is new here: it takes a free slot of its probe window, else the least recently used).
 * Under the shard's lock. */
static rl_slot_t *slot_now(tg_rl_t *rl, rl_shard_t *sh, size_t start, tg_rl_kind_t kind, int64_t id,
                           uint64_t now_ms, uint32_t window_ms)
{
    uint64_t window = tg_rl_window(now_ms, window_ms);
    rl_slot_t *s = slot_find(rl, sh, start, kind, id);
    if (s == NULL) {
        rl_slot_t *victim = NULL;
        for (size_t i = 0; i < probe_len(rl); i++) {
            rl_slot_t *x = &sh->slots[(start + i) % rl->per_shard];
            if (x->gen == 0) {
                victim = x;
                break;
            }
            if (victim == NULL || x->touched_ms < victim->touched_ms)
                victim = x;
        }
        s = victim;
        slot_start(rl, s, kind, id, window, window_ms);
    } else if (s->window != window || s->window_ms != window_ms) {
        slot_start(rl, s, kind, id, window, window_ms);
    }
    s->touched_ms = now_ms;
    return s;
}

/* Locks the shard of a charge's scope; returns the slot the charge was made in if it still holds
 * that window (else NULL). The caller unlocks *sh. */
static rl_slot_t *lock_charge(tg_rl_t *rl, const tg_rl_charge_t *ch, rl_shard_t **sh)
{
    size_t start;
    *sh = shard_of(rl, ch->kind, ch->id, &start);
    pthread_mutex_lock(&(*sh)->mu);
    if (ch->slot_gen == 0)
        return NULL;
    rl_slot_t *s = slot_find(rl, *sh, start, ch->kind, ch->id);
    return s != NULL && s->gen == ch->slot_gen ? s : NULL;
}

static void view_of(const rl_slot_t *s, const tg_rl_limits_t *lim, uint64_t now_ms, tg_rl_view_t *v)
{
    memset(v, 0, sizeof(*v));
    for (int d = 0; d < TG_RL_DIMS; d++) {
        uint64_t max = lim_of(lim, d);
        if (max == 0)
            continue;
        v->max[d] = max;
        /* what the others hold and what we admitted (calls still waiting for a lease are not
         * admitted yet) */
        uint64_t others = s != NULL ? s->d[d].others : 0;
        uint64_t admitted = s != NULL ? sub0(s->d[d].used, s->d[d].held) : 0;
        v->remaining[d] = sub0(sub0(max, others), admitted);
    }
    v->reset_ms = tg_rl_reset_ms(now_ms, s != NULL ? s->window_ms : 0);
}

/* An answer of the database for this window: the newest (by the row's version) says the total. */
static void take_answer(rl_slot_t *s, const tg_rl_answer_t *a)
{
    if (a->seq <= s->seq)
        return;
    s->seq = a->seq;
    for (int d = 0; d < TG_RL_DIMS; d++)
        s->d[d].total = a->total[d];
}

/* Once none of this instance's statements on a dimension is in flight, the newest total includes
 * every one of them, so what it holds beyond our lease is the others' (answers that came back in
 * another order than the database wrote them change nothing then). */
static void note_others(rl_slot_t *s)
{
    for (int d = 0; d < TG_RL_DIMS; d++) {
        rl_dim_t *x = &s->d[d];
        if (x->pending == 0 && x->released == 0)
            x->others = sub0(x->total, x->leased);
    }
}

/* A refusal on what the database holds: what is left is at most what the database has not leased
 * (this instance's view may still count grants whose answers it has not read). */
static void view_refused(tg_rl_result_t *r, uint64_t total)
{
    int d = r->refused_dim;
    uint64_t left = sub0(r->view.max[d], total);
    if (left < r->view.remaining[d])
        r->view.remaining[d] = left;
}

static void uncharge_slot(rl_slot_t *s, const tg_rl_charge_t *ch)
{
    for (int d = 0; d < TG_RL_DIMS; d++)
        if (lim_of(&ch->lim, d) != 0)
            s->d[d].used = sub0(s->d[d].used, ch->amount[d]);
}

/* ----------------------------------------------------------------------------- charges */

tg_rl_result_t tg_rl_charge(tg_rl_t *rl, tg_rl_charge_t *ch, uint64_t now_ms, uint32_t window_ms,
                            bool offline, tg_rl_lease_t *lease)
{
    tg_rl_result_t r = {.verdict = TG_RL_ADMITTED};
    size_t start;
    rl_shard_t *sh = shard_of(rl, ch->kind, ch->id, &start);
    ch->slot_gen = 0;
    ch->window_ms = window_ms;
    ch->window = tg_rl_window(now_ms, window_ms);
    if (lease != NULL)
        memset(lease, 0, sizeof(*lease));

    pthread_mutex_lock(&sh->mu);
    rl_slot_t *s = slot_now(rl, sh, start, ch->kind, ch->id, now_ms, window_ms);
    for (int d = 0; d < TG_RL_DIMS; d++) {
        uint64_t max = lim_of(&ch->lim, d);
        if (max != 0 && ch->amount[d] > max) {
            r.verdict = TG_RL_REFUSED;
            r.refused_dim = (tg_rl_dim_t)d;
            r.too_big = true; /* never fits, whatever the window holds */
            goto out;
        }
    }
    if (offline || lease == NULL) {
        /* the database cannot be asked: this instance alone keeps within the limit */
        for (int d = 0; d < TG_RL_DIMS; d++) {
            uint64_t max = lim_of(&ch->lim, d);
            if (max != 0 && s->d[d].used + ch->amount[d] > max) {
                r.verdict = TG_RL_REFUSED;
                r.refused_dim = (tg_rl_dim_t)d;
                goto out;
            }
        }
        for (int d = 0; d < TG_RL_DIMS; d++)
            if (lim_of(&ch->lim, d) != 0)
                s->d[d].used += ch->amount[d];
        r.local = true;
        ch->slot_gen = s->gen;
        goto out;
    }

    bool short_of = false;
    for (int d = 0; d < TG_RL_DIMS; d++) {
        uint64_t max = lim_of(&ch->lim, d);
        if (max == 0)
            continue;
        rl_dim_t *x = &s->d[d];
        uint64_t used = x->used + ch->amount[d];
        /* what neither the leases held nor those in flight cover (a debt included) */
        uint64_t need = sub0(used, x->leased + x->pending);
        if (need == 0)
            continue;
        /* the database's last answer says the shortfall cannot be granted (tokens: unless
         * that answer is old, as other instances may have given some back since) */
        bool known =
            s->answered_ms != 0 && (d == TG_RL_REQUESTS || now_ms - s->answered_ms < TG_RL_RECHECK_MS);
        if (known && x->total + need > max) {
            r.verdict = TG_RL_REFUSED;
            r.refused_dim = (tg_rl_dim_t)d;
            view_of(s, &ch->lim, now_ms, &r.view);
            view_refused(&r, x->total);
            pthread_mutex_unlock(&sh->mu);
            return r;
        }
        lease->need[d] = need;
        uint64_t want = tg_rl_slice(max);
        lease->want[d] = want > need ? want : need;
        short_of = true;
    }
    for (int d = 0; d < TG_RL_DIMS; d++) {
        if (lim_of(&ch->lim, d) == 0)
            continue;
        s->d[d].used += ch->amount[d];
        s->d[d].pending += lease->need[d];
        if (short_of)
            s->d[d].held += ch->amount[d];
    }
    ch->slot_gen = s->gen;
    if (short_of)
        r.verdict = TG_RL_LEASE;
out:
    view_of(s, &ch->lim, now_ms, &r.view);
    pthread_mutex_unlock(&sh->mu);
    return r;
}

tg_rl_result_t tg_rl_granted(tg_rl_t *rl, tg_rl_charge_t *ch, const tg_rl_lease_t *lease,
                             const tg_rl_answer_t *a, uint64_t now_ms)
{
    tg_rl_result_t r = {.verdict = TG_RL_ADMITTED};
    for (int d = 0; d < TG_RL_DIMS; d++) {
        if (lease->need[d] != 0 && a->granted[d] < lease->need[d]) {
            r.verdict = TG_RL_REFUSED;
            r.refused_dim = (tg_rl_dim_t)d;
            break;
        }
    }
    rl_shard_t *sh;
    rl_slot_t *s = lock_charge(rl, ch, &sh);
    if (s != NULL) {
        for (int d = 0; d < TG_RL_DIMS; d++) {
            rl_dim_t *x = &s->d[d];
            x->pending = sub0(x->pending, lease->need[d]);
            if (lim_of(&ch->lim, d) != 0)
                x->held = sub0(x->held, ch->amount[d]);
            x->leased += a->granted[d];
        }
        take_answer(s, a);
        note_others(s);
        s->answered_ms = now_ms;
        if (r.verdict == TG_RL_REFUSED)
            uncharge_slot(s, ch);
    }
    /* else: the window is over or the scope was forgotten; the grant is the database's word */
    view_of(s, &ch->lim, now_ms, &r.view);
    if (s == NULL) {
        r.view.reset_ms = tg_rl_reset_ms(now_ms, ch->window_ms);
        for (int d = 0; d < TG_RL_DIMS; d++)
            if (r.view.max[d] != 0)
                r.view.remaining[d] = sub0(r.view.max[d], a->total[d]);
    }
    if (r.verdict == TG_RL_REFUSED) {
        ch->slot_gen = 0;
        view_refused(&r, a->total[r.refused_dim]);
    }
    pthread_mutex_unlock(&sh->mu);
    return r;
}

tg_rl_result_t tg_rl_lease_failed(tg_rl_t *rl, tg_rl_charge_t *ch, const tg_rl_lease_t *lease,
                                  uint64_t now_ms)
{
    rl_shard_t *sh;
    rl_slot_t *s = lock_charge(rl, ch, &sh);
    if (s == NULL) {
        /* the charge went with its window: charge again, in this one, without the database */
        pthread_mutex_unlock(&sh->mu);
        return tg_rl_charge(rl, ch, now_ms, ch->window_ms, true, NULL);
    }
    tg_rl_result_t r = {.verdict = TG_RL_ADMITTED, .local = true};
    for (int d = 0; d < TG_RL_DIMS; d++) {
        s->d[d].pending = sub0(s->d[d].pending, lease->need[d]);
        if (lim_of(&ch->lim, d) != 0)
            s->d[d].held = sub0(s->d[d].held, ch->amount[d]);
    }
    note_others(s);
    for (int d = 0; d < TG_RL_DIMS; d++) {
        uint64_t max = lim_of(&ch->lim, d);
        if (max != 0 && s->d[d].used > max) {
            r.verdict = TG_RL_REFUSED;
            r.refused_dim = (tg_rl_dim_t)d;
            r.local = false;
            uncharge_slot(s, ch);
            ch->slot_gen = 0;
            break;
        }
    }
    view_of(s, &ch->lim, now_ms, &r.view);
    pthread_mutex_unlock(&sh->mu);
    return r;
}

void tg_rl_uncharge(tg_rl_t *rl, tg_rl_charge_t *ch)
{
    rl_shard_t *sh;
    rl_slot_t *s = lock_charge(rl, ch, &sh);
    if (s != NULL)
        uncharge_slot(s, ch);
    ch->slot_gen = 0;
    pthread_mutex_unlock(&sh->mu);
}

uint64_t tg_rl_correct(tg_rl_t *rl, tg_rl_charge_t *ch, uint64_t actual_tokens, uint64_t now_ms)
{
    uint64_t max = lim_of(&ch->lim, TG_RL_TOKENS);
    if (max == 0 || ch->slot_gen == 0)
        return 0;
    uint64_t release = 0;
    rl_shard_t *sh;
    rl_slot_t *s = lock_charge(rl, ch, &sh);
    if (s != NULL && s->window == tg_rl_window(now_ms, s->window_ms)) {
        rl_dim_t *x = &s->d[TG_RL_TOKENS];
        uint64_t was = ch->amount[TG_RL_TOKENS];
        x->used = actual_tokens < was ? sub0(x->used, was - actual_tokens) : x->used + (actual_tokens - was);
        ch->amount[TG_RL_TOKENS] = actual_tokens;
        /* a spare slice stays here for the next calls; the rest goes back to the other instances */
        uint64_t slice = tg_rl_slice(max);
        uint64_t spare = sub0(x->leased, x->used + x->pending);
        if (spare > 2 * slice) {
            release = spare - slice;
            x->leased -= release;
            x->total = sub0(x->total, release);
            x->released += release;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return release;
}

void tg_rl_released(tg_rl_t *rl, const tg_rl_charge_t *ch, uint64_t tokens, const tg_rl_answer_t *a)
{
    rl_shard_t *sh;
    size_t start;
    sh = shard_of(rl, ch->kind, ch->id, &start);
    pthread_mutex_lock(&sh->mu);
    /* the charge itself may have been given back since: the slot's window is what matters */
    rl_slot_t *s = slot_find(rl, sh, start, ch->kind, ch->id);
    if (s != NULL && s->window == ch->window && s->window_ms == ch->window_ms) {
        rl_dim_t *x = &s->d[TG_RL_TOKENS];
        x->released = sub0(x->released, tokens);
        if (a != NULL) {
            take_answer(s, a);
        } else {
            /* the database still counts them as ours */
            x->leased += tokens;
            x->total += tokens;
        }
        note_others(s);
    }
    pthread_mutex_unlock(&sh->mu);
}

/* ---------------------------------------------------------------------------- headers */

void tg_rl_view_merge(tg_rl_view_t *into, const tg_rl_view_t *v)
{
    for (int d = 0; d < TG_RL_DIMS; d++) {
        if (v->max[d] == 0)
            continue;
        if (into->max[d] == 0 || v->remaining[d] < into->remaining[d]) {
            into->max[d] = v->max[d];
            into->remaining[d] = v->remaining[d];
        }
    }
    if (v->reset_ms > into->reset_ms)
        into->reset_ms = v->reset_ms;
}

size_t tg_rl_u64(char out[21], uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

/* Appends s (with its terminator) at out + n; returns the new length. */
static size_t put(char *out, size_t n, const char *s)
{
    while (*s != '\0')
        out[n++] = *s++;
    out[n] = '\0';
    return n;
}

/* Called on every answer under a limit: no printf. */
size_t tg_rl_duration(char *out, size_t cap, uint64_t ms)
{
    char buf[64], num[21];
    size_t n = 0;
    if (ms < 1000) {
        tg_rl_u64(num, ms);
        n = put(buf, n, num);
        n = put(buf, n, ms == 0 ? "s" : "ms");
    } else {
        uint64_t h = ms / 3600000, m = ms / 60000 % 60, sec = ms / 1000 % 60;
        unsigned frac = (unsigned)(ms % 1000);
        if (h > 0) {
            tg_rl_u64(num, h);
            n = put(buf, n, num);
            n = put(buf, n, "h");
        }
        if (h > 0 || m > 0) {
            tg_rl_u64(num, m);
            n = put(buf, n, num);
            n = put(buf, n, "m");
        }
        tg_rl_u64(num, sec);
        n = put(buf, n, num);
        if (frac != 0) {
            /* Go trims the fraction's trailing zeros: 1.5s, 1.25s, 1.005s */
            char f[5] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10), (char)('0' + frac % 10),
                         0};
            size_t fl = 4;
            while (f[fl - 1] == '0')
                f[--fl] = '\0';
            n = put(buf, n, f);
        }
        n = put(buf, n, "s");
    }
    if (cap == 0)
        return 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, buf, n);
    out[n] = '\0';
    return n;
}

uint32_t tg_rl_retry_after_s(uint64_t reset_ms)
{
    uint64_t s = (reset_ms + 999) / 1000;
    return s > 0 ? (uint32_t)(s < UINT32_MAX ? s : UINT32_MAX) : 1;
}
