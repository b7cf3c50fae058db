/*
 * events.c - the failover event queue and its PostgreSQL writer thread.
 *
 * Emitters (loop threads) copy an event into a bounded ring under ev_mu and
 * never wait: a full ring drops the event and counts it. One writer thread
 * (not a loop thread, so blocking libpq is fine here) takes up to
 * TG_EV_BATCH events at a time and inserts them with one multi-row
 * parameterised INSERT, at least every TG_EV_PERIOD_MS when anything is
 * queued. A lost connection is retried with exponential back-off while the
 * batch is kept; a statement the server rejects drops its batch (it would
 * never succeed) and counts the events as dropped.
 */
#include "events.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

#define TG_EV_BATCH       256
#define TG_EV_PERIOD_MS   100
#define TG_EV_BACKOFF_MIN 100
#define TG_EV_BACKOFF_MAX 5000
#define TG_EV_NCOLS       10

/* ev_mu protects everything in `q` below. cv_work wakes the writer (batch full, flush,
 * stop); cv_done wakes flushers when `written` advances. */
static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv_work, cv_done;
static struct {
    tg_failover_event_t *ring;
    size_t cap, head, count;
    uint64_t emitted;  /* accepted into the ring, ever */
    uint64_t finished; /* taken out and written (or given up on), ever */
    uint64_t dropped;  /* refused at emit: ring full or stopping */
    uint64_t lost;     /* taken out but not stored: rejected by the server, or stop during back-off */
    bool running, stopping, paused, flush_wanted;
    char *conninfo; /* secret-bearing (may hold a password): never logged */
    pthread_t thread;
} q;

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void register_metrics(void)
{
    tg_metrics_register("tollgate_failovers_total", "Requests moved from one target to another, by reason",
                        TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_events_dropped_total",
                        "Failover events dropped (queue full or write rejected)", TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_events_dropped_total", "", 0); /* exported as 0, not absent, until a drop */
}

const char *tg_event_kind_name(tg_event_kind_t k)
{
    switch (k) {
    case TG_EV_SKIPPED:
        return "skipped";
    case TG_EV_FAILED:
        return "failed";
    case TG_EV_FALLBACK:
        return "fallback";
    }
    return "unknown";
}

static int64_t unix_ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_in(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* ---- the SQL side (writer thread only) ---- */

static PGconn *db_connect(void)
{
    PGconn *c = PQconnectdb(q.conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        /* PQerrorMessage names host and user at most, never the password */
        TG_LOG(TG_LOG_WARN, "events_db_connect_failed", TG_KV_STR("error", PQerrorMessage(c)));
        PQfinish(c);
        return NULL;
    }
    return c;
}

typedef struct batch_text {
    char num[TG_EV_BATCH][4][24]; /* at, tenant, status, latency as text */
} batch_text_t;

/* Returns 0 written, 1 connection lost (retry), -1 rejected (drop). */
static int db_insert(PGconn *c, const tg_failover_event_t *evs, size_t n, batch_text_t *tx, tg_buf_t *sql)
{
    const char *vals[TG_EV_BATCH * TG_EV_NCOLS];
    tg_buf_reset(sql);
    int rc = tg_buf_append_str(sql, "INSERT INTO failover_events (at, request_id, tenant_id, chain, kind, "
                                    "from_target, to_target, reason, status, added_latency_us) VALUES ");
    for (size_t i = 0; i < n && rc == 0; i++) {
        const tg_failover_event_t *e = &evs[i];
        size_t b = i * TG_EV_NCOLS;
        snprintf(tx->num[i][0], sizeof(tx->num[i][0]), "%lld", (long long)e->at_unix_ms);
        snprintf(tx->num[i][1], sizeof(tx->num[i][1]), "%lld", (long long)e->tenant_id);
        snprintf(tx->num[i][2], sizeof(tx->num[i][2]), "%d", e->status);
        snprintf(tx->num[i][3], sizeof(tx->num[i][3]), "%llu", (unsigned long long)e->added_latency_us);
        vals[b + 0] = tx->num[i][0];
        vals[b + 1] = e->request_id[0] != '\0' ? e->request_id : NULL;
        vals[b + 2] = e->tenant_id != 0 ? tx->num[i][1] : NULL;
        vals[b + 3] = e->chain[0] != '\0' ? e->chain : NULL;
        vals[b + 4] = tg_event_kind_name(e->kind);
        vals[b + 5] = e->from_target;
        vals[b + 6] = e->to_target[0] != '\0' ? e->to_target : NULL;
        vals[b + 7] = e->reason;
        vals[b + 8] = e->status != 0 ? tx->num[i][2] : NULL;
        vals[b + 9] = tx->num[i][3];
        rc = tg_buf_appendf(
            sql,
            "%s(to_timestamp($%zu::bigint / 1000.0), $%zu, $%zu::bigint, $%zu, $%zu, $%zu, $%zu, "
            "$%zu, $%zu::int, $%zu::bigint)",
            i == 0 ? "" : ",", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8, b + 9, b + 10);
    }
    if (rc != 0)
        return -1;
    PGresult *res = PQexecParams(c, sql->data, (int)(n * TG_EV_NCOLS), NULL, vals, NULL, NULL, 0);
    int out = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        if (PQstatus(c) != CONNECTION_OK) {
            out = 1;
        } else {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            TG_LOG(TG_LOG_ERROR, "events_insert_rejected", TG_KV_STR("sqlstate", state != NULL ? state : ""),
                   TG_KV_STR("error", PQresultErrorMessage(res)), TG_KV_INT("events", n));
            out = -1;
        }
    }
    PQclear(res);
    return out;
}

/* ---- the writer thread ---- */

static void *writer_main(void *arg)
{
    (void)arg;
    tg_failover_event_t *batch = malloc(TG_EV_BATCH * sizeof(*batch));
    batch_text_t *tx = malloc(sizeof(*tx));
    tg_buf_t sql;
    tg_buf_init(&sql, 256u * 1024u);
    PGconn *conn = NULL;
    uint32_t backoff = TG_EV_BACKOFF_MIN;

    pthread_mutex_lock(&ev_mu);
    for (;;) {
        /* wait for a full batch, a flush, stop, or the period (a condition wait with a
         * deadline, not a sleep: any of those wakes it at once) */
        struct timespec dl;
        deadline_in(&dl, TG_EV_PERIOD_MS);
        while (!q.stopping && (q.paused || (q.count < TG_EV_BATCH && !q.flush_wanted))) {
            int w = pthread_cond_timedwait(&cv_work, &ev_mu, &dl);
            if (w == ETIMEDOUT) {
                if (!q.paused && q.count > 0)
                    break;
                deadline_in(&dl, TG_EV_PERIOD_MS);
            }
        }
        if (q.count == 0) {
            q.flush_wanted = false;
            pthread_cond_broadcast(&cv_done);
            if (q.stopping)
                break;
            continue;
        }
        size_t n = q.count < TG_EV_BATCH ? q.count : TG_EV_BATCH;
        for (size_t i = 0; i < n; i++)
            batch[i] = q.ring[(q.head + i) % q.cap];
        q.head = (q.head + n) % q.cap;
        q.count -= n;
        bool stopping = q.stopping;
        pthread_mutex_unlock(&ev_mu);

        uint64_t lost = 0;
        if (q.conninfo != NULL && batch != NULL && tx != NULL) {
            for (;;) {
                if (conn == NULL)
                    conn = db_connect();
                int r = conn != NULL ? db_insert(conn, batch, n, tx, &sql) : 1;
                if (r == 0) {
                    backoff = TG_EV_BACKOFF_MIN;
                    break;
                }
                if (r < 0) {
                    lost = n;
                    break;
                }
                PQfinish(conn);
                conn = NULL;
                /* back off without sleeping blind: stop wakes us; on stop the batch is lost */
                pthread_mutex_lock(&ev_mu);
                struct timespec bdl;
                deadline_in(&bdl, backoff);
                while (!q.stopping && pthread_cond_timedwait(&cv_work, &ev_mu, &bdl) != ETIMEDOUT)
                    ;
                stopping = q.stopping;
                pthread_mutex_unlock(&ev_mu);
                backoff = backoff * 2 > TG_EV_BACKOFF_MAX ? TG_EV_BACKOFF_MAX : backoff * 2;
                if (stopping) {
                    lost = n;
                    break;
                }
            }
        } else if (q.conninfo != NULL) {
            lost = n; /* no memory for the batch */
        }
        if (lost > 0)
            tg_metrics_add("tollgate_events_dropped_total", "", (double)lost);

        pthread_mutex_lock(&ev_mu);
        q.lost += lost;
        q.finished += n;
        pthread_cond_broadcast(&cv_done);
    }
    pthread_mutex_unlock(&ev_mu);
    PQfinish(conn);
    tg_buf_dispose(&sql);
    free(tx);
    free(batch);
    return NULL;
}

int tg_events_start(const char *conninfo, size_t queue_cap)
{
    pthread_once(&metrics_once, register_metrics);
    if (queue_cap == 0)
        queue_cap = 4096;
    pthread_mutex_lock(&ev_mu);
    if (q.running) {
        pthread_mutex_unlock(&ev_mu);
        return TG_EINTERNAL;
    }
    static bool cv_ready;
    if (!cv_ready) {
        /* monotonic deadlines: a wall-clock jump must not stall or spin the writer */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&cv_work, &ca);
        pthread_cond_init(&cv_done, &ca);
        pthread_condattr_destroy(&ca);
        cv_ready = true;
    }
    q.ring = calloc(queue_cap, sizeof(*q.ring));
    q.conninfo = conninfo != NULL ? strdup(conninfo) : NULL;
    if (q.ring == NULL || (conninfo != NULL && q.conninfo == NULL)) {
        free(q.ring);
        free(q.conninfo);
        q.ring = NULL;
        q.conninfo = NULL;
        pthread_mutex_unlock(&ev_mu);
        return TG_ENOMEM;
    }
    q.cap = queue_cap;
    q.head = q.count = 0;
    q.emitted = q.finished = q.dropped = q.lost = 0;
    q.stopping = q.paused = q.flush_wanted = false;
    if (pthread_create(&q.thread, NULL, writer_main, NULL) != 0) {
        free(q.ring);
        free(q.conninfo);
        q.ring = NULL;
        q.conninfo = NULL;
        pthread_mutex_unlock(&ev_mu);
        return TG_ENOMEM;
    }
    q.running = true;
    pthread_mutex_unlock(&ev_mu);
    return 0;
}

void tg_events_stop(void)
{
    pthread_mutex_lock(&ev_mu);
    if (!q.running) {
        pthread_mutex_unlock(&ev_mu);
        return;
    }
    q.stopping = true;
    q.paused = false;
    pthread_cond_broadcast(&cv_work);
    pthread_mutex_unlock(&ev_mu);
    pthread_join(q.thread, NULL);

    pthread_mutex_lock(&ev_mu);
    q.running = false;
    free(q.ring);
    q.ring = NULL;
    q.cap = q.count = q.head = 0;
    if (q.conninfo != NULL) {
        explicit_bzero(q.conninfo, strlen(q.conninfo)); /* may hold a password */
        free(q.conninfo);
        q.conninfo = NULL;
    }
    pthread_cond_broadcast(&cv_done);
    pthread_mutex_unlock(&ev_mu);
}

void tg_events_emit(const tg_failover_event_t *ev)
{
    pthread_once(&metrics_once, register_metrics);
    /* a failover is a move from one target to another: count it whether or not it is stored */
    if (ev->kind != TG_EV_FALLBACK && ev->to_target[0] != '\0') {
        char labels[400] = "";
        tg_metrics_label(labels, sizeof(labels), "from", ev->from_target);
        tg_metrics_label(labels, sizeof(labels), "to", ev->to_target);
        tg_metrics_label(labels, sizeof(labels), "reason", ev->reason);
        tg_metrics_add("tollgate_failovers_total", labels, 1);
    }

    bool dropped = false;
    pthread_mutex_lock(&ev_mu);
    if (!q.running || q.stopping || q.count == q.cap) {
        dropped = q.running; /* not started: events are only counted, by design */
        if (dropped)
            q.dropped++;
    } else {
        tg_failover_event_t *slot = &q.ring[(q.head + q.count) % q.cap];
        *slot = *ev;
        slot->request_id[sizeof(slot->request_id) - 1] = '\0';
        slot->chain[sizeof(slot->chain) - 1] = '\0';
        slot->from_target[sizeof(slot->from_target) - 1] = '\0';
        slot->to_target[sizeof(slot->to_target) - 1] = '\0';
        slot->reason[sizeof(slot->reason) - 1] = '\0';
        if (slot->at_unix_ms == 0)
            slot->at_unix_ms = unix_ms_now();
        q.count++;
        q.emitted++;
        if (q.count >= TG_EV_BATCH)
            pthread_cond_signal(&cv_work);
    }
    pthread_mutex_unlock(&ev_mu);
    if (dropped)
        tg_metrics_add("tollgate_events_dropped_total", "", 1);
}

void tg_events_flush(void)
{
    pthread_mutex_lock(&ev_mu);
    uint64_t target = q.emitted;
    while (q.running && q.finished < target) {
        q.flush_wanted = true;
        pthread_cond_signal(&cv_work);
        pthread_cond_wait(&cv_done, &ev_mu);
    }
    pthread_mutex_unlock(&ev_mu);
}

void tg_events_pause(bool paused)
{
    pthread_mutex_lock(&ev_mu);
    q.paused = paused;
    pthread_cond_signal(&cv_work);
    pthread_mutex_unlock(&ev_mu);
}

void tg_events_stats(tg_events_stats_t *out)
{
    pthread_mutex_lock(&ev_mu);
    out->emitted = q.emitted;
    out->written = q.finished - q.lost;
    out->dropped = q.dropped + q.lost;
    out->queued = q.count;
    pthread_mutex_unlock(&ev_mu);
}
