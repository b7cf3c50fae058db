/*
 * retention.h - the one choke point that decides what of a call may be stored or logged.
 *
 * A call is zero-retention when its tenant's policy says so, or when the request carries
 * `x-tollgate-zero-retention: true` (the header only tightens: `false` never loosens, any other
 * value is a 400 naming the header). Decided in POLICY (tg_retention_policy); from then on:
 *   - nothing of its content (prompt, answer, a provider's own error text, which may quote
 *     either) reaches a log line, an event, a metric label or the database: every place that
 *     would write provider text asks tg_retention_provider_text first;
 *   - ROUTE keeps only targets whose provider has `zero_retention` in the config or that run on
 *     the tenant's own key (BYOK); with none left the call fails closed, 422
 *     zero_retention_unavailable naming what was removed and why (tg_retention_route);
 *   - the OpenAI kind is asked not to store it (`store: false`, providers/openai.c).
 * Calls of every other tenant are stored in `stored_requests` (migration 0005): the client's body
 * and what the client received, each capped at retention.max_record_bytes, handed at LOG to the
 * batched writer of stored.h (which also runs the daily partition job); nothing here ever blocks a
 * worker loop.
 *
 * Crash output: the server makes the process non-dumpable and sets RLIMIT_CORE to 0
 * (tg_retention_protect_process), so no core file can carry a prompt: RLIMIT_CORE alone does not
 * stop a core_pattern that pipes to a collector (systemd-coredump, apport), a non-dumpable process
 * is not dumped at all. It also keeps other processes of the user from reading its memory through
 * ptrace or /proc/PID/mem; /proc/PID/maps and clear_refs become root's only (docs/CONVENTIONS.md).
 *
 * Threads: the call functions run on the call's loop thread; protect_process on the main thread.
 */
#ifndef TG_RETENTION_H
#define TG_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct tg_call;

#define TG_RETENTION_HEADER "x-tollgate-zero-retention"
/* What a log line says in place of provider text for a zero-retention call. */
#define TG_RETENTION_WITHHELD "[withheld: zero retention]"

/* ---- pure parts (unit.retention) ---- */

/** The header's value (NULL: absent). 0 with *tighten set (true for "true", false for "false" or
 *  absent; case-insensitive), or TG_EINVALID_REQUEST for anything else. */
int tg_retention_header(const char *value, size_t len, bool *tighten);

/** Whether a zero-retention call may be sent to target m (on the tenant's own key: byok). */
bool tg_retention_target_ok(const tg_model_cfg_t *m, bool byok);

/**
 * Keeps the targets a zero-retention call may use: targets[] and byok[] (n entries, parallel) are
 * compacted in place, order kept. The names of the removed targets are written, comma-separated,
 * into removed (cut with "..." when it does not fit). Returns the number kept.
 */
size_t tg_retention_filter(const tg_model_cfg_t **targets, bool *byok, size_t n, char *removed,
                           size_t removed_cap);

/** How many of s's len bytes fit in cap without cutting a UTF-8 sequence; *truncated says whether
 *  anything was left out. */
size_t tg_retention_cap(const char *s, size_t len, size_t cap, bool *truncated);

/** Provider text (an error message) as a log line or a record may carry it: itself, or
 *  TG_RETENTION_WITHHELD for a zero-retention call. */
const char *tg_retention_provider_text(bool zero_retention, const char *text);

/* ---- the call (loop thread) ---- */

/** The call is zero-retention (also before POLICY decided: the tenant's policy counts at once). */
bool tg_retention_is_zero(const struct tg_call *c);
/** POLICY: decides c->zero_retention (a bad header value is 400); keeps the request body of a call
 *  that will be stored. */
int tg_retention_policy(struct tg_call *c);
/** ROUTE, once the route and its BYOK flags are known: the zero-retention target rule. */
int tg_retention_route(struct tg_call *c);
/** What the client received: a stream's SSE data payloads as they are queued for the client, or
 *  a whole answer's body. Captured up to the cap, and never for a zero-retention call. */
void tg_retention_capture(struct tg_call *c, const char *data, size_t len);
/** LOG: queues the call's record (true when one was queued) and frees what was captured. */
bool tg_retention_record(struct tg_call *c);

/** No core file and no ptrace by other processes of the user: what a crash leaves must not carry
 *  a prompt. Called by the server before any request; allow_core_dumps
 *  (retention.allow_core_dumps) leaves the process as it was, for debugging. */
void tg_retention_protect_process(bool allow_core_dumps);

#endif
