/*
 * memtrim.h - give memory back to the system once a worker goes idle after a burst.
 *
 * glibc keeps what a burst freed: small chunks (jansson trees, call buffers) sit in the bins of
 * each thread's arena and only the top of a heap is ever released on its own, so after 4,000
 * streams or 60 large bodies RSS stayed at its high-water mark. malloc_trim(0) returns every
 * whole free page of every arena (madvise), which is what brings RSS back.
 *
 * Each worker ticks once a second on its own loop. A worker that was busy (calls in flight at a
 * tick, or requests seen since the last one) and has then been idle for TG_MEMTRIM_IDLE_TICKS
 * ticks in a row trims once: never on the request path, never while its own calls run. One trim
 * covers every arena, so workers going idle together trim once between them. malloc_trim locks
 * each arena while it walks it: a busy worker may wait that long (bench/RESULTS.md) once per
 * burst.
 */
#ifndef TG_MEMTRIM_H
#define TG_MEMTRIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "h2o.h"

#define TG_MEMTRIM_TICK_MS    1000
#define TG_MEMTRIM_IDLE_TICKS 2
/* An idle worker trims this often even when it saw nothing (a safety net, nearly free when there is
 * nothing to give back). */
#define TG_MEMTRIM_PERIOD_MS 30000

/** One worker's view, advanced by tg_memtrim_tick (pure: no loop, no clock, no allocator). */
typedef struct tg_memtrim_state {
    bool busy;           /* the worker was busy since the last trim */
    unsigned idle_ticks; /* consecutive ticks with none */
    uint64_t last_trim_ms;
} tg_memtrim_state_t;

/** Records one tick (busy: calls in flight now, or requests since the last tick); true when the
 *  worker should trim now (the state then counts it as done). */
bool tg_memtrim_tick(tg_memtrim_state_t *s, bool busy, uint64_t now_ms);

/** Starts the trimmer on the calling worker thread's loop; `inflight` is that worker's count of
 *  calls in flight, read on the loop only. Once per worker thread; it lives as long as the loop. */
void tg_memtrim_start(h2o_loop_t *loop, const size_t *inflight);

/** Counts a request on the calling worker thread, so that one that came and went between two
 *  ticks still marks the worker busy. One thread-local increment; harmless if not started. */
void tg_memtrim_note(void);

/** Stops the calling thread's trimmer (before its loop is torn down). Harmless if not started. */
void tg_memtrim_stop(void);

#endif
