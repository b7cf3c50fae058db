/*
 * pgpool.c - async libpq connections in pipeline mode on an h2o loop, see pgpool.h
 * and c-stack.md 4.1.
 *
 * Every job is one PQsendQueryParams followed by its own PQpipelineSync, so
 * a failing query aborts only itself, never its neighbours. Jobs sit in a
 * per-connection FIFO; a job is complete when its PGRES_PIPELINE_SYNC comes
 * back. libpq owns its socket and closes it in PQfinish, so h2o watches a
 * dup() of it. A broken connection fails its queued jobs and reconnects
 * after a growing back-off, driven by an h2o timeout.
 */
#include "pgpool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef enum { PG_IDLE, PG_CONNECTING, PG_READY, PG_BROKEN } pg_state_t;

typedef struct pg_job {
    struct pg_job *next;
    tg_pg_cb cb;
    void *arg;
    bool got_result; /* the callback has run; further results of this job are drained silently */
} pg_job_t;

typedef struct pg_conn {
    tg_pgpool_t *pool;
    PGconn *conn;
    h2o_socket_t *sock; /* wraps a dup() of PQsocket(conn) */
    int fd;             /* the libpq descriptor that sock duplicates */
    pg_state_t state;
    bool want_write;
    pg_job_t *head, **tail;
    unsigned inflight;
    uint32_t backoff_ms;
    /* one duration-0 timeout per connection whose single entry's registered_at is the deadline
     * (c-stack.md 3.3): each connection has its own deadline, and a 2.2.5 timeout list must stay sorted */
    h2o_timeout_t timer;
    h2o_timeout_entry_t timer_entry;
} pg_conn_t;

struct tg_pgpool {
    h2o_loop_t *loop;
    char *conninfo;
    unsigned n;
    pg_conn_t *conns;
    _Atomic unsigned n_ready; /* connections in PG_READY: read by /readyz from any thread */
};

static void pg_on_io(h2o_socket_t *sock, const char *err);
static void pg_start_connect(pg_conn_t *c);

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
    if (h2o_timeout_is_linked(&c->timer_entry))
        h2o_timeout_unlink(&c->timer_entry);
    h2o_timeout_link(c->pool->loop, &c->timer, &c->timer_entry);
    c->timer_entry.registered_at = h2o_now(c->pool->loop) + delay_ms;
}

/* Detaches and fails every queued job. The connection is already out of service, so a callback
 * that queues a new query cannot land on it. */
static void pg_fail_jobs(pg_conn_t *c, const char *why)
{
    pg_job_t *j = c->head;
    c->head = NULL;
    c->tail = &c->head;
    c->inflight = 0;
    while (j != NULL) {
        pg_job_t *next = j->next;
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
    pg_rewrap_socket(c);
    if (c->sock == NULL) {
        pg_reset(c, "database connection failed");
        return;
    }
    pg_want_write(c); /* libpq: start by waiting until the socket is writable */
}

static void pg_on_timer(h2o_timeout_entry_t *e)
{
    pg_conn_t *c = H2O_STRUCT_FROM_MEMBER(pg_conn_t, timer_entry, e);
    if (c->state == PG_BROKEN)
        pg_reset(c, "database connection failed"); /* deferred from tg_pgpool_query */
    else if (c->state == PG_IDLE)
        pg_start_connect(c);
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

tg_pgpool_t *tg_pgpool_create(h2o_loop_t *loop, const char *conninfo, unsigned n_conns)
{
    if (n_conns == 0)
        n_conns = 1;
    tg_pgpool_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->loop = loop;
    p->conninfo = strdup(conninfo);
    p->conns = calloc(n_conns, sizeof(*p->conns));
    if (p->conninfo == NULL || p->conns == NULL) {
        free(p->conninfo);
        free(p->conns);
        free(p);
        return NULL;
    }
    p->n = n_conns;
    for (unsigned i = 0; i < n_conns; i++) {
        pg_conn_t *c = &p->conns[i];
        c->pool = p;
        c->fd = -1;
        c->tail = &c->head;
        c->backoff_ms = BACKOFF_MIN_MS;
        set_state(c, PG_IDLE);
        h2o_timeout_init(loop, &c->timer, 0);
        c->timer_entry.cb = pg_on_timer;
        pg_start_connect(c);
    }
    return p;
}

void tg_pgpool_destroy(tg_pgpool_t *p)
{
    if (p == NULL)
        return;
    for (unsigned i = 0; i < p->n; i++) {
        pg_conn_t *c = &p->conns[i];
        set_state(c, PG_IDLE);
        if (h2o_timeout_is_linked(&c->timer_entry))
            h2o_timeout_unlink(&c->timer_entry);
        pg_close_socket(c);
        if (c->conn != NULL) {
            PQfinish(c->conn);
            c->conn = NULL;
        }
        pg_fail_jobs(c, "database pool closed");
        h2o_timeout_dispose(p->loop, &c->timer);
    }
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
    return p != NULL && atomic_load(&((tg_pgpool_t *)p)->n_ready) > 0;
}

int tg_pgpool_query(tg_pgpool_t *p, const char *sql, int nparams, const char *const *values, tg_pg_cb cb,
                    void *arg)
{
    if (p == NULL)
        return TG_EDB_UNAVAILABLE;
    pg_conn_t *best = NULL;
    for (unsigned i = 0; i < p->n; i++)
        if (p->conns[i].state == PG_READY && (best == NULL || p->conns[i].inflight < best->inflight))
            best = &p->conns[i];
    if (best == NULL)
        return TG_EDB_UNAVAILABLE;
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
    *best->tail = j;
    best->tail = &j->next;
    best->inflight++;
    int f = PQflush(best->conn);
    if (f == 1) {
        pg_want_write(best);
    } else if (f < 0) {
        set_state(best, PG_BROKEN); /* the job is queued: it fails from the timer, not from here */
        pg_arm_timer(best, 0);
    }
    return 0;
}
