/*
 * test_http.c - http.c's helpers that need no socket (error JSON, request ids), and upstream.c's
 * transfer engine on a real h2o loop against a tiny in-process HTTP server: body delivery, the
 * head callback, pause/resume, connection refused, the first-byte timeout and cancellation; the
 * admin API's pure parsers; and server.c's whole life cycle in-process (routes, 404/405/413 JSON,
 * /readyz without a database, metrics, admin routes, SIGHUP reload good and bad, SIGTERM exit 0).
 */
#define _GNU_SOURCE /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "server.h"
#include "server_harness.h"
#include "upstream.h"

/* The admin API (tg_admin, which this test links: tests/CMakeLists.txt) with its tokens. */
#include "admin.h"
#include "authn.h"
#include "query.h"
#include "token.h"

/* Sent as "Authorization: Bearer" by http_do when set (an operator token of the test's config). */
static char *g_bearer;

/* ---------------------------------------------------------------- error JSON */

static json_t *parse_error(const tg_buf_t *b)
{
    json_error_t jerr;
    json_t *root = json_loadb(b->data, b->len, 0, &jerr);
    assert_non_null(root);
    json_t *err = json_object_get(root, "error");
    assert_true(json_is_object(err));
    json_incref(err);
    json_decref(root);
    return err;
}

static void test_error_json_shape(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    assert_int_equal(
        tg_http_error_json(&b, "model not found", "invalid_request_error", "model_not_found", "model"), 0);
    json_t *err = parse_error(&b);
    assert_string_equal(json_string_value(json_object_get(err, "message")), "model not found");
    assert_string_equal(json_string_value(json_object_get(err, "type")), "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "model_not_found");
    assert_string_equal(json_string_value(json_object_get(err, "param")), "model");
    assert_int_equal(json_object_size(err), 4);
    json_decref(err);
    tg_buf_dispose(&b);
}

static void test_error_json_null_param_and_escaping(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    const char *msg = "bad \"quote\"\nnew line \\ back é";
    assert_int_equal(tg_http_error_json(&b, msg, "invalid_request_error", "invalid_json", NULL), 0);
    json_t *err = parse_error(&b);
    assert_string_equal(json_string_value(json_object_get(err, "message")), msg);
    assert_true(json_is_null(json_object_get(err, "param")));
    json_decref(err);
    tg_buf_dispose(&b);
}

static void test_error_json_refuses_invalid_utf8(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    assert_true(tg_http_error_json(&b, "bad \xff\xfe bytes", "server_error", "internal", NULL) < 0);
    assert_int_equal(b.len, 0); /* nothing half-written */
    tg_buf_dispose(&b);
}

static void test_error_json_respects_buffer_cap(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 32);
    assert_int_equal(
        tg_http_error_json(&b, "a message longer than the cap allows", "server_error", "internal", NULL),
        TG_ETOO_LARGE);
    assert_int_equal(b.len, 0);
    tg_buf_dispose(&b);
}

static void test_error_json_from_table(void **state)
{
    /* every code of the table yields a parseable body carrying its own type and code */
    for (int e = -1; e >= -TG_ERR_COUNT; e--) {
        tg_buf_t b;
        tg_buf_init(&b, 4096);
        assert_int_equal(tg_http_error_json(&b, tg_err_public_msg(e), tg_err_type(e), tg_err_code(e), NULL),
                         0);
        json_t *err = parse_error(&b);
        assert_string_equal(json_string_value(json_object_get(err, "code")), tg_err_code(e));
        assert_string_equal(json_string_value(json_object_get(err, "type")), tg_err_type(e));
        json_decref(err);
        tg_buf_dispose(&b);
    }
}

/* ---------------------------------------------------------------- request ids */

static void test_request_id_format(void **state)
{
    char id[TG_REQUEST_ID_LEN + 1];
    memset(id, 'X', sizeof(id));
    tg_request_id(id);
    assert_int_equal(strlen(id), TG_REQUEST_ID_LEN);
    assert_memory_equal(id, "req_", 4);
    for (size_t i = 4; i < TG_REQUEST_ID_LEN; i++)
        assert_non_null(strchr("abcdefghijklmnopqrstuvwxyz234567", id[i]));
}

static int cmp_ids(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_request_ids_differ(void **state)
{
    enum { N = 2000 };
    char(*ids)[TG_REQUEST_ID_LEN + 1] = calloc(N, sizeof(*ids));
    assert_non_null(ids);
    for (int i = 0; i < N; i++)
        tg_request_id(ids[i]);
    qsort(ids, N, sizeof(*ids), cmp_ids);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
    free(ids);
}

/* ---------------------------------------------------------------- upstream engine */

/* A one-shot HTTP server on the same loop: accepts, waits for the request head, answers `reply`
 * (or nothing at all when reply is NULL: the first-byte timeout case). */
typedef struct mini_server {
    h2o_socket_t *listener;
    h2o_socket_t *conn;
    const char *reply;
    uint16_t port;
    int accepts;
} mini_server_t;

static void on_mini_written(h2o_socket_t *sock, const char *err)
{
    /* keep the connection open: curl ends the body on the terminating chunk */
}

static void on_mini_read(h2o_socket_t *sock, const char *err)
{
    mini_server_t *s = sock->data;
    if (err != NULL) {
        h2o_socket_close(sock);
        s->conn = NULL;
        return;
    }
    if (memmem(sock->input->bytes, sock->input->size, "\r\n\r\n", 4) == NULL)
        return;
    h2o_buffer_consume(&sock->input, sock->input->size);
    if (s->reply != NULL) {
        h2o_iovec_t v = h2o_iovec_init(s->reply, strlen(s->reply));
        h2o_socket_write(sock, &v, 1, on_mini_written);
    }
}

static void on_mini_accept(h2o_socket_t *listener, const char *err)
{
    mini_server_t *s = listener->data;
    h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
    if (sock == NULL)
        return;
    if (s->conn != NULL)
        h2o_socket_close(s->conn);
    s->conn = sock;
    s->accepts++;
    sock->data = s;
    h2o_socket_read_start(sock, on_mini_read);
}

static void mini_start(h2o_loop_t *loop, mini_server_t *s, const char *reply)
{
    memset(s, 0, sizeof(*s));
    s->reply = reply;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    s->port = ntohs(a.sin_port);
    s->listener = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    s->listener->data = s;
    h2o_socket_read_start(s->listener, on_mini_accept);
}

static void mini_stop(mini_server_t *s)
{
    if (s->conn != NULL)
        h2o_socket_close(s->conn);
    h2o_socket_read_stop(s->listener);
    h2o_socket_close(s->listener);
}

typedef struct probe {
    tg_transfer_t *t;
    int heads, status, dones, rc, datas;
    char content_type[64], retry_after[16], timeout_kind[16];
    char body[256];
    size_t body_len;
    int pause_at;  /* on_data call number (1-based) that asks to pause; 0 = never */
    bool paused;   /* we returned 1 and have not resumed yet */
    int cancel_at; /* on_data call number that cancels the transfer */
} probe_t;

static void p_head(void *ud, int status, const char *ct, const char *ra)
{
    probe_t *p = ud;
    assert_int_equal(p->datas, 0); /* head comes before any body */
    p->heads++;
    p->status = status;
    snprintf(p->content_type, sizeof(p->content_type), "%s", ct ? ct : "");
    snprintf(p->retry_after, sizeof(p->retry_after), "%s", ra ? ra : "");
}

static int p_data(void *ud, const char *d, size_t n)
{
    probe_t *p = ud;
    assert_false(p->paused); /* no data while paused */
    p->datas++;
    assert_true(p->body_len + n < sizeof(p->body));
    memcpy(p->body + p->body_len, d, n);
    p->body_len += n;
    if (p->cancel_at == p->datas) {
        tg_transfer_cancel(p->t);
        p->t = NULL;
        return 0;
    }
    if (p->pause_at == p->datas) {
        p->paused = true;
        return 1;
    }
    return 0;
}

static void p_done(void *ud, int rc, const char *kind)
{
    probe_t *p = ud;
    p->dones++;
    p->rc = rc;
    snprintf(p->timeout_kind, sizeof(p->timeout_kind), "%s", kind ? kind : "");
    p->t = NULL;
}

static const tg_transfer_cbs_t probe_cbs = {p_head, p_data, p_done};

static tg_transfer_t *start_get(tg_upstream_t *u, uint16_t port, const tg_timeouts_t *to, probe_t *p)
{
    tg_upstream_req_t req;
    memset(&req, 0, sizeof(req));
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/models", (unsigned)port);
    req.url = strdup(url);
    req.method = "GET";
    assert_int_equal(tg_upstream_req_add_header(&req, "Authorization", "Bearer sk-test"), 0);
    tg_transfer_t *t = tg_transfer_start(u, &req, to, &probe_cbs, p);
    assert_null(req.url); /* ownership moved */
    p->t = t;
    return t;
}

/* Runs the loop until the condition holds; the loop itself wakes on I/O and timers. */
#define RUN_UNTIL(loop, cond)                                                   \
    do {                                                                        \
        for (int i_ = 0; i_ < 3000 && !(cond); i_++) /* gives up after ~30 s */ \
            h2o_evloop_run((loop), 10);                                         \
        assert_true(cond);                                                      \
    } while (0)

static const char chunked_reply[] = "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: text/event-stream\r\n"
                                    "Retry-After: 7\r\n"
                                    "Transfer-Encoding: chunked\r\n"
                                    "\r\n"
                                    "6\r\nhello \r\n"
                                    "5\r\nworld\r\n"
                                    "0\r\n\r\n";

static void test_upstream_body_and_head(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    mini_server_t s;
    mini_start(loop, &s, chunked_reply);
    tg_upstream_t *u = tg_upstream_create(loop);
    assert_non_null(u);
    tg_timeouts_t to = {.connect_ms = 5000, .first_byte_ms = 30000, .idle_ms = 30000, .total_ms = 60000};
    probe_t p = {0};
    assert_non_null(start_get(u, s.port, &to, &p));
    assert_int_equal(tg_upstream_active(u), 1);
    RUN_UNTIL(loop, p.dones == 1);
    assert_int_equal(p.rc, 0);
    assert_int_equal(p.heads, 1);
    assert_int_equal(p.status, 200);
    assert_string_equal(p.content_type, "text/event-stream");
    assert_string_equal(p.retry_after, "7");
    assert_int_equal(p.body_len, 11);
    assert_memory_equal(p.body, "hello world", 11);
    assert_int_equal(tg_upstream_active(u), 0);
    tg_upstream_destroy(u);
    mini_stop(&s);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

/* Idle connections stay in curl's epoll set between transfers (upstream.c): a reused connection
 * must still be heard, and one the server closed while idle must neither spin the loop nor
 * confuse the next transfer, which connects afresh. */
static void test_upstream_idle_connection_reuse_and_peer_close(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    mini_server_t s;
    mini_start(loop, &s, chunked_reply);
    tg_upstream_t *u = tg_upstream_create(loop);
    assert_non_null(u);
    tg_timeouts_t to = {.connect_ms = 5000, .first_byte_ms = 5000, .idle_ms = 5000, .total_ms = 10000};
    for (int i = 0; i < 3; i++) { /* three transfers on one kept-alive connection */
        probe_t p = {0};
        assert_non_null(start_get(u, s.port, &to, &p));
        RUN_UNTIL(loop, p.dones == 1);
        assert_int_equal(p.rc, 0);
        assert_memory_equal(p.body, "hello world", 11);
    }
    assert_int_equal(s.accepts, 1);
    assert_int_equal(tg_upstream_watched(u), 1); /* idle, still watched */

    /* the server drops the idle connection: the loop notices and stops watching it */
    h2o_socket_close(s.conn);
    s.conn = NULL;
    RUN_UNTIL(loop, tg_upstream_watched(u) == 0);
    for (int i = 0; i < 2; i++) { /* a new connection, reused again */
        probe_t p = {0};
        assert_non_null(start_get(u, s.port, &to, &p));
        RUN_UNTIL(loop, p.dones == 1);
        assert_int_equal(p.rc, 0);
        assert_int_equal(p.status, 200);
        assert_memory_equal(p.body, "hello world", 11);
    }
    assert_int_equal(s.accepts, 2);
    assert_int_equal(tg_upstream_active(u), 0);
    tg_upstream_destroy(u);
    mini_stop(&s);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

static void test_upstream_pause_resume(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    mini_server_t s;
    mini_start(loop, &s, chunked_reply);
    tg_upstream_t *u = tg_upstream_create(loop);
    tg_timeouts_t to = {.connect_ms = 5000, .first_byte_ms = 30000, .idle_ms = 30000, .total_ms = 60000};
    probe_t p = {.pause_at = 1};
    tg_transfer_t *t = start_get(u, s.port, &to, &p);
    RUN_UNTIL(loop, p.paused);
    /* While paused, more loop turns deliver nothing and the transfer does not end. */
    for (int i = 0; i < 20; i++)
        h2o_evloop_run(loop, 1);
    assert_int_equal(p.dones, 0);
    size_t before = p.body_len;
    p.paused = false;
    tg_transfer_resume(t);
    RUN_UNTIL(loop, p.dones == 1);
    assert_int_equal(p.rc, 0);
    assert_true(p.body_len > before);
    assert_memory_equal(p.body, "hello world", 11);
    assert_int_equal(p.body_len, 11);
    tg_upstream_destroy(u);
    mini_stop(&s);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

static void test_upstream_connection_refused(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    /* a port that was just free: bind, read the number, close */
    mini_server_t s;
    mini_start(loop, &s, NULL);
    uint16_t port = s.port;
    mini_stop(&s);
    tg_upstream_t *u = tg_upstream_create(loop);
    tg_timeouts_t to = {.connect_ms = 5000, .first_byte_ms = 30000, .idle_ms = 30000, .total_ms = 60000};
    probe_t p = {0};
    start_get(u, port, &to, &p);
    RUN_UNTIL(loop, p.dones == 1);
    assert_int_equal(p.rc, TG_EUPSTREAM_UNREACHABLE);
    assert_int_equal(p.heads, 0);
    tg_upstream_destroy(u);
    h2o_evloop_destroy(loop);
}

static void test_upstream_first_byte_timeout(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    mini_server_t s;
    mini_start(loop, &s, NULL); /* reads the request, never answers */
    tg_upstream_t *u = tg_upstream_create(loop);
    tg_timeouts_t to = {.connect_ms = 5000, .first_byte_ms = 50, .idle_ms = 30000, .total_ms = 60000};
    probe_t p = {0};
    start_get(u, s.port, &to, &p);
    RUN_UNTIL(loop, p.dones == 1);
    assert_int_equal(p.rc, TG_EUPSTREAM_TIMEOUT);
    assert_string_equal(p.timeout_kind, "first_byte");
    assert_int_equal(tg_upstream_active(u), 0);
    tg_upstream_destroy(u);
    mini_stop(&s);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

static void test_upstream_cancel_inside_callback(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    mini_server_t s;
    mini_start(loop, &s, chunked_reply);
    tg_upstream_t *u = tg_upstream_create(loop);
    tg_timeouts_t to = {.connect_ms = 5000, .first_byte_ms = 30000, .idle_ms = 30000, .total_ms = 60000};
    probe_t p = {.cancel_at = 1};
    start_get(u, s.port, &to, &p);
    RUN_UNTIL(loop, p.datas == 1 && tg_upstream_active(u) == 0);
    for (int i = 0; i < 20; i++)
        h2o_evloop_run(loop, 1);
    assert_int_equal(p.dones, 0); /* cancelled: on_done never runs */
    assert_int_equal(p.datas, 1);
    tg_upstream_destroy(u);
    mini_stop(&s);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

static void test_upstream_destroy_with_transfer_in_flight(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    mini_server_t s;
    mini_start(loop, &s, NULL);
    tg_upstream_t *u = tg_upstream_create(loop);
    tg_timeouts_t to = {.connect_ms = 5000, .first_byte_ms = 30000, .idle_ms = 30000, .total_ms = 60000};
    probe_t p = {0};
    start_get(u, s.port, &to, &p);
    RUN_UNTIL(loop, s.conn != NULL);
    tg_upstream_destroy(u); /* no callbacks, nothing leaked (ASan build) */
    assert_int_equal(p.dones, 0);
    mini_stop(&s);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

/* ---------------------------------------------------------------- admin parsers */

static void test_admin_since(void **state)
{
    int64_t ms = 0;
    assert_int_equal(tg_admin_parse_since("2024-05-01T12:00:00Z", &ms), 0);
    assert_int_equal(ms, INT64_C(1714564800000));
    assert_int_equal(tg_admin_parse_since("2024-05-01T12:00:00.25Z", &ms), 0);
    assert_int_equal(ms, INT64_C(1714564800250));
    assert_int_equal(tg_admin_parse_since("2024-05-01T14:00:00+02:00", &ms), 0);
    assert_int_equal(ms, INT64_C(1714564800000));
    assert_int_equal(tg_admin_parse_since("2024-05-01T10:30:00-01:30", &ms), 0);
    assert_int_equal(ms, INT64_C(1714564800000));
    assert_int_equal(tg_admin_parse_since("1714564800123", &ms), 0);
    assert_int_equal(ms, INT64_C(1714564800123));
    const char *bad[] = {"",
                         "yesterday",
                         "2024-05-01T12:00:00",
                         "2024-02-31T00:00:00Z",
                         "2024-13-01T00:00:00Z",
                         "2024-05-01T12:00:00Zjunk",
                         "2024-05-01T12:00:00.Z",
                         "-5",
                         "12ab"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_not_equal(tg_admin_parse_since(bad[i], &ms), 0);
}

static void test_admin_cursor(void **state)
{
    char cur[96];
    int64_t at = 0, id = 0;
    assert_int_equal(tg_admin_cursor_encode(INT64_C(1714564800123456), 42, cur, sizeof(cur)), 0);
    assert_null(strpbrk(cur, "+/=")); /* URL-safe, no padding: goes into a query string as is */
    assert_int_equal(tg_admin_cursor_decode(cur, &at, &id), 0);
    assert_int_equal(at, INT64_C(1714564800123456));
    assert_int_equal(id, 42);
    assert_int_not_equal(tg_admin_cursor_decode("!!!", &at, &id), 0);
    assert_int_not_equal(tg_admin_cursor_decode("bm9kb3Q", &at, &id), 0); /* "nodot" */
    assert_int_not_equal(tg_admin_cursor_decode("", &at, &id), 0);
    assert_int_equal(tg_admin_cursor_encode(1, 2, cur, 4), TG_ETOO_LARGE);
}

static void test_admin_url_decode(void **state)
{
    char out[32];
    assert_int_equal(tg_admin_url_decode("sim-openai%2Fgpt-4o", 19, out, sizeof(out)), 17);
    assert_string_equal(out, "sim-openai/gpt-4o");
    assert_int_equal(tg_admin_url_decode("a+b", 3, out, sizeof(out)), 3);
    assert_string_equal(out, "a+b"); /* '+' is not a space in a path, nor in an RFC 3339 offset */
    assert_int_equal(tg_admin_url_decode("%2", 2, out, sizeof(out)), -1);
    assert_int_equal(tg_admin_url_decode("%zz", 3, out, sizeof(out)), -1);
    assert_int_equal(tg_admin_url_decode("a%00b", 5, out, sizeof(out)), -1);
    assert_int_equal(tg_admin_url_decode("abcdef", 6, out, 4), -1);
}

/* ---------------------------------------------------------------- the server process, in-process */

/*
 * tg_server_run runs on its own thread here (it blocks SIGHUP/SIGTERM/SIGINT in that thread and
 * sigwait()s; its workers inherit the mask), and the test is its client over real sockets. There is
 * no PostgreSQL: the pool never becomes ready, which is exactly what /readyz must report.
 * tg_server_run keeps process-wide state, so this is one test that walks the whole life cycle.
 */
typedef struct http_reply {
    int status;
    char head[2048];
    char body[8192];
} http_reply_t;

/* A blocking client (the test thread is not an event loop). Returns 0, or -1 when it cannot connect. */
static int http_do(uint16_t port, const char *method, const char *path, const char *body, size_t body_len,
                   http_reply_t *out)
{
    memset(out, 0, sizeof(*out));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    char req[8192];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     "%s%s%sContent-Length: %zu\r\n\r\n",
                     method, path, g_bearer != NULL ? "Authorization: Bearer " : "",
                     g_bearer != NULL ? g_bearer : "", g_bearer != NULL ? "\r\n" : "", body_len);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    if (body_len > 0)
        send(fd, body, body_len, MSG_NOSIGNAL); /* h2o may answer 413 and close before reading it all */
    static char buf[1 << 16];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof(buf) - 1 && (r = recv(fd, buf + len, sizeof(buf) - 1 - len, 0)) > 0)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &out->status), 1);
    snprintf(out->head, sizeof(out->head), "%.*s", (int)(sep - buf), buf);
    snprintf(out->body, sizeof(out->body), "%s", sep + 4);
    return 0;
}

static char g_secret_path[300];

static void write_config(const char *path, uint16_t data, uint16_t admin, int n_models)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"listen\":{\"data\":\"127.0.0.1:%u\",\"admin\":\"127.0.0.1:%u\"},\"workers\":2,\"log_level\":"
            "\"info\",\"admin_auth\":{\"issuer\":\"tg-test\",\"audience\":\"tg-admin\",\"hs256_secret_file\":"
            "\"%s\"},"
            "\"database\":{\"url\":\"postgresql:///nodb?host=/nonexistent-tg-test&port=1\",\"pool_size\":1},"
            "\"secrets\":{\"key_pepper_env\":\"TG_TEST_PEPPER\"},\"limits\":{\"max_body_bytes\":1024},"
            "\"shutdown_grace_ms\":2000,"
            "\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:1/v1\"}},"
            "\"models\":{\"m1\":{\"provider\":\"p\",\"upstream\":\"m1\"}%s}}",
            (unsigned)data, (unsigned)admin, g_secret_path,
            n_models > 1 ? ",\"m2\":{\"provider\":\"p\",\"upstream\":\"m2\"}" : "");
    fclose(f);
}

static size_t current_models(void)
{
    tg_config_t *c = tg_config_acquire();
    size_t n = c != NULL ? c->n_models : 0;
    tg_config_unref(c);
    return n;
}

static void test_server_lifecycle(void **state)
{
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/tg-test-http-XXXXXX", tmp);
    assert_non_null(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof(path), "%s/tollgate.json", dir);
    setenv("TG_TEST_PEPPER", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1);
    uint16_t data = free_port(), admin = free_port();
    snprintf(g_secret_path, sizeof(g_secret_path), "%s/admin.secret", dir);
    FILE *sf = fopen(g_secret_path, "w");
    assert_non_null(sf);
    fputs("an-hs256-secret-of-at-least-32-bytes-for-the-test\n", sf);
    fclose(sf);
    write_config(path, data, admin, 1);

    int logp[2];
    assert_int_equal(pipe2(logp, O_CLOEXEC), 0);
    fcntl(logp[1], F_SETFL, O_NONBLOCK); /* a full pipe drops log lines rather than blocking a worker */
    tg_log_set_fd(logp[1]);

    tg_server_set_admin_router(tg_admin_route);
    tg_server_set_metrics_guard(tg_admin_metrics_guard);
    server_thread_t st = {.path = path, .rc = -1};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, run_server, &st), 0);
    assert_true(log_has(logp[0], "\"server_started\""));

    http_reply_t r;
    assert_int_equal(http_do(data, "GET", "/healthz", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");

    /* no database: not ready, with a reason */
    assert_int_equal(http_do(data, "GET", "/readyz", NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "\"reason\":\"database not reachable\""));

    assert_int_equal(http_do(data, "GET", "/v1/nope", NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "\"code\":\"not_found\""));

    assert_int_equal(http_do(data, "DELETE", "/v1/chat/completions", NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    assert_non_null(strcasestr(r.head, "\nallow: POST"));
    assert_non_null(strstr(r.body, "\"code\":\"method_not_allowed\""));

    /* over limits.max_body_bytes: h2o answers before any handler; the body is still our JSON */
    static char big[4096];
    memset(big, 'a', sizeof(big));
    assert_int_equal(http_do(data, "POST", "/v1/chat/completions", big, sizeof(big), &r), 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strcasestr(r.head, "content-type: application/json"));
    assert_non_null(strstr(r.body, "\"code\":\"too_large\""));

    /* the metrics endpoint lives on the admin listener only */
    assert_int_equal(http_do(data, "GET", "/metrics", NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(http_do(admin, "GET", "/metrics", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.head, "content-type: text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "tollgate_requests_total{route=\"/healthz\",status=\"200\"}"));
    assert_non_null(strstr(r.body, "\ntollgate_log_dropped_total "));

    /* the admin API needs a token: none is 401, an operator's passes */
    assert_int_equal(http_do(admin, "GET", "/admin/v1/breakers", NULL, 0, &r), 0);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "\"code\":\"unauthenticated\""));
    {
        tg_config_t *cfg = tg_config_acquire();
        assert_int_equal(
            tg_jwt_mint(cfg, "test-operator", TG_ROLE_OPERATOR, 0, 600, (int64_t)time(NULL), &g_bearer), 0);
        tg_config_unref(cfg);
    }
    assert_int_equal(http_do(admin, "GET", "/admin/v1/breakers", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "{\"data\":[", 9);
    assert_int_equal(http_do(admin, "POST", "/admin/v1/breakers/p%2Fnone/reset", NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    assert_int_equal(http_do(admin, "GET", "/admin/v1/failover-events?limit=5000", NULL, 0, &r), 0);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"param\":\"limit\""));
    assert_int_equal(http_do(admin, "GET", "/admin/v1/failover-events", NULL, 0, &r), 0);
    assert_int_equal(r.status, 503); /* the pool is not ready: an answer, not a hang */
    assert_non_null(strstr(r.body, "\"code\":\"db_unavailable\""));

    /* SIGHUP with a valid file: published */
    assert_int_equal(current_models(), 1);
    write_config(path, data, admin, 2);
    pthread_kill(tid, SIGHUP);
    assert_true(log_has(logp[0], "\"config_reloaded\""));
    assert_int_equal(current_models(), 2);

    /* SIGHUP with a broken file: every error logged, the running config kept */
    FILE *f = fopen(path, "w");
    fputs("{\"workers\": \"many\"", f);
    fclose(f);
    pthread_kill(tid, SIGHUP);
    assert_true(log_has(logp[0], "\"config_reload_failed\""));
    assert_int_equal(current_models(), 2);
    assert_int_equal(http_do(data, "GET", "/healthz", NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);

    /* SIGTERM: drains, returns 0, listeners are gone */
    pthread_kill(tid, SIGTERM);
    assert_int_equal(pthread_join(tid, NULL), 0);
    assert_int_equal(st.rc, 0);
    assert_true(log_has(logp[0], "\"server_stopped\""));
    assert_int_equal(http_do(data, "GET", "/healthz", NULL, 0, &r), -1);

    tg_log_set_fd(2);
    close(logp[0]);
    close(logp[1]);
    unlink(path);
    unlink(g_secret_path);
    free(g_bearer);
    g_bearer = NULL;
    rmdir(dir);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_json_shape),
        cmocka_unit_test(test_error_json_null_param_and_escaping),
        cmocka_unit_test(test_error_json_refuses_invalid_utf8),
        cmocka_unit_test(test_error_json_respects_buffer_cap),
        cmocka_unit_test(test_error_json_from_table),
        cmocka_unit_test(test_request_id_format),
        cmocka_unit_test(test_request_ids_differ),
        cmocka_unit_test(test_upstream_body_and_head),
        cmocka_unit_test(test_upstream_idle_connection_reuse_and_peer_close),
        cmocka_unit_test(test_upstream_pause_resume),
        cmocka_unit_test(test_upstream_connection_refused),
        cmocka_unit_test(test_upstream_first_byte_timeout),
        cmocka_unit_test(test_upstream_cancel_inside_callback),
        cmocka_unit_test(test_upstream_destroy_with_transfer_in_flight),
        cmocka_unit_test(test_admin_since),
        cmocka_unit_test(test_admin_cursor),
        cmocka_unit_test(test_admin_url_decode),
        cmocka_unit_test(test_server_lifecycle),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
