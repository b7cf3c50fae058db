/*
 * log.c - structured JSON logs, see log.h.
 *
 * Each line is built in a fixed per-thread buffer; logging never allocates. A line that would not
 * fit is cut at a value boundary (or inside a string value, at an escape boundary) and closed with
 * "truncated":true, so it stays valid JSON.
 *
 * Once tg_log_start has run, a line is copied whole into a byte ring (one mutex, held for a
 * memcpy) or dropped whole when it does not fit; the writer thread takes whole lines out, at most
 * PIPE_BUF bytes at a time unless one line is longer, and writes them, finishing a short write
 * before the next batch. It is the only writer then, so lines never interleave, and a write to a
 * pipe is as atomic towards other processes as the one-write-per-line it replaced.
 */
#define _GNU_SOURCE /* memrchr */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

#define TG_LOG_LINE_MAX 8192
/* room kept free for the closing `,"truncated":true}\n` */
#define TG_LOG_TAIL 24

static _Atomic int g_level = TG_LOG_INFO;
static _Atomic int g_fd = 2;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void tg_log_set_level(tg_log_level_t l)
{
    if (l < TG_LOG_ERROR)
        l = TG_LOG_ERROR;
    if (l > TG_LOG_DEBUG)
        l = TG_LOG_DEBUG;
    atomic_store_explicit(&g_level, (int)l, memory_order_relaxed);
}

tg_log_level_t tg_log_level(void)
{
    return (tg_log_level_t)atomic_load_explicit(&g_level, memory_order_relaxed);
}

void tg_log_set_fd(int fd)
{
    atomic_store_explicit(&g_fd, fd, memory_order_relaxed);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if the bytes there are not one.
 * Overlong forms, surrogates and code points above U+10FFFF are invalid. */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if (c == 0xe0 && s[1] < 0xa0)
            return 0; /* overlong */
        if (c == 0xed && s[1] >= 0xa0)
            return 0; /* UTF-16 surrogate */
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && s[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xf4 && s[1] >= 0x90)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

/*
 * Escapes as much of s as fits into dst[0..cap) (no NUL written), never splitting an escape or a
 * UTF-8 sequence. Returns the bytes written; *complete tells whether all of s was consumed.
 * The reads of s[1..3] in utf8_seq_len stop at the NUL terminator because a NUL is never a
 * continuation byte.
 */
static size_t escape_into(char *dst, size_t cap, const char *s, bool *complete)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p != '\0') {
        /* the common case first: a run of printable ASCII needs no escape (access lines are mostly
         * that, and this runs for every request) */
        if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') {
            if (n == cap) {
                *complete = false;
                return n;
            }
            dst[n++] = (char)*p++;
            continue;
        }
        char tmp[8];
        size_t tlen;
        size_t adv = 1;
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tlen = 2;
        } else if (c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f') {
            tmp[0] = '\\';
            tmp[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : c == '\t' ? 't' : c == '\b' ? 'b' : 'f';
            tlen = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 0xf];
            tlen = 6;
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            tlen = 1;
        } else if ((adv = utf8_seq_len(p)) != 0) {
            memcpy(tmp, p, adv);
            tlen = adv;
        } else {
            /* an invalid byte becomes U+FFFD so the line stays valid UTF-8 JSON */
            memcpy(tmp, "\\ufffd", 6);
            tlen = 6;
            adv = 1;
        }
        if (n + tlen > cap) {
            *complete = false;
            return n;
        }
        memcpy(dst + n, tmp, tlen);
        n += tlen;
        p += adv;
    }
    *complete = true;
    return n;
}

int tg_json_escape(char *dst, size_t cap, const char *s)
{
    if (cap == 0)
        return -1;
    bool complete;
    size_t n = escape_into(dst, cap - 1, s, &complete);
    if (!complete) {
        dst[0] = '\0';
        return -1;
    }
    dst[n] = '\0';
    return (int)n;
}

static atomic_bool g_async;
static bool enqueue(const char *line, size_t len, tg_log_level_t level);

typedef struct line {
    char *buf;
    size_t len;
    size_t lim; /* len may not pass this (the tail room is kept back) */
    bool truncated;
} line_t;

static bool put_raw(line_t *l, const char *s, size_t n)
{
    if (l->truncated || l->len + n > l->lim) {
        l->truncated = true;
        return false;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

/* A quoted string; when cut, it is still closed with a quote so the JSON stays valid. */
static bool put_str(line_t *l, const char *s, bool may_cut)
{
    if (l->truncated || l->len + 2 > l->lim) {
        l->truncated = true;
        return false;
    }
    size_t start = l->len;
    l->buf[l->len++] = '"';
    bool complete;
    l->len += escape_into(l->buf + l->len, l->lim - l->len - 1, s, &complete);
    if (!complete && !may_cut) {
        l->len = start;
        l->truncated = true;
        return false;
    }
    l->buf[l->len++] = '"';
    if (!complete)
        l->truncated = true;
    return complete;
}

static void put_kv(line_t *l, const tg_kv_t *kv)
{
    size_t start = l->len;
    if (!put_raw(l, ",", 1) || !put_str(l, kv->key, false) || !put_raw(l, ":", 1))
        goto undo;
    if (kv->type == TG_KV_T_INT) {
        /* by hand: snprintf was a visible share of a per-request access line */
        char num[24];
        char *e = num + sizeof(num), *q = e;
        long long v = (long long)kv->v.i;
        unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
        do {
            *--q = (char)('0' + u % 10);
            u /= 10;
        } while (u != 0);
        if (v < 0)
            *--q = '-';
        if (!put_raw(l, q, (size_t)(e - q)))
            goto undo;
    } else if (kv->v.s == NULL) {
        if (!put_raw(l, "null", 4))
            goto undo;
    } else {
        /* a long string value is cut rather than dropped: its start is usually what matters */
        if (!put_str(l, kv->v.s, true) && l->len <= start + strlen(kv->key) + 6)
            goto undo;
    }
    return;
undo:
    l->len = start;
    l->truncated = true;
}

static void format_ts(char *out, size_t cap)
{
    /* gmtime_r + strftime once per second and thread; the milliseconds are written by hand */
    static _Thread_local time_t cached_sec = (time_t)-1;
    static _Thread_local char cached[32];
    static _Thread_local size_t cached_len;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = ts.tv_sec;
    }
    if (cap < cached_len + 6) {
        if (cap > 0)
            out[0] = '\0';
        return;
    }
    long ms = ts.tv_nsec / 1000000L;
    memcpy(out, cached, cached_len);
    out[cached_len] = '.';
    out[cached_len + 1] = (char)('0' + ms / 100);
    out[cached_len + 2] = (char)('0' + ms / 10 % 10);
    out[cached_len + 3] = (char)('0' + ms % 10);
    out[cached_len + 4] = 'Z';
    out[cached_len + 5] = '\0';
}

void tg__log(tg_log_level_t level, const char *event, ...)
{
    static _Thread_local char buf[TG_LOG_LINE_MAX];
    int saved_errno = errno;
    line_t l = {.buf = buf, .len = 0, .lim = sizeof(buf) - TG_LOG_TAIL, .truncated = false};
    char ts[40];
    format_ts(ts, sizeof(ts));
    if (level < TG_LOG_ERROR || level > TG_LOG_DEBUG)
        level = TG_LOG_ERROR;

    put_raw(&l, "{\"ts\":\"", 7);
    put_raw(&l, ts, strlen(ts));
    put_raw(&l, "\",\"level\":\"", 11);
    put_raw(&l, level_names[level], strlen(level_names[level]));
    put_raw(&l, "\",\"event\":", 10);
    put_str(&l, event != NULL ? event : "", true);

    va_list ap;
    va_start(ap, event);
    for (;;) {
        tg_kv_t kv = va_arg(ap, tg_kv_t);
        if (kv.type == TG_KV_T_END || kv.key == NULL)
            break;
        if (!l.truncated)
            put_kv(&l, &kv);
    }
    va_end(ap);

    /* the tail room was reserved, so these always fit */
    if (l.truncated) {
        memcpy(buf + l.len, ",\"truncated\":true", 17);
        l.len += 17;
    }
    buf[l.len++] = '}';
    buf[l.len++] = '\n';

    if (!atomic_load_explicit(&g_async, memory_order_acquire) || !enqueue(buf, l.len, level)) {
        int fd = atomic_load_explicit(&g_fd, memory_order_relaxed);
        ssize_t w;
        do {
            w = write(fd, buf, l.len);
        } while (w < 0 && errno == EINTR);
    }
    errno = saved_errno;
}

/* ---------------------------------------------------------------- the queue and its writer */

/* q.mu protects every member of q; cv_data wakes the writer, cv_idle wakes tg_log_stop. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv_data, cv_idle;
    char *ring;
    size_t cap, head, used; /* the queued bytes are ring[head .. head + used), wrapping at cap */
    bool running;           /* the writer thread has not exited */
    bool stopping;          /* the writer exits once the ring is empty */
    bool writer_waiting;    /* the writer sleeps on cv_data: signal it */
} q = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .cv_data = PTHREAD_COND_INITIALIZER,
       .cv_idle = PTHREAD_COND_INITIALIZER};

/* g_async (declared above): lines go to the queue (a hint; q.running decides under q.mu) */
static _Atomic uint64_t g_dropped;

uint64_t tg_log_dropped(void)
{
    return atomic_load_explicit(&g_dropped, memory_order_relaxed);
}

/* Queues one whole line or drops it. Returns false when no writer runs (the caller writes). */
static bool enqueue(const char *line, size_t len, tg_log_level_t level)
{
    pthread_mutex_lock(&q.mu);
    if (!q.running) {
        pthread_mutex_unlock(&q.mu);
        return false;
    }
    size_t limit = level <= TG_LOG_WARN ? q.cap : q.cap / 4 * 3;
    if (q.used + len > limit) {
        pthread_mutex_unlock(&q.mu);
        atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
        return true;
    }
    size_t tail = (q.head + q.used) % q.cap;
    size_t first = len < q.cap - tail ? len : q.cap - tail;
    memcpy(q.ring + tail, line, first);
    memcpy(q.ring, line + first, len - first);
    q.used += len;
    bool wake = q.writer_waiting;
    pthread_mutex_unlock(&q.mu);
    if (wake)
        pthread_cond_signal(&q.cv_data);
    return true;
}

/* Writes all of buf, waiting for a non-blocking fd to take more. Returns false on an error. */
static bool write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            (void)poll(&p, 1, -1);
        } else if (!(w < 0 && errno == EINTR)) {
            return false;
        }
    }
    return true;
}

static void *writer_main(void *arg)
{
    (void)arg;
    static char batch[TG_LOG_LINE_MAX]; /* one writer thread at a time */
    pthread_mutex_lock(&q.mu);
    for (;;) {
        while (q.used == 0 && !q.stopping) {
            q.writer_waiting = true;
            pthread_cond_wait(&q.cv_data, &q.mu);
            q.writer_waiting = false;
        }
        if (q.used == 0)
            break; /* stopping, and everything is written */
        /* whole lines only: up to PIPE_BUF bytes of them, or the first line when it is longer (a
         * line is at most TG_LOG_LINE_MAX bytes, so it is always within the copy) */
        size_t n = q.used < sizeof(batch) ? q.used : sizeof(batch);
        size_t first = n < q.cap - q.head ? n : q.cap - q.head;
        memcpy(batch, q.ring + q.head, first);
        memcpy(batch + first, q.ring, n - first);
        const char *end = memrchr(batch, '\n', n < PIPE_BUF ? n : PIPE_BUF);
        if (end == NULL)
            end = memchr(batch, '\n', n);
        n = end != NULL ? (size_t)(end - batch) + 1 : n;
        q.head = (q.head + n) % q.cap;
        q.used -= n;
        pthread_mutex_unlock(&q.mu);

        if (!write_all(atomic_load_explicit(&g_fd, memory_order_relaxed), batch, n)) {
            uint64_t lines = 0;
            for (const char *p = batch; (p = memchr(p, '\n', n - (size_t)(p - batch))) != NULL; p++)
                lines++;
            atomic_fetch_add_explicit(&g_dropped, lines, memory_order_relaxed);
        }
        pthread_mutex_lock(&q.mu);
    }
    q.running = false;
    pthread_cond_broadcast(&q.cv_idle);
    pthread_mutex_unlock(&q.mu);
    return NULL;
}

int tg_log_start(size_t queue_bytes)
{
    if (queue_bytes < 2 * TG_LOG_LINE_MAX)
        queue_bytes = 2 * TG_LOG_LINE_MAX;
    pthread_mutex_lock(&q.mu);
    if (q.running) {
        pthread_mutex_unlock(&q.mu);
        return TG_EINTERNAL;
    }
    char *ring = malloc(queue_bytes);
    if (ring == NULL) {
        pthread_mutex_unlock(&q.mu);
        return TG_ENOMEM;
    }
    free(q.ring); /* a writer left running by a timed-out stop would not come here: q.running */
    q.ring = ring;
    q.cap = queue_bytes;
    q.head = q.used = 0;
    q.stopping = false;
    q.running = true;
    /* the writer must never take a signal meant for sigwait() in the main thread */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t tid;
    int rc = pthread_create(&tid, NULL, writer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        q.running = false;
        pthread_mutex_unlock(&q.mu);
        return TG_EINTERNAL;
    }
    pthread_detach(tid); /* tg_log_stop waits on cv_idle, with a bound, instead of joining */
    atomic_store_explicit(&g_async, true, memory_order_release);
    pthread_mutex_unlock(&q.mu);
    return 0;
}

void tg_log_stop(int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_ms >= 0) {
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&q.mu);
    if (!q.running) {
        pthread_mutex_unlock(&q.mu);
        return;
    }
    q.stopping = true;
    pthread_cond_signal(&q.cv_data);
    while (q.running) {
        if (timeout_ms < 0)
            pthread_cond_wait(&q.cv_idle, &q.mu);
        else if (pthread_cond_timedwait(&q.cv_idle, &q.mu, &until) == ETIMEDOUT)
            break;
    }
    if (!q.running)
        atomic_store_explicit(&g_async, false, memory_order_release);
    pthread_mutex_unlock(&q.mu);
}
