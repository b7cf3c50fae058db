/*
 * pgpool.c - async libpq connections in pipeline mode on an h2o loop, see pgpool.h.
 *
 * Every job is one PQsendQueryParams followed by its own PQpipelineSync, so
 * a failing query aborts only itself, never its neighbours. Jobs sit in a
 * per-connection FIFO; a job is complete when its PGRES_PIPELINE_SYNC comes
 * back. libpq owns its socket and closes it in PQfinish, so h2o watches a
 * dup() of it.
 *
 * Time: one tg_timers_t per pool holds every job's deadline and each
 * connection's one timer (reconnect back-off, connect deadline, or a reset
 * deferred out of tg_pgpool_query). A job whose deadline passes takes its
 * connection down with it (pg_reset): a pipeline cannot skip one query's
 * results, and PQcancel would block the loop (it opens a connection of its
 * own, synchronously), so closing is the one way to be sure that no late
 * row reaches the job behind it. With the server frozen that is also what
 * frees the pool: the reconnect then waits on its own deadline, and queries
 * meanwhile find no ready connection and are refused at once.
 */
#include "pgpool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "deadline.h"
#include "log.h"

/* Process-wide counts for /metrics (core registers no metric: metrics.c reads them). */
static _Atomic uint64_t g_sent, g_timed_out, g_refused, g_connect_timeouts;

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef enum { PG_IDLE, PG_CONNECTING, PG_READY, PG_BROKEN } pg_state_t;

typedef struct pg_conn pg_conn_t;

typedef struct pg_job {
    struct pg_job *next;
    pg_conn_t *conn;
    tg_deadline_t deadline; /* armed from send until the job leaves its connection's FIFO */
    tg_pg_cb cb;
    void *arg;
    bool got_result; /* the callback has run; further results of this job are drained silently */
} pg_job_t;

struct pg_conn {
    tg_pgpool_t *pool;
    PGconn *conn;
    h2o_socket_t *sock; /* wraps a dup() of PQsocket(conn) */
    int fd;             /* the libpq descriptor that sock duplicates */
    pg_state_t state;
    bool want_write;
    pg_job_t *head, **tail;
    unsigned inflight;
    uint32_t backoff_ms;
    tg_deadline_t timer; /* IDLE: reconnect; CONNECTING: connect deadline; BROKEN: deferred reset */
};

struct tg_pgpool {
    h2o_loop_t *loop;
    tg_timers_t timers;
    char *conninfo;
    unsigned n;
    uint32_t job_timeout_ms;
    uint32_t max_queue;
    uint32_t connect_timeout_ms;
    unsigned queued; /* jobs in every FIFO: the cap applies to this */
    pg_conn_t *conns;
    _Atomic unsigned n_ready; /* connections in PG_READY: read by /readyz from any thread */
};

static void pg_on_io(h2o_socket_t *sock, const char *err);
static void pg_start_connect(pg_conn_t *c);
static void pg_on_timer(tg_deadline_t *d);

/* Every state change goes through here so n_ready stays exact. Thread: the pool's loop. */
static void set_state(pg_conn_t *c, pg_state_t state)
{
    if (c->state == PG_READY && state != PG_READY)
        atomic_fetch_sub(&c->pool->n_ready, 1);
    else if (c->state != PG_READY && state == PG_READY)
        atomic_fetch_add(&c->pool->n_ready, 1);
    c->state = state;
}

static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* notices could quote data: libpq's default would print them to stderr */
}

static void pg_close_socket(pg_conn_t *c)
{
    if (c->sock != NULL) {
        h2o_socket_read_stop(c->sock);
        h2o_socket_close(c->sock); /* closes our dup, not libpq's descriptor */
        c->sock = NULL;
    }
    c->fd = -1;
    c->want_write = false;
}

static void pg_arm_timer(pg_conn_t *c, uint32_t delay_ms)
{
    tg_deadline_arm(&c->pool->timers, &c->timer, delay_ms, pg_on_timer);
}

/* Detaches and fails every queued job. The connection is already out of service, so a callback
 * that queues a new query cannot land on it. */
static void pg_fail_jobs(pg_conn_t *c, const char *why)
{
    pg_job_t *j = c->head;
    c->head = NULL;
    c->tail = &c->head;
    c->pool->queued -= c->inflight;
    c->inflight = 0;
    while (j != NULL) {
        pg_job_t *next = j->next;
        tg_deadline_cancel(&j->deadline);
        if (!j->got_result)
            j->cb(j->arg, NULL, why);
        free(j);
        j = next;
    }
}

/* Takes the connection out of service, fails its jobs and schedules a reconnect. */
static void pg_reset(pg_conn_t *c, const char *why)
{
    bool was_ready = c->state == PG_READY;
    set_state(c, PG_IDLE);
    pg_close_socket(c);
    if (c->conn != NULL) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    if (was_ready)
        TG_LOG(TG_LOG_WARN, "db_connection_lost", TG_KV_INT("retry_ms", c->backoff_ms));
    pg_arm_timer(c, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    pg_fail_jobs(c, why);
}

static void pg_on_writable(h2o_socket_t *sock, const char *err)
{
    pg_conn_t *c = sock->data;
    c->want_write = false;
    pg_on_io(sock, err);
}

static void pg_want_write(pg_conn_t *c)
{
    if (c->sock == NULL || c->want_write)
        return;
    c->want_write = true;
    h2o_socket_notify_write(c->sock, pg_on_writable);
}

/* (Re)wraps libpq's socket; it may change during PQconnectPoll (next host or address). */
static void pg_rewrap_socket(pg_conn_t *c)
{
    int fd = PQsocket(c->conn);
    if (c->sock != NULL && fd == c->fd)
        return;
    pg_close_socket(c);
    if (fd < 0)
        return;
    int dfd = dup(fd);
    if (dfd < 0)
        return; /* the caller sees sock == NULL and resets */
    c->fd = fd;
    c->sock = h2o_evloop_socket_create(c->pool->loop, dfd, H2O_SOCKET_FLAG_DONT_READ);
    c->sock->data = c;
    h2o_socket_read_start(c->sock, pg_on_io); /* always watch reads: also detects a server-side close */
}

static void pg_connect_step(pg_conn_t *c)
{
    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(c->conn, 1) != 0 || PQenterPipelineMode(c->conn) != 1) {
            pg_reset(c, "database connection setup failed");
            return;
        }
        tg_deadline_cancel(&c->timer); /* the connect deadline */
        set_state(c, PG_READY);
        c->backoff_ms = BACKOFF_MIN_MS;
        pg_rewrap_socket(c);
        if (c->sock == NULL)
            pg_reset(c, "database connection setup failed");
        return;
    case PGRES_POLLING_READING:
        pg_rewrap_socket(c);
        if (c->sock == NULL)
            pg_reset(c, "database connection failed");
        return;
    case PGRES_POLLING_WRITING:
        pg_rewrap_socket(c);
        if (c->sock == NULL)
            pg_reset(c, "database connection failed");
        else
            pg_want_write(c);
        return;
    default:
        /* PQerrorMessage may name the host and user, not the password; still kept out of the log */
        pg_reset(c, "database connection failed");
        return;
    }
}

static void pg_start_connect(pg_conn_t *c)
{
    /* non-blocking, except for host name resolution: the conninfo should use a socket dir or hostaddr */
    c->conn = PQconnectStart(c->pool->conninfo);
    if (c->conn == NULL || PQstatus(c->conn) == CONNECTION_BAD) {
        pg_reset(c, "database connection failed");
        return;
    }
    PQsetNoticeProcessor(c->conn, pg_notice, NULL);
    set_state(c, PG_CONNECTING);
    /* libpq's connect_timeout only bounds its blocking PQconnectdb: a polled connection gets ours */
    pg_arm_timer(c, c->pool->connect_timeout_ms);
    pg_rewrap_socket(c);
    if (c->sock == NULL) {
        pg_reset(c, "database connection failed");
        return;
    }
    pg_want_write(c); /* libpq: start by waiting until the socket is writable */
}

static void pg_on_timer(tg_deadline_t *d)
{
    pg_conn_t *c = H2O_STRUCT_FROM_MEMBER(pg_conn_t, timer, d);
    switch (c->state) {
    case PG_BROKEN:
        pg_reset(c, "database connection failed"); /* deferred from tg_pgpool_query */
        break;
    case PG_IDLE:
        pg_start_connect(c);
        break;
    case PG_CONNECTING:
        TG_LOG(TG_LOG_WARN, "db_connect_timeout", TG_KV_INT("timeout_ms", c->pool->connect_timeout_ms));
        atomic_fetch_add_explicit(&g_connect_timeouts, 1, memory_order_relaxed);
        pg_reset(c, "database connection failed");
        break;
    case PG_READY:
        break;
    }
}

/* A job's deadline passed: it fails, and its connection with it (see the header comment). */
static void pg_on_job_deadline(tg_deadline_t *d)
{
    pg_job_t *j = H2O_STRUCT_FROM_MEMBER(pg_job_t, deadline, d);
    pg_conn_t *c = j->conn;
    TG_LOG(TG_LOG_WARN, "db_job_timeout", TG_KV_INT("timeout_ms", c->pool->job_timeout_ms),
           TG_KV_INT("jobs_failed", c->inflight));
    atomic_fetch_add_explicit(&g_timed_out, 1, memory_order_relaxed);
    pg_reset(c, "database job timed out");
}

/* Hands finished results to their jobs, in FIFO order. */
static void pg_drain(pg_conn_t *c)
{
    bool doomed = false;
    /* PQgetResult blocks whenever PQisBusy is true, even on a non-blocking connection */
    while (c->head != NULL && c->conn != NULL && !PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (r == NULL)
            continue; /* the end of one query's results inside the pipeline */
        pg_job_t *j = c->head;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR) {
            /* FATAL or PANIC: the server closes the session next (pg_terminate_backend, shutdown).
             * Take the connection out of service now, so no new query is sent into it meanwhile. */
            const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
            if (sev != NULL && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)) {
                doomed = true;
                set_state(c, PG_BROKEN);
            }
        }
        if (st == PGRES_PIPELINE_SYNC) {
            c->head = j->next;
            if (c->head == NULL)
                c->tail = &c->head;
            c->inflight--;
            c->pool->queued--;
            tg_deadline_cancel(&j->deadline);
            if (!j->got_result) /* cannot happen with one query per sync; keep exactly-once anyway */
                j->cb(j->arg, NULL, "no result");
            free(j);
        } else if (!j->got_result) {
            j->got_result = true;
            if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
                j->cb(j->arg, r, NULL);
            else
                j->cb(j->arg, NULL,
                      st == PGRES_PIPELINE_ABORTED ? "pipeline aborted" : PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    if (doomed)
        pg_reset(c, "database connection lost");
}

static void pg_on_io(h2o_socket_t *sock, const char *err)
{
    pg_conn_t *c = sock->data;
    if (c->state == PG_CONNECTING) {
        pg_connect_step(c);
        return;
    }
    if (c->state != PG_READY)
        return;
    if (!PQconsumeInput(c->conn)) {
        pg_reset(c, "database connection lost");
        return;
    }
    pg_drain(c);
    if (c->state != PG_READY || c->conn == NULL)
        return;
    if (PQstatus(c->conn) == CONNECTION_BAD) {
        pg_reset(c, "database connection lost");
        return;
    }
    int f = PQflush(c->conn);
    if (f < 0)
        pg_reset(c, "database connection lost");
    else if (f == 1)
        pg_want_write(c);
}

tg_pgpool_t *tg_pgpool_create(h2o_loop_t *loop, const char *conninfo, const tg_pgpool_opts_t *opts)
{
    static const tg_pgpool_opts_t defaults = {0};
    if (opts == NULL)
        opts = &defaults;
    unsigned n_conns = opts->n_conns != 0 ? opts->n_conns : 1;
    tg_pgpool_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->job_timeout_ms = opts->job_timeout_ms != 0 ? opts->job_timeout_ms : TG_PGPOOL_JOB_TIMEOUT_MS;
    p->max_queue = opts->max_queue != 0 ? opts->max_queue : TG_PGPOOL_MAX_QUEUE;
    p->connect_timeout_ms =
        opts->connect_timeout_ms != 0 ? opts->connect_timeout_ms : TG_PGPOOL_CONNECT_TIMEOUT_MS;
    p->conninfo = strdup(conninfo);
    p->conns = calloc(n_conns, sizeof(*p->conns));
    if (p->conninfo == NULL || p->conns == NULL) {
        free(p->conninfo);
        free(p->conns);
        free(p);
        return NULL;
    }
    p->n = n_conns;
    tg_timers_init(&p->timers, loop);
    for (unsigned i = 0; i < n_conns; i++) {
        pg_conn_t *c = &p->conns[i];
        c->pool = p;
        c->fd = -1;
        c->tail = &c->head;
        c->backoff_ms = BACKOFF_MIN_MS;
        set_state(c, PG_IDLE);
        pg_start_connect(c);
    }
    return p;
}

void tg_pgpool_destroy(tg_pgpool_t *p)
{
    if (p == NULL)
        return;
    /* every connection out of service first: a failed job's callback that queries again must not
     * land on a connection this loop has not reached yet */
    for (unsigned i = 0; i < p->n; i++) {
        set_state(&p->conns[i], PG_IDLE);
        tg_deadline_cancel(&p->conns[i].timer);
    }
    for (unsigned i = 0; i < p->n; i++) {
        pg_conn_t *c = &p->conns[i];
        pg_close_socket(c);
        if (c->conn != NULL) {
            PQfinish(c->conn);
            c->conn = NULL;
        }
        pg_fail_jobs(c, "database pool closed");
    }
    tg_timers_dispose(&p->timers);
    if (p->conninfo != NULL) {
        /* the conninfo may carry a password */
        memset(p->conninfo, 0, strlen(p->conninfo));
        free(p->conninfo);
    }
    free(p->conns);
    free(p);
}

bool tg_pgpool_ready(const tg_pgpool_t *p)
{
    return tg_pgpool_ready_count(p) > 0;
}

unsigned tg_pgpool_ready_count(const tg_pgpool_t *p)
{
    return p != NULL ? atomic_load(&((tg_pgpool_t *)p)->n_ready) : 0;
}

unsigned tg_pgpool_queued(const tg_pgpool_t *p)
{
    return p != NULL ? p->queued : 0;
}

int tg_pgpool_query(tg_pgpool_t *p, const char *sql, int nparams, const char *const *values, tg_pg_cb cb,
                    void *arg)
{
    if (p == NULL || p->queued >= p->max_queue) {
        atomic_fetch_add_explicit(&g_refused, 1, memory_order_relaxed);
        return TG_EDB_UNAVAILABLE; /* a full queue would only wait on a database that is behind */
    }
    pg_conn_t *best = NULL;
    for (unsigned i = 0; i < p->n; i++)
        if (p->conns[i].state == PG_READY && (best == NULL || p->conns[i].inflight < best->inflight))
            best = &p->conns[i];
    if (best == NULL) {
        atomic_fetch_add_explicit(&g_refused, 1, memory_order_relaxed);
        return TG_EDB_UNAVAILABLE;
    }
    pg_job_t *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return TG_ENOMEM;
    if (!PQsendQueryParams(best->conn, sql, nparams, NULL, values, NULL, NULL, 0)) {
        free(j);
        if (PQstatus(best->conn) == CONNECTION_BAD) {
            /* reset later, on the loop: resetting here would run other jobs' callbacks inside this call */
            set_state(best, PG_BROKEN);
            pg_arm_timer(best, 0);
        }
        return TG_EDB_UNAVAILABLE;
    }
    if (!PQpipelineSync(best->conn)) {
        /* a query without its sync would shift every later job's results: take the connection down */
        free(j);
        set_state(best, PG_BROKEN);
        pg_arm_timer(best, 0);
        return TG_EDB_UNAVAILABLE;
    }
    j->cb = cb;
    j->arg = arg;
    j->conn = best;
    *best->tail = j;
    best->tail = &j->next;
    best->inflight++;
    p->queued++;
    atomic_fetch_add_explicit(&g_sent, 1, memory_order_relaxed);
    tg_deadline_arm(&p->timers, &j->deadline, p->job_timeout_ms, pg_on_job_deadline);
    int f = PQflush(best->conn);
    if (f == 1) {
        pg_want_write(best);
    } else if (f < 0) {
        set_state(best, PG_BROKEN); /* the job is queued: it fails from the timer, not from here */
        pg_arm_timer(best, 0);
    }
    return 0;
}

void tg_pgpool_counts(tg_pgpool_counts_t *out)
{
    out->jobs_sent = atomic_load_explicit(&g_sent, memory_order_relaxed);
    out->jobs_timed_out = atomic_load_explicit(&g_timed_out, memory_order_relaxed);
    out->jobs_refused = atomic_load_explicit(&g_refused, memory_order_relaxed);
    out->connect_timeouts = atomic_load_explicit(&g_connect_timeouts, memory_order_relaxed);
}
