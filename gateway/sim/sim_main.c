/*
 * sim_main.c - tollgate-sim's server: command line, worker threads (one h2o evloop each, one
 * SO_REUSEPORT listener each), routing, control endpoints, and the life of one simulated call.
 *
 * A call goes: parse (wire) -> auth -> fault (x-sim-fault header, else the model's fault) ->
 * [hang] or [latency_ms timer] -> error body, or answer (whole body, or a stream). A stream is
 * produced event by event: each batch is handed to h2o and the next one is only built from the
 * generator's proceed callback, so a slow reader stalls the producer instead of growing memory.
 * All delays are h2o timeouts on the worker's loop; nothing sleeps.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2o.h>
#if H2O_USE_LIBUV
#error "build with -DH2O_USE_LIBUV=0 (libh2o-evloop)"
#endif

#include "addr.h"
#include "err.h"
#include "listen.h"
#include "sim.h"

#define MAX_BODY        (16u << 20)  /* request bodies above this get h2o's 413 */
#define MAX_ANSWER      (256u << 20) /* a non-stream body above this is refused (500) */
#define SEND_BATCH      (16u << 10)  /* bytes of stream events handed to h2o per send */
#define HANG_POLL_MS    200          /* how often a hung call checks whether its client left */
#define MAX_DELAY_SLOTS 64

typedef struct sim_worker {
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    int fd;
    h2o_multithread_receiver_t shutdown_rx;
    h2o_timeout_t hang_poll;
    /* h2o 2.2.5 timeouts share one duration per list, so each distinct delay gets its own list */
    struct {
        uint64_t ms;
        h2o_timeout_t to;
    } delays[MAX_DELAY_SLOTS];
    size_t ndelays;
    pthread_t tid;
    volatile int stopping;
} sim_worker_t;

typedef struct sim_call sim_call_t;
typedef void (*sim_step_cb)(sim_call_t *c);

struct sim_call {
    h2o_generator_t gen; /* first: h2o hands it back to proceed/stop */
    h2o_req_t *req;
    sim_worker_t *w;
    const tg_sim_wire_t *wire;
    json_t *body;
    tg_sim_req_t rq;
    tg_sim_fault_t f;
    tg_sim_answer_t ans;
    bool ans_built;
    bool is_models;
    char stats_key[TG_SIM_MODEL_MAX + 16];
    h2o_timeout_entry_t timer;
    sim_step_cb after_timer;
    /* stream state */
    tg_buf_t out; /* owned by h2o between h2o_send and proceed */
    size_t ev_idx;
    long content_sent;
    bool delay_done, in_flight, pumping, stopped, headers_sent, malformed_done;
};

static h2o_globalconf_t g_conf;
static sim_worker_t *g_workers;
static int g_nworkers = 1;
static atomic_long g_live_calls; /* calls whose request pool is alive; tests wait for 0 after aborts */

/* ---- small helpers --------------------------------------------------------------------- */

static sim_worker_t *worker_of(h2o_req_t *req)
{
    return H2O_STRUCT_FROM_MEMBER(sim_worker_t, ctx, req->conn->ctx);
}

static const char *reason_of(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 529:
        return "Site Overloaded";
    default:
        return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static h2o_timeout_t *delay_list(sim_worker_t *w, uint64_t ms)
{
    size_t best = 0;
    for (size_t i = 0; i < w->ndelays; i++) {
        if (w->delays[i].ms == ms)
            return &w->delays[i].to;
        uint64_t d = w->delays[i].ms > ms ? w->delays[i].ms - ms : ms - w->delays[i].ms;
        uint64_t bd = w->delays[best].ms > ms ? w->delays[best].ms - ms : ms - w->delays[best].ms;
        if (d < bd)
            best = i;
    }
    if (w->ndelays == MAX_DELAY_SLOTS)
        return &w->delays[best].to; /* documented: past 64 distinct delays, the nearest one is used */
    w->delays[w->ndelays].ms = ms;
    h2o_timeout_init(w->ctx.loop, &w->delays[w->ndelays].to, ms);
    return &w->delays[w->ndelays++].to;
}

static void on_timer(h2o_timeout_entry_t *e)
{
    sim_call_t *c = H2O_STRUCT_FROM_MEMBER(sim_call_t, timer, e);
    c->after_timer(c);
}

static void arm(sim_call_t *c, uint64_t ms, sim_step_cb cb)
{
    c->after_timer = cb;
    c->timer.cb = on_timer;
    h2o_timeout_link(c->w->ctx.loop, delay_list(c->w, ms), &c->timer);
}

static void add_header(h2o_req_t *req, const h2o_token_t *tok, const char *v)
{
    h2o_add_header(&req->pool, &req->res.headers, tok, NULL, v, strlen(v));
}

/* Sends a whole body; the call must not be touched afterwards (h2o may finish the request). */
static void send_body(h2o_req_t *req, int status, const char *ctype, const char *body, size_t len,
                      int retry_after)
{
    req->res.status = status;
    req->res.reason = reason_of(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype, strlen(ctype));
    if (retry_after >= 0) {
        char *ra = h2o_mem_alloc_pool(&req->pool, 16);
        snprintf(ra, 16, "%d", retry_after);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL, ra, strlen(ra));
    }
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
}

static void send_json(h2o_req_t *req, int status, json_t *obj)
{
    char *s = obj != NULL ? json_dumps(obj, JSON_COMPACT) : NULL;
    if (s == NULL) {
        send_body(req, 500, "application/json", "{\"error\":\"out of memory\"}", 25, -1);
    } else {
        send_body(req, status, "application/json", s, strlen(s), -1);
        free(s);
    }
    json_decref(obj);
}

static void send_ctl_error(h2o_req_t *req, int status, const char *msg)
{
    send_json(req, status, json_pack("{s:s}", "error", msg));
}

/* ---- a simulated call ------------------------------------------------------------------ */

static void call_dispose(void *p)
{
    /* runs when the request's pool goes, whether or not the response started */
    sim_call_t *c = p;
    atomic_fetch_sub(&g_live_calls, 1);
    if (h2o_timeout_is_linked(&c->timer))
        h2o_timeout_unlink(&c->timer);
    json_decref(c->body);
    tg_sim_req_dispose(&c->rq);
    if (c->ans_built)
        tg_sim_answer_dispose(&c->ans);
    tg_buf_dispose(&c->out);
}

static sim_call_t *call_new(h2o_req_t *req, const tg_sim_wire_t *wire)
{
    sim_call_t *c = h2o_mem_alloc_shared(&req->pool, sizeof(*c), call_dispose);
    memset(c, 0, sizeof(*c));
    atomic_fetch_add(&g_live_calls, 1);
    c->req = req;
    c->w = worker_of(req);
    c->wire = wire;
    tg_sim_req_init(&c->rq);
    tg_sim_fault_defaults(&c->f);
    tg_buf_init(&c->out, SEND_BATCH + TG_SIM_MAX_CHUNK_B + 4096);
    return c;
}

static int retry_after_for(const tg_sim_fault_t *f, int status)
{
    if (status == 429)
        return f->retry_after_s >= 0 ? f->retry_after_s : 1;
    if ((status == 503 || status == 529) && f->retry_after_s >= 0)
        return f->retry_after_s;
    return -1;
}

static void send_wire_error(sim_call_t *c, int status, bool context_length, const char *msg,
                            const char *param)
{
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    tg_sim_w_t w = {&b, 0};
    int ra = context_length ? -1 : retry_after_for(&c->f, status);
    c->wire->error_body(&w, status, context_length, msg, param, c->rq.model, ra);
    if (w.rc != 0 || b.data == NULL)
        send_body(c->req, 500, "text/plain", "sim error body too large", 24, -1);
    else
        send_body(c->req, context_length ? 400 : status, "application/json", b.data, b.len, ra);
    tg_buf_dispose(&b);
}

/* The echo_error fault: an error message quoting the start of the prompt (NULL without the fault:
 * the provider's usual words). */
static const char *echo_message(const sim_call_t *c, char *buf, size_t cap)
{
    if (!c->f.echo_error)
        return NULL;
    snprintf(buf, cap, "Simulated upstream error; the request began: %.*s", (int)c->rq.echo.len,
             c->rq.echo.data != NULL ? c->rq.echo.data : "");
    return buf;
}

static void hang_poll(sim_call_t *c)
{
    /* HTTP/1 stops reading while a request is handled, so h2o would never notice the client
     * leaving; peek at the socket ourselves and, once it is closed, answer so h2o closes it. */
    h2o_req_t *req = c->req;
    if (req->version < 0x200 && req->conn->callbacks->get_socket != NULL) {
        h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
        int fd = sock != NULL ? h2o_socket_get_fd(sock) : -1;
        char b;
        ssize_t n = fd >= 0 ? recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) : 1;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            h2o_send_error_generic(req, 503, "Service Unavailable", "hang ended",
                                   H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION);
            return;
        }
    }
    c->after_timer = hang_poll;
    h2o_timeout_link(c->w->ctx.loop, &c->w->hang_poll, &c->timer);
}

static void pump(sim_call_t *c);

static void on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    sim_call_t *c = (sim_call_t *)g;
    c->in_flight = false;
    pump(c);
}

static void on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    /* the client went away mid-stream: never h2o_send again; dispose frees the rest */
    sim_call_t *c = (sim_call_t *)g;
    c->stopped = true;
    if (h2o_timeout_is_linked(&c->timer))
        h2o_timeout_unlink(&c->timer);
}

static void on_stream_delay(sim_call_t *c)
{
    c->delay_done = true;
    pump(c);
}

/* Builds the next batch of events and sends it; see the file comment. */
static void pump(sim_call_t *c)
{
    if (c->pumping)
        return;
    c->pumping = true;
    while (!c->in_flight && !c->stopped && !h2o_timeout_is_linked(&c->timer)) {
        tg_buf_reset(&c->out);
        tg_sim_w_t w = {&c->out, 0};
        bool end = false, drop = false;
        while (c->out.len < SEND_BATCH) {
            size_t mark = c->out.len;
            tg_sim_ev_kind_t kind = TG_SIM_EV_OTHER;
            if (!c->wire->stream_event(&w, &c->rq, &c->ans, c->ev_idx, &kind)) {
                end = true;
                break;
            }
            if (w.rc != 0) {
                c->out.len = mark;
                drop = true;
                break;
            }
            uint64_t d = 0;
            if (c->ev_idx == 0)
                d = (uint64_t)c->f.ttft_ms;
            else if (kind == TG_SIM_EV_CONTENT && c->content_sent > 0)
                d = (uint64_t)c->f.chunk_delay_ms;
            if (d > 0 && !c->delay_done) {
                c->out.len = mark; /* regenerated after the delay */
                if (mark == 0) {
                    arm(c, d, on_stream_delay);
                    if (!c->headers_sent) {
                        /* the headers go now; the first event waits for ttft */
                        c->headers_sent = c->in_flight = true;
                        h2o_send(c->req, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
                    }
                    c->pumping = false;
                    return;
                }
                break;
            }
            if (kind == TG_SIM_EV_CONTENT && c->f.error_after_chunks >= 0 &&
                c->content_sent >= c->f.error_after_chunks) {
                c->out.len = mark; /* the provider gives up here and says so in the stream */
                char msg[160];
                c->wire->stream_error(&w, echo_message(c, msg, sizeof(msg)));
                end = true;
                break;
            }
            if (kind == TG_SIM_EV_CONTENT && c->f.drop_after_chunks >= 0 &&
                c->content_sent >= c->f.drop_after_chunks) {
                c->out.len = mark;
                drop = true;
                break;
            }
            c->delay_done = false;
            if (kind == TG_SIM_EV_CONTENT && c->f.malformed && !c->malformed_done) {
                /* cut the event's JSON in half: a data line no parser accepts */
                c->out.len = mark + (c->out.len - mark) / 2;
                tg_sim_w_s(&w, "\n\n");
                c->malformed_done = true;
            }
            if (kind == TG_SIM_EV_CONTENT)
                c->content_sent++;
            c->ev_idx++;
        }
        if (c->out.len == 0 && (drop || end)) {
            /* ERROR: HTTP/1 sends a broken chunk and closes; h2 resets the stream */
            h2o_send(c->req, NULL, 0, drop ? H2O_SEND_STATE_ERROR : H2O_SEND_STATE_FINAL);
            return; /* c may be gone */
        }
        h2o_iovec_t v = h2o_iovec_init(c->out.data, c->out.len);
        c->headers_sent = true;
        if (end) {
            h2o_send(c->req, &v, 1, H2O_SEND_STATE_FINAL);
            return; /* c may be gone */
        }
        c->in_flight = true;
        h2o_send(c->req, &v, 1, H2O_SEND_STATE_IN_PROGRESS);
    }
    c->pumping = false;
}

static void start_stream(sim_call_t *c)
{
    h2o_req_t *req = c->req;
    req->res.status = 200;
    req->res.reason = "OK";
    add_header(req, H2O_TOKEN_CONTENT_TYPE,
               c->wire == &tg_sim_openai ? "text/event-stream; charset=utf-8" : "text/event-stream");
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-cache");
    c->gen.proceed = on_proceed;
    c->gen.stop = on_stop;
    h2o_start_response(req, &c->gen);
    pump(c);
}

static void respond(sim_call_t *c)
{
    int status = c->f.context_length ? 400 : c->f.status;
    if (status != 0 && status != 200) {
        tg_sim_stats_record(c->stats_key, status);
        char msg[160];
        send_wire_error(c, status, c->f.context_length, echo_message(c, msg, sizeof(msg)), NULL);
        return;
    }
    tg_sim_stats_record(c->stats_key, 200);
    if (c->is_models) {
        tg_buf_t b;
        tg_buf_init(&b, 64 << 10);
        tg_sim_w_t w = {&b, 0};
        c->wire->models(&w);
        if (w.rc == 0 && b.data != NULL)
            send_body(c->req, 200, "application/json", b.data, b.len, -1);
        else
            send_body(c->req, 500, "text/plain", "models list too large", 21, -1);
        tg_buf_dispose(&b);
        return;
    }
    if (tg_sim_answer_build(&c->ans, &c->rq, &c->f, c->wire->id_prefix, c->wire->call_prefix) != 0) {
        tg_sim_answer_dispose(&c->ans);
        send_wire_error(c, 500, false, "tollgate-sim could not build the answer", NULL);
        return;
    }
    c->ans_built = true;
    if (c->rq.stream) {
        start_stream(c);
        return;
    }
    tg_buf_t b;
    tg_buf_init(&b, MAX_ANSWER);
    tg_sim_w_t w = {&b, 0};
    c->wire->render(&w, &c->rq, &c->ans);
    if (w.rc != 0 || b.data == NULL) {
        tg_buf_dispose(&b);
        send_wire_error(c, 500, false, "tollgate-sim answer exceeds its size limit", NULL);
        return;
    }
    /* malformed: the body is cut in half, so it is not JSON any more */
    send_body(c->req, 200, "application/json", b.data, c->f.malformed ? b.len / 2 : b.len, -1);
    tg_buf_dispose(&b);
}

/* The key the request carries (its provider's header, or Gemini's ?key=) is one the simulator
 * accepts (sim_auth.c, which counts it). */
static bool auth_ok(sim_call_t *c)
{
    if (!tg_sim_auth_required())
        return true;
    h2o_req_t *req = c->req;
    const char *hn = c->wire->auth_header;
    ssize_t i = h2o_find_header_by_str(&req->headers, hn, strlen(hn), -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (c->wire->auth_bearer) {
            if (v.len < 7 || strncasecmp(v.base, "Bearer ", 7) != 0) {
                tg_sim_auth_refused();
                return false;
            }
            v.base += 7;
            v.len -= 7;
        }
        return tg_sim_auth_match(v.base, v.len, c->is_models) >= 0;
    }
    if (c->wire == &tg_sim_gemini && req->query_at != SIZE_MAX) {
        /* Gemini also takes ?key= */
        const char *q = req->path.base + req->query_at + 1;
        size_t ql = req->path.len - req->query_at - 1;
        const char *p = memmem(q, ql, "key=", 4);
        if (p != NULL && (p == q || p[-1] == '&')) {
            p += 4;
            size_t n = 0;
            while (p + n < q + ql && p[n] != '&')
                n++;
            return tg_sim_auth_match(p, n, c->is_models) >= 0;
        }
    }
    tg_sim_auth_refused();
    return false;
}

/* Header fault wins over the model's fault as a whole (and then the model's fail_first is not used). */
static int pick_fault(sim_call_t *c)
{
    h2o_req_t *req = c->req;
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-sim-fault"), -1);
    if (i >= 0) {
        char err[160];
        h2o_iovec_t v = req->headers.entries[i].value;
        if (tg_sim_fault_from_header(v.base, v.len, &c->f, err, sizeof(err)) != 0) {
            send_wire_error(c, 400, false, err, NULL);
            return -1;
        }
        return 0;
    }
    if (!tg_sim_faults_take(c->stats_key, &c->f))
        tg_sim_fault_defaults(&c->f);
    return 0;
}

/* Everything after parsing: auth, fault, hang/latency, answer. */
static void run_call(sim_call_t *c)
{
    if (!auth_ok(c)) {
        tg_sim_stats_record(c->stats_key, 401);
        send_wire_error(c, 401, false, NULL, NULL);
        return;
    }
    if (pick_fault(c) != 0)
        return;
    if (c->f.hang) {
        tg_sim_stats_record(c->stats_key, 0);
        c->timer.cb = on_timer;
        c->after_timer = hang_poll;
        h2o_timeout_link(c->w->ctx.loop, &c->w->hang_poll, &c->timer);
        return;
    }
    if (c->f.latency_ms > 0) {
        arm(c, (uint64_t)c->f.latency_ms, respond);
        return;
    }
    respond(c);
}

static void handle_chat(h2o_req_t *req, const tg_sim_wire_t *wire, const char *path_model,
                        size_t path_model_len, int stream)
{
    sim_call_t *c = call_new(req, wire);
    if (path_model != NULL) {
        if (path_model_len == 0 || path_model_len >= sizeof(c->rq.model)) {
            send_wire_error(c, 404, false, "model name is empty or too long", NULL);
            return;
        }
        memcpy(c->rq.model, path_model, path_model_len);
        c->rq.model[path_model_len] = '\0';
    }
    json_error_t jerr;
    c->body =
        json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(c->body)) {
        char msg[200];
        snprintf(msg, sizeof(msg), "We could not parse the JSON body of your request. (%.120s)",
                 c->body ? "body must be an object" : jerr.text);
        if (c->rq.model[0] != '\0')
            tg_sim_stats_record(c->rq.model, 400);
        send_wire_error(c, 400, false, msg, NULL);
        return;
    }
    tg_sim_perr_t perr;
    if (wire->parse(c->body, &c->rq, &perr) != 0) {
        if (c->rq.model[0] != '\0')
            tg_sim_stats_record(c->rq.model, perr.status);
        send_wire_error(c, perr.status, false, perr.msg, perr.param);
        return;
    }
    if (stream >= 0)
        c->rq.stream = stream != 0;
    snprintf(c->stats_key, sizeof(c->stats_key), "%s", c->rq.model);
    if (c->rq.store_false)
        tg_sim_stats_store_false(c->stats_key);
    run_call(c);
}

static void handle_models(h2o_req_t *req, const tg_sim_wire_t *wire)
{
    sim_call_t *c = call_new(req, wire);
    c->is_models = true;
    snprintf(c->stats_key, sizeof(c->stats_key), "_models/%s", wire->name);
    run_call(c);
}

/* ---- control endpoints ----------------------------------------------------------------- */

static void handle_control(h2o_req_t *req, h2o_iovec_t path, h2o_iovec_t method)
{
    bool get = h2o_memis(method.base, method.len, H2O_STRLIT("GET"));
    bool post = h2o_memis(method.base, method.len, H2O_STRLIT("POST"));
    bool del = h2o_memis(method.base, method.len, H2O_STRLIT("DELETE"));
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/_sim/faults"))) {
        if (get) {
            send_json(req, 200, tg_sim_faults_json());
        } else if (del) {
            tg_sim_faults_clear();
            send_json(req, 200, json_pack("{s:b}", "ok", 1));
        } else if (post) {
            json_error_t jerr;
            json_t *body = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, &jerr);
            tg_sim_fault_t f;
            char model[TG_SIM_MODEL_MAX], err[160];
            if (body == NULL) {
                send_ctl_error(req, 400, jerr.text);
            } else if (tg_sim_fault_from_json(body, &f, model, sizeof(model), err, sizeof(err)) != 0) {
                send_ctl_error(req, 400, err);
            } else if (tg_sim_faults_set(model, &f) != 0) {
                send_ctl_error(req, 507, "fault table is full");
            } else {
                send_json(req, 200, json_pack("{s:b,s:s}", "ok", 1, "model", model));
            }
            json_decref(body);
        } else {
            send_ctl_error(req, 405, "use GET, POST or DELETE");
        }
        return;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/_sim/stats"))) {
        if (get) {
            json_t *st = tg_sim_stats_json();
            if (st != NULL) {
                json_object_set_new(st, "live_calls", json_integer(atomic_load(&g_live_calls)));
                json_object_set_new(st, "keys", tg_sim_auth_stats_json());
            }
            send_json(req, 200, st);
        } else if (del) {
            tg_sim_stats_reset();
            tg_sim_auth_stats_reset();
            send_json(req, 200, json_pack("{s:b}", "ok", 1));
        } else {
            send_ctl_error(req, 405, "use GET or DELETE");
        }
        return;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/_sim/health")) && get) {
        send_json(req, 200, json_pack("{s:b}", "ok", 1));
        return;
    }
    send_ctl_error(req, 404, "unknown control endpoint");
}

/* ---- routing --------------------------------------------------------------------------- */

static bool path_is(h2o_iovec_t p, const char *s)
{
    return h2o_memis(p.base, p.len, s, strlen(s));
}

static bool has_prefix(h2o_iovec_t p, const char *s)
{
    size_t n = strlen(s);
    return p.len >= n && memcmp(p.base, s, n) == 0;
}

static bool query_has(h2o_req_t *req, const char *kv)
{
    if (req->query_at == SIZE_MAX)
        return false;
    const char *q = req->path.base + req->query_at + 1;
    size_t ql = req->path.len - req->query_at - 1, n = strlen(kv);
    for (const char *p = q; p != NULL && p + n <= q + ql;) {
        if (memcmp(p, kv, n) == 0 && (p + n == q + ql || p[n] == '&'))
            return true;
        p = memchr(p, '&', (size_t)(q + ql - p));
        if (p != NULL)
            p++;
    }
    return false;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    h2o_iovec_t p = req->path_normalized, m = req->method;
    bool get = h2o_memis(m.base, m.len, H2O_STRLIT("GET"));
    bool post = h2o_memis(m.base, m.len, H2O_STRLIT("POST"));

    if (has_prefix(p, "/_sim/")) {
        handle_control(req, p, m);
        return 0;
    }
    if (post && (path_is(p, "/openai/v1/chat/completions") || path_is(p, "/v1/chat/completions"))) {
        handle_chat(req, &tg_sim_openai, NULL, 0, -1);
        return 0;
    }
    if (post && path_is(p, "/anthropic/v1/messages")) {
        handle_chat(req, &tg_sim_anthropic, NULL, 0, -1);
        return 0;
    }
    if (get && (path_is(p, "/openai/v1/models") || path_is(p, "/v1/models"))) {
        handle_models(req, &tg_sim_openai);
        return 0;
    }
    if (get && path_is(p, "/anthropic/v1/models")) {
        handle_models(req, &tg_sim_anthropic);
        return 0;
    }
    if (get && path_is(p, "/gemini/v1beta/models")) {
        handle_models(req, &tg_sim_gemini);
        return 0;
    }
    static const char gm[] = "/gemini/v1beta/models/";
    if (post && has_prefix(p, gm)) {
        const char *name = p.base + sizeof(gm) - 1;
        size_t rest = p.len - (sizeof(gm) - 1);
        const char *colon = memchr(name, ':', rest);
        if (colon != NULL) {
            h2o_iovec_t verb = h2o_iovec_init(colon + 1, (size_t)(name + rest - colon - 1));
            if (path_is(verb, "generateContent")) {
                handle_chat(req, &tg_sim_gemini, name, (size_t)(colon - name), 0);
                return 0;
            }
            if (path_is(verb, "streamGenerateContent")) {
                if (!query_has(req, "alt=sse")) {
                    sim_call_t *c = call_new(req, &tg_sim_gemini);
                    send_wire_error(c, 400, false,
                                    "tollgate-sim serves streamGenerateContent only with ?alt=sse", NULL);
                    return 0;
                }
                handle_chat(req, &tg_sim_gemini, name, (size_t)(colon - name), 1);
                return 0;
            }
        }
    }
    send_ctl_error(req, 404, "no such route in tollgate-sim (see gateway/sim/README.md)");
    return 0;
}

/* ---- threads and sockets --------------------------------------------------------------- */

static void on_shutdown_msg(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    sim_worker_t *w = H2O_STRUCT_FROM_MEMBER(sim_worker_t, shutdown_rx, rx);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *msg =
            H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&msg->link);
        free(msg);
    }
    if (w->listener != NULL) {
        h2o_socket_read_stop(w->listener);
        h2o_socket_close(w->listener);
        w->listener = NULL;
    }
    w->stopping = 1;
}

static void *worker_main(void *arg)
{
    sim_worker_t *w = arg;
    while (!w->stopping)
        h2o_evloop_run(w->ctx.loop, INT32_MAX);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tollgate-sim [--listen HOST:PORT] [--threads N] [--require-key KEY]...\n"
                 "                   [--keys-file F]\n"
                 "  --listen       address to serve (default 127.0.0.1:9100; port 0 picks a free one)\n"
                 "  --threads      worker threads, one event loop each (default 1)\n"
                 "  --require-key  answer 401 (in each provider's shape) unless requests carry KEY or\n"
                 "                 another listed key (repeatable)\n"
                 "  --keys-file    accepted keys, one per line (after the --require-key ones); /_sim/stats\n"
                 "                 counts requests per accepted key by its position, never the key\n"
                 "prints \"tollgate-sim listening on http://HOST:PORT\" once it accepts connections\n");
}

int main(int argc, char **argv)
{
    const char *listen_s = "127.0.0.1:9100";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_s = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            g_nworkers = atoi(argv[++i]);
            if (g_nworkers < 1 || g_nworkers > 256) {
                fprintf(stderr, "tollgate-sim: --threads must be in [1, 256]\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--require-key") == 0 && i + 1 < argc) {
            i++;
            if (tg_sim_auth_add(argv[i], strlen(argv[i])) != 0) {
                fprintf(stderr, "tollgate-sim: --require-key: too many keys, or an empty or oversized one\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--keys-file") == 0 && i + 1 < argc) {
            if (tg_sim_auth_load(argv[++i]) != 0) {
                fprintf(stderr, "tollgate-sim: --keys-file %s: cannot read it, or too many keys\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    struct sockaddr_storage parsed;
    socklen_t parsed_len;
    struct sockaddr_in addr; /* the "listening on" line speaks IPv4 only: an IPv6 address is refused */
    if (tg_addr_parse(listen_s, true, &parsed, &parsed_len) != 0 || parsed.ss_family != AF_INET) {
        fprintf(stderr, "tollgate-sim: --listen wants IPv4HOST:PORT, got \"%s\"\n", listen_s);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* workers inherit the mask; main sigwait()s */

    h2o_config_init(&g_conf);
    g_conf.max_request_entity_size = MAX_BODY;
    h2o_hostconf_t *host = h2o_config_register_host(&g_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pc = h2o_config_register_path(host, "/", 0);
    h2o_create_handler(pc, sizeof(h2o_handler_t))->on_req = on_req;

    g_workers = calloc((size_t)g_nworkers, sizeof(*g_workers));
    if (g_workers == NULL)
        return 1;
    /* bind every listener before any thread runs, so port 0 resolves once and "listening" is true */
    for (int i = 0; i < g_nworkers; i++) {
        g_workers[i].fd = tg_listen_open(&parsed, parsed_len, true);
        if (g_workers[i].fd < 0) {
            fprintf(stderr, "tollgate-sim: cannot listen on %s: %s\n", listen_s, strerror(errno));
            return 1;
        }
        if (i == 0) {
            socklen_t al = parsed_len;
            getsockname(g_workers[0].fd, (struct sockaddr *)&parsed, &al); /* port 0: the one picked */
        }
    }
    memcpy(&addr, &parsed, sizeof(addr));
    for (int i = 0; i < g_nworkers; i++) {
        sim_worker_t *w = &g_workers[i];
        h2o_context_init(&w->ctx, h2o_evloop_create(), &g_conf);
        w->accept_ctx.ctx = &w->ctx;
        w->accept_ctx.hosts = g_conf.hosts;
        h2o_timeout_init(w->ctx.loop, &w->hang_poll, HANG_POLL_MS);
        h2o_multithread_register_receiver(w->ctx.queue, &w->shutdown_rx, on_shutdown_msg);
        w->listener = h2o_evloop_socket_create(w->ctx.loop, w->fd, H2O_SOCKET_FLAG_DONT_READ);
        w->listener->data = &w->accept_ctx;
        h2o_socket_read_start(w->listener, tg_listen_on_accept);
        h2o_multithread_create_thread(&w->tid, NULL, worker_main, w);
    }
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr.sin_addr, ip, sizeof(ip));
    printf("tollgate-sim listening on http://%s:%d\n", ip, ntohs(addr.sin_port));
    fflush(stdout);

    int sig;
    sigwait(&sigs, &sig);
    for (int i = 0; i < g_nworkers; i++) {
        h2o_multithread_message_t *msg = calloc(1, sizeof(*msg));
        if (msg != NULL)
            h2o_multithread_send_message(&g_workers[i].shutdown_rx, msg);
    }
    for (int i = 0; i < g_nworkers; i++)
        pthread_join(g_workers[i].tid, NULL);
    return 0;
}
