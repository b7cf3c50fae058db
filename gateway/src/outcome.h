/*
 * outcome.h - how an attempt ended: the one classification of the failover engine.
 *
 * Every attempt at a target ends in one outcome class (FAILOVER.md, "Outcome table"). Provider
 * adapters classify HTTP answers (provider.h, `classify`); everything else is classified here, by
 * constructors that fill a tg_classified_t with its class, status, stable reason and the
 * OpenAI-shaped error fields taken from the error table (err.h), so the call code never writes a
 * reason string or an error code by hand. The module also says what an outcome means to the
 * breaker (tg_outcome_breaker_result) and which TG_E* error a client gets when a single failed
 * attempt is the whole story (tg_outcome_client_err).
 *
 * Pure functions, no I/O and no globals: safe on any thread.
 */
#ifndef TG_OUTCOME_H
#define TG_OUTCOME_H

#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "err.h"

typedef enum {
    TG_OUTCOME_SUCCESS = 0,
    TG_OUTCOME_TRANSPORT,      /* connect error, reset, broken response: failover, counts */
    TG_OUTCOME_TIMEOUT,        /* connect/first-byte/idle/total timeout: failover, counts */
    TG_OUTCOME_SERVER,         /* 500 502 503 504 529 / overloaded: failover, counts */
    TG_OUTCOME_RATE_LIMITED,   /* 429 / RESOURCE_EXHAUSTED: failover honouring Retry-After, counts */
    TG_OUTCOME_MISCONFIGURED,  /* 401 403 404 / model not found: failover, opens the breaker at once */
    TG_OUTCOME_CONTEXT_LENGTH, /* context window exceeded: only to the larger-context fallback, not counted */
    TG_OUTCOME_CALLER,         /* any other 4xx: the caller's error, returned as is, not counted */
} tg_outcome_class_t;

/** "success", "server_error", "rate_limited", ...: stable (metrics label, logs). */
const char *tg_outcome_name(tg_outcome_class_t c);

/** The full outcome of one attempt. */
typedef struct tg_classified {
    tg_outcome_class_t cls;
    int status;             /* upstream HTTP status; 0 for transport/timeouts */
    int64_t retry_after_ms; /* -1: none given */
    int err;                /* TG_E* a client sees when this failure is the whole answer (0: none;
                               set for failures below HTTP, see tg_outcome_client_err) */
    char reason[40];        /* short stable reason: "http_503", "overloaded", "timeout_first_byte" ... */
    /* normalised OpenAI-shaped error fields, from the provider's body where it had one */
    char type[48];
    char code[64];
    char param[64];
    char message[512];
} tg_classified_t;

/** What the attempt log keeps of an outcome: the headers, the final error and the events need no
 *  more (failover.h keeps 32 of these per plan). */
typedef struct tg_attempt_out {
    tg_outcome_class_t cls;
    int status;      /* upstream HTTP status; 0 for transport/timeouts/skips */
    int err;         /* as tg_classified_t.err */
    char reason[40]; /* as tg_classified_t.reason */
} tg_attempt_out_t;

/** What the breaker records for an outcome of this class. */
tg_result_t tg_outcome_breaker_result(tg_outcome_class_t c);

/* ---- constructors: each one fills the whole struct ---- */

/** Start of a classification: class, status and reason; no Retry-After, empty error fields. */
void tg_outcome_init(tg_classified_t *out, tg_outcome_class_t cls, int status, const char *reason);

/** The attempt served: reason "ok", the upstream's status. */
void tg_outcome_success(tg_classified_t *out, int status);

/** The client left while the attempt ran: neutral for the breaker, reason "client_gone". */
void tg_outcome_client_gone(tg_classified_t *out);

/**
 * The request cannot be expressed for this provider (an adapter's build refused it with
 * TG_EINVALID_REQUEST or TG_EUNSUPPORTED_PARAM): the caller's 400, reason "invalid_request",
 * type and code from the error table, message `detail` when given (adapters write public
 * details) or the table's.
 */
void tg_outcome_caller_error(tg_classified_t *out, int tg_err, const char *detail);

/** Failures of our own before any I/O with the provider. */
typedef enum {
    TG_INTERNAL_NO_ADAPTER,   /* "no_adapter": no adapter for the provider's kind */
    TG_INTERNAL_BUILD_FAILED, /* "build_failed": the adapter could not build the request */
    TG_INTERNAL_START_FAILED, /* "start_failed": the transfer could not start */
} tg_internal_t;

void tg_outcome_internal(tg_classified_t *out, tg_internal_t why);

/**
 * A transfer that ended below HTTP (rc from upstream.h's on_done: TG_EUPSTREAM_UNREACHABLE,
 * TG_EUPSTREAM_TIMEOUT with its kind, TG_EUPSTREAM_PROTOCOL, TG_ESTREAM_BROKEN, anything else).
 * `answered`: the response head had arrived. A connection that fails after the provider
 * answered is not a connect error: it is "upstream_closed" (the peer closed or reset it
 * mid-body), whatever curl code it came with.
 *   before the head: TG_EUPSTREAM_UNREACHABLE -> "connect_error", timeout -> "timeout_<kind>",
 *                    TG_EUPSTREAM_PROTOCOL -> "protocol_error", TG_ESTREAM_BROKEN ->
 *                    "stream_broken", else "transport_error";
 *   after the head:  timeout -> "timeout_<kind>", TG_EUPSTREAM_PROTOCOL -> "protocol_error",
 *                    else "upstream_closed".
 * Status 0; type/code/message from the error table.
 */
void tg_outcome_transport(tg_classified_t *out, int tg_err, const char *timeout_kind, bool answered);

/** A whole (non-stream) 2xx answer that did not arrive whole or cannot be used:
 *  too_large -> "response_too_large"; else rc != 0 -> as tg_outcome_transport(rc, answered);
 *  else (it arrived and does not parse) -> "bad_response". */
void tg_outcome_answer_failure(tg_classified_t *out, int rc, const char *timeout_kind, bool too_large);

/**
 * A 2xx stream that did not end whole (before or after its first byte reached the client).
 * stream_rc: what the relay saw in the stream (0 none; TG_EUPSTREAM_FAILED: the provider's
 * own error event -> server_error "stream_error" with `status`; TG_ETOO_LARGE: an event over
 * max_sse_event_bytes -> "stream_event_too_large"; other < 0 -> "stream_malformed"). Else rc,
 * the transfer's end: != 0 -> tg_outcome_transport(rc, kind, answered = true); 0 -> the body
 * ended without the provider's end signal, "stream_truncated".
 * One rule for every provider kind: the reason depends on what happened, never on the kind.
 */
void tg_outcome_stream_failure(tg_classified_t *out, int stream_rc, int rc, const char *timeout_kind,
                               int status);

/** A first-byte timeout: true for "timeout_first_byte" (the planner renames the one of an attempt
 *  whose timeout the request's budget had cut, see tg_outcome_budget_cut). */
bool tg_outcome_is_first_byte_timeout(const tg_classified_t *out);

/** The request's first-byte budget ran out during this attempt (its timeout had been cut to what
 *  was left): still a timeout, reason "timeout_request_budget". */
void tg_outcome_budget_cut(tg_classified_t *out);

/** The same failure once the stream had reached the client: reason "mid_stream:<reason>" (the
 *  failover event and log of a broken stream). */
void tg_outcome_mid_stream(tg_classified_t *out);

/**
 * The TG_E* code of the client's answer when this failed attempt is the only thing that
 * happened (a chain of one, nothing skipped): TG_EUPSTREAM_TIMEOUT for a timeout,
 * TG_EUPSTREAM_UNREACHABLE for a connect error, TG_EUPSTREAM_PROTOCOL for any other failure
 * below HTTP; 0 when the planner's answer applies (an HTTP error from the provider, a caller
 * error, a stream error event).
 */
int tg_outcome_client_err(const tg_attempt_out_t *o);

/** The compact form of an outcome kept by the attempt log. */
void tg_outcome_compact(tg_attempt_out_t *dst, const tg_classified_t *src);

/** BYOK (credential.c): the tenant's own key failed. `rejected`: the provider answered `status`
 *  401/403 to it ("byok_key_rejected"); else it could not be opened or is gone
 *  ("byok_key_unusable"). With `fallback` (the tenant's policy allows the platform's key) it is a
 *  misconfigured target that fails over (to the same target on the platform key) and opens the
 *  credential's own breaker; without, it is the caller's error (TG_EBYOK_REJECTED 400,
 *  TG_EBYOK_UNUSABLE 422) and ends the plan with the table's words, none of the provider's. */
void tg_outcome_byok(tg_classified_t *out, bool rejected, int status, bool fallback);

#endif
