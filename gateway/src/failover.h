/*
 * failover.h - the attempt planner of the failover engine.
 *
 * Pure logic: given a chain of targets, their breakers and the outcome of
 * each attempt, it answers "what next?": attempt target T (maybe as the
 * half-open probe), wait N ms then ask again, or fail with a final status.
 * The call's ATTEMPT and WAIT stages (attempt.c) drive it and do the I/O. Rules:
 *   - an open breaker is skipped with no I/O (event: skipped);
 *   - degraded targets are tried after the healthy ones;
 *   - at most max_attempts_per_target attempts per target (default 1);
 *   - 429 with Retry-After: a short wait may retry the same target when no
 *     other target is usable; a long one fails over; total waiting is capped;
 *   - context-length errors go to the chain's context fallback only;
 *   - a caller error (other 4xx) ends the plan with that error, no failover;
 *   - the request has a first-byte budget: each attempt's first-byte timeout
 *     is cut to what is left of it (a half-open probe's to probe_timeout_ms),
 *     waits never run past it, and the plan fails once it is spent;
 *   - a half-open target whose probe is out is tried as an extra probe when
 *     no other target is left, instead of failing the request.
 */
#ifndef TG_FAILOVER_H
#define TG_FAILOVER_H

#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "buf.h"
#include "config.h"
#include "outcome.h"

#define TG_PLAN_MAX_TARGETS  16
#define TG_PLAN_MAX_ATTEMPTS 32

typedef enum { TG_STEP_ATTEMPT, TG_STEP_WAIT, TG_STEP_FAIL } tg_step_kind_t;

/** One line of the attempt log (headers, final error, events). */
typedef struct tg_attempt_rec {
    const tg_model_cfg_t *target;
    bool skipped;         /* breaker open: no I/O */
    tg_attempt_out_t out; /* class + reason + status */
    uint32_t waited_ms;   /* Retry-After waits honoured after this failed attempt (tg_plan_waited) */
    uint64_t latency_us;
} tg_attempt_rec_t;

typedef struct tg_plan_opts {
    uint32_t max_attempts_per_target; /* 1 */
    uint32_t retry_wait_cap_ms;       /* 10000: total waiting for Retry-After */
    uint32_t short_wait_ms;           /* Retry-After up to this may retry the same target (2000) */
    uint32_t request_first_byte_ms;   /* the request's first-byte budget across the chain; 0 = none */
    uint64_t start_ms;                /* when the request started, on the clock of tg_plan_next's now */
} tg_plan_opts_t;

/** Why an attempt's first-byte timeout is shorter than its provider's. */
typedef enum {
    TG_CUT_NONE = 0,
    TG_CUT_BUDGET, /* what was left of the request's first-byte budget */
    TG_CUT_PROBE,  /* a half-open probe's probe_timeout_ms */
} tg_cut_t;

/*
 * tg_plan_init writes only what the planner reads before writing it (the per-target arrays up to
 * n, the counters and flags), not the whole struct: recs[] is filled as records are added and read
 * only below n_recs, and _caller_copy only once _caller_error points at it. Callers may keep
 * recs[] and n_recs in this order and place (call.c skips zeroing recs when reusing a call).
 */
typedef struct tg_plan {
    /* read-only for callers */
    tg_attempt_rec_t recs[TG_PLAN_MAX_ATTEMPTS];
    size_t n_recs;
    /* private */
    const tg_model_cfg_t *_targets[TG_PLAN_MAX_TARGETS];
    tg_breaker_t *_breakers[TG_PLAN_MAX_TARGETS];
    uint8_t _tries[TG_PLAN_MAX_TARGETS];
    int64_t _not_before_ms[TG_PLAN_MAX_TARGETS]; /* from Retry-After */
    bool _retry_ok[TG_PLAN_MAX_TARGETS];         /* a short Retry-After allows one more try */
    bool _skipped[TG_PLAN_MAX_TARGETS];          /* breaker said skip: not asked again */
    bool _busy[TG_PLAN_MAX_TARGETS];             /* skipped while half-open: an extra probe is possible */
    size_t _n;
    const tg_model_cfg_t *_ctx_fallback;
    tg_breaker_t *_ctx_fallback_breaker;
    bool _ctx_fallback_armed, _ctx_fallback_used;
    bool _done;
    tg_plan_opts_t _opts;
    uint64_t _waited_ms;
    int _cur; /* index of the target being attempted, -1 none */
    tg_admit_t _cur_admit;
    tg_cut_t _cur_cut;              /* why the current attempt's first-byte timeout was cut */
    uint64_t _deadline_ms;          /* start + budget; 0 = none */
    bool _budget_spent;             /* the plan ended because the budget ran out */
    tg_breaker_t *_pending_breaker; /* a started stream awaiting its verdict (tg_plan_settle) */
    tg_admit_t _pending_admit;
    const tg_classified_t *_caller_error; /* &_caller_copy when a caller error ended the plan */
    bool _served;
    tg_classified_t _caller_copy; /* the caller error's full outcome (message, type, code, param) */
} tg_plan_t;

typedef struct tg_step {
    tg_step_kind_t kind;
    const tg_model_cfg_t *target; /* ATTEMPT */
    bool probe;                   /* ATTEMPT: this is a half-open probe (or an extra one) */
    uint32_t first_byte_ms;       /* ATTEMPT: the first-byte timeout this attempt may use: the
                                     provider's first_byte_ms, cut to what is left of the request's
                                     budget and, for a probe, to its breaker's probe_timeout_ms */
    tg_cut_t cut;                 /* ATTEMPT: why first_byte_ms is below the provider's */
    uint32_t wait_ms;             /* WAIT: never past the budget */
} tg_step_t;

/** `breakers[i]` is the breaker of `targets[i]` (callers use tg_breaker_get(target_key)). */
void tg_plan_init(tg_plan_t *p, const tg_model_cfg_t *const *targets, tg_breaker_t *const *breakers, size_t n,
                  const tg_model_cfg_t *ctx_fallback, tg_breaker_t *ctx_fallback_breaker,
                  const tg_plan_opts_t *opts);
/** The first-byte budget of a request routed to `route_name`: the chain's own
 *  request_first_byte_ms when the name is a chain that sets it, else the top-level one. */
uint32_t tg_plan_request_budget(const tg_config_t *cfg, const char *route_name);

/** Next step. Skips of open breakers are recorded (recs[].skipped) as they happen. FAIL once the
 *  request's first-byte budget is spent (tg_plan_budget_spent). */
tg_step_t tg_plan_next(tg_plan_t *p, uint64_t now_ms);
/**
 * Records the outcome of the attempt returned by the last tg_plan_next; updates its breaker,
 * observes tollgate_attempt_duration_seconds{target,outcome} and, on success, feeds
 * latency_us to the breaker's latency tracker when the provider has latency_threshold_ms.
 * latency_us is the time to the first byte for streams, to the whole answer otherwise.
 */
void tg_plan_record(tg_plan_t *p, uint64_t now_ms, const tg_classified_t *out, uint64_t latency_us);
/**
 * Streams: the first byte ends failover, so the attempt is recorded as served (events, latency,
 * histogram) like tg_plan_record does, but the breaker's verdict waits for the stream's end: a
 * provider that cuts its streams half-way must still trip its breaker, and a half-open probe is
 * only proven by a whole answer. Follow with exactly one tg_plan_settle.
 */
void tg_plan_record_stream_start(tg_plan_t *p, uint64_t now_ms, const tg_classified_t *out,
                                 uint64_t latency_us);
/** The verdict on a started stream: TG_RESULT_SUCCESS (ended whole), TG_RESULT_FAILURE (broke
 *  mid-way), TG_RESULT_NEUTRAL (the client left). No-op when nothing is pending, so it may be
 *  called again on any exit path. */
void tg_plan_settle(tg_plan_t *p, uint64_t now_ms, tg_result_t r);
/** The request waited `ms` (a WAIT step was honoured). The wait counts against the plan's cap
 *  and, for the events, is added to the last failed attempt (recs[].waited_ms; a skip adds none). */
void tg_plan_waited(tg_plan_t *p, uint32_t ms);

/**
 * The final error when the plan failed: HTTP status (a caller's 4xx as is, else 503), an
 * OpenAI-shaped JSON body naming each attempt's reason (and the spent budget when that ended
 * it), and a Retry-After in seconds (> 0 only when every breaker of the chain is open; 0 = none).
 */
TG_MUST_CHECK int tg_plan_final_error(const tg_plan_t *p, uint64_t now_ms, int *status, tg_buf_t *body,
                                      uint32_t *retry_after_s);
/** The plan failed because the request's first-byte budget ran out. */
bool tg_plan_budget_spent(const tg_plan_t *p);

/** "2" and "server_error" style header values: number of real attempts, reason of the first failover. */
size_t tg_plan_attempt_count(const tg_plan_t *p);
const char *tg_plan_fallback_reason(const tg_plan_t *p); /* NULL when served by the first target */

/**
 * Emits the plan's failover events (events.h) once it has ended (served or failed), one per hop:
 * `skipped` per skipped target, `failed` per failed attempt (a caller error is no hop), from =
 * that target, to = the target tried next ("" when none). `served` is set on the row whose `to`
 * then served the request (that row is the successful fallback), so a request served by its
 * first target emits nothing and a failed plan has no served row. added_latency_us = the failed
 * attempt's latency plus the waits after it (0 for skips): the rows of a request add up to its
 * added latency. at_unix_ms 0 = now. Thread: any.
 */
void tg_plan_emit_events(const tg_plan_t *p, const char *request_id, int64_t tenant_id, const char *chain,
                         int64_t at_unix_ms);

#endif
