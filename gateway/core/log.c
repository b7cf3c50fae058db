/*
 * log.c - structured JSON logs, see log.h.
 *
 * Each line is built in a fixed per-thread buffer and written with a single
 * write(2): lines from different threads never interleave, and logging never
 * allocates. A line that would not fit is cut at a value boundary (or inside
 * a string value, at an escape boundary) and closed with "truncated":true, so
 * it stays valid JSON.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

    int fd = atomic_load_explicit(&g_fd, memory_order_relaxed);
    ssize_t w;
    do {
        w = write(fd, buf, l.len);
    } while (w < 0 && errno == EINTR);
    errno = saved_errno;
}
