/*
 * server.c - worker threads, listeners, routing, signals, reload and drain.
 *
 * Start: the config is loaded and validated whole (every error printed, exit 1), the listen
 * sockets are opened in the main thread (one SO_REUSEPORT socket per worker and listener, so a
 * bind error is reported before any thread starts), then N workers each run their own h2o context
 * on their own evloop, with their own libcurl multi (upstream.c) and async libpq pool.
 *
 * Signals are blocked in every thread; the main thread sigwait()s:
 *   SIGHUP          reload: a valid new config is published (requests in flight keep the snapshot
 *                   they hold), an invalid one is logged error by error and ignored.
 *   SIGTERM/SIGINT  drain: every worker closes its listeners (an h2o_multithread message runs the
 *                   close on the worker's own loop), new requests on already open connections get
 *                   503 shutting_down, and the worker waits until its in-flight work is done or
 *                   shutdown_grace_ms has passed. The process then exits 0.
 *
 * "In flight" is two counters per worker: requests this file's handler has seen whose h2o request
 * pool is not yet freed (the response is completely sent or the client is gone), and
 * tg_worker_t.inflight, which call.c increments when a call starts and decrements when it
 * ends (it covers upstream work that could outlive the request, such as usage settlement).
 *
 * Routing: one handler on "/" per host routes on method and path itself; h2o's prefix matching
 * with first-registered-wins is easy to get wrong.
 */
#define _GNU_SOURCE
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "call.h"
#include "clock.h"
#include "events.h"
#include "framing.h"
#include "keywatch.h"
#include "lastused.h"
#include "ledger.h"
#include "listen.h"
#include "health.h"
#include "http.h"
#include "idempotency.h"
#include "log.h"
#include "memtrim.h"
#include "metrics.h"
#include "retention.h"
#include "stored.h"

#define TG_EVENTS_QUEUE_CAP 65536
#define TG_LOG_QUEUE_BYTES  (1u << 20) /* log lines waiting for a slow sink; beyond it they are dropped */
#define TG_LOG_STOP_MS      2000       /* how long the exit waits for a stalled log sink */
#define TG_DRAIN_POLL_MS    100 /* upper bound of one loop wait while draining (the loop still wakes on I/O) */

enum ctl_kind { CTL_STOP, CTL_HEALTH_APPLY };

typedef struct ctl_msg {
    h2o_multithread_message_t super;
    enum ctl_kind kind;
    bool preallocated; /* the worker's stop message: part of its priv, never freed */
    tg_config_t *cfg;  /* CTL_HEALTH_APPLY: a reference owned by the message */
} ctl_msg_t;

struct tg_server_priv {
    h2o_accept_ctx_t data_accept, admin_accept;
    int data_fd, admin_fd;
    h2o_socket_t *data_listener, *admin_listener;
    h2o_multithread_receiver_t ctl_rx;
    pthread_t tid;
    /* The stop message exists from the start, so sending it cannot fail: an allocation failure at
     * drain time used to leave the worker asleep in h2o_evloop_run with only a flag set. */
    ctl_msg_t stop_msg;
    atomic_bool stopping; /* set by on_ctl on the worker's own loop, read by worker_main */
    bool failed;
    size_t active_reqs; /* requests seen by our handlers whose pool is not freed yet */
    tg_health_t *health;
};

static h2o_globalconf_t g_conf;
static h2o_hostconf_t *g_data_hosts[2], *g_admin_hosts[2];
static tg_worker_t *g_workers;
static size_t g_nworkers;
static atomic_bool g_draining;
static tg_route_fn g_admin_router;
static tg_route_fn g_metrics_guard; /* admin/authn.c: 0 serves /metrics, else it answered */
static pthread_barrier_t g_start_barrier;
/* Workers tear down their pools only once every worker has stopped serving: /readyz on one worker
 * reads the pools of all (all_pools_ready). */
static pthread_barrier_t g_stop_barrier;

bool tg_server_draining(void)
{
    return atomic_load(&g_draining);
}

void tg_server_set_admin_router(tg_route_fn fn)
{
    g_admin_router = fn;
}

void tg_server_set_metrics_guard(tg_route_fn fn)
{
    g_metrics_guard = fn;
}

/* ---------------------------------------------------------------- request tracking */

typedef struct req_track {
    tg_worker_t *w;
} req_track_t;

static void on_track_dispose(void *p)
{
    req_track_t *t = p;
    t->w->_priv->active_reqs--;
}

static void track_request(h2o_req_t *req)
{
    tg_worker_t *w = tg_worker_of(req);
    req_track_t *t = h2o_mem_alloc_shared(&req->pool, sizeof(*t), on_track_dispose);
    t->w = w;
    w->_priv->active_reqs++;
    tg_memtrim_note();
}

/* ---------------------------------------------------------------- common routes */

static bool path_is(const h2o_req_t *req, const char *p)
{
    return h2o_memis(req->path_normalized.base, req->path_normalized.len, p, strlen(p));
}

static bool method_is(const h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static void send_method_not_allowed(h2o_req_t *req, const char *allow)
{
    tg_http_add_header(req, "allow", allow);
    tg_http_send_error(req, TG_EMETHOD_NOT_ALLOWED, NULL, NULL, 0);
}

static void handle_healthz(h2o_req_t *req)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    tg_http_send_raw_json(req, 200, ok, sizeof(ok) - 1);
}

/* Ready means every worker can reach the database: a load balancer cannot choose which worker
 * (SO_REUSEPORT) a connection lands on, so one worker still connecting makes the process not ready. */
static bool all_pools_ready(void)
{
    for (size_t i = 0; i < g_nworkers; i++)
        if (g_workers[i].pg == NULL || !tg_pgpool_ready(g_workers[i].pg))
            return false;
    return g_nworkers > 0;
}

static void handle_readyz(h2o_req_t *req)
{
    const char *reason = NULL;
    tg_config_t *cfg = tg_config_acquire();
    if (tg_server_draining())
        reason = "shutting down";
    else if (cfg == NULL)
        reason = "config not loaded";
    else if (!all_pools_ready())
        reason = "database not reachable";
    tg_config_unref(cfg);
    if (reason == NULL) {
        static const char ok[] = "{\"status\":\"ready\"}";
        tg_http_send_raw_json(req, 200, ok, sizeof(ok) - 1);
        return;
    }
    json_t *v = json_pack("{s:s,s:s}", "status", "not_ready", "reason", reason);
    tg_http_send_json(req, 503, v);
    json_decref(v);
}

static void handle_metrics(h2o_req_t *req)
{
    tg_buf_t b;
    tg_buf_init(&b, 16u << 20);
    if (tg_metrics_render(&b) != 0) {
        tg_buf_dispose(&b);
        tg_http_send_error(req, TG_EINTERNAL, NULL, NULL, 0);
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = b.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/plain; version=0.0.4; charset=utf-8"));
    h2o_send_inline(req, b.data != NULL ? b.data : "", b.len);
    tg_buf_dispose(&b);
}

/* /healthz and /readyz, on both listeners. Returns true when the path is one of them. */
static bool route_probes(h2o_req_t *req)
{
    bool get = method_is(req, "GET") || method_is(req, "HEAD");
    if (path_is(req, "/healthz")) {
        if (get)
            handle_healthz(req);
        else
            send_method_not_allowed(req, "GET");
        return true;
    }
    if (path_is(req, "/readyz")) {
        if (get)
            handle_readyz(req);
        else
            send_method_not_allowed(req, "GET");
        return true;
    }
    return false;
}

/*
 * RFC 9112, section 6.3: a request whose body length is ambiguous gets 400 and the connection is
 * closed after the answer, so bytes after the body that h2o would otherwise read as the next
 * request are never served. Runs before any route, on both listeners.
 */
static bool refuse_ambiguous_framing(h2o_req_t *req)
{
    const char *why = NULL;
    int rc = tg_framing_check(req, &why);
    if (rc == 0)
        return false;
    req->http1_is_persistent = 0; /* h2o then sends `Connection: close` and closes after the answer */
    TG_LOG(TG_LOG_WARN, "request_framing_refused", TG_KV_STR("reason", why));
    tg_http_send_error(req, rc, why, NULL, 0);
    return true;
}

/* ---------------------------------------------------------------- data listener */

static int on_data_req(h2o_handler_t *self, h2o_req_t *req)
{
    track_request(req);
    if (refuse_ambiguous_framing(req))
        return 0;
    if (route_probes(req))
        return 0;
    if (tg_server_draining()) {
        tg_http_send_error(req, TG_ESHUTTING_DOWN, NULL, NULL, 1);
        return 0;
    }
    int rc = 0;
    if (path_is(req, "/v1/chat/completions")) {
        if (!method_is(req, "POST")) {
            send_method_not_allowed(req, "POST");
            return 0;
        }
        rc = tg_chat_handle(req);
    } else if (path_is(req, "/v1/models")) {
        if (!method_is(req, "GET")) {
            send_method_not_allowed(req, "GET");
            return 0;
        }
        rc = tg_models_handle(req);
    } else if (path_is(req, "/v1/wallet") || path_is(req, "/v1/usage")) {
        if (!method_is(req, "GET")) {
            send_method_not_allowed(req, "GET");
            return 0;
        }
        rc = path_is(req, "/v1/wallet") ? tg_wallet_handle(req) : tg_usage_handle(req);
    } else {
        tg_http_send_error(req, TG_ENOT_FOUND, NULL, NULL, 0);
        return 0;
    }
    if (rc != 0)
        tg_http_send_error(req, rc < 0 ? rc : TG_EINTERNAL, NULL, NULL, 0);
    return 0;
}

/* ---------------------------------------------------------------- admin listener */

static int on_admin_req(h2o_handler_t *self, h2o_req_t *req)
{
    track_request(req);
    if (refuse_ambiguous_framing(req))
        return 0;
    if (route_probes(req))
        return 0;
    if (path_is(req, "/metrics")) {
        if (g_metrics_guard != NULL && g_metrics_guard(req) != 0)
            return 0;
        if (method_is(req, "GET") || method_is(req, "HEAD"))
            handle_metrics(req);
        else
            send_method_not_allowed(req, "GET");
        return 0;
    }
    if (tg_server_draining()) {
        tg_http_send_error(req, TG_ESHUTTING_DOWN, NULL, NULL, 1);
        return 0;
    }
    if (req->path_normalized.len >= 7 && memcmp(req->path_normalized.base, "/admin/", 7) == 0 &&
        g_admin_router != NULL) {
        if (g_admin_router(req) == 0)
            return 0;
    }
    tg_http_send_error(req, TG_ENOT_FOUND, NULL, NULL, 0);
    return 0;
}

/* ---------------------------------------------------------------- request metrics */

typedef struct {
    h2o_logger_t super;
    bool admin;
} metrics_logger_t;

static const char *route_label(const h2o_req_t *req, bool admin)
{
    static const char *const data_routes[] = {
        "/v1/chat/completions", "/v1/models", "/v1/wallet", "/v1/usage", "/healthz", "/readyz"};
    static const char *const admin_routes[] = {"/healthz", "/readyz", "/metrics"};
    const char *const *routes = admin ? admin_routes : data_routes;
    size_t n =
        admin ? sizeof(admin_routes) / sizeof(admin_routes[0]) : sizeof(data_routes) / sizeof(data_routes[0]);
    for (size_t i = 0; i < n; i++)
        if (path_is(req, routes[i]))
            return routes[i];
    if (admin && req->path_normalized.len >= 7 && memcmp(req->path_normalized.base, "/admin/", 7) == 0)
        return "/admin";
    return "other"; /* bounded label set: never the raw path */
}

/* Runs when a request ends (h2o_dispose_request): the final status is known. */
static void on_log_access(h2o_logger_t *self, h2o_req_t *req)
{
    metrics_logger_t *l = (metrics_logger_t *)self;
    char labels[160] = "", status[12];
    /* No status: the client left before any answer (an HTTP/2 stream reset, a connection closed
     * while the handler waited). Counted as the access log names it, 499 client_closed. */
    int st = req->res.status != 0 ? req->res.status : tg_err_http_status(TG_ECLIENT_CLOSED);
    snprintf(status, sizeof(status), "%d", st);
    tg_metrics_label(labels, sizeof(labels), "route", route_label(req, l->admin));
    tg_metrics_label(labels, sizeof(labels), "status", status);
    tg_metrics_add("tollgate_requests_total", labels, 1);
}

/* ---------------------------------------------------------------- h2o's own error pages as JSON */

/*
 * h2o answers some requests itself, before or without any handler: 413 for a body over
 * max_request_entity_size, 400 for a broken chunked body, 404 for a request target that is not
 * a path (`OPTIONS *`). Those go through the host's fallback path; this filter rewrites their
 * text/plain body into the OpenAI error shape, so every error a client sees parses the same way.
 */
typedef struct {
    h2o_ostream_t super;
    h2o_iovec_t body;
} json_error_ostream_t;

static int error_for_status(int status)
{
    switch (status) {
    case 400:
        return TG_EINVALID_REQUEST;
    case 404:
        return TG_ENOT_FOUND;
    case 405:
        return TG_EMETHOD_NOT_ALLOWED;
    case 413:
        return TG_ETOO_LARGE;
    case 503:
        return TG_ESHUTTING_DOWN;
    default:
        return status >= 500 ? TG_EINTERNAL : status >= 400 ? TG_EINVALID_REQUEST : 0;
    }
}

static void json_error_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t n,
                               h2o_send_state_t state)
{
    json_error_ostream_t *o = (json_error_ostream_t *)self;
    h2o_iovec_t b = o->body;
    o->body = h2o_iovec_init(NULL, 0); /* the original text is dropped; our body goes out once */
    h2o_ostream_send_next(self, req, &b, b.len != 0 ? 1 : 0, state);
}

static void on_setup_error_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    int err = error_for_status(req->res.status);
    if (err != 0) {
        tg_buf_t b;
        tg_buf_init(&b, 1024);
        if (tg_http_error_json(&b, tg_err_public_msg(err), tg_err_type(err), tg_err_code(err), NULL) == 0) {
            json_error_ostream_t *o = (void *)h2o_add_ostream(req, sizeof(*o), slot);
            o->super.do_send = json_error_do_send;
            o->body = h2o_strdup(&req->pool, b.data, b.len);
            req->res.content_length = b.len;
            ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
            if (i != -1)
                req->res.headers.entries[i].value = h2o_iovec_init(H2O_STRLIT("application/json"));
            slot = &o->super.next;
        }
        tg_buf_dispose(&b);
    }
    h2o_setup_next_ostream(req, slot);
}

/* ---------------------------------------------------------------- listeners */

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

/*
 * Opens n SO_REUSEPORT sockets on one address. A plain bind first checks the port is free: with
 * SO_REUSEPORT alone a second tollgate of the same user would silently share the port.
 */
static int open_listeners(const char *what, const char *host, uint16_t port, bool loopback_only, int *fds,
                          size_t n)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(host, port, &ss, &len) != 0) {
        fprintf(stderr, "listen.%s: cannot resolve \"%s\"\n", what, host);
        return -1;
    }
    if (loopback_only && !is_loopback(&ss)) {
        fprintf(stderr,
                "listen.%s: \"%s\" is not a loopback address; without admin_auth the admin listener "
                "must bind to 127.0.0.1 or ::1\n",
                what, host);
        return -1;
    }
    int probe = tg_listen_open(&ss, len, false);
    if (probe < 0) {
        fprintf(stderr, "listen.%s: cannot bind %s:%u: %s\n", what, host, (unsigned)port, strerror(errno));
        return -1;
    }
    close(probe);
    for (size_t i = 0; i < n; i++) {
        fds[i] = tg_listen_open(&ss, len, true);
        if (fds[i] < 0) {
            fprintf(stderr, "listen.%s: cannot listen on %s:%u: %s\n", what, host, (unsigned)port,
                    strerror(errno));
            while (i-- > 0)
                close(fds[i]);
            return -1;
        }
    }
    return 0;
}

static void close_listener(h2o_socket_t **l)
{
    if (*l == NULL)
        return;
    h2o_socket_read_stop(*l);
    h2o_socket_close(*l); /* closes the fd */
    *l = NULL;
}

/* ---------------------------------------------------------------- workers */

static void on_ctl(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    struct tg_server_priv *priv = H2O_STRUCT_FROM_MEMBER(struct tg_server_priv, ctl_rx, rx);
    tg_worker_t *w = NULL;
    for (size_t i = 0; i < g_nworkers; i++)
        if (g_workers[i]._priv == priv)
            w = &g_workers[i];
    while (!h2o_linklist_is_empty(messages)) {
        ctl_msg_t *m = H2O_STRUCT_FROM_MEMBER(ctl_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&m->super.link);
        if (m->kind == CTL_STOP && w != NULL) {
            close_listener(&priv->data_listener);
            close_listener(&priv->admin_listener);
            h2o_context_request_shutdown(&w->ctx); /* GOAWAY on h2; no keep-alive after the next answer */
            atomic_store(&priv->stopping, true);
        } else if (m->kind == CTL_HEALTH_APPLY && priv->health != NULL) {
            tg_health_apply(priv->health, m->cfg);
        }
        tg_config_unref(m->cfg);
        if (!m->preallocated)
            free(m);
    }
}

static int send_ctl(tg_worker_t *w, enum ctl_kind kind, tg_config_t *cfg)
{
    ctl_msg_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return TG_ENOMEM;
    m->kind = kind;
    m->cfg = cfg;
    h2o_multithread_send_message(&w->_priv->ctl_rx, &m->super); /* thread-safe; wakes the worker's loop */
    return 0;
}

static bool worker_idle(const tg_worker_t *w)
{
    return w->_priv->active_reqs == 0 && w->inflight == 0;
}

static void *worker_main(void *arg)
{
    tg_worker_t *w = arg;
    struct tg_server_priv *priv = w->_priv;
    h2o_context_init(&w->ctx, h2o_evloop_create(), &g_conf);
    h2o_loop_t *loop = w->ctx.loop;
    h2o_multithread_register_receiver(w->ctx.queue, &priv->ctl_rx, on_ctl);

    tg_config_t *cfg = tg_config_acquire();
    h2o_linklist_init_anchor(&w->calls);
    w->upstream = tg_upstream_create(loop);
    tg_pgpool_opts_t pg_opts = {.n_conns = cfg->db_pool_size,
                                .job_timeout_ms = cfg->db_job_timeout_ms,
                                .max_queue = cfg->db_max_queue};
    w->pg = cfg->database_url != NULL ? tg_pgpool_create(loop, cfg->database_url, &pg_opts) : NULL;
    if (w->upstream == NULL || (cfg->database_url != NULL && w->pg == NULL))
        priv->failed = true;
    if (w->idx == 0 && !priv->failed) {
        priv->health = tg_health_start(loop, w->upstream);
        if (priv->health != NULL)
            tg_health_apply(priv->health, cfg);
    }
    if (w->idx == 0 && w->pg != NULL)
        tg_idem_purge_start(loop, w->pg); /* expired Idempotency-Keys (idempotency.h) */
    tg_config_unref(cfg);
    tg_memtrim_start(loop, &w->inflight);

    priv->data_accept.ctx = &w->ctx;
    priv->data_accept.hosts = g_data_hosts;
    priv->admin_accept.ctx = &w->ctx;
    priv->admin_accept.hosts = g_admin_hosts;
    priv->data_listener = h2o_evloop_socket_create(loop, priv->data_fd, H2O_SOCKET_FLAG_DONT_READ);
    priv->data_listener->data = &priv->data_accept;
    priv->admin_listener = h2o_evloop_socket_create(loop, priv->admin_fd, H2O_SOCKET_FLAG_DONT_READ);
    priv->admin_listener->data = &priv->admin_accept;
    pthread_barrier_wait(&g_start_barrier);
    if (!priv->failed) {
        h2o_socket_read_start(priv->data_listener, tg_listen_on_accept);
        h2o_socket_read_start(priv->admin_listener, tg_listen_on_accept);
    }

    while (!atomic_load(&priv->stopping))
        h2o_evloop_run(loop, INT32_MAX);

    /* Drain: serve what is in flight, bounded by the grace period. */
    cfg = tg_config_acquire();
    uint64_t deadline = tg_now_ms() + (cfg != NULL ? cfg->shutdown_grace_ms : 0);
    tg_config_unref(cfg);
    uint64_t now;
    while (!worker_idle(w) && (now = tg_now_ms()) < deadline) {
        uint64_t left = deadline - now;
        h2o_evloop_run(loop, (int32_t)(left < TG_DRAIN_POLL_MS ? left : TG_DRAIN_POLL_MS));
    }
    if (!worker_idle(w)) {
        /* Past the grace period every live call ends now (503, or an error event for a stream
         * under way), through SETTLE and LOG; one more loop turn writes what that produced. */
        TG_LOG(TG_LOG_WARN, "drain_timeout", TG_KV_INT("worker", w->idx),
               TG_KV_INT("requests", priv->active_reqs), TG_KV_INT("inflight", w->inflight));
        tg_calls_abort(w);
        h2o_evloop_run(loop, 0);
    }
    bool clean = worker_idle(w);
    pthread_barrier_wait(&g_stop_barrier);
    if (w->idx == 0)
        tg_idem_purge_stop();
    if (priv->health != NULL) {
        tg_health_stop(priv->health);
        priv->health = NULL;
    }
    tg_memtrim_stop();
    /* Only tear down what callbacks might still touch when nothing is in flight; otherwise the
     * process is about to exit and the OS reclaims it. */
    if (clean) {
        tg_upstream_destroy(w->upstream);
        w->upstream = NULL;
        if (w->pg != NULL) {
            tg_pgpool_destroy(w->pg);
            w->pg = NULL;
        }
        /* Let deferred frees (zero timeouts) and pool disposals run once more. */
        h2o_evloop_run(loop, 0);
    }
    return NULL;
}

/* ---------------------------------------------------------------- setup */

static void register_metrics(void)
{
    tg_metrics_register("tollgate_requests_total", "HTTP requests answered, by route and status.",
                        TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_failovers_total", "Failover events, by from/to target and reason.",
                        TG_METRIC_COUNTER);
    tg_metrics_register("tollgate_breaker_state",
                        "Circuit breaker state per target (0 closed, 1 open, 2 half-open).", TG_METRIC_GAUGE);
    tg_metrics_register("tollgate_attempt_duration_seconds",
                        "Upstream attempt duration, by target and outcome.", TG_METRIC_HISTOGRAM);
    tg_metrics_register("tollgate_upstream_active", "Upstream transfers in progress.", TG_METRIC_GAUGE);
    tg_metrics_register("tollgate_events_dropped_total",
                        "Failover events dropped because the queue was full.", TG_METRIC_COUNTER);
    tg_metrics_set("tollgate_upstream_active", "", 0);
}

static void setup_host(h2o_hostconf_t **slot, const char *name, int (*on_req)(h2o_handler_t *, h2o_req_t *),
                       bool admin)
{
    h2o_hostconf_t *host = h2o_config_register_host(&g_conf, h2o_iovec_init(name, strlen(name)), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(path, sizeof(h2o_handler_t))->on_req = on_req;
    metrics_logger_t *l = (metrics_logger_t *)h2o_create_logger(path, sizeof(*l));
    l->super.log_access = on_log_access;
    l->admin = admin;
    h2o_create_filter(&host->fallback_path, sizeof(h2o_filter_t))->on_setup_ostream = on_setup_error_ostream;
    l = (metrics_logger_t *)h2o_create_logger(&host->fallback_path,
                                              sizeof(*l)); /* h2o's own answers count too */
    l->super.log_access = on_log_access;
    l->admin = admin;
    slot[0] = host;
    slot[1] = NULL;
}

static void print_errors(const tg_buf_t *errors)
{
    fputs(errors->data != NULL ? errors->data : "configuration is not valid\n", stderr);
    if (errors->len > 0 && errors->data[errors->len - 1] != '\n')
        fputc('\n', stderr);
}

static void log_errors(const char *event, const tg_buf_t *errors)
{
    const char *p = errors->data != NULL ? errors->data : "";
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        char line[512];
        snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) - 1 ? n : sizeof(line) - 1), p);
        if (n > 0)
            TG_LOG(TG_LOG_ERROR, event, TG_KV_STR("error", line));
        p += n + (nl != NULL ? 1 : 0);
    }
}

static void reload(const char *path)
{
    tg_config_t *cfg = NULL;
    tg_buf_t errors;
    tg_buf_init(&errors, 64 * 1024);
    if (tg_config_load(path, &cfg, &errors) != 0) {
        log_errors("config_reload_failed", &errors);
        tg_buf_dispose(&errors);
        return;
    }
    tg_buf_dispose(&errors);
    tg_config_t *old = tg_config_acquire();
    if (old != NULL &&
        (old->data_port != cfg->data_port || old->admin_port != cfg->admin_port ||
         strcmp(old->data_host, cfg->data_host) != 0 || strcmp(old->admin_host, cfg->admin_host) != 0 ||
         old->workers != cfg->workers || old->max_body_bytes != cfg->max_body_bytes ||
         (old->database_url == NULL) != (cfg->database_url == NULL) ||
         (old->database_url != NULL && strcmp(old->database_url, cfg->database_url) != 0) ||
         old->db_pool_size != cfg->db_pool_size))
        TG_LOG(TG_LOG_WARN, "config_restart_required",
               TG_KV_STR("fields", "listen, workers, database, limits.max_body_bytes"));
    tg_config_unref(old);
    tg_config_t *for_health = tg_config_ref(cfg);
    tg_config_publish(cfg);
    if (g_nworkers > 0 && send_ctl(&g_workers[0], CTL_HEALTH_APPLY, for_health) != 0)
        tg_config_unref(for_health);
    TG_LOG(TG_LOG_INFO, "config_reloaded", TG_KV_INT("providers", cfg->n_providers),
           TG_KV_INT("models", cfg->n_models), TG_KV_INT("chains", cfg->n_chains));
}

static int run(const char *config_path)
{
    /* Signals first: threads started below (workers, the events writer) inherit the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    tg_config_t *cfg = NULL;
    tg_buf_t errors;
    tg_buf_init(&errors, 64 * 1024);
    if (tg_config_load(config_path, &cfg, &errors) != 0) {
        print_errors(&errors);
        tg_buf_dispose(&errors);
        return 1;
    }
    tg_buf_dispose(&errors);

    atomic_store(&g_draining, false); /* a second run in one process (tests) starts serving */
    g_nworkers = cfg->workers > 0 ? cfg->workers : 1;
    g_workers = calloc(g_nworkers, sizeof(*g_workers));
    struct tg_server_priv *privs = calloc(g_nworkers, sizeof(*privs));
    int *data_fds = calloc(g_nworkers, sizeof(int)), *admin_fds = calloc(g_nworkers, sizeof(int));
    if (g_workers == NULL || privs == NULL || data_fds == NULL || admin_fds == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (open_listeners("data", cfg->data_host, cfg->data_port, false, data_fds, g_nworkers) != 0) {
        tg_config_unref(cfg);
        return 1;
    }
    if (open_listeners("admin", cfg->admin_host, cfg->admin_port, !cfg->admin_auth.enabled, admin_fds,
                       g_nworkers) != 0) {
        for (size_t i = 0; i < g_nworkers; i++)
            close(data_fds[i]);
        tg_config_unref(cfg);
        return 1;
    }

    register_metrics();
    h2o_config_init(&g_conf);
    /* h2o buffers the whole body before the handler runs; its default cap is 1 GiB. */
    g_conf.max_request_entity_size = cfg->max_body_bytes;
    setup_host(g_data_hosts, "data", on_data_req, false);
    setup_host(g_admin_hosts, "admin", on_admin_req, true);

    char data_addr[300], admin_addr[300];
    snprintf(data_addr, sizeof(data_addr), "%s:%u", cfg->data_host, (unsigned)cfg->data_port);
    snprintf(admin_addr, sizeof(admin_addr), "%s:%u", cfg->admin_host, (unsigned)cfg->admin_port);
    const char *events_db = cfg->database_url;
    /* no core file, no ptrace: what a crash leaves must not carry prompts (retention.h) */
    tg_retention_protect_process(cfg->retention.allow_core_dumps);
    if (tg_stored_start(events_db, cfg) != 0) /* stored_requests: its writer and partition job */
        TG_LOG(TG_LOG_WARN, "stored_requests_writer_unavailable");
    /* the credit ledger: journal replay, prices, its writer (billing off: nothing) */
    if (tg_ledger_start(events_db, cfg) != 0) {
        TG_LOG(TG_LOG_ERROR, "ledger_unavailable",
               TG_KV_STR("why", "billing is on and the ledger cannot start"));
        tg_config_unref(cfg);
        return 1;
    }
    tg_config_publish(cfg); /* takes over our reference */
    cfg = NULL;
    if (tg_events_start(events_db, TG_EVENTS_QUEUE_CAP) != 0)
        TG_LOG(TG_LOG_WARN, "events_writer_unavailable");
    if (tg_keywatch_start(events_db) != 0) /* revoked keys leave the cache at once */
        TG_LOG(TG_LOG_WARN, "keywatch_unavailable");
    if (tg_lastused_start(events_db) != 0) /* api_keys.last_used_at, in batches */
        TG_LOG(TG_LOG_WARN, "lastused_unavailable");

    pthread_barrier_init(&g_start_barrier, NULL, (unsigned)g_nworkers + 1);
    pthread_barrier_init(&g_stop_barrier, NULL, (unsigned)g_nworkers);
    for (size_t i = 0; i < g_nworkers; i++) {
        g_workers[i].idx = i;
        g_workers[i]._priv = &privs[i];
        privs[i].data_fd = data_fds[i];
        privs[i].stop_msg.kind = CTL_STOP;
        privs[i].stop_msg.preallocated = true;
        privs[i].admin_fd = admin_fds[i];
        h2o_multithread_create_thread(&privs[i].tid, NULL, worker_main, &g_workers[i]);
    }
    free(data_fds);
    free(admin_fds);
    pthread_barrier_wait(&g_start_barrier);
    bool failed = false;
    for (size_t i = 0; i < g_nworkers; i++)
        failed |= privs[i].failed;

    int exit_code = 0;
    if (failed) {
        TG_LOG(TG_LOG_ERROR, "server_start_failed");
        exit_code = 1;
    } else {
        TG_LOG(TG_LOG_INFO, "server_started", TG_KV_STR("data", data_addr), TG_KV_STR("admin", admin_addr),
               TG_KV_INT("workers", g_nworkers));
        for (;;) {
            int sig = 0;
            if (sigwait(&sigs, &sig) != 0)
                continue;
            if (sig == SIGHUP) {
                reload(config_path);
                continue;
            }
            TG_LOG(TG_LOG_INFO, "drain_started", TG_KV_STR("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
            break;
        }
    }

    atomic_store(&g_draining, true);
    for (size_t i = 0; i < g_nworkers; i++) /* thread-safe, cannot fail, wakes the worker's loop */
        h2o_multithread_send_message(&privs[i].ctl_rx, &privs[i].stop_msg.super);
    for (size_t i = 0; i < g_nworkers; i++)
        pthread_join(privs[i].tid, NULL);
    tg_events_stop();
    tg_ledger_stop(); /* after the workers: every call has settled */
    tg_stored_stop();
    tg_keywatch_stop();
    tg_lastused_stop();
    pthread_barrier_destroy(&g_start_barrier);
    pthread_barrier_destroy(&g_stop_barrier);
    TG_LOG(TG_LOG_INFO, "server_stopped", TG_KV_INT("exit_code", exit_code));
    /* The h2o contexts, loops and g_conf stay allocated until exit: idle keep-alive connections may
     * still reference them, and the process ends right after this returns. */
    tg_config_publish(NULL);
    return exit_code;
}

int tg_server_run(const char *config_path)
{
    /* From here a stalled log sink costs dropped lines, never a blocked worker (log.h). */
    if (tg_log_start(TG_LOG_QUEUE_BYTES) != 0)
        TG_LOG(TG_LOG_WARN, "log_writer_unavailable");
    int rc = run(config_path);
    tg_log_stop(TG_LOG_STOP_MS); /* what is queued is written before the process exits */
    return rc;
}
