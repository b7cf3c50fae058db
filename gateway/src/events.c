/*
 * events.c - the failover event queue and its PostgreSQL writer thread.
 *
 * Emitters (loop threads) copy an event into a bounded ring under ev_mu and
 * never wait: a full ring drops the event and counts it. One writer thread
 * (not a loop thread, so blocking libpq is fine here) takes what is queued,
 * up to TG_EV_BATCH_MAX rows, and stores it with one COPY ... FROM STDIN
 * (text format): a COPY costs the server far less per row than a
 * parameterised multi-row INSERT, which with a dead primary (then two events
 * per request) made PostgreSQL the bottleneck. The writer wakes when the ring is
 * deep (TG_EV_WAKE_ROWS), on flush or stop, and otherwise every
 * TG_EV_PERIOD_MS while anything is queued, so a quiet gateway still stores
 * an event within ~100 ms and a busy one writes few large batches.
 *
 * A lost connection is retried with exponential back-off while the formatted
 * batch is kept; a COPY the server rejects drops its batch (it would never
 * succeed) and counts the events as dropped.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "events.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "copytext.h"
#include "log.h"
#include "metrics.h"

#define TG_EV_BATCH_MAX   4096 /* rows per COPY */
#define TG_EV_WAKE_ROWS   1024 /* a ring this deep is written before the period ends */
#define TG_EV_PERIOD_MS   100
#define TG_EV_BACKOFF_MIN 100
#define TG_EV_BACKOFF_MAX 5000
#define TG_EVENTS_STOP_MS 3000 /* longest wait for the writer at stop (a frozen database) */
/* One COPY row at worst: every text byte escaped (x2), the timestamp, numbers, tabs. */
#define TG_EV_ROW_MAX                                                                                       \
    (2 * (sizeof(((tg_failover_event_t *)0)->request_id) + sizeof(((tg_failover_event_t *)0)->chain) +      \
          sizeof(((tg_failover_event_t *)0)->from_target) + sizeof(((tg_failover_event_t *)0)->to_target) + \
          sizeof(((tg_failover_event_t *)0)->reason)) +                                                     \
     160)

static const char copy_sql[] = "COPY failover_events (at, request_id, tenant_id, chain, kind, from_target, "
                               "to_target, reason, status, added_latency_us, served) FROM STDIN";

/* ev_mu protects everything in `q` below. cv_work wakes the writer (ring deep, flush,
 * stop); cv_done wakes flushers when `finished` advances. */
static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv_work, cv_done;
static struct {
    tg_failover_event_t *ring;
    size_t cap, head, count;
    size_t wake_rows;  /* signal the writer at this depth: min(TG_EV_WAKE_ROWS, cap / 2) */
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

/* ---- COPY text formatting (writer thread only) ---- */

/* Appends s as one COPY text field (copytext.h). An empty string is the SQL NULL when
 * empty_is_null, as the columns were written before. Returns the new end; the caller sized `out`
 * for the worst case. */
static char *put_text(char *out, const char *s, bool empty_is_null)
{
    if (empty_is_null && s[0] == '\0') {
        memcpy(out, "\\N", 2);
        return out + 2;
    }
    return tg_copy_text_put(out, s, strlen(s));
}

static char *put_i64(char *out, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *out++ = '-';
    while (n > 0)
        *out++ = tmp[--n];
    return out;
}

/* "YYYY-MM-DD HH:MM:SS" of the last second formatted: rows of one batch mostly share it. */
typedef struct ts_cache {
    int64_t sec;
    char text[32];
    size_t len;
    bool valid;
} ts_cache_t;

/* Appends at_unix_ms as an ISO timestamptz literal in UTC ("...SS.mmm+00"): unambiguous under
 * any DateStyle and TimeZone of the session. */
static char *put_timestamp(char *out, int64_t at_ms, ts_cache_t *tc)
{
    int64_t sec = at_ms >= 0 ? at_ms / 1000 : (at_ms - 999) / 1000;
    int ms = (int)(at_ms - sec * 1000);
    if (!tc->valid || tc->sec != sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        int n = snprintf(tc->text, sizeof(tc->text), "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        tc->len = n > 0 && (size_t)n < sizeof(tc->text) ? (size_t)n : 0;
        tc->sec = sec;
        tc->valid = true;
    }
    memcpy(out, tc->text, tc->len);
    out += tc->len;
    *out++ = '.';
    *out++ = (char)('0' + ms / 100);
    *out++ = (char)('0' + ms / 10 % 10);
    *out++ = (char)('0' + ms % 10);
    memcpy(out, "+00", 3);
    return out + 3;
}

/* One row of the COPY, in the column order of copy_sql. Returns its length. */
static size_t format_row(char *row, const tg_failover_event_t *e, ts_cache_t *tc)
{
    char *o = put_timestamp(row, e->at_unix_ms, tc);
    *o++ = '\t';
    o = put_text(o, e->request_id, true);
    *o++ = '\t';
    if (e->tenant_id != 0)
        o = put_i64(o, e->tenant_id);
    else
        o = put_text(o, "", true);
    *o++ = '\t';
    o = put_text(o, e->chain, true);
    *o++ = '\t';
    o = put_text(o, tg_event_kind_name(e->kind), false);
    *o++ = '\t';
    o = put_text(o, e->from_target, false);
    *o++ = '\t';
    o = put_text(o, e->to_target, true);
    *o++ = '\t';
    o = put_text(o, e->reason, false);
    *o++ = '\t';
    if (e->status != 0)
        o = put_i64(o, e->status);
    else
        o = put_text(o, "", true);
    *o++ = '\t';
    o = put_i64(o, e->added_latency_us > INT64_MAX ? INT64_MAX : (int64_t)e->added_latency_us);
    *o++ = '\t';
    *o++ = e->served ? 't' : 'f';
    *o++ = '\n';
    return (size_t)(o - row);
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

/* Drains the results of the statement in progress; returns the first non-OK one's verdict. */
static int copy_verdict(PGconn *c, size_t n)
{
    int out = 0;
    PGresult *res;
    while ((res = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN) {
            /* still in COPY (a failed put): end it so the connection is usable, and judge below */
            PQputCopyEnd(c, "aborted");
        } else if (st != PGRES_COMMAND_OK && out == 0) {
            if (PQstatus(c) != CONNECTION_OK) {
                out = 1;
            } else {
                const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
                TG_LOG(TG_LOG_ERROR, "events_copy_rejected",
                       TG_KV_STR("sqlstate", state != NULL ? state : ""),
                       TG_KV_STR("error", PQresultErrorMessage(res)), TG_KV_INT("events", n));
                out = -1;
            }
        }
        PQclear(res);
        if (PQstatus(c) != CONNECTION_OK)
            return 1;
    }
    return PQstatus(c) != CONNECTION_OK ? 1 : out;
}

/* Stores the formatted rows of `data` (n events). Returns 0 written, 1 connection lost (retry),
 * -1 rejected (drop). */
static int db_copy(PGconn *c, const tg_buf_t *data, size_t n)
{
    PGresult *res = PQexec(c, copy_sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COPY_IN) {
        int out = 1;
        if (PQstatus(c) == CONNECTION_OK) {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            TG_LOG(TG_LOG_ERROR, "events_copy_rejected", TG_KV_STR("sqlstate", state != NULL ? state : ""),
                   TG_KV_STR("error", PQresultErrorMessage(res)), TG_KV_INT("events", n));
            out = -1;
        }
        PQclear(res);
        return out;
    }
    PQclear(res);
    /* a blocking connection: each call returns once libpq has queued or sent the bytes */
    if (PQputCopyData(c, data->data, (int)data->len) != 1 || PQputCopyEnd(c, NULL) != 1)
        return 1; /* the connection broke mid-COPY; the caller drops it and retries the batch */
    return copy_verdict(c, n);
}

/* ---- the writer thread ---- */

/* Formats ring[head .. head+n) into `out` (reset first). Called without ev_mu: those slots belong to
 * the writer until it advances head, and emitters only write past head + count. */
static int format_batch(tg_buf_t *out, size_t head, size_t n, ts_cache_t *tc)
{
    char row[TG_EV_ROW_MAX];
    tg_buf_reset(out);
    for (size_t i = 0; i < n; i++) {
        size_t len = format_row(row, &q.ring[(head + i) % q.cap], tc);
        int rc = tg_buf_append(out, row, len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void *writer_main(void *arg)
{
    (void)arg;
    tg_buf_t data; /* reused by every batch: grows once to the largest batch seen */
    tg_buf_init(&data, (size_t)TG_EV_BATCH_MAX * TG_EV_ROW_MAX);
    ts_cache_t tc = {.valid = false};
    PGconn *conn = NULL;
    uint32_t backoff = TG_EV_BACKOFF_MIN;

    pthread_mutex_lock(&ev_mu);
    for (;;) {
        /* wait for a deep ring, a flush, stop, or the period (a condition wait with a
         * deadline, not a sleep: any of those wakes it at once) */
        struct timespec dl;
        deadline_in(&dl, TG_EV_PERIOD_MS);
        while (!q.stopping && (q.paused || (q.count < q.wake_rows && !q.flush_wanted))) {
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
        size_t n = q.count < TG_EV_BATCH_MAX ? q.count : TG_EV_BATCH_MAX;
        size_t head = q.head;
        pthread_mutex_unlock(&ev_mu);

        /* Without a database the writer only takes events (tests, `serve` without one). */
        int frc = q.conninfo != NULL ? format_batch(&data, head, n, &tc) : 0;

        /* the rows are text now: give their slots back before the (slow) round trip */
        pthread_mutex_lock(&ev_mu);
        q.head = (q.head + n) % q.cap;
        q.count -= n;
        bool stopping = q.stopping;
        pthread_mutex_unlock(&ev_mu);

        uint64_t lost = 0;
        if (q.conninfo != NULL && frc == 0) {
            for (;;) {
                if (conn == NULL)
                    conn = db_connect();
                int r = conn != NULL ? db_copy(conn, &data, n) : 1;
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
            lost = n; /* no memory for the batch's text */
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
    tg_buf_dispose(&data);
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
    /* malloc, not calloc: a slot is written whole by emit before the writer reads it */
    q.ring = malloc(queue_cap * sizeof(*q.ring));
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
    q.wake_rows = queue_cap / 2 < TG_EV_WAKE_ROWS ? queue_cap / 2 : TG_EV_WAKE_ROWS;
    if (q.wake_rows == 0)
        q.wake_rows = 1;
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
    size_t left = q.count;
    pthread_mutex_unlock(&ev_mu);
    /* The writer's libpq calls block: against a frozen database (a stopped server answers nothing,
     * and no timeout of libpq covers that) the join would wait for as long as the freeze lasts,
     * and the drain with it. Past the bound the process leaves the writer behind: it is about to
     * exit, and the rows still queued are counted as lost. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += TG_EVENTS_STOP_MS / 1000;
    dl.tv_nsec += (long)(TG_EVENTS_STOP_MS % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    if (pthread_timedjoin_np(q.thread, NULL, &dl) != 0) {
        TG_LOG(TG_LOG_WARN, "events_stop_timeout", TG_KV_INT("waited_ms", TG_EVENTS_STOP_MS),
               TG_KV_INT("rows_unwritten", left));
        return;
    }

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

/*
 * tollgate_failovers_total labels of the last few (from, to, reason) this thread counted: a chain
 * produces the same few moves over and over, and escaping three label values per event showed up
 * in profiles. The counter itself is still updated per event (exact at any time).
 */
#define TG_EV_LABEL_CACHE 8
typedef struct label_slot {
    char from[sizeof(((tg_failover_event_t *)0)->from_target)];
    char to[sizeof(((tg_failover_event_t *)0)->to_target)];
    char reason[sizeof(((tg_failover_event_t *)0)->reason)];
    char labels[512];
    bool used;
} label_slot_t;
static __thread label_slot_t label_cache[TG_EV_LABEL_CACHE];
static __thread unsigned label_next;

static bool same_field(const char *cached, const char *v, size_t cap)
{
    return strncmp(cached, v, cap) == 0; /* v may fill its field without a NUL */
}

static void count_failover(const tg_failover_event_t *ev)
{
    for (size_t i = 0; i < TG_EV_LABEL_CACHE; i++) {
        label_slot_t *s = &label_cache[i];
        if (s->used && same_field(s->from, ev->from_target, sizeof(s->from)) &&
            same_field(s->to, ev->to_target, sizeof(s->to)) &&
            same_field(s->reason, ev->reason, sizeof(s->reason))) {
            tg_metrics_add("tollgate_failovers_total", s->labels, 1);
            return;
        }
    }
    label_slot_t *s = &label_cache[label_next++ % TG_EV_LABEL_CACHE];
    tg_str_copy(s->from, sizeof(s->from), ev->from_target);
    tg_str_copy(s->to, sizeof(s->to), ev->to_target);
    tg_str_copy(s->reason, sizeof(s->reason), ev->reason);
    s->labels[0] = '\0';
    tg_metrics_label(s->labels, sizeof(s->labels), "from", s->from);
    tg_metrics_label(s->labels, sizeof(s->labels), "to", s->to);
    tg_metrics_label(s->labels, sizeof(s->labels), "reason", s->reason);
    /* fields that fill their arrays (no NUL) were truncated here: such an entry is not reused */
    s->used = strnlen(ev->from_target, sizeof(s->from)) < sizeof(s->from) &&
              strnlen(ev->to_target, sizeof(s->to)) < sizeof(s->to) &&
              strnlen(ev->reason, sizeof(s->reason)) < sizeof(s->reason);
    tg_metrics_add("tollgate_failovers_total", s->labels, 1);
}

void tg_events_emit(const tg_failover_event_t *ev)
{
    pthread_once(&metrics_once, register_metrics);
    /* a failover is a move from one target to another: count it whether or not it is stored */
    if (ev->to_target[0] != '\0')
        count_failover(ev);

    bool dropped = false;
    int64_t now_ms = ev->at_unix_ms == 0 ? unix_ms_now() : 0; /* outside the lock */
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
            slot->at_unix_ms = now_ms;
        q.count++;
        q.emitted++;
        if (q.count == q.wake_rows)
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

bool tg_events_peek(size_t i, tg_failover_event_t *out)
{
    pthread_mutex_lock(&ev_mu);
    bool ok = i < q.count;
    if (ok)
        *out = q.ring[(q.head + i) % q.cap];
    pthread_mutex_unlock(&ev_mu);
    return ok;
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
