/*
 * worker.h - what a request's code may know of the worker thread it runs on.
 *
 * server.c owns the workers (threads, listeners, signals, drain); the request path (call.c and
 * its stage files) and admin/ handlers only need the worker's per-thread resources, so they
 * include this header and never server.h.
 */
#ifndef TG_WORKER_H
#define TG_WORKER_H

#include <stdbool.h>
#include <stddef.h>

#include "h2o.h"
#if H2O_USE_LIBUV
#error "build with -DH2O_USE_LIBUV=0 (libh2o-evloop)"
#endif

#include "pgpool.h"
#include "upstream.h"

typedef struct tg_worker {
    h2o_context_t ctx; /* first: tg_worker_of() recovers the worker from req->conn->ctx */
    size_t idx;
    tg_upstream_t *upstream;
    tg_pgpool_t *pg;
    size_t inflight;      /* calls alive (call.c counts them from start to their last reference) */
    h2o_linklist_t calls; /* the live calls, so a drain past its grace period can end them */
    struct tg_server_priv *_priv;
} tg_worker_t;

static inline tg_worker_t *tg_worker_of(h2o_req_t *req)
{
    return (tg_worker_t *)req->conn->ctx;
}

/** True once a drain has begun (new requests get 503 shutting_down). Thread: any. */
bool tg_server_draining(void);

#endif
