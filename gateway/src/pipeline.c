/*
 * pipeline.c - the transition function of a call (see pipeline.h for the rules it keeps).
 */
#include "pipeline.h"

#include <stddef.h>

#include "err.h"

static const char *const names[] = {"ADMIT",   "AUTH", "PARSE", "POLICY", "ROUTE", "LIMIT", "RESERVE",
                                    "ATTEMPT", "WAIT", "RELAY", "SETTLE", "LOG",   "DONE"};

const char *tg_stage_name(tg_stage_t s)
{
    return (unsigned)s <= TG_STAGE_DONE ? names[s] : "UNKNOWN";
}

/* An error ends the stages before SETTLE; `fail` speaks for the call once. */
static void fail_to_settle(tg_pipeline_t *p, int err)
{
    if (p->err == 0)
        p->err = err;
    if (!p->_failed) {
        p->_failed = true;
        if (!p->gone)
            p->ops->fail(p->ud, err);
    }
    p->stage = TG_STAGE_SETTLE;
}

/* Transitions of one run before a stage bug (two stages sending the call to each other) is
 * declared: far above what a plan's attempts need, since waits and transfers return pending. */
#define TG_PIPELINE_MAX_STEPS 1024

static void run(tg_pipeline_t *p)
{
    p->_running = true;
    for (unsigned steps = 0; p->stage != TG_STAGE_DONE; steps++) {
        if (steps >= TG_PIPELINE_MAX_STEPS && p->stage < TG_STAGE_SETTLE)
            fail_to_settle(p, TG_EINTERNAL);
        if (p->_abort_err < 0 && p->stage < TG_STAGE_SETTLE)
            fail_to_settle(p, p->_abort_err);
        if (p->gone && p->stage < TG_STAGE_SETTLE)
            p->stage = TG_STAGE_SETTLE;
        tg_stage_t s = p->stage;
        tg_stage_fn fn = p->ops->stage[s];
        p->_jump = TG_STAGE_DONE; /* "none": DONE is never a jump target before LOG */
        p->_woken = false;
        int rc = fn != NULL ? fn(p->ud) : TG_STAGE_GO;
        if (rc == TG_STAGE_PENDING && s < TG_STAGE_SETTLE) {
            if (!p->_woken && !p->gone && p->_abort_err == 0) {
                p->pending = true;
                p->_running = false;
                return;
            }
            /* its callback already came, inside the stage (or the call ended meanwhile: the top
             * of the loop takes an abort or a departed client) */
            if (!p->_woken)
                continue;
            if (p->_wake_err < 0 && !p->gone)
                fail_to_settle(p, p->_wake_err);
            else
                p->stage = p->_wake_to;
            continue;
        }
        if (rc < 0 && s < TG_STAGE_SETTLE) {
            fail_to_settle(p, rc);
            continue;
        }
        /* GO (or anything from the end stages, which cannot wait or fail the call) */
        if (s < TG_STAGE_SETTLE && p->_jump != TG_STAGE_DONE)
            p->stage = p->_jump;
        else
            p->stage = (tg_stage_t)(s + 1);
    }
    p->_running = false;
}

void tg_pipeline_start(tg_pipeline_t *p, const tg_pipeline_ops_t *ops, void *ud)
{
    *p = (tg_pipeline_t){.ops = ops, .ud = ud, .stage = TG_STAGE_ADMIT};
    run(p);
}

void tg_pipeline_goto(tg_pipeline_t *p, tg_stage_t next)
{
    if (next < TG_STAGE_DONE)
        p->_jump = next;
}

void tg_pipeline_resume(tg_pipeline_t *p, tg_stage_t next, int err)
{
    if (next > TG_STAGE_SETTLE) /* the end stages are entered at SETTLE, never past it */
        next = TG_STAGE_SETTLE;
    if (p->_running) {
        if (!p->_woken) { /* the first callback wins, as a single pending operation has one */
            p->_woken = true;
            p->_wake_to = next;
            p->_wake_err = err;
        }
        return;
    }
    if (!p->pending || p->stage == TG_STAGE_DONE)
        return;
    p->pending = false;
    if (err < 0 && !p->gone)
        fail_to_settle(p, err);
    else
        p->stage = next;
    run(p);
}

void tg_pipeline_enter(tg_pipeline_t *p, tg_stage_t s)
{
    if (p->stage < TG_STAGE_SETTLE && s < TG_STAGE_SETTLE)
        p->stage = s;
}

void tg_pipeline_gone(tg_pipeline_t *p)
{
    p->gone = true;
    if (p->_running || p->stage == TG_STAGE_DONE)
        return;
    if (p->stage >= TG_STAGE_SETTLE && !p->pending)
        return;
    p->pending = false;
    run(p);
}

void tg_pipeline_abort(tg_pipeline_t *p, int err)
{
    if (p->stage >= TG_STAGE_SETTLE || err >= 0)
        return;
    if (p->_abort_err == 0)
        p->_abort_err = err;
    if (p->_running)
        return; /* taken at the next transition */
    p->pending = false;
    run(p);
}
