/*
 * lease.h - the in-memory lease engine: one tenant's credits as one gateway instance holds them.
 *
 * An instance leases a slice of a tenant's wallet from PostgreSQL (tollgate_lease_open: the slice
 * leaves the wallet's available credits, so no other instance can spend it) and reserves each
 * request's estimated maximum cost against it in memory, with no database round trip. Settling a
 * request charges its actual cost to the lease and frees the rest of its hold; the charge goes to
 * the group-committed settlement batch (tollgate_settle). billing/README.md has the whole protocol
 * and why no wallet is ever overspent.
 *
 * The engine is pure: it decides, the caller does the I/O. Every function takes `now` (milliseconds
 * of the caller's monotonic-enough clock, the same clock for every call on an account), and the
 * caller runs what tg_lease_next() asks (open, extend or close a lease in the database), then
 * reports the answer back (tg_lease_granted, tg_lease_refused, tg_lease_failed, tg_lease_extended).
 *
 * Thread: an account is not locked here; its owner serialises the calls on it (one account per
 * tenant per instance, behind the owner's lock or on one thread).
 */
#ifndef TG_BILLING_LEASE_H
#define TG_BILLING_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

/* Leases one account holds at once: the one being used, its renewal, and a few still draining
 * long requests. When all are taken, requests that find no room are reserved exactly. */
#define TG_LEASE_SLOTS 8

typedef struct tg_lease_opts {
    int64_t slice;             /* credits asked per lease (a larger request asks for its own size) */
    int64_t min_slice;         /* a smaller grant is refused: the tenant is then reserved exactly */
    uint32_t share_pct;        /* a lease takes at most this share of the available credits (1..100) */
    uint32_t ttl_ms;           /* a lease's life as the database grants it */
    uint32_t renew_pct;        /* ask for the next lease when the free room is below this % of slice */
    uint32_t drain_before_ms;  /* stop reserving against a lease this long before it expires */
    uint32_t renew_before_ms;  /* ask for a busy lease's successor this long before it drains */
    uint32_t extend_before_ms; /* extend a lease still holding requests this long before it expires */
    uint32_t idle_ms;          /* a lease nobody reserved against for this long is closed */
    uint32_t exact_ms;         /* after a refused or short grant: reserve exactly for this long */
} tg_lease_opts_t;

/** Sensible defaults for a slice (the config's billing.lease_credits). */
void tg_lease_opts_default(tg_lease_opts_t *o, int64_t slice);

typedef struct tg_lease {
    int64_t id;           /* the database's lease id; 0: the slot is free */
    int64_t amount;       /* granted */
    int64_t held;         /* reserved by requests in flight */
    int64_t charged;      /* settled against it */
    int64_t expires_ms;   /* the database's expiry, in the account's clock */
    int64_t last_used_ms; /* last reservation */
    uint32_t holds;       /* requests in flight */
    bool draining;        /* takes no new reservation; closed once its holds are settled */
    bool extending;       /* an extend is in flight */
} tg_lease_t;

typedef struct tg_lease_acct {
    int64_t tenant_id;
    tg_lease_t lease[TG_LEASE_SLOTS];
    bool asking;            /* an open is in flight */
    int64_t ask_amount;     /* what it asked */
    int64_t need;           /* the largest reservation that waits for a lease (0: none) */
    int64_t exact_until_ms; /* until then a reservation that finds no room is made exactly */
    int64_t grant_cap;      /* ... if it is larger than this (0: every reservation) */
    uint64_t asks;          /* opens asked so far: the idempotency key of the next */
    uint64_t retry_seq;     /* the key of the open in flight or failed */
    bool retry;             /* the next open reuses retry_seq (the last one failed) */
} tg_lease_acct_t;

void tg_lease_acct_init(tg_lease_acct_t *a, int64_t tenant_id);

/* A reservation. lease_id is the database lease it is held against: one of the account's, or a
 * per-request lease (exact reservation) opened by the caller. */
typedef struct tg_hold {
    int64_t lease_id;
    int64_t amount;
    bool exact;
    bool settled;
} tg_hold_t;

enum {
    TG_LEASE_HELD = 0,  /* *out holds `amount` against a lease: go */
    TG_LEASE_WAIT = 1,  /* no room yet; a lease is (about to be) asked: run tg_lease_next, retry on
                           its answer */
    TG_LEASE_EXACT = 2, /* the wallet is too small to lease: reserve this request in the database
                           (tollgate_lease_open for the request alone) and tg_lease_hold_exact it */
};

/**
 * Reserves `amount` (> 0, the request's estimated maximum cost) against the account's leases.
 * TG_LEASE_HELD, WAIT or EXACT as above; TG_EINVALID_REQUEST for a non-positive amount.
 */
TG_MUST_CHECK int tg_lease_reserve(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t amount, int64_t now,
                                   tg_hold_t *out);

/** An exact reservation the database granted (a per-request lease of `amount`). */
void tg_lease_hold_exact(tg_hold_t *out, int64_t lease_id, int64_t amount);

/**
 * Settles a hold: returns the charge to record, min(cost, what can cover it): the hold, plus (an
 * underestimated request) the free room of its lease; an exact hold covers only itself. The rest of
 * the hold is freed. Every hold is settled on every exit path (cost 0 to release it); the hold is
 * marked settled, so settling it again charges and frees nothing.
 */
int64_t tg_lease_settle(tg_lease_acct_t *a, tg_hold_t *h, int64_t cost, int64_t now);

typedef enum {
    TG_LEASE_NONE = 0,
    TG_LEASE_OPEN,   /* tollgate_lease_open(tenant, instance, key "<seq>", amount, ...) */
    TG_LEASE_EXTEND, /* tollgate_lease_extend(lease_id, ttl) */
    TG_LEASE_CLOSE,  /* tollgate_settle(..., close => {lease_id}) after every settlement before it */
} tg_lease_action_kind_t;

typedef struct tg_lease_action {
    tg_lease_action_kind_t kind;
    int64_t lease_id; /* EXTEND, CLOSE */
    int64_t amount;   /* OPEN: credits asked */
    uint64_t seq;     /* OPEN: its idempotency key's number */
} tg_lease_action_t;

/**
 * The next thing the database must do for this account, if any (call until TG_LEASE_NONE). A CLOSE
 * has already left the account; its database close must be committed after every charge the
 * account settled before it (the settlement writer queues it behind them). An OPEN is outstanding
 * until one of granted / refused / failed.
 */
/**
 * The CLOSE part of tg_lease_next alone, for a caller that looks at accounts no request drives (a
 * quiet tenant's lease would otherwise stay until it expires): the first lease that no request
 * holds and that drains or has idled for idle_ms leaves its slot; returns its id (0: none) and what
 * it did not charge in *unspent (may be NULL). The caller closes it in the database.
 */
int64_t tg_lease_take_closable(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now, int64_t *unspent);

tg_lease_action_kind_t tg_lease_next(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now,
                                     tg_lease_action_t *out);

/** The open was granted: lease `id` of `amount`, expiring at expires_ms in the account's clock: the
 * time the open was asked plus the ttl, so the engine's expiry is never later than the database's
 * (which counts from its own, later, transaction start). */
void tg_lease_granted(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t id, int64_t amount,
                      int64_t expires_ms, int64_t now);
/** The open was refused (the wallet's available credits are below the minimum lease). */
void tg_lease_refused(tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now);
/** The open failed (database unreachable): it is asked again, under the same key (it may have
 * been granted with its answer lost). Waiting requests fail or wait. */
void tg_lease_failed(tg_lease_acct_t *a);
/** An extend was answered: the lease now expires at expires_ms (0: it failed, or the lease had
 * ended; the expiry stays as it was). */
void tg_lease_extended(tg_lease_acct_t *a, int64_t id, int64_t expires_ms);

/** Credits the account can still reserve without asking (free room of usable leases). */
int64_t tg_lease_free(const tg_lease_acct_t *a, const tg_lease_opts_t *o, int64_t now);
/** Whether the account holds nothing (no lease, no hold, no ask): it may be dropped. */
bool tg_lease_idle(const tg_lease_acct_t *a);

#endif
