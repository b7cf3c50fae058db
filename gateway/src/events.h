/*
 * events.h - failover events: one row per hop of a request, each skip and each
 * failed attempt; the hop into the target that then served is flagged
 * `served` (that row is the successful fallback). Emitting copies the event
 * into a bounded queue (never blocks; a full queue drops and counts); a writer
 * thread stores them in PostgreSQL (failover_events) in batches (COPY, up to
 * 4096 rows, at least every ~100 ms while any is queued), off the request path.
 * No field can hold request, answer or provider text (chain and targets come from the config,
 * reasons are outcome.c's stable words), so events are written for zero-retention calls too
 * (retention.h).
 */
#ifndef TG_EVENTS_H
#define TG_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Rows written before migration 0002 may also have kind "fallback" (a per-request summary row,
 * no longer written: the served hop carries it). */
typedef enum { TG_EV_SKIPPED = 0, TG_EV_FAILED = 1 } tg_event_kind_t;

typedef struct tg_failover_event {
    tg_event_kind_t kind;
    char request_id[40];
    int64_t tenant_id; /* 0 = none */
    char chain[64];
    char from_target[128]; /* target key "<provider>/<upstream>" */
    char to_target[128];   /* "" when none */
    char reason[40];
    int status;                /* upstream status, 0 none */
    bool served;               /* to_target then served the request */
    uint64_t added_latency_us; /* this hop's attempt plus the waits after it; 0 for a skip */
    int64_t at_unix_ms;
} tg_failover_event_t;

const char *tg_event_kind_name(tg_event_kind_t k);

/**
 * Starts the writer thread (conninfo NULL: the queue works but nothing is stored).
 * queue_cap 0 = 4096. Before start (or after stop) emit only counts metrics.
 * Thread: main. Returns 0, TG_ENOMEM, or TG_EINTERNAL when already running.
 */
int tg_events_start(const char *conninfo, size_t queue_cap);
void tg_events_stop(void); /* flushes what is queued (gives up on a DB still down), joins */
/** Copies the event into the queue, never blocks: a full queue drops it
 *  (tollgate_events_dropped_total). Counts tollgate_failovers_total{from,to,reason} for
 *  skipped/failed events that name a to_target. at_unix_ms 0 = now. Thread: any. */
void tg_events_emit(const tg_failover_event_t *ev);
/** Blocks (off-loop only) until everything emitted so far is written or given up on; tests.
 *  While the writer is paused, or the DB is down, it waits. */
void tg_events_flush(void);

/** Test hook: a paused writer takes nothing from the queue (so tests can fill it). */
void tg_events_pause(bool paused);
/** Test hook: copies the i-th queued event (0 = oldest) into *out; false when fewer are queued.
 *  Pause the writer first, or the event may already be taken. */
bool tg_events_peek(size_t i, tg_failover_event_t *out);

typedef struct tg_events_stats {
    uint64_t emitted; /* accepted into the queue */
    uint64_t written; /* stored (or, without a DB, taken by the writer) */
    uint64_t dropped; /* refused (queue full) or lost (rejected by the DB, DB down at stop) */
    size_t queued;
} tg_events_stats_t;

void tg_events_stats(tg_events_stats_t *out);

#endif
