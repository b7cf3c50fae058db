/*
 * breaker.h - one circuit breaker per target, shared by every thread and tenant.
 *
 * A pure state machine behind a tiny lock: callers pass the monotonic time in
 * milliseconds, so tests drive it with an injected clock. Closed: counted
 * failures in a row reach the threshold -> open. Open: every admit says skip
 * (no I/O) until open_ms has passed -> half-open. Half-open: exactly
 * `half_open_probes` callers are admitted as probes, everyone else skips;
 * a probe's success closes, its failure re-opens for another open_ms.
 * A probe holds its slot for a bounded lease (probe_timeout_ms, or the
 * stream's lease once it streams): a slot whose owner never reports is
 * taken back, so no breaker stays half-open forever.
 *
 * Breakers live in a process-wide registry keyed by "<provider>/<upstream>"
 * and are never freed before exit, so they survive config reloads and a
 * pointer to one may be kept anywhere.
 */
#ifndef TG_BREAKER_H
#define TG_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

typedef enum { TG_BREAKER_CLOSED = 0, TG_BREAKER_OPEN = 1, TG_BREAKER_HALF_OPEN = 2 } tg_breaker_state_t;

typedef enum {
    TG_ADMIT_SKIP = 0,  /* open (or half-open with its probe taken): skip this target */
    TG_ADMIT_YES = 1,   /* closed: go */
    TG_ADMIT_PROBE = 2, /* you are the half-open probe: report the result with tg_breaker_record */
    TG_ADMIT_EXTRA = 3, /* an extra probe of a half-open breaker whose probe is out
                           (tg_breaker_admit_extra): its result decides like a probe's */
} tg_admit_t;

/* Extra probes a half-open breaker lets through at once (tg_breaker_admit_extra). */
#define TG_BREAKER_MAX_EXTRA 16
/* A probe slot is presumed lost (its owner vanished without a result) this long after its
 * first-byte or stream lease ran out; the next admit then probes again. */
#define TG_BREAKER_LEASE_GRACE_MS 1000

typedef enum {
    TG_RESULT_SUCCESS = 0,
    TG_RESULT_FAILURE,      /* counted failure */
    TG_RESULT_FAILURE_OPEN, /* opens at once (401/403/404) */
    TG_RESULT_NEUTRAL,      /* neither (caller error, context length, cancelled): frees a probe slot */
} tg_result_t;

typedef struct tg_breaker tg_breaker_t;

/** Registry: finds or creates the breaker for `key`; `opts` are (re)applied. Thread: any. */
tg_breaker_t *tg_breaker_get(const char *key, const tg_breaker_opts_t *opts);
/** Finds an existing breaker, or NULL. */
tg_breaker_t *tg_breaker_find(const char *key);
/** Calls fn for every registered breaker (admin listing, metrics). */
void tg_breaker_foreach(void (*fn)(void *ud, tg_breaker_t *b), void *ud);

/** A breaker outside the registry (unit tests). */
tg_breaker_t *tg_breaker_create(const char *key, const tg_breaker_opts_t *opts);
void tg_breaker_destroy(tg_breaker_t *b);

const char *tg_breaker_key(const tg_breaker_t *b);
tg_admit_t tg_breaker_admit(tg_breaker_t *b, uint64_t now_ms);
/**
 * For a request that has no other usable target: PROBE when a half-open breaker has a free probe
 * slot, EXTRA when its probes are out (at most TG_BREAKER_MAX_EXTRA at once), else SKIP (closed
 * breakers are admitted by tg_breaker_admit; an open one skips). FAILOVER.md, "Half-open and the
 * last usable target".
 */
tg_admit_t tg_breaker_admit_extra(tg_breaker_t *b, uint64_t now_ms);
/** A probe (PROBE or EXTRA) whose stream has started holds its slot until now + lease_ms (the
 *  attempt's total timeout) instead of its first-byte lease. */
void tg_breaker_probe_streaming(tg_breaker_t *b, uint64_t now_ms, uint64_t lease_ms);
void tg_breaker_record(tg_breaker_t *b, uint64_t now_ms, tg_admit_t how_admitted, tg_result_t r);
/** State as of now (an open breaker past open_ms reports half-open). */
tg_breaker_state_t tg_breaker_state(tg_breaker_t *b, uint64_t now_ms);
/** Milliseconds until an open breaker lets a probe through (0 if not open). */
uint64_t tg_breaker_retry_in_ms(tg_breaker_t *b, uint64_t now_ms);
void tg_breaker_reset(tg_breaker_t *b);

/** Health probe results: a failure counts like a request failure; a success on an open
 *  breaker brings its half-open probe forward (the next admit is the probe). */
void tg_breaker_health(tg_breaker_t *b, uint64_t now_ms, bool ok);

/** Latency tracking (TTFT for streams): degraded while the recent latency is above threshold_ms. */
void tg_breaker_latency(tg_breaker_t *b, uint64_t latency_us, uint32_t threshold_ms);
bool tg_breaker_is_degraded(tg_breaker_t *b);
/** The same with an explicit clock (the planner and tests use these). Recent latency is an EWMA
 *  (new sample weighs 1/4); degraded above threshold_ms, restored below 80% of it (hysteresis);
 *  a degraded mark not confirmed by a sample for open_ms expires, so the target is measured
 *  again. The no-`now` variants use the latest time the breaker has seen. threshold 0 = never. */
void tg_breaker_latency_at(tg_breaker_t *b, uint64_t now_ms, uint64_t latency_us, uint32_t threshold_ms);
bool tg_breaker_is_degraded_at(tg_breaker_t *b, uint64_t now_ms);
/** The current latency average in microseconds (0 = no sample). */
uint64_t tg_breaker_latency_us(tg_breaker_t *b);

const char *tg_breaker_state_name(tg_breaker_state_t s);
/** Appends {"target":..,"state":..,"consecutive_failures":..,"degraded":..,"retry_in_ms":..}. */
TG_MUST_CHECK int tg_breaker_to_json(tg_breaker_t *b, uint64_t now_ms, tg_buf_t *out);

#endif
