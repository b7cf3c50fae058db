/* tollgate-bench-floor: the fixed stack's own cost, measured by bench/run.sh next to the direct path.
 *
 * An HTTP/1.1 proxy built from the two libraries every tollgate request passes through and nothing
 * else: h2o 2.2.5 (evloop) serves the client, and tollgate's own upstream module (libcurl's
 * multi-socket API on the same loop, gateway/src/upstream.c) calls the upstream. A POST (with its
 * body, as it came) or a GET goes to UPSTREAM + the request's path, and the answer comes back whole,
 * with its status and content type; a stream too, which only makes the floor cheaper than a relay
 * of events would be. There is no auth, no JSON, no routing, no failover, no metrics and no logs.
 *
 * Its throughput over the direct path's is therefore what tollgate would reach on the same machine
 * if all of its own per-request work were free. The relay (relay.c) is the floor of any proxy; this
 * is the floor of a proxy made of h2o and libcurl. Threads as tollgate's workers: one h2o loop and
 * one upstream module each, an SO_REUSEPORT listener each (--threads, default 1, so that bench/run.sh
 * gives it as many as the gateway has). A bench tool: not installed, not shipped. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "addr.h"
#include "buf.h"
#include "listen.h"
#include "upstream.h"

#define MAX_BODY    (1024 * 1024) /* request and answer alike: larger ones get 413 / 502 */
#define MAX_THREADS 64

typedef struct fl_worker {
    h2o_context_t ctx; /* a request's conn->ctx leads back to its worker */
    h2o_accept_ctx_t accept_ctx;
    tg_upstream_t *up;
    int listen_fd;
    pthread_t thread;
} fl_worker_t;

static h2o_globalconf_t g_conf;
static char g_upstream[256]; /* "http://HOST:PORT" */
static atomic_int g_stop;    /* set by the main thread; each loop sees it within 1 s */
static const tg_timeouts_t g_timeouts = {
    .connect_ms = 5000, .first_byte_ms = 30000, .idle_ms = 30000, .total_ms = 60000};

/* One proxied request. Lives in req->pool; its dispose callback runs however the request ends and
 * cancels a transfer still running, so no curl callback can reach a freed call. */
typedef struct fl_call {
    h2o_req_t *req;
    tg_transfer_t *xfer; /* NULL once done */
    int status;
    char ctype[128];
    tg_buf_t body;
} fl_call_t;

static void send_text(h2o_req_t *req, int status, const char *reason, const char *msg)
{
    req->res.status = status;
    req->res.reason = reason;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain"));
    h2o_send_inline(req, msg, strlen(msg));
}

static void on_head(void *ud, int status, const char *content_type, const char *retry_after)
{
    fl_call_t *c = ud;
    (void)retry_after;
    c->status = status;
    snprintf(c->ctype, sizeof(c->ctype), "%s", content_type != NULL ? content_type : "");
}

static int on_data(void *ud, const char *p, size_t n)
{
    fl_call_t *c = ud;
    return tg_buf_append(&c->body, p, n) == 0 ? 0 : -1;
}

static void on_done(void *ud, int rc, const char *timeout_kind)
{
    fl_call_t *c = ud;
    h2o_req_t *req = c->req;
    (void)timeout_kind;
    c->xfer = NULL;
    if (rc != 0) {
        send_text(req, 502, "Bad Gateway", "upstream failed\n");
        return;
    }
    req->res.status = c->status;
    req->res.reason = "OK";
    if (c->ctype[0] != '\0') {
        size_t n = strlen(c->ctype);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       h2o_strdup(&req->pool, c->ctype, n).base, n);
    }
    /* h2o_send_inline copies the bytes into the pool; the buffer is freed at dispose */
    h2o_send_inline(req, c->body.data != NULL ? c->body.data : "", c->body.len);
}

static void on_call_dispose(void *p)
{
    fl_call_t *c = p;
    if (c->xfer != NULL)
        tg_transfer_cancel(c->xfer); /* the client left first: no callback runs after this */
    tg_buf_dispose(&c->body);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    static const tg_transfer_cbs_t cbs = {.on_head = on_head, .on_data = on_data, .on_done = on_done};
    (void)self;
    bool post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    if (!post && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        send_text(req, 405, "Method Not Allowed", "GET and POST only\n");
        return 0;
    }
    tg_upstream_req_t ureq = {.method = post ? "POST" : "GET"};
    size_t ulen = strlen(g_upstream) + req->path.len;
    ureq.url = malloc(ulen + 1);
    if (post)
        ureq.body = malloc(req->entity.len + 1);
    if (ureq.url == NULL || (post && ureq.body == NULL) ||
        (post && tg_upstream_req_add_header(&ureq, "Content-Type", "application/json") != 0)) {
        tg_upstream_req_dispose(&ureq);
        send_text(req, 500, "Internal Server Error", "out of memory\n");
        return 0;
    }
    snprintf(ureq.url, ulen + 1, "%s%.*s", g_upstream, (int)req->path.len, req->path.base);
    if (post) {
        if (req->entity.len > 0)
            memcpy(ureq.body, req->entity.base, req->entity.len);
        ureq.body_len = req->entity.len;
    }

    fl_call_t *c = h2o_mem_alloc_shared(&req->pool, sizeof(*c), on_call_dispose);
    memset(c, 0, sizeof(*c));
    c->req = req;
    tg_buf_init(&c->body, MAX_BODY);
    fl_worker_t *w = H2O_STRUCT_FROM_MEMBER(fl_worker_t, ctx, req->conn->ctx);
    c->xfer = tg_transfer_start(w->up, &ureq, &g_timeouts, &cbs, c);
    if (c->xfer == NULL)
        send_text(req, 502, "Bad Gateway", "could not start the transfer\n");
    return 0;
}

/* One loop per thread. The loop waits 1 s at most, so a stop is seen within a second. */
static void *worker_main(void *arg)
{
    fl_worker_t *w = arg;
    h2o_socket_t *listener = h2o_evloop_socket_create(w->ctx.loop, w->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    listener->data = &w->accept_ctx;
    h2o_socket_read_start(listener, tg_listen_on_accept);
    while (!atomic_load(&g_stop))
        h2o_evloop_run(w->ctx.loop, 1000);
    h2o_socket_read_stop(listener);
    h2o_socket_close(listener);
    tg_upstream_destroy(w->up); /* cancels what is still running: the process is going away */
    return NULL;
}

int main(int argc, char **argv)
{
    const char *listen_s = NULL, *up_s = NULL;
    int nthreads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--listen") == 0)
            listen_s = argv[i + 1];
        else if (strcmp(argv[i], "--upstream") == 0)
            up_s = argv[i + 1];
        else if (strcmp(argv[i], "--threads") == 0)
            nthreads = atoi(argv[i + 1]);
    }
    struct sockaddr_storage addr, up;
    socklen_t addr_len, up_len;
    if (listen_s == NULL || up_s == NULL || nthreads < 1 || nthreads > MAX_THREADS ||
        tg_addr_parse(listen_s, false, &addr, &addr_len) != 0 ||
        tg_addr_parse(up_s, false, &up, &up_len) != 0 ||
        snprintf(g_upstream, sizeof(g_upstream), "http://%s", up_s) >= (int)sizeof(g_upstream)) {
        fprintf(stderr,
                "usage: tollgate-bench-floor --listen HOST:PORT --upstream HOST:PORT [--threads 1..%d]\n",
                MAX_THREADS);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop_sigs;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGTERM);
    sigaddset(&stop_sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_sigs, NULL); /* the threads inherit it; main sigwait()s */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "tollgate-bench-floor: curl_global_init failed\n");
        return 1;
    }

    h2o_config_init(&g_conf);
    g_conf.max_request_entity_size = MAX_BODY;
    h2o_hostconf_t *host = h2o_config_register_host(&g_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(pc, sizeof(h2o_handler_t))->on_req = on_req;

    static fl_worker_t workers[MAX_THREADS];
    for (int i = 0; i < nthreads; i++) { /* every listener is bound before "listening" is printed */
        fl_worker_t *w = &workers[i];
        h2o_context_init(&w->ctx, h2o_evloop_create(), &g_conf);
        w->accept_ctx.ctx = &w->ctx;
        w->accept_ctx.hosts = g_conf.hosts;
        w->up = tg_upstream_create(w->ctx.loop);
        w->listen_fd = tg_listen_open(&addr, addr_len, true);
        if (w->up == NULL || w->listen_fd < 0) {
            perror("tollgate-bench-floor: set-up");
            return 1;
        }
    }
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "tollgate-bench-floor: pthread_create failed\n");
            return 1;
        }
    }
    printf("tollgate-bench-floor listening on http://%s (%d thread(s))\n", listen_s, nthreads);
    fflush(stdout);
    int sig;
    sigwait(&stop_sigs, &sig);
    atomic_store(&g_stop, 1);
    for (int i = 0; i < nthreads; i++)
        pthread_join(workers[i].thread, NULL);
    curl_global_cleanup();
    return 0;
}
