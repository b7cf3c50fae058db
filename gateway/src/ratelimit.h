/*
 * ratelimit.h - the rate limiter of one instance: fixed windows, slices leased from the database,
 * admission in memory. Pure logic: no I/O, no clock (every function takes `now`, wall-clock
 * milliseconds since the epoch, so that every instance cuts the same windows).
 *
 * A scope is one API key or one tenant; each has up to two limits per window, requests and
 * tokens (0 = none). The database holds, per scope and window, how much of each limit has been
 * leased to instances in all, and never leases past the limit (ratelease.h). This instance keeps,
 * per scope, what it was leased in the current window and what it admitted:
 *
 *   leased   granted to this instance by the database in this window
 *   used     charged here: admissions, corrected with the actual usage; more than leased only
 *            for work admitted while the database was down, or tokens that exceeded their
 *            estimate (a debt that the next lease of the window pays first)
 *   pending  what this instance's leases in flight asked for at least (their `need`)
 *   total    what every instance together had leased in the database's newest answer (each
 *            answer carries the row's version, so answers overtaking each other are harmless)
 *   others   what the other instances hold: total - leased, taken when none of this instance's
 *            statements is in flight (the x-ratelimit-remaining-* headers)
 *
 * A charge that fits in what is leased is admitted at once (no I/O). One that does not is
 * charged provisionally and asks the database for the shortfall (`need`, granted whole or not
 * at all) plus a slice for the calls that follow (`want`, as far as the limit allows); the call
 * waits for the answer. A refusal, or a shortfall already known to exceed the window's
 * remainder, rolls the charge back. Invariant: except for debts, used <= leased + pending, so
 * once the leases in flight are answered an instance has admitted no more than it was leased,
 * and the instances together no more than the limit (requests exactly; tokens within the debts).
 *
 * The scopes live in a fixed table shared by every worker (shards behind a mutex each); when a
 * probe window is full the least recently used scope is forgotten. Forgetting loses only this
 * instance's unused slice (the database still counts it as leased): the limits then admit less,
 * never more.
 *
 * Thread: any (the table locks); a tg_rl_hold_t belongs to one call on one loop.
 */
#ifndef TG_RATELIMIT_H
#define TG_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { TG_RL_KEY = 0, TG_RL_TENANT = 1, TG_RL_SCOPES = 2 } tg_rl_kind_t;
typedef enum { TG_RL_REQUESTS = 0, TG_RL_TOKENS = 1, TG_RL_DIMS = 2 } tg_rl_dim_t;
typedef enum { TG_RL_ADMITTED = 0, TG_RL_LEASE = 1, TG_RL_REFUSED = 2 } tg_rl_verdict_t;

/* Limits above this are treated as this (sums in the database stay far from overflow). */
#define TG_RL_LIMIT_MAX 1000000000000000ull
/* A slice is this fraction of the limit (at least 1): with limit/32 an instance strands at most
 * about 3% of a window's budget, and a burst against a small limit leases one unit at a time. */
#define TG_RL_SLICE_DIVISOR 32u
/* A tokens shortfall known (from the last answer) to exceed the window's remainder is refused
 * without asking, unless the last answer is older than this: other instances may have given
 * tokens back since. Requests are never given back, so their refusal holds for the window. */
#define TG_RL_RECHECK_MS 1000u
/* Default table size: 16 shards of 512 scopes (168 bytes each: 1.3 MiB). */
#define TG_RL_DEFAULT_CAPACITY 8192u

typedef struct tg_rl tg_rl_t;

/** A scope's limits per window, by dimension; 0 = none. */
typedef struct tg_rl_limits {
    uint64_t max[TG_RL_DIMS];
} tg_rl_limits_t;

/** One call's charge on one scope: the scope and amounts are the caller's; tg_rl_charge fills
 *  the window and the slot it was made in (corrections go to that window only). */
typedef struct tg_rl_charge {
    tg_rl_kind_t kind;
    int64_t id;
    uint64_t amount[TG_RL_DIMS];
    tg_rl_limits_t lim;
    uint64_t window; /* window index: it starts at window * window_ms */
    uint32_t window_ms;
    uint64_t slot_gen; /* the scope's slot when charged: 0 = nothing charged */
} tg_rl_charge_t;

/** What to ask the database for (TG_RL_LEASE). A dimension with need 0 asks nothing. */
typedef struct tg_rl_lease {
    uint64_t need[TG_RL_DIMS]; /* granted whole or not at all */
    uint64_t want[TG_RL_DIMS]; /* >= need: the rest as far as the limit allows */
} tg_rl_lease_t;

/** A scope as the x-ratelimit-* headers show it, after this call's charge. */
typedef struct tg_rl_view {
    uint64_t max[TG_RL_DIMS];       /* 0: no limit on this dimension, no headers */
    uint64_t remaining[TG_RL_DIMS]; /* this instance's view: exact with one instance */
    uint64_t reset_ms;              /* until the window ends */
} tg_rl_view_t;

/** The database's answer to a lease or a give-back (ratelease.h). */
typedef struct tg_rl_answer {
    uint64_t seq; /* the row's version after this statement */
    uint64_t granted[TG_RL_DIMS];
    uint64_t total[TG_RL_DIMS]; /* leased by every instance in that window */
} tg_rl_answer_t;

typedef struct tg_rl_result {
    tg_rl_verdict_t verdict;
    tg_rl_dim_t refused_dim; /* TG_RL_REFUSED: the limit that refused */
    bool too_big;            /* TG_RL_REFUSED: the charge alone exceeds that limit */
    bool local;              /* admitted without the database (it was down) */
    tg_rl_view_t view;
} tg_rl_result_t;

/** capacity: scopes kept (rounded up to a multiple of the shard count); 0 = the default. NULL when
 *  out of memory. */
tg_rl_t *tg_rl_create(size_t capacity);
void tg_rl_destroy(tg_rl_t *rl);

/** The window index of now, and the milliseconds until it ends. */
uint64_t tg_rl_window(uint64_t now_ms, uint32_t window_ms);
uint64_t tg_rl_reset_ms(uint64_t now_ms, uint32_t window_ms);
/** A slice of a limit (at least 1). */
uint64_t tg_rl_slice(uint64_t max);

/**
 * Charges ch->amount on ch's scope in the window of now, against ch->lim (fill it first).
 * ADMITTED: charged. LEASE: charged provisionally; send *lease to the database, then call
 * tg_rl_granted or tg_rl_lease_failed with the same ch and lease. REFUSED: nothing charged
 * (ch->slot_gen 0). With `offline` (the database is known to be down) nothing is leased: the
 * charge is admitted while this instance's own use stays within the limit.
 */
tg_rl_result_t tg_rl_charge(tg_rl_t *rl, tg_rl_charge_t *ch, uint64_t now_ms, uint32_t window_ms,
                            bool offline, tg_rl_lease_t *lease);
/** The database answered a lease: a->granted[d] is the whole need or 0. ADMITTED or REFUSED
 *  (the charge rolled back, slot_gen 0). */
tg_rl_result_t tg_rl_granted(tg_rl_t *rl, tg_rl_charge_t *ch, const tg_rl_lease_t *lease,
                             const tg_rl_answer_t *a, uint64_t now_ms);
/** The lease could not be made (no database): the charge stands if this instance's own use
 *  stays within the limit (result.local), else it is rolled back. */
tg_rl_result_t tg_rl_lease_failed(tg_rl_t *rl, tg_rl_charge_t *ch, const tg_rl_lease_t *lease,
                                  uint64_t now_ms);
/** Gives a whole charge back (the call was refused by another scope, or never ran). */
void tg_rl_uncharge(tg_rl_t *rl, tg_rl_charge_t *ch);
/**
 * The call's actual tokens replace its token charge (less: the difference is free again here;
 * more: charged, possibly as a debt). Returns how many tokens this instance gives back to the
 * database now (it keeps one slice spare; 0 none): the caller sends the release. Nothing happens
 * once the charge's window is over.
 */
uint64_t tg_rl_correct(tg_rl_t *rl, tg_rl_charge_t *ch, uint64_t actual_tokens, uint64_t now_ms);
/** The database's answer to giving back `tokens` of ch's window (a NULL: it failed, so they are
 *  still this instance's). */
void tg_rl_released(tg_rl_t *rl, const tg_rl_charge_t *ch, uint64_t tokens, const tg_rl_answer_t *a);

/** Folds a scope's view into a call's: per dimension the scope with the least remaining. */
void tg_rl_view_merge(tg_rl_view_t *into, const tg_rl_view_t *v);
/** OpenAI's duration format (Go's): "0s", "250ms", "1s", "59.5s", "6m0s", "1h0m0s". Returns the
 *  length written (out holds at least 24 bytes). */
size_t tg_rl_duration(char *out, size_t cap, uint64_t ms);
/** v in decimal; returns the length (out holds 21 bytes). */
size_t tg_rl_u64(char out[21], uint64_t v);
/** Retry-After of a refusal: whole seconds until the window ends, at least 1. */
uint32_t tg_rl_retry_after_s(uint64_t reset_ms);

#endif
