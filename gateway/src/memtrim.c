/*
 * memtrim.c - the idle trimmer of memtrim.h: a one-second h2o timeout per worker loop.
 */
#include "memtrim.h"

#include <malloc.h>
#include <stdatomic.h>

#include "clock.h"
#include "log.h"

bool tg_memtrim_tick(tg_memtrim_state_t *s, bool busy, uint64_t now_ms)
{
    if (busy) {
        s->busy = true;
        s->idle_ticks = 0;
        return false;
    }
    if (++s->idle_ticks < TG_MEMTRIM_IDLE_TICKS)
        return false;
    if (!s->busy && now_ms - s->last_trim_ms < TG_MEMTRIM_PERIOD_MS)
        return false;
    s->busy = false;
    s->last_trim_ms = now_ms;
    return true;
}

/* The last trim of the process: a worker that goes idle just after another one trimmed has
 * nothing left to give back. */
static _Atomic uint64_t last_trim_ms;

typedef struct {
    h2o_timeout_t list;
    h2o_timeout_entry_t entry;
    h2o_loop_t *loop;
    const size_t *inflight;
    uint64_t seen, seen_at_tick; /* requests noted (tg_memtrim_note), and at the last tick */
    tg_memtrim_state_t st;
} memtrim_t;

static __thread memtrim_t mt;

static void on_tick(h2o_timeout_entry_t *e)
{
    memtrim_t *m = H2O_STRUCT_FROM_MEMBER(memtrim_t, entry, e);
    uint64_t now = tg_now_ms();
    bool busy = *m->inflight > 0 || m->seen != m->seen_at_tick;
    m->seen_at_tick = m->seen;
    if (tg_memtrim_tick(&m->st, busy, now)) {
        uint64_t prev = atomic_load(&last_trim_ms);
        if (now - prev >= TG_MEMTRIM_TICK_MS && atomic_compare_exchange_strong(&last_trim_ms, &prev, now)) {
            uint64_t t0 = tg_now_us();
            int released = malloc_trim(0);
            TG_LOG(TG_LOG_DEBUG, "memory_trimmed", TG_KV_INT("released", released),
                   TG_KV_INT("us", tg_now_us() - t0));
        }
    }
    h2o_timeout_link(m->loop, &m->list, &m->entry);
}

void tg_memtrim_start(h2o_loop_t *loop, const size_t *inflight)
{
    if (mt.loop != NULL)
        return;
    mt.loop = loop;
    mt.inflight = inflight;
    mt.st.last_trim_ms = tg_now_ms();
    h2o_timeout_init(loop, &mt.list, TG_MEMTRIM_TICK_MS);
    mt.entry.cb = on_tick;
    h2o_timeout_link(loop, &mt.list, &mt.entry);
}

void tg_memtrim_note(void)
{
    mt.seen++;
}

void tg_memtrim_stop(void)
{
    if (mt.loop == NULL)
        return;
    if (h2o_timeout_is_linked(&mt.entry))
        h2o_timeout_unlink(&mt.entry);
    h2o_timeout_dispose(mt.loop, &mt.list);
    mt = (memtrim_t){0};
}
