/*
 * keywatch.h - drops cached API keys when a key, its tenant, a policy or a
 * BYOK credential changes.
 *
 * The triggers of migrations/0003_tenants.sql NOTIFY channel tollgate_tenants
 * with the tenant id on every such change (revocation, expiry, suspension, a
 * new policy or credential). One thread per process LISTENs on a
 * connection of its own and clears the process-wide key cache on each
 * notification, so a revoked key stops working within a round trip instead
 * of after the cache TTL. The thread is not a loop thread: it may block.
 * While the connection is down, the cache is cleared on every reconnect,
 * because notifications sent meanwhile are lost.
 */
#ifndef TG_KEYWATCH_H
#define TG_KEYWATCH_H

#include <stdint.h>

/** Starts the watcher (conninfo NULL: nothing to watch, returns 0). Returns 0 or TG_E*. */
int tg_keywatch_start(const char *conninfo);
/** Stops and joins the watcher. Safe when it never started. */
void tg_keywatch_stop(void);
/** Notifications handled so far (tests, metrics). */
uint64_t tg_keywatch_count(void);

#endif
