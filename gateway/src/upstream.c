/*
 * upstream.c - libcurl's multi-socket API driven by a worker's h2o loop.
 *
 * Readiness: curl's sockets live in a private epoll set; only that set's fd is registered in
 * h2o's loop (DONT_READ: h2o reports readiness and never reads it), so there are no per-socket h2o
 * objects and no fd ownership questions.
 *
 * Idle connections stay registered. curl says CURL_POLL_REMOVE when a transfer ends and its
 * connection goes back to the cache, and asks for the socket again when the next transfer reuses
 * it: a DEL then an ADD per request, two syscalls that cost several µs each on a virtualised
 * host. So REMOVE only marks a connection socket dormant (fd_state); a dormant fd that becomes
 * ready (the peer closed the idle connection) is deleted then, once, so level-triggered epoll
 * cannot spin on it, and curl finds the connection dead at its next reuse check. This is only
 * safe for sockets whose close we see, or a reused fd number would inherit a stale registration:
 * connection sockets are opened and closed through our own callbacks (CURLOPT_OPENSOCKETFUNCTION
 * and CURLOPT_CLOSESOCKETFUNCTION, which curl keeps with the connection). Any other socket curl
 * watches (a resolver's socketpair, which curl closes itself) is deleted at REMOVE as before.
 *
 * curl's timer: a core deadline (deadline.h), curl's delay from now. Rewriting a fixed-duration
 * list's duration instead makes h2o_timeout_run re-fire the entry in the same pass and spin.
 *
 * Timeouts of a transfer:
 *   connect     CURLOPT_CONNECTTIMEOUT_MS
 *   first byte  our own deadline, from start until the first response *body* byte (TTFT); its
 *               duration is the attempt's own (the request's budget and a probe's shorter
 *               bound make it vary), so it lives in a sorted deadline list
 *   idle        our own h2o timeout, re-armed on every body chunk; unlinked while the consumer
 *               has paused us (a slow client is backpressure, not an idle provider)
 *   total       CURLOPT_TIMEOUT_MS; curl counts paused time too, so a client that reads very
 *               slowly can run into it. Accepted: total is a hard cap on an attempt's lifetime.
 * idle uses one fixed-duration h2o_timeout_t per distinct duration (they come from the config, so
 * there are few), which keeps its re-arm on every chunk O(1).
 *
 * Re-entrancy: curl_multi_remove_handle / curl_easy_cleanup are never called inside a curl
 * callback. `in_curl` counts nesting; a transfer finished or cancelled while inside curl is freed
 * from a zero-duration timeout on the next loop turn.
 *
 * Secrets: the request's header lines hold provider keys. curl gets them through slist nodes that
 * point at our own strings (no libcurl copy we could not wipe), and tg_upstream_req_dispose wipes
 * them when the transfer ends. Headers are never logged. (curl's internal request buffer also holds
 * the bytes briefly; that is outside our control.)
 */
#define _GNU_SOURCE
#include "upstream.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "deadline.h"
#include "log.h"
#include "metrics.h"

#define TG_UP_MAXCONNECTS 128 /* keep-alive cache per worker; sized for 64+ concurrent upstream calls */
#define TG_UP_EASY_POOL   64  /* idle easy handles kept for reuse: curl_easy_init is a large alloc + memset */

typedef struct duration_list {
    uint64_t ms;
    h2o_timeout_t timeout;
    struct duration_list *next;
} duration_list_t;

/* What the private epoll set holds for one fd: kept across transfers (see the top comment). */
typedef struct fd_state {
    uint32_t events; /* registered interest; valid when registered */
    bool registered; /* in epfd */
    bool wanted;     /* curl asked for it since its last CURL_POLL_REMOVE */
    bool owned;      /* opened by on_curl_open: its close comes through on_curl_close */
} fd_state_t;

struct tg_upstream {
    h2o_loop_t *loop;
    CURLM *multi;
    int epfd;
    fd_state_t *fds; /* indexed by fd, grown on demand */
    size_t n_fds;
    size_t n_watched; /* fds with registered set */
    h2o_socket_t *ep_sock;
    tg_timers_t deadlines; /* curl's timer and the transfers' first-byte deadlines */
    tg_deadline_t curl_timer;
    h2o_timeout_t zero; /* deferred frees */
    duration_list_t *durations;
    int in_curl;
    size_t active;
    h2o_linklist_t transfers;
    CURL *easy_pool[TG_UP_EASY_POOL];
    size_t n_easy_pool;
};

struct tg_transfer {
    tg_upstream_t *u;
    CURL *easy;
    tg_upstream_req_t req;
    struct curl_slist nodes[TG_UPSTREAM_MAX_HEADERS + 2];
    char expect_hdr[8]; /* "Expect:" disables 100-continue */
    char ct_hdr[32];    /* default content type for bodies */
    tg_transfer_cbs_t cbs;
    void *ud;
    tg_timeouts_t to;
    h2o_timeout_t *idle_list;
    tg_deadline_t fb_due;
    h2o_timeout_entry_t idle_entry, defer_entry;
    h2o_linklist_t link;
    long status;
    char content_type[128];
    char retry_after[64];
    const char *timeout_kind;
    bool have_ct, have_ra;
    bool head_sent;     /* on_head delivered */
    bool got_body;      /* first body byte seen (first-byte timer is off) */
    bool pause_pending; /* consumer asked to pause: refuse the next chunk */
    bool paused;        /* curl holds a refused chunk */
    bool cancelled;     /* no callback may run any more */
    bool finished;      /* on_done delivered (or being delivered) */
    bool in_multi;
};

/* ---------------------------------------------------------------- helpers */

static h2o_timeout_t *duration_list(tg_upstream_t *u, uint64_t ms)
{
    for (duration_list_t *d = u->durations; d != NULL; d = d->next)
        if (d->ms == ms)
            return &d->timeout;
    duration_list_t *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    d->ms = ms;
    h2o_timeout_init(u->loop, &d->timeout, ms);
    d->next = u->durations;
    u->durations = d;
    return &d->timeout;
}

static void transfer_free(tg_transfer_t *t)
{
    tg_upstream_t *u = t->u;
    tg_deadline_cancel(&t->fb_due);
    h2o_timeout_unlink(&t->idle_entry);
    h2o_timeout_unlink(&t->defer_entry);
    if (t->easy != NULL) {
        if (t->in_multi)
            curl_multi_remove_handle(u->multi, t->easy);
        if (u->n_easy_pool < TG_UP_EASY_POOL) {
            curl_easy_reset(t->easy); /* forgets every option, including our header list and body */
            u->easy_pool[u->n_easy_pool++] = t->easy;
        } else {
            curl_easy_cleanup(t->easy);
        }
    }
    if (h2o_linklist_is_linked(&t->link)) {
        h2o_linklist_unlink(&t->link);
        u->active--;
        tg_metrics_add("tollgate_upstream_active", "", -1);
    }
    tg_upstream_req_dispose(&t->req);
    free(t);
}

static void on_defer(h2o_timeout_entry_t *e)
{
    tg_transfer_t *t = H2O_STRUCT_FROM_MEMBER(tg_transfer_t, defer_entry, e);
    transfer_free(t);
}

/* Frees now, or on the next loop turn when we are inside a curl call. */
static void transfer_release(tg_transfer_t *t)
{
    tg_deadline_cancel(&t->fb_due);
    h2o_timeout_unlink(&t->idle_entry);
    if (t->u->in_curl > 0) {
        if (!h2o_timeout_is_linked(&t->defer_entry))
            h2o_timeout_link(t->u->loop, &t->u->zero, &t->defer_entry);
        return;
    }
    transfer_free(t);
}

static void deliver_head(tg_transfer_t *t)
{
    if (t->head_sent || t->cancelled)
        return;
    t->head_sent = true;
    if (t->status == 0)
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
    if (t->cbs.on_head != NULL)
        t->cbs.on_head(t->ud, (int)t->status, t->have_ct ? t->content_type : NULL,
                       t->have_ra ? t->retry_after : NULL);
}

static int map_curl_error(tg_transfer_t *t, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return 0;
    case CURLE_OPERATION_TIMEDOUT: {
        /* curl has one code for both of its timeouts: no connection yet means the connect one. */
        curl_off_t connect_us = 0;
        curl_easy_getinfo(t->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        t->timeout_kind = (connect_us == 0 && t->to.connect_ms < t->to.total_ms) ? "connect" : "total";
        return TG_EUPSTREAM_TIMEOUT;
    }
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        return TG_EUPSTREAM_UNREACHABLE;
    default:
        return TG_EUPSTREAM_FAILED;
    }
}

/* The transfer ended (curl said done, or one of our timers fired). Runs outside curl callbacks. */
static void transfer_finish(tg_transfer_t *t, int rc)
{
    if (t->finished)
        return;
    t->finished = true;
    tg_deadline_cancel(&t->fb_due);
    h2o_timeout_unlink(&t->idle_entry);
    if (!t->cancelled) {
        /* A complete answer with an empty body still reports its head first. */
        if (rc == 0)
            deliver_head(t);
        if (!t->cancelled && t->cbs.on_done != NULL)
            t->cbs.on_done(t->ud, rc, rc == TG_EUPSTREAM_TIMEOUT ? t->timeout_kind : NULL);
    }
    t->cancelled = true;
    transfer_release(t);
}

static void check_multi_info(tg_upstream_t *u)
{
    if (u->in_curl > 0)
        return; /* an outer frame will look once curl has returned */
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        tg_transfer_t *t = NULL;
        CURLcode res = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (t == NULL || t->finished)
            continue;
        int rc = map_curl_error(t, res);
        /* Removing the handle here (outside curl's callbacks) is allowed. */
        curl_multi_remove_handle(u->multi, t->easy);
        t->in_multi = false;
        transfer_finish(t, rc);
    }
}

static void socket_action(tg_upstream_t *u, curl_socket_t fd, int ev)
{
    int running;
    ++u->in_curl;
    curl_multi_socket_action(u->multi, fd, ev, &running);
    --u->in_curl;
    check_multi_info(u);
}

/* ---------------------------------------------------------------- loop glue */

static fd_state_t *fd_state(tg_upstream_t *u, int fd, bool grow)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= u->n_fds) {
        if (!grow)
            return NULL;
        size_t n = u->n_fds == 0 ? 256 : u->n_fds;
        while (n <= (size_t)fd)
            n *= 2;
        fd_state_t *p = realloc(u->fds, n * sizeof(*p));
        if (p == NULL)
            return NULL;
        memset(p + u->n_fds, 0, (n - u->n_fds) * sizeof(*p));
        u->fds = p;
        u->n_fds = n;
    }
    return &u->fds[fd];
}

/* Adds fd to the private set with interest `want`, or changes it; remembers what is registered. */
static void fd_watch(tg_upstream_t *u, int fd, fd_state_t *st, uint32_t want)
{
    struct epoll_event ev = {.events = want, .data.fd = fd};
    if (!st->registered) {
        if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
            epoll_ctl(u->epfd, EPOLL_CTL_MOD, fd, &ev);
        st->registered = true;
        u->n_watched++;
    } else if (st->events != want) {
        if (epoll_ctl(u->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
            epoll_ctl(u->epfd, EPOLL_CTL_ADD, fd, &ev);
    }
    st->events = want;
}

static void fd_unwatch(tg_upstream_t *u, int fd, fd_state_t *st)
{
    if (!st->registered)
        return;
    epoll_ctl(u->epfd, EPOLL_CTL_DEL, fd, NULL);
    st->registered = false;
    u->n_watched--;
}

/* The fd stops meaning the socket fd_state describes (closed, or closed behind our back). */
static void fd_forget(tg_upstream_t *u, int fd)
{
    fd_state_t *st = fd_state(u, fd, false);
    if (st != NULL) {
        fd_unwatch(u, fd, st);
        memset(st, 0, sizeof(*st));
    }
}

static void on_epfd_ready(h2o_socket_t *sock, const char *err)
{
    tg_upstream_t *u = sock->data;
    struct epoll_event evs[64];
    int n = epoll_wait(u->epfd, evs, 64, 0);
    for (int i = 0; i < n; ++i) {
        fd_state_t *st = fd_state(u, evs[i].data.fd, false);
        if (st == NULL || !st->wanted) {
            /* a dormant idle connection woke up (closed by the peer): stop watching it; it stays
             * ours (owned) until curl closes it. Every watched fd is in the table (on_curl_socket
             * refuses one it cannot record), so st is NULL only by mistake: DEL anyway. */
            if (st != NULL)
                fd_unwatch(u, evs[i].data.fd, st);
            else
                epoll_ctl(u->epfd, EPOLL_CTL_DEL, evs[i].data.fd, NULL);
            continue;
        }
        int ev = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP))
            ev |= CURL_CSELECT_IN;
        if (evs[i].events & EPOLLOUT)
            ev |= CURL_CSELECT_OUT;
        if (evs[i].events & EPOLLERR)
            ev |= CURL_CSELECT_ERR;
        socket_action(u, evs[i].data.fd, ev);
    }
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    tg_upstream_t *u = userp;
    fd_state_t *st = fd_state(u, fd, what != CURL_POLL_REMOVE);
    if (what == CURL_POLL_REMOVE) {
        if (st != NULL && st->owned)
            st->wanted = false; /* stays registered while idle: see the top comment */
        else
            fd_forget(u, fd); /* curl may close it behind our back */
        return 0;
    }
    if (st == NULL)
        return -1; /* no memory for the table: curl fails this transfer (CURLM_ABORTED_BY_CALLBACK) */
    fd_watch(u, fd, st, ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u));
    st->wanted = true;
    return 0;
}

/* Connection sockets: opened here and closed in on_curl_close, so fd_state never outlives the
 * socket it describes. */
static curl_socket_t on_curl_open(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    tg_upstream_t *u = clientp;
    int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    fd_state_t *st = fd_state(u, fd, true);
    if (st == NULL) {
        close(fd); /* a socket we could not track must not become a connection */
        return CURL_SOCKET_BAD;
    }
    memset(st, 0, sizeof(*st)); /* a fresh socket is in no epoll set */
    st->owned = true;
    return fd;
}

static int on_curl_close(void *clientp, curl_socket_t fd)
{
    fd_forget(clientp, fd);
    return close(fd);
}

static void on_curl_timer_fired(tg_deadline_t *d)
{
    tg_upstream_t *u = H2O_STRUCT_FROM_MEMBER(tg_upstream_t, curl_timer, d);
    socket_action(u, CURL_SOCKET_TIMEOUT, 0);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    tg_upstream_t *u = userp;
    if (timeout_ms >= 0) /* never call socket_action from here */
        tg_deadline_arm(&u->deadlines, &u->curl_timer, (uint64_t)timeout_ms, on_curl_timer_fired);
    else /* -1 deletes the timer */
        tg_deadline_cancel(&u->curl_timer);
    return 0;
}

/* ---------------------------------------------------------------- our timeouts */

static void fire_timeout(tg_transfer_t *t, const char *kind)
{
    /* We are in an h2o timer, not inside curl: the handle may be removed now. */
    if (t->in_multi) {
        curl_multi_remove_handle(t->u->multi, t->easy);
        t->in_multi = false;
    }
    t->timeout_kind = kind;
    transfer_finish(t, TG_EUPSTREAM_TIMEOUT);
}

static void on_first_byte_timeout(tg_deadline_t *d)
{
    fire_timeout(H2O_STRUCT_FROM_MEMBER(tg_transfer_t, fb_due, d), "first_byte");
}

static void on_idle_timeout(h2o_timeout_entry_t *e)
{
    fire_timeout(H2O_STRUCT_FROM_MEMBER(tg_transfer_t, idle_entry, e), "idle");
}

static void arm_idle(tg_transfer_t *t)
{
    h2o_timeout_unlink(&t->idle_entry);
    if (t->idle_list != NULL && !t->cancelled)
        h2o_timeout_link(t->u->loop, t->idle_list, &t->idle_entry);
}

/* ---------------------------------------------------------------- curl callbacks */

static size_t on_header(char *p, size_t size, size_t nmemb, void *userdata)
{
    tg_transfer_t *t = userdata;
    size_t n = size * nmemb;
    if (t->cancelled)
        return 0;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        /* A new header block (after a 1xx): forget what the previous one said. */
        t->have_ct = t->have_ra = false;
        t->status = 0;
        const char *sp = memchr(p, ' ', n);
        if (sp != NULL && (size_t)(sp - p) + 4 <= n)
            t->status = strtol(sp + 1, NULL, 10);
        return n;
    }
    if (n <= 2 && (n == 0 || p[0] == '\r' || p[0] == '\n')) {
        /* End of a header block: the final one (not 1xx) completes the head. */
        if (t->status >= 200)
            deliver_head(t);
        return t->cancelled ? 0 : n;
    }
    /* Keep only what the caller needs, bounded; every other header (and its value) is dropped. */
    struct {
        const char *name;
        char *dst;
        size_t cap;
        bool *have;
    } want[] = {{"content-type", t->content_type, sizeof(t->content_type), &t->have_ct},
                {"retry-after", t->retry_after, sizeof(t->retry_after), &t->have_ra}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        size_t nl = strlen(want[i].name);
        if (n > nl && p[nl] == ':' && strncasecmp(p, want[i].name, nl) == 0) {
            const char *v = p + nl + 1, *end = p + n;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
                end--;
            size_t vl = (size_t)(end - v);
            if (vl >= want[i].cap)
                vl = want[i].cap - 1;
            memcpy(want[i].dst, v, vl);
            want[i].dst[vl] = '\0';
            *want[i].have = true;
        }
    }
    return n;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *userdata)
{
    tg_transfer_t *t = userdata;
    size_t n = size * nmemb;
    if (t->cancelled)
        return 0; /* CURLE_WRITE_ERROR: the transfer is being torn down */
    if (t->pause_pending) {
        /* The consumer is full: curl keeps this chunk and stops reading until we resume. */
        t->pause_pending = false;
        t->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (!t->got_body) {
        t->got_body = true;
        tg_deadline_cancel(&t->fb_due);
    }
    deliver_head(t);
    if (t->cancelled)
        return 0;
    int r = t->cbs.on_data != NULL ? t->cbs.on_data(t->ud, p, n) : 0;
    if (t->cancelled)
        return 0;
    if (r < 0)
        return 0; /* CURLE_WRITE_ERROR: on_done follows with TG_EUPSTREAM_FAILED */
    if (r == 1) {
        /* The chunk was consumed; the next one is refused, which pauses curl. While paused the idle
         * timer stays off: waiting for a slow client is not the provider's fault. */
        t->pause_pending = true;
        h2o_timeout_unlink(&t->idle_entry);
    } else {
        arm_idle(t);
    }
    return n;
}

/* ---------------------------------------------------------------- public API */

tg_upstream_t *tg_upstream_create(h2o_loop_t *loop)
{
    tg_upstream_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->loop = loop;
    h2o_linklist_init_anchor(&u->transfers);
    u->multi = curl_multi_init();
    u->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (u->multi == NULL || u->epfd < 0) {
        if (u->multi != NULL)
            curl_multi_cleanup(u->multi);
        if (u->epfd >= 0)
            close(u->epfd);
        free(u);
        return NULL;
    }
    tg_timers_init(&u->deadlines, loop);
    h2o_timeout_init(loop, &u->zero, 0);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX); /* h2 over TLS multiplexes */
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, (long)TG_UP_MAXCONNECTS);
    u->ep_sock = h2o_evloop_socket_create(loop, u->epfd, H2O_SOCKET_FLAG_DONT_READ);
    u->ep_sock->data = u;
    h2o_socket_read_start(u->ep_sock, on_epfd_ready);
    return u;
}

void tg_upstream_destroy(tg_upstream_t *u)
{
    if (u == NULL)
        return;
    while (!h2o_linklist_is_empty(&u->transfers)) {
        tg_transfer_t *t = H2O_STRUCT_FROM_MEMBER(tg_transfer_t, link, u->transfers.next);
        t->cancelled = true;
        transfer_free(t);
    }
    /* Transfers that ended earlier may still wait for their deferred free. */
    while (!h2o_linklist_is_empty(&u->zero._entries)) {
        h2o_timeout_entry_t *e = H2O_STRUCT_FROM_MEMBER(h2o_timeout_entry_t, _link, u->zero._entries.next);
        h2o_timeout_unlink(e);
        e->cb(e);
    }
    tg_deadline_cancel(&u->curl_timer);
    while (u->n_easy_pool > 0)
        curl_easy_cleanup(u->easy_pool[--u->n_easy_pool]);
    curl_multi_cleanup(u->multi); /* closes cached connections (CURL_POLL_REMOVE first) */
    h2o_socket_read_stop(u->ep_sock);
    h2o_socket_close(u->ep_sock); /* closes epfd */
    free(u->fds);
    tg_timers_dispose(&u->deadlines);
    h2o_timeout_dispose(u->loop, &u->zero);
    while (u->durations != NULL) {
        duration_list_t *d = u->durations;
        u->durations = d->next;
        h2o_timeout_dispose(u->loop, &d->timeout);
        free(d);
    }
    free(u);
}

size_t tg_upstream_active(const tg_upstream_t *u)
{
    return u != NULL ? u->active : 0;
}

size_t tg_upstream_watched(const tg_upstream_t *u)
{
    return u != NULL ? u->n_watched : 0;
}

static CURL *make_easy(tg_transfer_t *t)
{
    tg_upstream_t *u = t->u;
    CURL *e = u->n_easy_pool > 0 ? u->easy_pool[--u->n_easy_pool] : curl_easy_init();
    if (e == NULL)
        return NULL;
    tg_upstream_req_t *r = &t->req;

    /* Header list nodes point at our own strings so that curl holds no copy of a key we cannot wipe. */
    struct curl_slist *head = NULL, **tail = &head;
    bool has_ct = false;
    for (size_t i = 0; i < r->n_headers && i < TG_UPSTREAM_MAX_HEADERS; i++) {
        if (r->headers[i] == NULL)
            continue;
        if (strncasecmp(r->headers[i], "content-type:", 13) == 0)
            has_ct = true;
        t->nodes[i].data = r->headers[i];
        *tail = &t->nodes[i];
        tail = &t->nodes[i].next;
    }
    memcpy(t->expect_hdr, "Expect:", 8);
    t->nodes[TG_UPSTREAM_MAX_HEADERS].data = t->expect_hdr;
    *tail = &t->nodes[TG_UPSTREAM_MAX_HEADERS];
    tail = &t->nodes[TG_UPSTREAM_MAX_HEADERS].next;
    if (r->body != NULL && !has_ct) {
        snprintf(t->ct_hdr, sizeof(t->ct_hdr), "Content-Type: application/json");
        t->nodes[TG_UPSTREAM_MAX_HEADERS + 1].data = t->ct_hdr;
        *tail = &t->nodes[TG_UPSTREAM_MAX_HEADERS + 1];
        tail = &t->nodes[TG_UPSTREAM_MAX_HEADERS + 1].next;
    }
    *tail = NULL;

    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, head); /* not copied by curl: lives in t */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    const char *method = r->method != NULL ? r->method : (r->body != NULL ? "POST" : "GET");
    if (r->body != NULL) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body); /* not copied: lives in t */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(e, CURLOPT_PRIVATE, t);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_curl_open);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L); /* prefer multiplexing on an existing h2 connection */
    /* h2 only via TLS ALPN: h2c prior knowledge breaks connection reuse in bookworm's curl 7.88. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    if (t->to.connect_ms > 0)
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)t->to.connect_ms);
    if (t->to.total_ms > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)t->to.total_ms);
    return e;
}

tg_transfer_t *tg_transfer_start(tg_upstream_t *u, tg_upstream_req_t *req, const tg_timeouts_t *to,
                                 const tg_transfer_cbs_t *cbs, void *ud)
{
    tg_transfer_t *t = calloc(1, sizeof(*t));
    if (t == NULL || u == NULL || req == NULL || req->url == NULL || cbs == NULL) {
        free(t);
        if (req != NULL)
            tg_upstream_req_dispose(req);
        return NULL;
    }
    /* Take ownership: the caller's struct is left empty, our copy is wiped when the transfer ends. */
    t->req = *req;
    memset(req, 0, sizeof(*req));
    t->u = u;
    t->cbs = *cbs;
    t->ud = ud;
    if (to != NULL)
        t->to = *to;
    t->idle_entry.cb = on_idle_timeout;
    t->defer_entry.cb = on_defer;
    if (t->to.idle_ms > 0)
        t->idle_list = duration_list(u, t->to.idle_ms);
    t->easy = make_easy(t);
    if (t->easy == NULL || (t->to.idle_ms > 0 && t->idle_list == NULL)) {
        transfer_free(t);
        return NULL;
    }
    if (curl_multi_add_handle(u->multi, t->easy) != CURLM_OK) {
        transfer_free(t);
        return NULL;
    }
    t->in_multi = true;
    h2o_linklist_insert(&u->transfers, &t->link);
    u->active++;
    tg_metrics_add("tollgate_upstream_active", "", 1);
    if (t->to.first_byte_ms > 0)
        tg_deadline_arm(&u->deadlines, &t->fb_due, t->to.first_byte_ms, on_first_byte_timeout);
    /* curl_multi_add_handle armed a 0 ms timer: the work starts from the loop, never synchronously. */
    return t;
}

void tg_transfer_resume(tg_transfer_t *t)
{
    if (t == NULL || t->cancelled || t->finished)
        return;
    t->pause_pending = false;
    arm_idle(t);
    if (!t->paused)
        return;
    t->paused = false;
    tg_upstream_t *u = t->u;
    ++u->in_curl;
    curl_easy_pause(t->easy, CURLPAUSE_CONT); /* may call on_write (and the consumer) synchronously */
    --u->in_curl;
    check_multi_info(u);
}

void tg_transfer_cancel(tg_transfer_t *t)
{
    if (t == NULL || t->cancelled)
        return;
    t->cancelled = true;
    if (t->finished)
        return; /* called from on_head/on_done inside transfer_finish, which releases t itself */
    t->finished = true;
    transfer_release(t);
}
