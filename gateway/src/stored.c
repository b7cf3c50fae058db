/*
 * stored.c - the stored_requests writer and its partition job (stored.h).
 *
 * The call side (retention.c) only hands over finished records; this file owns everything after:
 * a bounded queue (a full queue drops the record and counts it; the loop never waits) and one
 * writer thread (not a loop thread, so blocking libpq is fine here). Like the failover event
 * writer (events.c) it wakes when the queue is deep, on flush or stop, and otherwise every
 * TG_RT_PERIOD_MS while anything is queued; it takes a batch of records, formats them as COPY text
 * (copytext.h; the records are freed once formatted) and stores them with one COPY. A lost
 * connection is retried with back-off while the formatted batch is kept (records queued meanwhile
 * drop once the queue is full); a COPY the server rejects drops its batch, except when the row's
 * day has no partition yet: then the partition job runs and the batch is tried once more.
 *
 * The partition job (SQL function tollgate_stored_requests_partitions, migration 0005) creates
 * the partitions of today and the next TG_RT_DAYS_AHEAD days and drops those whose whole range is
 * older than retention.stored_requests_days; it takes a transaction advisory lock, so with two
 * instances on one database one runs it and the other skips that round. The writer runs it at
 * start and every retention.job_interval_ms, reading both settings from the current config.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "stored.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "copytext.h"
#include "err.h"
#include "log.h"
#include "metrics.h"

#define TG_RT_BATCH_RECORDS 512               /* records per COPY */
#define TG_RT_BATCH_BYTES   ((size_t)8 << 20) /* ... or this much formatted text, whichever first */
#define TG_RT_QUEUE_MAX     65536             /* records queued at most, whatever their size */
#define TG_RT_PERIOD_MS     200
#define TG_RT_BACKOFF_MIN   100
#define TG_RT_BACKOFF_MAX   5000
#define TG_RT_STOP_MS       3000 /* longest wait for the writer at stop (a frozen database) */
#define TG_RT_DAYS_AHEAD    2    /* partitions created beyond today */

static const char copy_sql[] =
    "COPY stored_requests (created_at, request_id, tenant_id, key_id, model_requested, model_served, "
    "provider, status, stream, prompt_tokens, completion_tokens, request_body, request_truncated, "
    "response_body, response_truncated) FROM STDIN";

/* ------------------------------------------------------------------------ the queue */

/* mu protects q. cv_work wakes the writer; cv_done wakes flushers. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv_work, cv_done;
static struct {
    tg_stored_record_t **ring;
    size_t head, count;
    size_t bytes, max_bytes; /* bytes of the queued records, and their bound */
    uint64_t queued, finished, dropped_full, lost;
    bool running, stopping, flush_wanted;
    char *conninfo;                 /* secret-bearing: never logged */
    uint32_t days, job_interval_ms; /* the start's settings (job_settings) */
    pthread_t thread;
} q;
/* read by loop threads without the lock: only a hint that records are wanted */
static _Atomic bool g_accepting;

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void register_metrics(void)
{
    tg_metrics_register("tollgate_stored_requests_dropped_total",
                        "stored_requests records dropped (queue full, or the database away or rejecting)",
                        TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_stored_requests_written_total", "stored_requests records written",
                        TG_METRIC_COUNTER);
    tg_metrics_add("tollgate_stored_requests_dropped_total", "reason=\"queue_full\"", 0);
    tg_metrics_add("tollgate_stored_requests_dropped_total", "reason=\"db\"", 0);
    tg_metrics_add("tollgate_stored_requests_written_total", "", 0);
}

static size_t record_size(const tg_stored_record_t *r)
{
    return sizeof(*r) + r->request_len + r->response_len;
}

bool tg_stored_accepting(void)
{
    return g_accepting;
}

bool tg_stored_enqueue(tg_stored_record_t *r)
{
    pthread_once(&metrics_once, register_metrics);
    size_t sz = record_size(r);
    bool ok = false;
    pthread_mutex_lock(&mu);
    if (q.running && !q.stopping && q.count < TG_RT_QUEUE_MAX && q.bytes + sz <= q.max_bytes) {
        q.ring[(q.head + q.count) % TG_RT_QUEUE_MAX] = r;
        q.count++;
        q.bytes += sz;
        q.queued++;
        ok = true;
        if (q.count >= TG_RT_BATCH_RECORDS || q.bytes >= q.max_bytes / 2)
            pthread_cond_signal(&cv_work);
    } else if (q.running) {
        q.dropped_full++;
    }
    bool counted = !ok && q.running;
    pthread_mutex_unlock(&mu);
    if (!ok) {
        free(r);
        if (counted)
            tg_metrics_add("tollgate_stored_requests_dropped_total", "reason=\"queue_full\"", 1);
    }
    return ok;
}

/* ---------------------------------------------------------- COPY text (writer thread) */

/* Appends n bytes of s as one COPY text field (copytext.h); empty and null_if_empty: the SQL NULL. */
static int put_text(tg_buf_t *out, const char *s, size_t n, bool null_if_empty)
{
    if (n == 0)
        return null_if_empty ? tg_buf_append(out, "\\N", 2) : 0;
    if (tg_buf_reserve(out, TG_COPY_TEXT_MAX(n)) != 0)
        return TG_ETOO_LARGE;
    char *end = tg_copy_text_put(out->data + out->len, s, n);
    out->len = (size_t)(end - out->data);
    out->data[out->len] = '\0';
    return 0;
}

static int put_str(tg_buf_t *out, const char *s, bool null_if_empty)
{
    return put_text(out, s, strlen(s), null_if_empty);
}

static int format_record(tg_buf_t *out, const tg_stored_record_t *r)
{
    time_t t = (time_t)(r->at_unix_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    int rc = tg_buf_appendf(out, "%04d-%02d-%02d %02d:%02d:%02d.%03d+00\t", tm.tm_year + 1900, tm.tm_mon + 1,
                            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(r->at_unix_ms % 1000));
    rc |= put_str(out, r->request_id, false);
    rc |= tg_buf_appendf(out, "\t%lld\t", (long long)r->tenant_id);
    rc |= r->key_id != 0 ? tg_buf_appendf(out, "%lld", (long long)r->key_id) : tg_buf_append(out, "\\N", 2);
    rc |= tg_buf_append(out, "\t", 1);
    rc |= put_str(out, r->model_requested, true);
    rc |= tg_buf_append(out, "\t", 1);
    rc |= put_str(out, r->model_served, true);
    rc |= tg_buf_append(out, "\t", 1);
    rc |= put_str(out, r->provider, true);
    rc |= tg_buf_appendf(out, "\t%d\t%c\t%lld\t%lld\t", r->status, r->stream ? 't' : 'f',
                         (long long)r->prompt_tokens, (long long)r->completion_tokens);
    rc |= put_text(out, r->data, r->request_len, false);
    rc |= tg_buf_appendf(out, "\t%c\t", r->request_truncated ? 't' : 'f');
    rc |= put_text(out, r->data + r->request_len, r->response_len, false);
    rc |= tg_buf_appendf(out, "\t%c\n", r->response_truncated ? 't' : 'f');
    return rc != 0 ? TG_ETOO_LARGE : 0;
}

/* ---------------------------------------------------------- the SQL side (writer thread) */

static PGconn *db_connect(const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        /* PQerrorMessage names host and user at most, never the password */
        TG_LOG(TG_LOG_WARN, "stored_requests_db_connect_failed", TG_KV_STR("error", PQerrorMessage(c)));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Result of a COPY: 0 stored, 1 connection lost (retry), -1 rejected (drop), -2 rejected because a
 * row's day has no partition (run the job, retry once). The server's message may quote a row (it
 * does for some constraint errors), and a row holds content: only the SQLSTATE is logged. */
static int copy_failed(PGconn *c, PGresult *res, size_t n)
{
    if (PQstatus(c) != CONNECTION_OK)
        return 1;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    TG_LOG(TG_LOG_ERROR, "stored_requests_copy_rejected", TG_KV_STR("sqlstate", state != NULL ? state : ""),
           TG_KV_INT("records", n));
    return state != NULL && strcmp(state, "23514") == 0 ? -2 : -1; /* no partition of relation */
}

static int db_copy(PGconn *c, const tg_buf_t *data, size_t n)
{
    PGresult *res = PQexec(c, copy_sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        int out = copy_failed(c, res, n);
        PQclear(res);
        return out;
    }
    PQclear(res);
    if (PQputCopyData(c, data->data, (int)data->len) != 1 || PQputCopyEnd(c, NULL) != 1)
        return 1;
    int out = 0;
    while ((res = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN)
            PQputCopyEnd(c, "aborted");
        else if (st != PGRES_COMMAND_OK && out == 0)
            out = copy_failed(c, res, n);
        PQclear(res);
        if (PQstatus(c) != CONNECTION_OK)
            return 1;
    }
    return PQstatus(c) != CONNECTION_OK ? 1 : out;
}

/* The partition job on connection c. Returns partitions dropped, -1 when another instance held the
 * lock (it is running the job), -2 on failure. */
static int run_job(PGconn *c, uint32_t days)
{
    char d[16], a[16];
    snprintf(d, sizeof(d), "%u", days);
    snprintf(a, sizeof(a), "%d", TG_RT_DAYS_AHEAD);
    const char *params[2] = {d, a};
    PGresult *res = PQexecParams(c, "SELECT tollgate_stored_requests_partitions($1::int, $2::int)", 2, NULL,
                                 params, NULL, NULL, 0);
    int out = -2;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        out = atoi(PQgetvalue(res, 0, 0));
        if (out > 0)
            TG_LOG(TG_LOG_INFO, "stored_requests_partitions_dropped", TG_KV_INT("partitions", out),
                   TG_KV_INT("retention_days", days));
    } else if (PQstatus(c) == CONNECTION_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        TG_LOG(TG_LOG_ERROR, "stored_requests_job_failed", TG_KV_STR("sqlstate", state != NULL ? state : ""));
    }
    PQclear(res);
    return out;
}

int tg_stored_run_job(const char *conninfo, uint32_t days)
{
    PGconn *c = db_connect(conninfo);
    if (c == NULL)
        return -1;
    int rc = run_job(c, days);
    PQfinish(c);
    return rc < -1 ? -1 : rc < 0 ? 0 : rc;
}

/* ---------------------------------------------------------------- the writer thread */

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

/* The job's settings from the current config (a reload may change them), or those the writer was
 * started with while no config is installed yet: the writer starts before the server publishes its
 * snapshot, and the first round must not fall back to defaults (an hour's wait for a job meant to
 * run every few seconds). */
static void job_settings(uint32_t *days, uint32_t *interval_ms)
{
    tg_config_t *cfg = tg_config_acquire();
    *days = cfg != NULL ? cfg->retention.days : q.days;
    *interval_ms = cfg != NULL ? cfg->retention.job_interval_ms : q.job_interval_ms;
    tg_config_unref(cfg);
}

/* Stores one formatted batch, retrying a lost connection with back-off until stop. Returns the
 * records lost (0 or n). Called without mu. */
static uint64_t store_batch(PGconn **conn, const tg_buf_t *data, size_t n, uint32_t *backoff)
{
    bool job_tried = false;
    for (;;) {
        if (*conn == NULL)
            *conn = db_connect(q.conninfo);
        int r = *conn != NULL ? db_copy(*conn, data, n) : 1;
        if (r == 0) {
            *backoff = TG_RT_BACKOFF_MIN;
            return 0;
        }
        if (r == -2 && !job_tried) {
            uint32_t days, iv;
            job_settings(&days, &iv);
            job_tried = true;
            if (run_job(*conn, days) != -2)
                continue; /* the day's partition exists now (or another instance is creating it) */
        }
        if (r < 0)
            return n;
        PQfinish(*conn);
        *conn = NULL;
        pthread_mutex_lock(&mu);
        struct timespec dl;
        deadline_in(&dl, *backoff);
        while (!q.stopping && pthread_cond_timedwait(&cv_work, &mu, &dl) != ETIMEDOUT)
            ;
        bool stopping = q.stopping;
        pthread_mutex_unlock(&mu);
        *backoff = *backoff * 2 > TG_RT_BACKOFF_MAX ? TG_RT_BACKOFF_MAX : *backoff * 2;
        if (stopping)
            return n;
    }
}

static void *writer_main(void *arg)
{
    (void)arg;
    tg_buf_t data;
    tg_buf_init(&data, TG_RT_BATCH_BYTES * 2 + ((size_t)64 << 20));
    PGconn *conn = NULL;
    uint32_t backoff = TG_RT_BACKOFF_MIN;
    uint64_t next_job_ms = 0; /* at once */

    pthread_mutex_lock(&mu);
    for (;;) {
        if (q.conninfo != NULL && tg_now_ms() >= next_job_ms && !q.stopping) {
            pthread_mutex_unlock(&mu);
            uint32_t days, iv;
            job_settings(&days, &iv);
            if (conn == NULL)
                conn = db_connect(q.conninfo);
            int jr = conn != NULL ? run_job(conn, days) : -2;
            if (conn != NULL && PQstatus(conn) != CONNECTION_OK) {
                PQfinish(conn);
                conn = NULL;
            }
            /* a failed job (database away) is tried again soon, not after a whole interval */
            next_job_ms = tg_now_ms() + (jr == -2 && iv > 5000 ? 5000 : iv);
            pthread_mutex_lock(&mu);
        }
        struct timespec dl;
        deadline_in(&dl, TG_RT_PERIOD_MS);
        while (!q.stopping && q.count < TG_RT_BATCH_RECORDS && q.bytes < q.max_bytes / 2 && !q.flush_wanted) {
            if (pthread_cond_timedwait(&cv_work, &mu, &dl) == ETIMEDOUT)
                break;
        }
        if (q.count == 0) {
            q.flush_wanted = false;
            pthread_cond_broadcast(&cv_done);
            if (q.stopping)
                break;
            continue;
        }
        /* take a batch: the records leave the queue, their text is ours */
        tg_stored_record_t *batch[TG_RT_BATCH_RECORDS];
        size_t n = 0, bytes = 0;
        while (n < TG_RT_BATCH_RECORDS && q.count > 0 && bytes < TG_RT_BATCH_BYTES) {
            tg_stored_record_t *r = q.ring[q.head];
            q.head = (q.head + 1) % TG_RT_QUEUE_MAX;
            q.count--;
            q.bytes -= record_size(r);
            bytes += record_size(r);
            batch[n++] = r;
        }
        pthread_mutex_unlock(&mu);

        tg_buf_reset(&data);
        int frc = 0;
        for (size_t i = 0; i < n; i++) {
            if (frc == 0 && q.conninfo != NULL)
                frc = format_record(&data, batch[i]);
            free(batch[i]);
        }
        uint64_t lost = 0;
        if (q.conninfo != NULL)
            lost = frc == 0 ? store_batch(&conn, &data, n, &backoff) : n;
        if (lost > 0)
            tg_metrics_add("tollgate_stored_requests_dropped_total", "reason=\"db\"", (double)lost);
        if (q.conninfo != NULL && n > lost)
            tg_metrics_add("tollgate_stored_requests_written_total", "", (double)(n - lost));

        pthread_mutex_lock(&mu);
        q.lost += lost;
        q.finished += n;
        pthread_cond_broadcast(&cv_done);
    }
    pthread_mutex_unlock(&mu);
    PQfinish(conn);
    tg_buf_dispose(&data);
    return NULL;
}

int tg_stored_start(const char *conninfo, const tg_config_t *cfg)
{
    pthread_once(&metrics_once, register_metrics);
    pthread_mutex_lock(&mu);
    if (q.running) {
        pthread_mutex_unlock(&mu);
        return TG_EINTERNAL;
    }
    static bool cv_ready;
    if (!cv_ready) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&cv_work, &ca);
        pthread_cond_init(&cv_done, &ca);
        pthread_condattr_destroy(&ca);
        cv_ready = true;
    }
    if (conninfo == NULL || cfg == NULL || !cfg->retention.stored_requests) {
        pthread_mutex_unlock(&mu);
        return 0; /* nothing to store: calls capture nothing (g_accepting stays false) */
    }
    q.ring = malloc(TG_RT_QUEUE_MAX * sizeof(*q.ring));
    q.conninfo = strdup(conninfo);
    if (q.ring == NULL || q.conninfo == NULL) {
        free(q.ring);
        free(q.conninfo);
        q.ring = NULL;
        q.conninfo = NULL;
        pthread_mutex_unlock(&mu);
        return TG_ENOMEM;
    }
    q.head = q.count = q.bytes = 0;
    q.max_bytes = cfg->retention.queue_bytes;
    q.days = cfg->retention.days;
    q.job_interval_ms = cfg->retention.job_interval_ms;
    q.queued = q.finished = q.dropped_full = q.lost = 0;
    q.stopping = q.flush_wanted = false;
    if (pthread_create(&q.thread, NULL, writer_main, NULL) != 0) {
        free(q.ring);
        free(q.conninfo);
        q.ring = NULL;
        q.conninfo = NULL;
        pthread_mutex_unlock(&mu);
        return TG_ENOMEM;
    }
    q.running = true;
    g_accepting = true;
    pthread_mutex_unlock(&mu);
    return 0;
}

void tg_stored_stop(void)
{
    pthread_mutex_lock(&mu);
    g_accepting = false;
    if (!q.running) {
        pthread_mutex_unlock(&mu);
        return;
    }
    q.stopping = true;
    pthread_cond_broadcast(&cv_work);
    size_t left = q.count;
    pthread_mutex_unlock(&mu);
    /* As events.c: a writer stuck in libpq on a frozen database is left behind past the bound (the
     * process is about to exit); what it still holds is lost. */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += TG_RT_STOP_MS / 1000;
    if (pthread_timedjoin_np(q.thread, NULL, &dl) != 0) {
        TG_LOG(TG_LOG_WARN, "stored_requests_stop_timeout", TG_KV_INT("waited_ms", TG_RT_STOP_MS),
               TG_KV_INT("records_unwritten", left));
        return;
    }
    pthread_mutex_lock(&mu);
    q.running = false;
    while (q.count > 0) { /* cannot happen: the writer drains before it leaves */
        free(q.ring[q.head]);
        q.head = (q.head + 1) % TG_RT_QUEUE_MAX;
        q.count--;
    }
    free(q.ring);
    q.ring = NULL;
    q.bytes = 0;
    explicit_bzero(q.conninfo, strlen(q.conninfo));
    free(q.conninfo);
    q.conninfo = NULL;
    pthread_cond_broadcast(&cv_done);
    pthread_mutex_unlock(&mu);
}

void tg_stored_flush(void)
{
    pthread_mutex_lock(&mu);
    uint64_t target = q.queued;
    while (q.running && q.finished < target) {
        q.flush_wanted = true;
        pthread_cond_signal(&cv_work);
        pthread_cond_wait(&cv_done, &mu);
    }
    pthread_mutex_unlock(&mu);
}

void tg_stored_stats(tg_stored_stats_t *out)
{
    pthread_mutex_lock(&mu);
    out->queued = q.queued;
    out->written = q.finished - q.lost;
    out->dropped = q.dropped_full + q.lost;
    pthread_mutex_unlock(&mu);
}
