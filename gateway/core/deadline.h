/*
 * deadline.h - one-shot timers of any duration on an h2o evloop.
 *
 * h2o 2.2.5 timeouts have one fixed duration per list (h2o_timeout_t), and the
 * gateway's waits vary: curl's own timer, a Retry-After, a database job's
 * deadline, a health probe's jittered interval, a request's budget. A list of
 * duration 0 whose entries carry their absolute deadline in `registered_at`
 * fires each entry when that time comes, provided the entries stay sorted by
 * it (h2o_timeout_run stops at the first entry that is not due). tg_timers_t
 * is such a list; tg_deadline_arm keeps it sorted.
 *
 * Inserting scans from the back: new deadlines are usually the latest, so
 * arming is O(1) in the common case. Loop thread only. One tg_timers_t per
 * owner and loop (the owner disposes it with its loop); a deadline belongs to
 * one list at a time and must be cancelled before its memory goes.
 */
#ifndef TG_DEADLINE_H
#define TG_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

#include "h2o.h"

typedef struct tg_timers {
    h2o_loop_t *loop;
    h2o_timeout_t list; /* duration 0; entries sorted by registered_at (their deadline) */
} tg_timers_t;

typedef struct tg_deadline tg_deadline_t;
typedef void (*tg_deadline_cb)(tg_deadline_t *d);

struct tg_deadline {
    h2o_timeout_entry_t entry; /* registered_at holds the deadline in the loop's ms clock */
    tg_deadline_cb cb;
};

void tg_timers_init(tg_timers_t *t, h2o_loop_t *loop);
/** Every deadline of the list must have been cancelled or have fired. */
void tg_timers_dispose(tg_timers_t *t);

/** (Re)arms d to fire once, delay_ms from the loop's current time. A re-arm replaces the old one. */
void tg_deadline_arm(tg_timers_t *t, tg_deadline_t *d, uint64_t delay_ms, tg_deadline_cb cb);
/** Same with an absolute deadline on the loop's clock (h2o_now). */
void tg_deadline_arm_at(tg_timers_t *t, tg_deadline_t *d, uint64_t at_ms, tg_deadline_cb cb);
/** Idempotent; safe on a zeroed, never-armed deadline. */
void tg_deadline_cancel(tg_deadline_t *d);

static inline bool tg_deadline_armed(const tg_deadline_t *d)
{
    return h2o_timeout_is_linked((h2o_timeout_entry_t *)&d->entry);
}

/** The absolute deadline (h2o_now clock) of an armed deadline. */
static inline uint64_t tg_deadline_at(const tg_deadline_t *d)
{
    return d->entry.registered_at;
}

#endif
