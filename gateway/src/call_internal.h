/*
 * call_internal.h - the call object shared by the files of the request path (not a public
 * header: only call.c, request.c, policy.c, limit.c, ledger.c, settle.c, attempt.c, relay.c,
 * respond.c, models.c, credential.c, idempotency.c and money.c include it).
 *
 * One call per request (malloc'd, reference-counted, loop thread only). It moves through the
 * stages of pipeline.h; each file owns the stages named in its header. Lifetime:
 *   - the h2o request holds one reference through a request guard (reqguard.h) whose dispose
 *     callback always runs, whether the answer finished or the client left; so the call outlives
 *     every byte it handed to h2o_send;
 *   - an auth lookup in flight holds one (tg_auth_lookup has no cancel);
 *   - tg_call_resume holds one while a callback moves the call on, so a synchronous dispose
 *     inside h2o_send cannot free the call under its feet.
 * A transfer holds no reference: whoever makes the call give up the client (tg_call_gone,
 * tg_call_abort) cancels the transfer first, and tg_transfer_cancel guarantees no callback runs
 * after it. `req` is NULL once the client is gone or the final response was handed to h2o;
 * nothing touches h2o objects after that.
 */
#ifndef TG_CALL_INTERNAL_H
#define TG_CALL_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "auth.h"
#include "buf.h"
#include "config.h"
#include "deadline.h"
#include "failover.h"
#include "http.h"
#include "ledger_call.h"
#include "limit_hold.h"
#include "pipeline.h"
#include "providers/provider.h"
#include "reqguard.h"
#include "router.h"
#include "sse.h"
#include "upstream.h"
#include "worker.h"

/* Retry-After up to this may retry the same target when no other target is usable (failover.h). */
#define TG_CALL_SHORT_WAIT_MS 2000
/* Route-event comment lines collected before the stream is committed. */
#define TG_CALL_ROUTE_LOG_MAX 8192
/* Opening chunks held before the commit (a role, an empty content): a few hundred bytes each. */
#define TG_CALL_HELD_MAX 65536
/* An error body is only read for classification: the first part is enough. */
#define TG_CALL_ERROR_BODY_MAX 65536

typedef enum { TG_CALL_CHAT, TG_CALL_MODELS, TG_CALL_WALLET, TG_CALL_USAGE } tg_call_kind_t;

typedef struct tg_call {
    tg_pipeline_t pipe;
    int refs; /* loop thread only: no atomics needed */
    tg_call_kind_t kind;
    h2o_req_t *req; /* NULL once the client is gone or the final response was sent */
    tg_reqguard_t *guard;
    tg_worker_t *worker;
    h2o_linklist_t link; /* in the worker's list of live calls (drain ends them) */
    tg_config_t *cfg;    /* our reference: models/providers below are borrowed from it */
    char request_id[TG_REQUEST_ID_LEN + 1];
    uint64_t start_us;
    tg_principal_t principal;
    uint64_t admission_ns; /* AUTH, POLICY and LIMIT's own work (call.c, "timed") */
    int status;            /* status sent to the client; 0 none yet */
    /* what a failing stage wants said (the table's message when empty) */
    char err_msg[200];
    char err_param[128];

    /* the request */
    json_t *body;
    bool stream, client_usage, route_events;
    tg_route_t route;
    /* target i of the route runs on the tenant's own provider key (BYOK), not the platform's */
    bool target_byok[TG_PLAN_MAX_TARGETS];
    /* BYOK (credential.c): the tenant's sealed keys and the twins of the route's targets (NULL when
     * the call uses none); whether the running attempt, and the one that served, ran on the
     * tenant's key (the ledger charges a platform fee for those); BYOK attempts made */
    struct tg_cred_call *byok;
    bool attempt_byok, served_byok;
    uint8_t byok_attempts;
    /* the tenant's own chains (tchains.h): the snapshot ROUTE read (NULL none), whether it was
     * read, whether one of them routed the call, and that chain's request first-byte budget */
    struct tg_tchains *tchains;
    bool tchains_read, tchain_routed;
    uint32_t tchain_budget_ms;
    /* nothing of this call's content may be stored or logged (the tenant's policy, or tightened by
     * the x-tollgate-zero-retention header); decided in POLICY, read through retention.h */
    bool zero_retention;
    /* POLICY gave the request max_completion_tokens = the key's limit (policy.h) */
    bool policy_capped;
    /* a stage after PARSE changed c->body beyond what an adapter rewrites itself ("model",
     * "models", "stream"): the upstream body is serialised from the tree, not passed through from
     * the client's bytes (attempt.c) */
    bool body_rewritten;
    /* retention.c's own: what a stored call keeps (never filled for a zero-retention call) */
    bool rt_capture;   /* a stored_requests record will be written at LOG */
    bool rt_by_header; /* zero retention came from the header, not the tenant's policy */
    bool rt_request_truncated, rt_answer_truncated;
    uint32_t rt_removed; /* targets the zero-retention rule took out of the route */
    tg_buf_t rt_request; /* the client's body, capped */
    tg_buf_t rt_answer;  /* what the client received, capped */
    /* idempotency.c's own: the call's Idempotency-Key, its claim and a held answer (NULL: no key) */
    struct tg_idem *idem;
    uint32_t usage_limit; /* money.c: the page size GET /v1/usage asked for */
    /* the rate limits this call was charged on (limit.c: LIMIT, and the correction in SETTLE) */
    tg_limit_hold_t limit;
    /* the credit ledger's hold, prices and charge (ledger.c: RESERVE, SETTLE, the credit headers) */
    tg_ledger_call_t led;
    tg_breaker_t *breakers[TG_PLAN_MAX_TARGETS];
    tg_breaker_t *ctx_breaker;
    tg_plan_t plan;
    size_t recs_seen;   /* plan records already turned into route comments */
    uint64_t record_ms; /* when the last failure was recorded: the clock of the next ATTEMPT (0 none) */
    bool events_done;   /* the plan's failover events were emitted */
    bool plan_failed;   /* the plan ended without serving: the answer is worded from it */

    /* HTTP/1 hang-up detection before the answer starts (call.c) */
    h2o_timeout_entry_t poll_entry;
    /* stream output waiting for the end of this loop turn (relay.c) */
    tg_deadline_t flush_due;
    /* a Retry-After wait between attempts (attempt.c) */
    tg_deadline_t wait_due;
    uint32_t wait_ms;

    /* the current attempt */
    tg_transfer_t *transfer;
    bool attempt_open; /* started, outcome not yet recorded in the plan */
    const tg_model_cfg_t *target;
    const tg_adapter_t *adapter;
    uint64_t attempt_start_us;
    int up_status;
    char retry_after[64];
    bool has_retry_after;
    tg_buf_t body_buf; /* whole answer (non-stream) or error body */
    bool body_overflow;
    tg_sse_parser_t sse;
    bool sse_live;
    tg_stream_t *st;
    tg_resp_in_t resp_in;
    int stream_rc; /* failure seen while translating the stream (TG_E*), 0 none */
    tg_error_t stream_err;
    bool ended; /* the provider's end-of-stream signal was seen */
    char dropped[256];

    /* the answer */
    h2o_generator_t gen;
    bool committed;  /* response started: no failover any more */
    bool finishing;  /* everything is produced: FINAL once pending drained */
    bool final_sent; /* the last piece was handed to h2o */
    bool send_error; /* end with H2O_SEND_STATE_ERROR (the error event could not be written) */
    bool paused;
    tg_buf_t pending, inflight;
    tg_buf_t scratch; /* one spliced stream chunk (pass-through) */
    tg_buf_t held;    /* opening chunks with nothing for the client yet, until the commit */
    tg_buf_t route_log;
    const tg_model_cfg_t *served;
    tg_usage_t usage;
    bool usage_estimated;     /* completion_tokens counted from what reached the client */
    uint64_t delivered_chars; /* content and tool-argument characters relayed to the client */
    bool mid_stream_failed;
} tg_call_t;

/* ---- call.c: the object and its one way back in ---- */

/** A callback moves the call on: holds a reference, checks that the client is still here (the
 *  call goes to SETTLE when it is not), then resumes the pipeline at `next` (or fails with err).
 *  `next` RELAY after the call ended (a drained stream still writing its last piece) pumps the
 *  stream only. */
void tg_call_resume(tg_call_t *c, tg_stage_t next, int err);
/** The client is gone: stop every piece of work at once, then end the call (SETTLE, LOG). */
void tg_call_gone(tg_call_t *c);
void tg_call_ref(tg_call_t *c);
void tg_call_unref(tg_call_t *c);
/** Loop-thread timer lists of the request path (waits, end-of-turn flushes). */
tg_timers_t *tg_call_waits(tg_call_t *c);
tg_timers_t *tg_call_flushes(tg_call_t *c);
/** Records why a stage fails (the table's public message is used when msg is NULL). */
void tg_call_set_error(tg_call_t *c, const char *msg, const char *param);

/* ---- request.c ---- */
int tg_stage_parse(void *call);
int tg_stage_route(void *call);

/* ---- policy.c, limit.c, settle.c: the tenant's policy, limits and money ---- */
int tg_stage_policy(void *call);
int tg_stage_limit(void *call);
int tg_stage_reserve(void *call);
int tg_stage_settle(void *call);
/** The ledger's part of SETTLE, run early: just before an answer's last byte is handed to h2o
 *  (respond.c, relay.c), so the charge is journaled before the client can have the whole answer
 *  (a gateway killed after that replays it). Once per call; the SETTLE stage skips it then. */
void tg_settle_charge(tg_call_t *c);
/** SETTLE's part of the rate limits: the call's token charge becomes its actual usage (all of it
 *  back when nothing was served; the whole charge when no provider was tried). Once per call. */
void tg_limit_settle(tg_call_t *c);

/* ---- attempt.c ---- */
int tg_stage_attempt(void *call);
int tg_stage_wait(void *call);
/** Cancels the running transfer and wait; records a neutral outcome for an open attempt. */
void tg_attempt_stop(tg_call_t *c);
/** Frees what one attempt holds (adapter stream state, SSE parser, body buffer). */
void tg_attempt_reset(tg_call_t *c);
/** Records the current attempt's failure in the plan (the caller moves the call to ATTEMPT). */
void tg_attempt_failed(tg_call_t *c, const tg_classified_t *cls);
/** The attempt serves the client: plan, events, route comment. */
void tg_attempt_served(tg_call_t *c);
/** The plan's failover events, once (after it ended: served, failed or abandoned). */
void tg_attempt_plan_events(tg_call_t *c);
/** A route-event comment (x-tollgate-route-events), collected until the stream commits. */
void tg_attempt_route_comment(tg_call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- relay.c: streams ---- */
int tg_stage_relay(void *call);
/** Feeds upstream body bytes of a 2xx stream; returns as upstream on_data does. */
int tg_relay_feed(tg_call_t *c, const char *p, size_t n);
/** The stream's content is complete (why NULL), or it breaks after the first byte: an error
 *  event ends it, and provider_fault says whether the provider cut it (its breaker and a failover
 *  event, reason `why` as outcome.c words it, hear of it) or tollgate did (drain). The pump then
 *  hands over the last piece. */
void tg_relay_end(tg_call_t *c, const char *why, bool provider_fault);
/** Hands what is pending to h2o when h2o is ready; the last piece once finishing. */
void tg_relay_pump(tg_call_t *c);

/* ---- respond.c: whole answers and errors ---- */
/** RELAY of a non-stream call: translate the whole answer and send it (or fail over). */
int tg_respond_whole(tg_call_t *c);
void tg_respond_raw(tg_call_t *c, int status, const char *body, size_t len);
void tg_respond_error(tg_call_t *c, int err, const char *message, const char *param);
/** The pipeline's `fail`: answers err, or the plan's failure, or ends a started stream. */
void tg_respond_fail(void *call, int err);
void tg_respond_route_headers(tg_call_t *c);

/* ---- models.c ---- */
int tg_stage_models(void *call);

/* ---- money.c: GET /v1/wallet and GET /v1/usage ---- */
int tg_stage_wallet(void *call);
int tg_stage_usage(void *call);

#endif
