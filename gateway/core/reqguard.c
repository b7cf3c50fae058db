/*
 * reqguard.c - see reqguard.h.
 */
#include "reqguard.h"

static void on_dispose(void *p)
{
    tg_reqguard_t *g = p;
    void *owner = g->owner;
    g->owner = NULL;
    if (owner != NULL)
        g->on_gone(owner);
}

tg_reqguard_t *tg_reqguard_new(h2o_req_t *req, tg_reqguard_cb on_gone, void *owner)
{
    tg_reqguard_t *g = h2o_mem_alloc_shared(&req->pool, sizeof(*g), on_dispose);
    if (g == NULL)
        return NULL;
    g->owner = owner;
    g->on_gone = on_gone;
    return g;
}

void tg_reqguard_release(tg_reqguard_t *g)
{
    if (g != NULL)
        g->owner = NULL;
}
