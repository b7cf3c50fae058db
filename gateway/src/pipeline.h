/*
 * pipeline.h - a call as a sequence of named stages, driven by one transition function.
 *
 * Pure logic, no I/O and no h2o: the call code (call.c) supplies one function per stage and
 * one `fail` function, and the engine moves the call along. Modelled on curl's multi_runsingle:
 * a stage variable and a loop that runs the current stage until one says "pending".
 *
 *   ADMIT → AUTH → PARSE → POLICY → ROUTE → LIMIT → RESERVE → ATTEMPT ⇄ WAIT → RELAY → SETTLE → LOG
 *
 * A stage returns one of:
 *   TG_STAGE_GO       go on: to the stage it named with tg_pipeline_goto, else the next one;
 *   TG_STAGE_PENDING  it started I/O; a callback later calls tg_pipeline_resume (call.c wraps
 *                     that in the one function that holds the call and checks the client);
 *   a TG_E* code      the call failed: `fail` answers the client once, and the call jumps to
 *                     SETTLE.
 * A NULL stage is skipped (GET /v1/models has no PARSE, ROUTE, ATTEMPT...).
 *
 * Guarantees, for every call that was started, whatever happens (served, caller error, chain
 * exhausted, client gone at any point, a mid-stream break, drain, out of memory in a stage):
 *   - SETTLE runs exactly once, then LOG exactly once, in that order, and nothing runs after
 *     LOG; stages before SETTLE never run again once SETTLE has started;
 *   - `fail` runs at most once;
 *   - a client that is gone (tg_pipeline_gone) sends the call to SETTLE at the next transition;
 *     a pending stage's I/O is cancelled by the caller before it declares the client gone;
 *   - a run that keeps moving without ever waiting (a stage bug: two stages sending the call to
 *     each other) ends with TG_EINTERNAL after a fixed number of transitions;
 *   - a resume while the engine is running (a callback fired synchronously inside a stage) is
 *     taken when that stage returns, not nested; a resume when nothing is pending is ignored
 *     (a late callback after the call ended).
 */
#ifndef TG_PIPELINE_H
#define TG_PIPELINE_H

#include <stdbool.h>

typedef enum tg_stage {
    TG_STAGE_ADMIT,
    TG_STAGE_AUTH,
    TG_STAGE_PARSE,
    TG_STAGE_POLICY,
    TG_STAGE_ROUTE,
    TG_STAGE_LIMIT,
    TG_STAGE_RESERVE,
    TG_STAGE_ATTEMPT,
    TG_STAGE_WAIT,
    TG_STAGE_RELAY,
    TG_STAGE_SETTLE,
    TG_STAGE_LOG,
    TG_STAGE_DONE
} tg_stage_t;

#define TG_STAGE_COUNT TG_STAGE_DONE

enum { TG_STAGE_GO = 0, TG_STAGE_PENDING = 1 };

typedef int (*tg_stage_fn)(void *ud);

typedef struct tg_pipeline_ops {
    tg_stage_fn stage[TG_STAGE_COUNT]; /* NULL: skipped */
    /** Answers the client with err (a TG_E* code) unless it is gone or already answered. */
    void (*fail)(void *ud, int err);
} tg_pipeline_ops_t;

typedef struct tg_pipeline {
    const tg_pipeline_ops_t *ops;
    void *ud;
    tg_stage_t stage;
    int err;      /* the first error a stage returned, 0 none */
    bool gone;    /* the client left: no stage before SETTLE runs again */
    bool pending; /* the current stage waits for a callback */
    /* private */
    bool _running, _woken, _failed;
    int _wake_err, _abort_err;
    tg_stage_t _jump, _wake_to;
} tg_pipeline_t;

/** Runs from ADMIT until a stage is pending or the call is DONE. */
void tg_pipeline_start(tg_pipeline_t *p, const tg_pipeline_ops_t *ops, void *ud);
/** Inside a stage that returns TG_STAGE_GO: where to go instead of the next stage. Ignored from
 *  SETTLE on (the end stages only move forward). */
void tg_pipeline_goto(tg_pipeline_t *p, tg_stage_t next);
/** A pending stage's callback: go on at `next`, or, with err < 0, fail with err. */
void tg_pipeline_resume(tg_pipeline_t *p, tg_stage_t next, int err);
/** While pending: the call is now in stage `s` without running it (a stream whose first chunk
 *  arrived inside ATTEMPT's transfer is in RELAY from then on). */
void tg_pipeline_enter(tg_pipeline_t *p, tg_stage_t s);
/** The client left. When idle, the call runs to its end now; when running, at the next step. */
void tg_pipeline_gone(tg_pipeline_t *p);
/** Ends the call with err (drain, abort): like a stage error, from outside the stages. */
void tg_pipeline_abort(tg_pipeline_t *p, int err);

static inline bool tg_pipeline_done(const tg_pipeline_t *p)
{
    return p->stage == TG_STAGE_DONE;
}

/** "ADMIT", "AUTH", ...: stable, for logs. */
const char *tg_stage_name(tg_stage_t s);

#endif
