/*
 * ledger.h - the credit ledger on the request path: RESERVE, SETTLE, the credit headers, and the
 * settlement writer (billing/README.md, "The settlement protocol", has the whole design).
 *
 * RESERVE prices the call (the snapshot of billing/prices.h, per target the route may use: a
 * model with no price in effect is refused, 503 model_not_priced, never served free), estimates
 * its maximum cost (prompt tokens from core/estimate.h, completion from max_completion_tokens /
 * max_tokens or the model's max_output_tokens, the most expensive target counts; a BYOK target
 * costs its platform fee) and reserves it in memory against the tenant's lease account
 * (billing/lease.h). Accounts are process-wide, shared by the workers, one lock per shard of
 * tenants. A lease open goes through the worker's async pool while the call waits (PENDING); the
 * calls of other workers that wait on the same account are woken through their loop's message
 * queue. A wallet too small to lease reserves the call exactly in PostgreSQL (a per-request
 * lease); one that cannot cover it is 402 insufficient_credits, nothing sent upstream.
 *
 * SETTLE charges what the serving target reported (cached tokens at the cached price, an explicit
 * zero is zero; a cut stream without a report is charged the delivered-text estimate, marked
 * estimated; a call that ends in an error with no completion tokens, or was never served, costs
 * nothing), releases the rest of the hold, and queues the usage record. It runs as the answer's
 * last byte is handed to h2o (settle.c, tg_settle_charge), and the record (a COPY text row of the
 * settlement's stage, migration 0012) is appended to the local journal as it is queued, on the
 * call's thread: a kill -9 after the client has the whole answer finds its charge in the journal.
 * One writer thread with its own connection fsyncs the journal (billing.journal_fsync) and commits
 * the queue with one COPY and one tollgate_settle_staged per batch (group commit: what queued
 * while the previous batch committed), then truncates the journal side that holds nothing
 * uncommitted (two sides, so the calls never wait for a truncation). The journal is replayed at
 * start with a fresh batch key: a record already committed is skipped (its primary key), one that
 * was not is charged. The writer also runs tollgate_leases_expire() every few seconds,
 * tollgate_usage_partitions(now(), 3) at start and daily, and reloads the price snapshot when
 * tollgate_prices is notified.
 *
 * Headers (every /v1 answer after AUTH): x-tollgate-credits-remaining, the tenant's credits this
 * instance could still reserve: the wallet's available credits (balance - reserved) as the
 * database last told this instance, plus the unreserved room of this instance's leases, after this
 * call's own charge (its hold counted as released). x-tollgate-cost on whole answers (0 for an
 * error). A stream with include_usage gets "cost" in its usage object.
 *
 * Threads: tg_ledger_start/stop on the main thread; everything else on a call's loop thread.
 */
#ifndef TG_LEDGER_H
#define TG_LEDGER_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

struct tg_call;
struct json_t;

/** Opens the journal (exclusively: one process per journal), loads the prices, replays the
 *  journal, starts the writer. With billing off, does nothing. */
int tg_ledger_start(const char *conninfo, const tg_config_t *cfg);
/** Commits what is queued (bounded wait) and stops the writer. */
void tg_ledger_stop(void);
/** Billing is on in this process. */
bool tg_ledger_on(void);
/** This process's instance id (unique per process lifetime). */
const char *tg_ledger_instance(void);

/** RESERVE for a chat call. */
int tg_ledger_reserve(struct tg_call *c);
/** SETTLE: charge, release, record. Once per call (idempotent). */
void tg_ledger_settle(struct tg_call *c);
/** Adds x-tollgate-credits-remaining (and, for a whole answer, x-tollgate-cost) to the answer
 *  about to be sent with `status`. */
void tg_ledger_headers(struct tg_call *c, int status, bool whole);
/** The cost of a stream's usage chunk (the usage the adapter just parsed into c->usage); false
 *  when there is none to say (billing off, no hold). */
bool tg_ledger_usage_cost(struct tg_call *c, int64_t *cost);
/** Inserts "cost":N into the "usage" object of a serialised chunk (pass-through streams). */
int tg_ledger_splice_cost(tg_buf_t *chunk, int64_t cost);

/** Tests: waits until everything queued so far is committed (or the writer gave up). */
void tg_ledger_flush(void);

#endif
