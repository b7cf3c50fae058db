/*
 * pgpool.h - a small pool of async libpq connections in pipeline mode, on a
 * worker's h2o loop (each connection's socket watched by the loop, never a blocking call).
 *
 * Each query is PQsendQueryParams + PQpipelineSync; results come back in FIFO
 * order. Nothing here waits on the database: a frozen or unreachable server
 * costs a caller at most its job's deadline.
 *
 *   - Every job has a deadline (job_timeout_ms). Past it the job fails
 *     (callback with res NULL), and so does the connection it was sent on:
 *     the connection is closed with every job queued on it and reconnects
 *     after a back-off. A pipeline answers in order, so a result that comes
 *     late could otherwise be taken for the next job's; a closed connection
 *     delivers nothing late.
 *   - The pool holds at most max_queue jobs; past that a query is refused at
 *     once (TG_EDB_UNAVAILABLE, no callback), as it is when no connection is
 *     ready.
 *   - A connection attempt has its own deadline (connect_timeout_ms).
 *   - A broken connection fails its queued jobs and reconnects with a growing
 *     back-off.
 *
 * The conninfo must name a unix socket directory, a numeric address or a
 * hostaddr: libpq resolves host names synchronously inside PQconnectStart and
 * PQconnectPoll, which would block the loop (config.c refuses other hosts).
 *
 * Thread: the loop's own, except tg_pgpool_ready (any).
 */
#ifndef TG_PGPOOL_H
#define TG_PGPOOL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "h2o.h"
#include "err.h"

#define TG_PGPOOL_JOB_TIMEOUT_MS     2000u /* database.job_timeout_ms default */
#define TG_PGPOOL_MAX_QUEUE          1024u /* database.max_queue default: jobs in flight per pool */
#define TG_PGPOOL_CONNECT_TIMEOUT_MS 5000u

typedef struct tg_pgpool tg_pgpool_t;

typedef struct tg_pgpool_opts {
    unsigned n_conns;            /* 0 = 1 */
    uint32_t job_timeout_ms;     /* 0 = TG_PGPOOL_JOB_TIMEOUT_MS */
    uint32_t max_queue;          /* 0 = TG_PGPOOL_MAX_QUEUE */
    uint32_t connect_timeout_ms; /* 0 = TG_PGPOOL_CONNECT_TIMEOUT_MS */
} tg_pgpool_opts_t;

/** res is valid only during the call. NULL on failure: errmsg says why ("database job timed out", a
 *  lost connection, or the server's error for this query; never log errmsg with params). */
typedef void (*tg_pg_cb)(void *arg, const PGresult *res, const char *errmsg);

/** opts NULL = every default. The conninfo is copied (and wiped on destroy). */
tg_pgpool_t *tg_pgpool_create(h2o_loop_t *loop, const char *conninfo, const tg_pgpool_opts_t *opts);
/** Fails queued jobs (callbacks run with res NULL) and frees. */
void tg_pgpool_destroy(tg_pgpool_t *p);
/** At least one connection is ready. Thread: any (an atomic count). */
bool tg_pgpool_ready(const tg_pgpool_t *p);
/** How many connections are ready. Thread: any. */
unsigned tg_pgpool_ready_count(const tg_pgpool_t *p);
/** Queues a query; params are copied by libpq. Returns 0 (cb fires exactly once, never synchronously
 *  from inside this call, at the latest when the job's deadline passes) or TG_EDB_UNAVAILABLE (no
 *  connection ready, or max_queue jobs already in flight; cb never fires), or TG_ENOMEM. */
TG_MUST_CHECK int tg_pgpool_query(tg_pgpool_t *p, const char *sql, int nparams, const char *const *values,
                                  tg_pg_cb cb, void *arg);
/** Jobs in flight (sent, callback not yet run or result not yet drained). Tests and metrics. */
unsigned tg_pgpool_queued(const tg_pgpool_t *p);

/** Process-wide counts since start, for /metrics: queries sent (what each request path costs the
 *  database, e.g. one per key-cache miss), deadlines that failed a job (each takes its
 *  connection's other jobs with it), jobs refused at once (queue full, no connection ready), and
 *  connection attempts past their deadline. Thread: any. */
typedef struct tg_pgpool_counts {
    uint64_t jobs_sent, jobs_timed_out, jobs_refused, connect_timeouts;
} tg_pgpool_counts_t;
void tg_pgpool_counts(tg_pgpool_counts_t *out);

#endif
