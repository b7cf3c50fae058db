/*
 * ledger_call.h - what one call holds of the credit ledger (ledger.c), embedded in the call.
 *
 * Filled at RESERVE (the prices in effect for each target the route may use, the estimated
 * maximum cost, the hold against the tenant's lease account) and closed at SETTLE (the charge,
 * the usage record). Loop thread of the call only, except `wake`, which another worker's loop
 * sends when the lease the call waits for is answered.
 */
#ifndef TG_LEDGER_CALL_H
#define TG_LEDGER_CALL_H

#include <stdbool.h>
#include <stdint.h>

#include "h2o.h"
#include "h2o/multithread.h"

#include "cost.h"
#include "lease.h"
#include "failover.h"

/* The prices of every target a call may be served by: the route's targets and its context
 * fallback (the last slot). */
#define TG_LEDGER_PRICE_SLOTS (TG_PLAN_MAX_TARGETS + 1)

typedef struct tg_ledger_price {
    int64_t id;
    tg_unit_prices_t unit;
} tg_ledger_price_t;

typedef struct tg_ledger_call {
    bool started;  /* RESERVE has priced the call */
    bool reserved; /* `hold` is a hold to settle (amount 0: the call reserves nothing) */
    bool waiting;  /* queued on the account until its lease is answered (holds a reference) */
    bool asking;   /* an exact reservation is in flight (holds a reference) */
    bool settled;  /* SETTLE has run: a late answer only gives back what it got */
    bool exact_refused;
    int wake_err;                   /* the lease open failed: RESERVE fails with it */
    h2o_multithread_receiver_t *rx; /* the call's loop, for the wake */
    h2o_multithread_message_t wake;
    struct tg_ledger_call *next_waiter;
    int64_t amount;      /* the estimated maximum cost */
    uint64_t prompt_est; /* prompt tokens estimated from the request */
    tg_hold_t hold;
    tg_ledger_price_t price[TG_LEDGER_PRICE_SLOTS];
    int64_t cost; /* computed once, for the headers and the record */
    bool cost_known;
    bool cost_estimated; /* tokens are an estimate (a cut stream without a report) */
} tg_ledger_call_t;

#endif
