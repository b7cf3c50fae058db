/*
 * lastused.c - the per-process set of used key ids and its flusher thread, see lastused.h.
 *
 * The set is an open-addressed table of atomic ids (0 = free). note() looks in the id's probe
 * window: an equal id means done (a load, no write: the hot key of a busy gateway never makes its
 * cache line bounce), a free slot is claimed with one compare-and-swap. take() empties the slots
 * with an exchange each; a note racing with it either lands before (taken now) or after (taken
 * next time). An id can sit in two slots after such a race: take() sorts and drops repeats.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "lastused.h"

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "metrics.h"

#define STOP_WAIT_MS    3000 /* longest wait for the thread at stop (a frozen database) */
#define STATEMENT_MS    "5000"
#define CONNECT_TIMEOUT "5"
#define ID_TEXT_MAX     21 /* a positive int64 and a comma */

static _Atomic int64_t g_slots[TG_LASTUSED_SLOTS];
static _Atomic uint64_t g_dropped, g_flushes;

static struct {
    pthread_t tid;
    bool running;
    char *conninfo; /* may hold a password: never logged, wiped at stop */
    int wake[2];
} lu = {.wake = {-1, -1}};

/* The flusher's own buffers (one thread): ids of one flush and their array literal. */
static int64_t f_ids[TG_LASTUSED_SLOTS];
static char f_text[TG_LASTUSED_SLOTS * ID_TEXT_MAX + 3];

static size_t slot_of(int64_t id)
{
    /* Fibonacci hashing: consecutive ids (bigserial) land far apart */
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 52) % TG_LASTUSED_SLOTS;
}

void tg_lastused_note(int64_t key_id)
{
    if (key_id <= 0)
        return;
    size_t base = slot_of(key_id);
    for (size_t i = 0; i < TG_LASTUSED_PROBE; i++) {
        _Atomic int64_t *s = &g_slots[(base + i) % TG_LASTUSED_SLOTS];
        int64_t v = atomic_load_explicit(s, memory_order_relaxed);
        if (v == key_id)
            return;
        if (v == 0) {
            int64_t expected = 0;
            if (atomic_compare_exchange_strong_explicit(s, &expected, key_id, memory_order_relaxed,
                                                        memory_order_relaxed) ||
                expected == key_id)
                return;
        }
    }
    atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
    tg_metrics_add("tollgate_lastused_dropped_total", "", 1);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

size_t tg_lastused_take(int64_t *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < TG_LASTUSED_SLOTS && n < cap; i++) {
        if (atomic_load_explicit(&g_slots[i], memory_order_relaxed) == 0)
            continue;
        int64_t v = atomic_exchange_explicit(&g_slots[i], 0, memory_order_relaxed);
        if (v != 0)
            out[n++] = v;
    }
    qsort(out, n, sizeof(*out), cmp_i64);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || out[u - 1] != out[i])
            out[u++] = out[i];
    return u;
}

uint64_t tg_lastused_dropped(void)
{
    return atomic_load(&g_dropped);
}

uint64_t tg_lastused_flushes(void)
{
    return atomic_load(&g_flushes);
}

/* ------------------------------------------------------------------------------ the flusher */

static PGconn *connect_db(void)
{
    /* bounded: a host that drops packets must not hold the flusher (and the stop) for long; the
     * conninfo's own connect_timeout wins, as it comes later */
    const char *const keys[] = {"connect_timeout", "dbname", NULL};
    const char *const vals[] = {CONNECT_TIMEOUT, lu.conninfo, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        TG_LOG(TG_LOG_WARN, "lastused_connect_failed"); /* libpq's message may name the host */
        PQfinish(c);
        return NULL;
    }
    PGresult *r = PQexec(c, "SET statement_timeout = " STATEMENT_MS);
    PQclear(r);
    return c;
}

/* One UPDATE for every id taken; false when it failed (the ids are noted again). */
static bool flush(PGconn **conn)
{
    size_t n = tg_lastused_take(f_ids, TG_LASTUSED_SLOTS);
    if (n == 0)
        return true;
    size_t o = 0;
    f_text[o++] = '{';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(f_text + o, sizeof(f_text) - o, i == 0 ? "%lld" : ",%lld", (long long)f_ids[i]);
    f_text[o++] = '}';
    f_text[o] = '\0';
    if (*conn == NULL)
        *conn = connect_db();
    bool ok = false;
    if (*conn != NULL) {
        const char *p[1] = {f_text};
        /* forward only: another instance may have written a later time already */
        PGresult *r = PQexecParams(*conn,
                                   "UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1::bigint[]) "
                                   "AND (last_used_at IS NULL OR last_used_at < now())",
                                   1, NULL, p, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (ok) {
            atomic_fetch_add(&g_flushes, 1);
            tg_metrics_add("tollgate_lastused_flushes_total", "", 1);
        } else {
            TG_LOG(TG_LOG_WARN, "lastused_flush_failed", TG_KV_INT("keys", n));
            if (PQstatus(*conn) != CONNECTION_OK) {
                PQfinish(*conn);
                *conn = NULL;
            }
        }
    }
    if (!ok)
        for (size_t i = 0; i < n; i++)
            tg_lastused_note(f_ids[i]);
    return ok;
}

static void *flusher_main(void *arg)
{
    (void)arg;
    PGconn *conn = NULL;
    for (;;) {
        struct pollfd p = {.fd = lu.wake[0], .events = POLLIN};
        bool stop = poll(&p, 1, TG_LASTUSED_PERIOD_MS) > 0;
        TG_IGNORE_RESULT(flush(&conn)); /* a failure is retried at the next period */
        if (stop)
            break;
    }
    PQfinish(conn);
    return NULL;
}

int tg_lastused_start(const char *conninfo)
{
    tg_metrics_register("tollgate_lastused_dropped_total",
                        "Key uses not noted for last_used_at (the set was full)", TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_lastused_dropped_total", "", 0);
    tg_metrics_register("tollgate_lastused_flushes_total", "Batched last_used_at writes (one UPDATE each)",
                        TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_lastused_flushes_total", "", 0);
    if (conninfo == NULL || lu.running)
        return 0;
    if (pipe(lu.wake) != 0)
        return TG_EINTERNAL;
    lu.conninfo = strdup(conninfo);
    if (lu.conninfo == NULL || pthread_create(&lu.tid, NULL, flusher_main, NULL) != 0) {
        free(lu.conninfo);
        lu.conninfo = NULL;
        close(lu.wake[0]);
        close(lu.wake[1]);
        lu.wake[0] = lu.wake[1] = -1;
        return TG_ENOMEM;
    }
    lu.running = true;
    return 0;
}

void tg_lastused_stop(void)
{
    if (!lu.running)
        return;
    TG_IGNORE_RESULT(write(lu.wake[1], "x", 1));
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += STOP_WAIT_MS / 1000;
    if (pthread_timedjoin_np(lu.tid, NULL, &dl) != 0) {
        /* inside libpq against a frozen database: left behind, the process is exiting */
        TG_LOG(TG_LOG_WARN, "lastused_stop_timeout", TG_KV_INT("waited_ms", STOP_WAIT_MS));
        return;
    }
    close(lu.wake[0]);
    close(lu.wake[1]);
    lu.wake[0] = lu.wake[1] = -1;
    explicit_bzero(lu.conninfo, strlen(lu.conninfo));
    free(lu.conninfo);
    lu.conninfo = NULL;
    lu.running = false;
}
