/*
 * lastused.h - api_keys.last_used_at, written in batches, never once per request.
 *
 * The request path only notes the key id (tg_lastused_note, called by POLICY once a key is
 * authenticated): a lock-free insert into a fixed per-process set, with no allocation; a key that
 * is already noted costs one load, so a busy key is one shared cache line read by every worker.
 * A full probe window drops the note and counts it (tollgate_lastused_dropped_total): the key's
 * time is then written at a later use.
 *
 * One thread per process takes the whole set every TG_LASTUSED_PERIOD_MS and writes it with one
 * UPDATE on a connection of its own (blocking libpq, off every loop, statement_timeout bounded),
 * moving last_used_at forward only. last_used_at is therefore the time of the flush that followed
 * a use: at most a period (plus the write) after it. The api_keys trigger does not fire on this
 * column (migrations/0003_tenants.sql), so a flush clears no key cache. A failed write puts its
 * ids back for the next flush. At stop a last flush runs and the thread is joined for at most 3 s
 * (a frozen database leaves it behind, as keywatch.c and events.c do).
 */
#ifndef TG_LASTUSED_H
#define TG_LASTUSED_H

#include <stddef.h>
#include <stdint.h>

#define TG_LASTUSED_SLOTS     4096 /* distinct keys noted between two flushes, at most */
#define TG_LASTUSED_PROBE     8
#define TG_LASTUSED_PERIOD_MS 1000

/** Notes that key_id was used (any thread; key_id <= 0 ignored). */
void tg_lastused_note(int64_t key_id);
/** Takes every noted id out of the set into out (up to cap, sorted, without repeats); returns how
 *  many. What does not fit stays for the next take. The flusher's step, exposed for tests. */
size_t tg_lastused_take(int64_t *out, size_t cap);
/** Notes dropped because their probe window was full, ever. */
uint64_t tg_lastused_dropped(void);
/** UPDATE statements the flusher has run (tests, metrics). */
uint64_t tg_lastused_flushes(void);

/** Starts the flusher (conninfo NULL: nothing to write to, returns 0). 0 or TG_E*. */
int tg_lastused_start(const char *conninfo);
/** A last flush, then joins the flusher (at most 3 s). Safe when it never started. */
void tg_lastused_stop(void);

#endif
