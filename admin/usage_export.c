/*
 * usage_export.c - the streamed CSV export of a tenant's usage, see usage_export.h.
 *
 * Ownership: an export belongs to the loop, except while a batch is at an export thread
 * (at_thread), when the thread may fill `out` and nothing else; the thread gives it back by
 * posting it to the loop's receiver. The request may go at any time (the guard's on_gone): the
 * export is freed at once when no batch is out, else when the batch comes back.
 */
#include "usage_export.h"

#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "http.h"
#include "log.h"
#include "reqguard.h"

typedef struct export
{
    h2o_multithread_message_t msg; /* first: the receiver gets this link */
    h2o_multithread_receiver_t *rx;
    h2o_generator_t gen;
    struct export *next; /* the threads' queue */
    char *db_url;        /* secret-bearing: wiped when freed */
    tg_usage_filter_t filter;
    tg_usage_pos_t pos; /* after the last record read */

    /* the thread's part, while at_thread */
    tg_buf_t out;
    int rc;
    bool last;   /* the batch had fewer records than asked: it ends the file */
    bool header; /* the batch starts with the header (the first one) */
    size_t rows;

    /* the loop's part */
    h2o_req_t *req; /* NULL once the request is gone */
    tg_reqguard_t *guard;
    tg_buf_t sending; /* owned by h2o from h2o_send until proceed */
    bool at_thread, started, ready, h2o_busy, finished, failed, stopped;
}
export_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    export_t *head, *tail;
    pthread_once_t once;
    PGconn *conns[TG_EXPORT_THREADS]; /* each thread's connection, kept here rather than on its stack */
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .once = PTHREAD_ONCE_INIT};

static atomic_uint g_live;

unsigned tg_usage_export_live(void)
{
    return atomic_load(&g_live);
}

static void export_free(export_t *ex)
{
    tg_buf_dispose(&ex->out);
    tg_buf_dispose(&ex->sending);
    if (ex->db_url != NULL) {
        sodium_memzero(ex->db_url, strlen(ex->db_url));
        free(ex->db_url);
    }
    free(ex);
    atomic_fetch_sub(&g_live, 1);
}

/* ---------------------------------------------------------------- export threads */

static PGconn *connect_db(const char *url)
{
    PGconn *db = PQconnectdb(url);
    if (PQstatus(db) != CONNECTION_OK) {
        TG_LOG(TG_LOG_WARN, "usage_export_connect_failed"); /* libpq's message may quote the URL */
        PQfinish(db);
        return NULL;
    }
    /* a batch is one index range: anything near this is a database in trouble */
    PQclear(PQexec(db, "SET statement_timeout = 30000"));
    PQclear(PQexec(db, "SET application_name = 'tollgate-export'"));
    return db;
}

static int tenant_exists(PGconn *db, int64_t tenant_id)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    const char *p[1] = {t};
    PGresult *r = PQexecParams(db, "SELECT 1 FROM tenants WHERE id = $1::bigint", 1, NULL, p, NULL, NULL, 0);
    int rc = PQresultStatus(r) != PGRES_TUPLES_OK ? TG_EDB_UNAVAILABLE
             : PQntuples(r) == 1                  ? 0
                                                  : TG_ENOT_FOUND;
    PQclear(r);
    return rc;
}

/* One batch: the next TG_EXPORT_BATCH records as CSV into ex->out. */
static void run_batch(export_t *ex, PGconn **db)
{
    if (*db != NULL && PQstatus(*db) != CONNECTION_OK) {
        PQfinish(*db);
        *db = NULL;
    }
    if (*db == NULL && (*db = connect_db(ex->db_url)) == NULL) {
        ex->rc = TG_EDB_UNAVAILABLE;
        return;
    }
    tg_buf_reset(&ex->out);
    if (ex->header) {
        ex->rc = tenant_exists(*db, ex->filter.tenant_id);
        if (ex->rc == 0)
            ex->rc = tg_usage_csv_header(&ex->out);
        if (ex->rc != 0)
            return;
    }
    PGresult *res = NULL;
    tg_error_t err = {0};
    ex->rc = tg_usage_records(*db, &ex->filter, &ex->pos, TG_EXPORT_BATCH, &res, &err);
    if (ex->rc != 0) {
        TG_LOG(TG_LOG_WARN, "usage_export_batch_failed", TG_KV_INT("tenant_id", ex->filter.tenant_id),
               TG_KV_INT("code", ex->rc));
        return;
    }
    int n = PQntuples(res);
    ex->rc = tg_usage_csv_rows(res, &ex->out);
    if (ex->rc == 0 && n > 0)
        tg_usage_pos_of(res, n - 1, &ex->pos);
    ex->rows = (size_t)n;
    ex->last = n < TG_EXPORT_BATCH;
    PQclear(res);
}

static void *export_thread(void *arg)
{
    size_t slot = (size_t)(uintptr_t)arg;
    for (;;) {
        pthread_mutex_lock(&g.mu);
        while (g.head == NULL)
            pthread_cond_wait(&g.cv, &g.mu);
        export_t *ex = g.head;
        g.head = ex->next;
        if (g.head == NULL)
            g.tail = NULL;
        pthread_mutex_unlock(&g.mu);
        run_batch(ex, &g.conns[slot]);
        h2o_multithread_send_message(ex->rx, &ex->msg);
    }
    return NULL;
}

static void start_threads(void)
{
    for (size_t i = 0; i < TG_EXPORT_THREADS; i++) {
        pthread_t tid;
        if (pthread_create(&tid, NULL, export_thread, (void *)(uintptr_t)i) == 0)
            pthread_detach(tid); /* they live as long as the process: idle, they wait on the queue */
        else
            TG_LOG(TG_LOG_ERROR, "usage_export_thread_failed");
    }
}

static void submit(export_t *ex)
{
    pthread_once(&g.once, start_threads);
    ex->at_thread = true;
    ex->next = NULL;
    pthread_mutex_lock(&g.mu);
    if (g.tail != NULL)
        g.tail->next = ex;
    else
        g.head = ex;
    g.tail = ex;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
}

/* ---------------------------------------------------------------- the loop's side */

/* Hands the ready batch to h2o when it has taken the previous one, and asks for the next. */
static void pump(export_t *ex)
{
    if (ex->req == NULL || ex->stopped || ex->finished || ex->h2o_busy)
        return;
    if (ex->failed) {
        ex->finished = true;
        h2o_send(ex->req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    if (!ex->ready)
        return;
    tg_buf_t t = ex->sending; /* the batch becomes h2o's; its old buffer takes the next batch */
    ex->sending = ex->out;
    ex->out = t;
    tg_buf_reset(&ex->out);
    ex->ready = false;
    bool final = ex->last;
    if (!final)
        submit(ex); /* read ahead while h2o sends: at most this batch and the next */
    ex->h2o_busy = true;
    ex->finished = final;
    h2o_iovec_t v = h2o_iovec_init(ex->sending.data != NULL ? ex->sending.data : "", ex->sending.len);
    h2o_send(ex->req, &v, 1, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    export_t *ex = H2O_STRUCT_FROM_MEMBER(export_t, gen, gen);
    ex->h2o_busy = false;
    pump(ex);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    (void)req;
    export_t *ex = H2O_STRUCT_FROM_MEMBER(export_t, gen, gen);
    ex->stopped = true; /* the client left: never h2o_send again; the guard frees */
}

static void on_gone(void *owner)
{
    export_t *ex = owner;
    ex->req = NULL;
    ex->guard = NULL;
    if (!ex->at_thread)
        export_free(ex);
}

static void start_response(export_t *ex)
{
    h2o_req_t *req = ex->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/csv; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    char disp[96];
    int n =
        snprintf(disp, sizeof(disp), "attachment; filename=\"usage-%" PRId64 ".csv\"", ex->filter.tenant_id);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-disposition"), 0, NULL,
                          h2o_strdup(&req->pool, disp, (size_t)n).base, (size_t)n);
    ex->gen.proceed = on_proceed;
    ex->gen.stop = on_stop;
    h2o_start_response(req, &ex->gen);
    ex->started = true;
}

static void on_batch(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        export_t *ex = H2O_STRUCT_FROM_MEMBER(export_t, msg.link, messages->next);
        h2o_linklist_unlink(&ex->msg.link);
        ex->at_thread = false;
        if (ex->req == NULL) {
            export_free(ex);
            continue;
        }
        if (ex->rc != 0 && !ex->started) {
            /* nothing sent yet: a proper error (404 no such tenant, 503 no database) */
            tg_reqguard_release(ex->guard);
            h2o_req_t *req = ex->req;
            int rc = ex->rc == TG_ENOT_FOUND || ex->rc == TG_EDB_UNAVAILABLE ? ex->rc : TG_EINTERNAL;
            export_free(ex);
            tg_http_send_error(req, rc, NULL, NULL, rc == TG_EDB_UNAVAILABLE ? 1 : 0);
            continue;
        }
        ex->header = false;
        if (ex->rc != 0)
            ex->failed = true;
        else
            ex->ready = true;
        if (!ex->started)
            start_response(ex);
        pump(ex);
    }
}

static __thread h2o_multithread_receiver_t *t_rx;

void tg_usage_export_start(h2o_req_t *req, const tg_config_t *cfg, const tg_usage_filter_t *f)
{
    if (atomic_fetch_add(&g_live, 1) >= TG_EXPORT_LIVE_MAX) {
        atomic_fetch_sub(&g_live, 1);
        tg_http_send_error(req, TG_EBUSY, "too many usage exports are running; retry later", NULL, 5);
        return;
    }
    if (t_rx == NULL) {
        /* one receiver per worker, on its queue; kept for the process (a thread may post late) */
        h2o_multithread_receiver_t *rx = calloc(1, sizeof(*rx));
        if (rx == NULL) {
            atomic_fetch_sub(&g_live, 1);
            tg_http_send_error(req, TG_ENOMEM, NULL, NULL, 0);
            return;
        }
        h2o_multithread_register_receiver(req->conn->ctx->queue, rx, on_batch);
        t_rx = rx;
    }
    export_t *ex = calloc(1, sizeof(*ex));
    if (ex == NULL || cfg->database_url == NULL || (ex->db_url = strdup(cfg->database_url)) == NULL) {
        free(ex);
        atomic_fetch_sub(&g_live, 1);
        tg_http_send_error(req, cfg->database_url == NULL ? TG_EDB_UNAVAILABLE : TG_ENOMEM, NULL, NULL, 1);
        return;
    }
    ex->guard = tg_reqguard_new(req, on_gone, ex);
    if (ex->guard == NULL) {
        ex->req = NULL; /* so export_free does not look at it */
        export_free(ex);
        tg_http_send_error(req, TG_ENOMEM, NULL, NULL, 0);
        return;
    }
    ex->req = req;
    ex->rx = t_rx;
    ex->filter = *f;
    if (ex->filter.until_us == 0)
        ex->filter.until_us = tg_unix_now_ms() * 1000 + 1000; /* what exists now, no more */
    ex->header = true;
    tg_buf_init(&ex->out, TG_EXPORT_BUF_MAX);
    tg_buf_init(&ex->sending, TG_EXPORT_BUF_MAX);
    submit(ex);
}
