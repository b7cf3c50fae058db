/*
 * upstream.h - libcurl's multi-socket API on a worker's h2o loop.
 *
 * One tg_upstream_t per worker thread: one CURLM whose sockets live in a
 * private epoll set registered once in h2o's loop, and whose timer is a
 * core deadline (deadline.h).
 * Connections are reused through the multi handle's cache. A transfer has
 * four timeouts: connect, first byte, idle between chunks, total.
 *
 * Callbacks of a transfer run on the loop thread. After tg_transfer_cancel
 * returns, none of them runs again. on_done runs exactly once unless the
 * transfer was cancelled first.
 */
#ifndef TG_UPSTREAM_H
#define TG_UPSTREAM_H

#include <stddef.h>

#include "h2o.h"
#if H2O_USE_LIBUV
#error "build with -DH2O_USE_LIBUV=0 (libh2o-evloop)"
#endif

#include "config.h"
#include "providers/provider.h"

typedef struct tg_upstream tg_upstream_t;
typedef struct tg_transfer tg_transfer_t;

typedef struct tg_transfer_cbs {
    /** Response status and headers are known (called before the first on_data, or before on_done
     *  for an empty body). retry_after / content_type may be NULL. */
    void (*on_head)(void *ud, int status, const char *content_type, const char *retry_after);
    /** A piece of body. Return 0 to go on, 1 to pause (resume with tg_transfer_resume), -1 to abort. */
    int (*on_data)(void *ud, const char *p, size_t n);
    /** End of transfer: rc 0, TG_EUPSTREAM_UNREACHABLE (connect/reset), TG_EUPSTREAM_TIMEOUT (with
     *  timeout_kind "connect" | "first_byte" | "idle" | "total"), or TG_EUPSTREAM_FAILED. */
    void (*on_done)(void *ud, int rc, const char *timeout_kind);
} tg_transfer_cbs_t;

tg_upstream_t *tg_upstream_create(h2o_loop_t *loop);
/** Cancels every transfer (no callbacks) and frees. */
void tg_upstream_destroy(tg_upstream_t *u);
size_t tg_upstream_active(const tg_upstream_t *u);
/** Sockets in the private epoll set: active transfers' plus idle kept-alive connections'. */
size_t tg_upstream_watched(const tg_upstream_t *u);

/** Starts a transfer; takes ownership of *req (left disposed). Returns NULL on failure (no callbacks). */
tg_transfer_t *tg_transfer_start(tg_upstream_t *u, tg_upstream_req_t *req, const tg_timeouts_t *t,
                                 const tg_transfer_cbs_t *cbs, void *ud);
void tg_transfer_resume(tg_transfer_t *t);
void tg_transfer_cancel(tg_transfer_t *t);

#endif
