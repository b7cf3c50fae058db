/*
 * limit_hold.h - what one call holds of its rate limits (the LIMIT stage, limit.c): its charge on each
 * scope (its API key, its tenant), the lease it waits for, and the view its headers show.
 * call_internal.h embeds one per call, zeroed with the call; only limit.c touches it.
 */
#ifndef TG_LIMIT_HOLD_H
#define TG_LIMIT_HOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "ratelimit.h"

typedef struct tg_limit_hold {
    tg_rl_charge_t charges[TG_RL_SCOPES]; /* by tg_rl_kind_t; slot_gen 0: nothing charged */
    tg_rl_lease_t lease;                  /* of scope `next`, while waiting */
    tg_rl_result_t answer;                /* the lease's answer, for the stage's next run */
    tg_rl_view_t view;                    /* what the x-ratelimit-* headers say */
    uint8_t next;                         /* the scope LIMIT handles next */
    bool started;                         /* some limit applies: SETTLE has work */
    bool waiting;                         /* a lease of scope `next` is in flight */
    bool answered;                        /* ... and has come back */
    bool settled;                         /* SETTLE ran: a late answer gives its charge back */
    bool local;                           /* admitted without the database (it was down) */
    const char *refused;                  /* the limit that refused ("key_requests"...), or NULL */
    uint64_t tokens;                      /* counted at admission (0: no token limit applies) */
    uint64_t prompt_tokens;               /* the prompt's part of it (estimate.h) */
} tg_limit_hold_t;

#endif
