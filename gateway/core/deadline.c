/*
 * deadline.c - a sorted duration-0 h2o timeout list (see deadline.h for why).
 */
#include "deadline.h"

static void on_entry(h2o_timeout_entry_t *e)
{
    tg_deadline_t *d = H2O_STRUCT_FROM_MEMBER(tg_deadline_t, entry, e);
    d->cb(d); /* h2o unlinked the entry first: the callback may re-arm it */
}

void tg_timers_init(tg_timers_t *t, h2o_loop_t *loop)
{
    t->loop = loop;
    h2o_timeout_init(loop, &t->list, 0);
}

void tg_timers_dispose(tg_timers_t *t)
{
    if (t->loop == NULL)
        return;
    h2o_timeout_dispose(t->loop, &t->list);
    t->loop = NULL;
}

void tg_deadline_arm_at(tg_timers_t *t, tg_deadline_t *d, uint64_t at_ms, tg_deadline_cb cb)
{
    tg_deadline_cancel(d);
    d->cb = cb;
    d->entry.cb = on_entry;
    /* h2o_timeout_link appends and stamps registered_at with now; the deadline overrides it, and
     * the entry moves back to stay behind every entry due at or before it (FIFO among equals). */
    h2o_timeout_link(t->loop, &t->list, &d->entry);
    d->entry.registered_at = at_ms;
    h2o_linklist_t *anchor = &t->list._entries;
    h2o_linklist_t *pos = d->entry._link.prev;
    while (pos != anchor && H2O_STRUCT_FROM_MEMBER(h2o_timeout_entry_t, _link, pos)->registered_at > at_ms)
        pos = pos->prev;
    if (pos != d->entry._link.prev) {
        h2o_linklist_unlink(&d->entry._link);
        h2o_linklist_insert(pos->next, &d->entry._link);
    }
}

void tg_deadline_arm(tg_timers_t *t, tg_deadline_t *d, uint64_t delay_ms, tg_deadline_cb cb)
{
    tg_deadline_arm_at(t, d, h2o_now(t->loop) + delay_ms, cb);
}

void tg_deadline_cancel(tg_deadline_t *d)
{
    if (h2o_timeout_is_linked(&d->entry))
        h2o_timeout_unlink(&d->entry);
}
