/*
 * pgpool.h - a small pool of async libpq connections in pipeline mode, on a
 * worker's h2o loop (c-stack.md 4.1).
 *
 * Each query is PQsendQueryParams + PQpipelineSync; results come back in FIFO
 * order. A broken connection fails its queued jobs (callback with res NULL)
 * and reconnects with a back-off. Nothing here blocks the loop: use a unix
 * socket or hostaddr in the conninfo (host names resolve synchronously).
 */
#ifndef TG_PGPOOL_H
#define TG_PGPOOL_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "h2o.h"
#include "err.h"

typedef struct tg_pgpool tg_pgpool_t;

/** res is valid only during the call (NULL on error, with errmsg set; never log errmsg with params). */
typedef void (*tg_pg_cb)(void *arg, const PGresult *res, const char *errmsg);

tg_pgpool_t *tg_pgpool_create(h2o_loop_t *loop, const char *conninfo, unsigned n_conns);
/** Fails queued jobs (callbacks run with res NULL) and frees. */
void tg_pgpool_destroy(tg_pgpool_t *p);
/** At least one connection is ready. Thread: any (an atomic count). */
bool tg_pgpool_ready(const tg_pgpool_t *p);
/** Queues a query; params are copied by libpq. Returns 0 (cb fires exactly once, never synchronously
 *  from inside this call) or TG_EDB_UNAVAILABLE (cb never fires). */
TG_MUST_CHECK int tg_pgpool_query(tg_pgpool_t *p, const char *sql, int nparams, const char *const *values,
                                  tg_pg_cb cb, void *arg);

#endif
