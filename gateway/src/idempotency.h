/*
 * idempotency.h - the Idempotency-Key of POST /v1/chat/completions (Stripe's semantics and the
 * IETF draft draft-ietf-httpapi-idempotency-key-header): a retry with the same key is never run,
 * and so never charged, twice.
 *
 * The key is scoped to the tenant (not the API key: a client that rotates its key between two
 * tries still gets the first answer, and the money is the tenant's either way), 1 to 200 printable
 * ASCII bytes without spaces, bare or as a structured-field string ("..."). It lives
 * idempotency.ttl_ms (24 h) from its claim in `idempotency_keys` (migration 0009).
 *
 * Where: the claim runs in the RESERVE slot, before the reservation (tg_stage_idem_reserve): after
 * PARSE, POLICY, ROUTE and LIMIT, so a request refused by any of those (a bad body, a model the
 * key may not use, a rate limit) never takes the key, and a retry that is refused never costs the
 * database more than the refusal did. The claim is one statement through the worker's async pool
 * (tollgate_idempotency_claim: INSERT ... ON CONFLICT DO NOTHING, else the row locked): exactly one
 * call, on any gateway sharing the database, gets its own request id back and runs. Every other
 * call with the key gets:
 *   - a different body (the keyed BLAKE2b-256 of the canonical body differs): 422
 *     idempotency_key_reused;
 *   - the first still running: 409 idempotency_key_in_progress;
 *   - the first finished with a stored answer: that answer again, status, body and the headers that
 *     describe it (model, provider, attempts, fallback reason, dropped params, Retry-After), plus
 *     `idempotent-replayed: true` and `x-tollgate-replay-of: <the first request id>`; nothing runs,
 *     nothing is charged;
 *   - the first finished without one: 409 idempotency_key_not_replayable saying why: zero retention
 *     (nothing of such a call is stored), a stream (a stream is not recorded, and a whole answer
 *     cannot be replayed as one), an answer above idempotency.max_answer_bytes, or a client that
 *     left before its answer;
 *   - the first interrupted (its gateway died: the running lease, idempotency.running_lease_ms,
 *     has passed): 409 idempotency_key_not_replayable; it is not run again before the key expires,
 *     since the interrupted call may have been charged.
 * A claimed call that ends before any attempt was sent upstream (402 from RESERVE, a drain, every
 * target's breaker open) releases the key: nothing ran, nothing was charged, a retry runs anew.
 * Otherwise the answer is recorded before it is sent (the answer waits for one UPDATE, so that a
 * retry made the moment the answer arrives finds it): errors too, unless the call is zero-retention
 * (then only the reason). A stream is marked done at LOG.
 *
 * Threads: the call functions run on the call's loop thread; the purge on worker 0's loop.
 */
#ifndef TG_IDEMPOTENCY_H
#define TG_IDEMPOTENCY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "h2o.h"
#include "pgpool.h"

struct tg_call;

#define TG_IDEM_HEADER  "idempotency-key"
#define TG_IDEM_KEY_MAX 200 /* bytes, as a top-up's key (docs/CONVENTIONS.md) */
#define TG_IDEM_FP_HEX  64  /* BLAKE2b-256 in hex */

/* ---- pure parts (unit.idempotency) ---- */

/** The header's value (len bytes) as a key: a bare token or a structured-field string ("..."),
 *  1 to TG_IDEM_KEY_MAX printable ASCII bytes without spaces, quotes or backslashes. Writes it,
 *  NUL-terminated, into out (TG_IDEM_KEY_MAX + 1 bytes). 0, or TG_EINVALID_REQUEST. */
int tg_idem_key_parse(const char *value, size_t len, char out[TG_IDEM_KEY_MAX + 1]);

/** The fingerprint of a request body: BLAKE2b-256, keyed with `key` (the deployment's pepper, so
 *  that a short prompt cannot be guessed from its hash), of the body's canonical JSON (keys sorted,
 *  no spaces, escapes normalised), in lower-case hex. 0, or TG_ENOMEM. */
int tg_idem_fingerprint(const json_t *body, const uint8_t key[32], char hex[TG_IDEM_FP_HEX + 1]);

/** What the claim's row means for the call that asked. */
typedef enum {
    TG_IDEM_RUN,         /* claimed: this call runs */
    TG_IDEM_MISMATCH,    /* the key was used with another body: 422 */
    TG_IDEM_IN_PROGRESS, /* the first call is still running: 409 */
    TG_IDEM_INTERRUPTED, /* the first call's lease passed without an end: 409 */
    TG_IDEM_REPLAY,      /* the stored answer is sent again */
    TG_IDEM_NO_ANSWER    /* finished, nothing stored to replay: 409 */
} tg_idem_verdict_t;

typedef struct tg_idem_row {
    const char *request_id;  /* who claimed it */
    const char *fingerprint; /* hex */
    bool running;
    bool lapsed;     /* running past its lease */
    bool has_answer; /* done with a stored answer */
} tg_idem_row_t;

tg_idem_verdict_t tg_idem_verdict(const tg_idem_row_t *row, const char *request_id, const char *fingerprint);

/** The 409 message for a finished key without a stored answer (reason as stored: zero_retention,
 *  stream, too_large, client_gone; anything else: a generic one). */
const char *tg_idem_no_answer_msg(const char *reason);

/** Whether a response header is part of a recorded answer (name lower-case, len bytes). */
bool tg_idem_header_kept(const char *name, size_t len);

/* ---- the call (loop thread) ---- */

/** The RESERVE slot of a chat call: the claim when the request has an Idempotency-Key (pending on
 *  the database; a bad key is 400 naming the header), then tg_stage_reserve. */
int tg_stage_idem_reserve(void *call);
/** A whole answer is about to be sent (respond.c, with c->req already NULL): true when the call
 *  holds a key, in which case the answer is recorded (or the key released) first and sent when
 *  the database answered, by this module. */
bool tg_idem_hold(struct tg_call *c, h2o_req_t *req, int status, const char *body, size_t len);
/** The same for an error answer (the table's body for err, message and param as tg_http_send_error
 *  words them, Retry-After as it adds it). */
bool tg_idem_hold_error(struct tg_call *c, h2o_req_t *req, int err, const char *message, const char *param,
                        unsigned retry_after_s);
/** LOG: a claimed key whose answer was not recorded yet (a stream, a client that left) is marked
 *  done, or released when nothing was sent upstream. */
void tg_idem_finish(struct tg_call *c);
/** For the access log: "-", "claimed", "replayed", "refused". */
const char *tg_idem_log_state(const struct tg_call *c);
/** Frees the call's idempotency state (call_destroy). */
void tg_idem_free(struct tg_call *c);

/* ---- the purge (worker 0's loop) ---- */

/** Deletes expired rows in bounded batches every idempotency.purge_interval_ms, through pg. */
void tg_idem_purge_start(h2o_loop_t *loop, tg_pgpool_t *pg);
void tg_idem_purge_stop(void);

#endif
