/*
 * server.h - worker threads, listeners, signals, reload and drain.
 *
 * N workers (default one per core), each with its own h2o context and evloop,
 * its own SO_REUSEPORT listeners (data and admin), its own libcurl multi
 * handle and its own async libpq pool. The main thread only waits for
 * signals: SIGTERM drains (stop accepting, let requests and streams finish
 * within shutdown_grace_ms, exit 0), SIGHUP reloads the config (a new
 * snapshot is published; requests in flight keep theirs).
 */
#ifndef TG_SERVER_H
#define TG_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "h2o.h"
#if H2O_USE_LIBUV
#error "build with -DH2O_USE_LIBUV=0 (libh2o-evloop)"
#endif

#include "config.h"
#include "pgpool.h"
#include "upstream.h"

typedef struct tg_worker {
    h2o_context_t ctx; /* first: tg_worker_of() recovers the worker from req->conn->ctx */
    size_t idx;
    tg_upstream_t *upstream;
    tg_pgpool_t *pg;
    size_t inflight; /* requests being handled (chat calls hold one each until they end) */
    struct tg_server_priv *_priv;
} tg_worker_t;

static inline tg_worker_t *tg_worker_of(h2o_req_t *req)
{
    return (tg_worker_t *)req->conn->ctx;
}

/** Handler for a route. Return 0 when the request was answered or taken over. */
typedef int (*tg_route_fn)(h2o_req_t *req);

/** Runs the server until SIGTERM/SIGINT (drains) and returns the exit code. */
int tg_server_run(const char *config_path);

/** True once a drain has begun (new requests get 503 shutting_down). Thread: any. */
bool tg_server_draining(void);

/** Admin routes are supplied by admin/ (main.c wires them) so the gateway does not depend on admin. */
void tg_server_set_admin_router(tg_route_fn fn);

#endif
