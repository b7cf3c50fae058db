/*
 * jobs.c - blocking work of the admin API off the worker loops (api.h, "jobs").
 *
 * The management functions (manage.h, credentials.h, billing/wallet.h) run blocking libpq on a
 * connection their caller gives. A worker's loop must never block, so a handler queues a job
 * here: a small pool of admin threads (admin_auth.threads), each with its own connection, takes
 * jobs from one bounded queue (admin_auth.queue; full: 503 server_busy with Retry-After), runs
 * them, and posts each result back to the loop of the worker that queued it through h2o's
 * multithread queue (one receiver per worker, registered on first use, kept for the process).
 *
 * The client may leave while its job waits or runs: a request guard (core/reqguard.h) clears
 * job->req on the loop when h2o disposes of the request, and the result of such a job is dropped
 * on the loop (the work itself is not undone: a write that committed stays, audited). The
 * request's fields are copied into the job's tg_adm_call_t, so an admin thread never touches the
 * request. Deadline: a job still queued past admin_auth.job_timeout_ms is answered 503 unrun, and
 * a running one has its statements bounded by the time left (statement_timeout).
 *
 * The pool starts on the first job (it needs the config's database and sizes) and stops after the
 * workers (main.c calls tg_adm_jobs_stop once tg_server_run returns).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "clock.h"
#include "http.h"
#include "log.h"
#include "reqguard.h"
#include "worker.h"

/* A statement cancelled by statement_timeout ends at the deadline as PostgreSQL measures it; ours
 * may read a little earlier. An internal error this close to the deadline is taken as the timeout. */
#define DEADLINE_SLACK_MS 50

typedef struct adm_job {
    h2o_multithread_message_t msg; /* first: the receiver gets the link of this */
    h2o_multithread_receiver_t *rx;
    h2o_req_t *req; /* loop thread only; NULL once the client has gone */
    tg_reqguard_t *guard;
    tg_adm_work_fn work;
    void (*free_arg)(void *);
    uint64_t deadline_ms;
    tg_adm_call_t call;
    tg_adm_result_t res;
    struct adm_job *next;
} adm_job_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    adm_job_t *head, *tail;
    size_t n, cap;
    bool started, stopping;
    pthread_t *tids;
    size_t n_threads;
    char *db_url;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* ---------------------------------------------------------------- results */

void tg_adm_fail(tg_adm_result_t *out, int code, const char *fmt, ...)
{
    out->err.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->err.msg, sizeof(out->err.msg), fmt, ap);
    va_end(ap);
}

void tg_adm_fail_error(tg_adm_result_t *out, const tg_error_t *e, bool detail_public)
{
    out->err.code = e->code < 0 ? e->code : TG_EINTERNAL;
    snprintf(out->err.msg, sizeof(out->err.msg), "%s",
             detail_public && e->detail[0] != '\0' ? e->detail : tg_err_public_msg(out->err.code));
}

static void job_free(adm_job_t *job)
{
    if (job->free_arg != NULL && job->call.arg != NULL)
        job->free_arg(job->call.arg);
    json_decref(job->res.body);
    tg_config_unref(job->call.cfg);
    free(job);
}

static void answer(adm_job_t *job)
{
    h2o_req_t *req = job->req;
    tg_reqguard_release(job->guard);
    if (job->res.err.code < 0) {
        tg_adm_result_t *r = &job->res;
        if (r->err.code == TG_EBUSY || r->err.code == TG_EDB_UNAVAILABLE)
            tg_http_send_error(req, r->err.code, NULL, NULL, r->retry_after_s > 0 ? r->retry_after_s : 1);
        else
            tg_adm_reply_mgmt_err(req, &r->err);
        return;
    }
    tg_adm_reply_json(req, job->res.status > 0 ? job->res.status : 200, job->res.body, job->res.etag);
}

static void on_results(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    while (!h2o_linklist_is_empty(messages)) {
        adm_job_t *job = H2O_STRUCT_FROM_MEMBER(adm_job_t, msg.link, messages->next);
        h2o_linklist_unlink(&job->msg.link);
        if (job->req != NULL)
            answer(job);
        job_free(job);
    }
}

static void on_request_gone(void *owner)
{
    adm_job_t *job = owner;
    job->req = NULL;
}

/* One receiver per worker thread, on that worker's queue; kept for the process, as the worker's
 * queue is (an admin thread may post to it after its request is gone). */
static __thread h2o_multithread_receiver_t *t_rx;

static h2o_multithread_receiver_t *worker_rx(h2o_req_t *req)
{
    if (t_rx == NULL) {
        h2o_multithread_receiver_t *rx = calloc(1, sizeof(*rx));
        if (rx == NULL)
            return NULL;
        h2o_multithread_register_receiver(req->conn->ctx->queue, rx, on_results);
        t_rx = rx;
    }
    return t_rx;
}

/* ---------------------------------------------------------------- admin threads */

static PGconn *connect_db(void)
{
    PGconn *db = PQconnectdb(g.db_url);
    if (PQstatus(db) != CONNECTION_OK) {
        TG_LOG(TG_LOG_WARN, "admin_db_connect_failed"); /* libpq's message may quote the URL */
        PQfinish(db);
        return NULL;
    }
    PQclear(PQexec(db, "SET application_name = 'tollgate-admin'"));
    return db;
}

static void run_one(adm_job_t *job, PGconn **db)
{
    uint64_t now = tg_now_ms();
    if (now >= job->deadline_ms) {
        job->res.err.code = TG_EBUSY;
        return;
    }
    if (*db != NULL && PQstatus(*db) != CONNECTION_OK) {
        PQfinish(*db);
        *db = NULL;
    }
    if (*db == NULL)
        *db = connect_db();
    if (*db == NULL) {
        job->res.err.code = TG_EDB_UNAVAILABLE;
        return;
    }
    char sql[64];
    snprintf(sql, sizeof(sql), "SET statement_timeout = %llu", (unsigned long long)(job->deadline_ms - now));
    PQclear(PQexec(*db, sql));
    job->work(*db, &job->call, &job->res);
    /* a work function must end its transaction; one that did not is rolled back here */
    if (PQtransactionStatus(*db) != PQTRANS_IDLE)
        PQclear(PQexec(*db, "ROLLBACK"));
    uint64_t end = tg_now_ms();
    if (job->res.err.code < 0 && PQstatus(*db) != CONNECTION_OK)
        job->res.err.code = TG_EDB_UNAVAILABLE;
    else if (job->res.err.code == TG_EINTERNAL && end + DEADLINE_SLACK_MS >= job->deadline_ms)
        job->res.err.code = TG_EBUSY; /* cancelled by statement_timeout */
    if (job->res.err.code < 0 && tg_err_http_status(job->res.err.code) >= 500)
        TG_LOG(TG_LOG_WARN, "admin_job_failed", TG_KV_STR("route", job->call.route),
               TG_KV_STR("code", tg_err_code(job->res.err.code)), TG_KV_STR("msg", job->res.err.msg),
               TG_KV_INT("left_ms", (int64_t)job->deadline_ms - (int64_t)end));
}

static void *thread_main(void *arg)
{
    (void)arg;
    PGconn *db = NULL;
    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (g.head == NULL && !g.stopping)
            pthread_cond_wait(&g.cv, &g.mu);
        if (g.head == NULL)
            break;
        adm_job_t *job = g.head;
        g.head = job->next;
        if (g.head == NULL)
            g.tail = NULL;
        g.n--;
        pthread_mutex_unlock(&g.mu);
        run_one(job, &db);
        h2o_multithread_send_message(job->rx, &job->msg);
        pthread_mutex_lock(&g.mu);
    }
    pthread_mutex_unlock(&g.mu);
    PQfinish(db);
    return NULL;
}

/* Under g.mu. */
static int start_locked(const tg_config_t *cfg)
{
    if (g.started)
        return 0;
    g.db_url = strdup(cfg->database_url);
    g.cap = cfg->admin_auth.queue;
    g.n_threads = cfg->admin_auth.threads;
    g.tids = calloc(g.n_threads, sizeof(*g.tids));
    if (g.db_url == NULL || g.tids == NULL)
        return TG_ENOMEM;
    size_t ok = 0;
    for (size_t i = 0; i < g.n_threads; i++)
        if (pthread_create(&g.tids[i], NULL, thread_main, NULL) == 0)
            ok++;
    g.n_threads = ok;
    g.started = ok > 0;
    return g.started ? 0 : TG_ENOMEM;
}

int tg_adm_run(tg_adm_ctx_t *c, tg_adm_work_fn work, void *arg, void (*free_arg)(void *))
{
    h2o_req_t *req = c->req;
    tg_config_t *cfg = tg_config_acquire();
    int rc = 0;
    if (cfg == NULL || cfg->database_url == NULL)
        rc = TG_EDB_UNAVAILABLE;
    adm_job_t *job = rc == 0 ? calloc(1, sizeof(*job)) : NULL;
    if (rc == 0 && job == NULL)
        rc = TG_ENOMEM;
    h2o_multithread_receiver_t *rx = rc == 0 ? worker_rx(req) : NULL;
    if (rc == 0 && rx == NULL)
        rc = TG_ENOMEM;
    if (rc != 0) {
        free(job);
        tg_config_unref(cfg);
        if (free_arg != NULL && arg != NULL)
            free_arg(arg);
        tg_adm_reply_error(req, rc, NULL, NULL);
        return rc;
    }
    job->rx = rx;
    job->req = req;
    job->work = work;
    job->free_arg = free_arg;
    job->deadline_ms = tg_now_ms() + cfg->admin_auth.job_timeout_ms;
    job->call.who = c->who;
    job->call.n_params = c->n_params;
    memcpy(job->call.params, c->params, sizeof(c->params));
    job->call.route = c->route != NULL ? c->route->name : "";
    const h2o_iovec_t *im = tg_http_header(req, "if-match");
    if (im != NULL) {
        job->call.has_if_match = true;
        if (im->len < sizeof(job->call.if_match)) /* longer: matches nothing (412) */
            memcpy(job->call.if_match, im->base, im->len);
    }
    job->call.cfg = cfg;
    job->call.arg = arg;

    pthread_mutex_lock(&g.mu);
    rc = g.stopping ? TG_ESHUTTING_DOWN : start_locked(cfg);
    if (rc == 0 && g.n >= g.cap)
        rc = TG_EBUSY;
    if (rc == 0) {
        job->guard = tg_reqguard_new(req, on_request_gone, job);
        if (job->guard == NULL)
            rc = TG_ENOMEM;
    }
    if (rc == 0) {
        if (g.tail != NULL)
            g.tail->next = job;
        else
            g.head = job;
        g.tail = job;
        g.n++;
        pthread_cond_signal(&g.cv);
    }
    pthread_mutex_unlock(&g.mu);
    if (rc != 0) {
        job_free(job);
        tg_adm_reply_error(req, rc, NULL, NULL);
    }
    return rc;
}

void tg_adm_jobs_stop(void)
{
    pthread_mutex_lock(&g.mu);
    g.stopping = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < g.n_threads; i++)
        pthread_join(g.tids[i], NULL);
    /* the threads ran every queued job before they ended; the workers' loops are gone, so
     * the results posted to them are never read (the process is ending) */
    free(g.tids);
    g.tids = NULL;
    g.n_threads = 0;
    free(g.db_url);
    g.db_url = NULL;
}
