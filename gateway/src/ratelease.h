/*
 * ratelease.h - the rate limits' windows in PostgreSQL (migrations/0006_rate_limits.sql): one row
 * per scope and window holding what every instance together was leased; each statement is one
 * atomic round trip through the worker's async pool (pgpool.h), never a wait on the loop.
 *
 *   lease      INSERT ... ON CONFLICT DO UPDATE: per dimension, grants `want` as far as the limit
 *              allows, provided at least `need` fits, else nothing; answers the grant and the
 *              window's new total. The row lock serialises instances: the sum of grants never
 *              passes the limit.
 *   give back  tokens an instance no longer needs in a window (corrected down after the call).
 *   sweep      deletes the rows of windows that ended TG_RATELEASE_KEEP_MS ago or more.
 *
 * The window's start comes from the instance's clock (unix ms, a multiple of the window length):
 * instances on one database should keep NTP time; a skewed clock moves its window edges, never
 * a window's total past the limit.
 */
#ifndef TG_RATELEASE_H
#define TG_RATELEASE_H

#include <libpq-fe.h>
#include <stdint.h>

#include "err.h"
#include "pgpool.h"
#include "ratelimit.h"

/* Rows of windows that ended this long ago go (clock skew between instances stays far below). */
#define TG_RATELEASE_KEEP_MS 300000u

/** Sends the lease of one charge; cb gets one row (tg_ratelease_parse) or NULL. Returns as
 *  tg_pgpool_query does (0: cb fires later; TG_EDB_UNAVAILABLE or TG_ENOMEM: it never does).
 *  Every statement on a row moves its version (seq) on and answers it. */
TG_MUST_CHECK int tg_ratelease_send(tg_pgpool_t *pg, const tg_rl_charge_t *ch, const tg_rl_lease_t *lease,
                                    tg_pg_cb cb, void *arg);
/** A lease's or give-back's answer: the row's version, what was granted, the window's totals. 0,
 *  or TG_EINTERNAL for a result without its row (a give-back whose window was swept). */
TG_MUST_CHECK int tg_ratelease_parse(const PGresult *res, tg_rl_answer_t *a);
/** Gives `tokens` of a charge's window back; cb as for a lease (a failure keeps them leased, so the
 *  limit admits less, never more). Returns as tg_ratelease_send. */
TG_MUST_CHECK int tg_ratelease_give_back(tg_pgpool_t *pg, const tg_rl_charge_t *ch, uint64_t tokens,
                                         tg_pg_cb cb, void *arg);
/** Deletes old windows (fire and forget). */
void tg_ratelease_sweep(tg_pgpool_t *pg, uint64_t now_ms);

#endif
