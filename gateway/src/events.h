/*
 * events.h - failover events: every skip, failed attempt and successful
 * fallback. Emitting copies the event into a bounded queue (never blocks; a
 * full queue drops and counts); a writer thread inserts them into
 * PostgreSQL (failover_events) in batches, off the request path.
 */
#ifndef TG_EVENTS_H
#define TG_EVENTS_H

#include <stdint.h>

#include "buf.h"

typedef enum { TG_EV_SKIPPED = 0, TG_EV_FAILED = 1, TG_EV_FALLBACK = 2 } tg_event_kind_t;

typedef struct tg_failover_event {
    tg_event_kind_t kind;
    char request_id[40];
    int64_t tenant_id; /* 0 = none */
    char chain[64];
    char from_target[128]; /* target key "<provider>/<upstream>" */
    char to_target[128];   /* "" when none */
    char reason[40];
    int status;                /* upstream status, 0 none */
    uint64_t added_latency_us; /* time spent before the serving attempt */
    int64_t at_unix_ms;
} tg_failover_event_t;

const char *tg_event_kind_name(tg_event_kind_t k);

/** Starts the writer thread (conninfo NULL: events are only counted). */
int tg_events_start(const char *conninfo, size_t queue_cap);
void tg_events_stop(void); /* flushes what is queued, joins */
void tg_events_emit(const tg_failover_event_t *ev);
/** Blocks (off-loop only) until everything emitted so far is written; tests. */
void tg_events_flush(void);

#endif
