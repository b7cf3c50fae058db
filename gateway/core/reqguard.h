/*
 * reqguard.h - a handle on an h2o request for async work that may outlive it.
 *
 * A handler that starts async work (an auth lookup, a transfer, a database query) keeps the
 * request's pointer, but h2o frees the request, and its pool, when the client leaves. The guard
 * is a small object in the request's pool whose dispose callback always runs when h2o disposes
 * the request: it tells the owner, once, that the request is gone. The owner releases the guard
 * when it no longer cares (it answered and needs no word of the end), and is then never called.
 * Loop thread only.
 */
#ifndef TG_REQGUARD_H
#define TG_REQGUARD_H

#include "h2o.h"

typedef void (*tg_reqguard_cb)(void *owner);

typedef struct tg_reqguard {
    void *owner; /* NULL once released or fired */
    tg_reqguard_cb on_gone;
} tg_reqguard_t;

/** NULL when the pool is out of memory (nothing was registered). */
tg_reqguard_t *tg_reqguard_new(h2o_req_t *req, tg_reqguard_cb on_gone, void *owner);
/** The owner no longer wants to hear of the request's end. Idempotent; NULL is fine. */
void tg_reqguard_release(tg_reqguard_t *g);

#endif
