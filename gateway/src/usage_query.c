/*
 * usage_query.c - GET /v1/usage's parameters and cursor (usage_query.h).
 */
#define _DEFAULT_SOURCE /* timegm */
#include "usage_query.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "err.h"

/* Unix seconds allowed: 1970 to 9999. */
#define MAX_UNIX_S INT64_C(253402300799)

static bool digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

int tg_usage_time_parse(const char *s, size_t len, int64_t *us)
{
    if (digits(s, len)) {
        if (len > 12)
            return -1;
        int64_t v = 0;
        for (size_t i = 0; i < len; i++)
            v = v * 10 + (s[i] - '0');
        if (v > MAX_UNIX_S)
            return -1;
        *us = v * 1000000;
        return 0;
    }
    /* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
    if (len < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2) ||
        (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) ||
        s[16] != ':' || !digits(s + 17, 2))
        return -1;
    size_t i = 19;
    int64_t frac_us = 0;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        size_t n = i - start;
        if (n == 0 || n > 9)
            return -1;
        for (size_t k = 0; k < 6; k++)
            frac_us = frac_us * 10 + (k < n ? s[start + k] - '0' : 0);
    }
    int offset_s = 0;
    if (i + 1 == len && (s[i] == 'Z' || s[i] == 'z')) {
        /* UTC */
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && digits(s + i + 1, 2) && s[i + 3] == ':' &&
               digits(s + i + 4, 2)) {
        int oh = num(s + i + 1, 2), om = num(s + i + 4, 2);
        if (oh > 23 || om > 59)
            return -1;
        offset_s = (s[i] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    } else {
        return -1;
    }
    struct tm tm = {.tm_year = num(s, 4) - 1900,
                    .tm_mon = num(s + 5, 2) - 1,
                    .tm_mday = num(s + 8, 2),
                    .tm_hour = num(s + 11, 2),
                    .tm_min = num(s + 14, 2),
                    .tm_sec = num(s + 17, 2)};
    struct tm want = tm;
    if (tm.tm_year < 70 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_hour > 23 || tm.tm_min > 59 ||
        tm.tm_sec > 59)
        return -1;
    time_t t = timegm(&tm);
    /* timegm normalises 2026-02-30 into March: a date that moved was not a date */
    if (tm.tm_mday != want.tm_mday || tm.tm_mon != want.tm_mon || tm.tm_year != want.tm_year)
        return -1;
    int64_t secs = (int64_t)t - offset_s;
    if (secs < 0 || secs > MAX_UNIX_S)
        return -1;
    *us = secs * 1000000 + frac_us;
    return 0;
}

void tg_usage_cursor_make(int64_t us, const char *request_id, char *out)
{
    char raw[24 + TG_USAGE_RID_MAX + 2];
    int n = snprintf(raw, sizeof(raw), "%" PRId64 ":%.*s", us, TG_USAGE_RID_MAX, request_id);
    sodium_bin2base64(out, TG_USAGE_CURSOR_MAX + 1, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int tg_usage_cursor_parse(const char *s, size_t len, int64_t *us, char rid[TG_USAGE_RID_MAX + 1])
{
    unsigned char raw[TG_USAGE_CURSOR_MAX];
    size_t n = 0;
    if (len == 0 || len > TG_USAGE_CURSOR_MAX ||
        sodium_base642bin(raw, sizeof(raw) - 1, s, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return -1;
    raw[n] = '\0';
    const char *colon = memchr(raw, ':', n);
    if (colon == NULL)
        return -1;
    size_t dl = (size_t)(colon - (const char *)raw), rl = n - dl - 1;
    if (!digits((const char *)raw, dl) || dl > 18 || rl == 0 || rl > TG_USAGE_RID_MAX)
        return -1;
    for (size_t i = 0; i < rl; i++) {
        unsigned char ch = (unsigned char)colon[1 + i];
        if (ch < 0x21 || ch > 0x7e)
            return -1;
    }
    int64_t v = 0;
    for (size_t i = 0; i < dl; i++)
        v = v * 10 + (raw[i] - '0');
    *us = v;
    memcpy(rid, colon + 1, rl);
    rid[rl] = '\0';
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes s into out (cap bytes with the NUL); -1 on a bad escape, a NUL or no room. */
static int pct_decode(const char *s, size_t n, char *out, size_t cap, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '\0' || o + 1 >= cap)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    *outlen = o;
    return 0;
}

static int refuse(const char *name, const char *what, char *param, size_t pcap, char *msg, size_t mcap)
{
    snprintf(param, pcap, "%s", name);
    snprintf(msg, mcap, "%s: %s", name, what);
    return TG_EINVALID_REQUEST;
}

int tg_usage_query_parse(const char *qs, size_t len, tg_usage_query_t *out, char *param, size_t pcap,
                         char *msg, size_t mcap)
{
    static const char *const names[] = {"from", "to", "model", "cursor", "limit"};
    memset(out, 0, sizeof(*out));
    out->limit = TG_USAGE_LIMIT_DEFAULT;
    bool seen[5] = {false};
    size_t i = 0;
    while (qs != NULL && i < len) {
        size_t end = i;
        while (end < len && qs[end] != '&')
            end++;
        const char *kv = qs + i;
        size_t kvn = end - i;
        i = end + 1;
        if (kvn == 0)
            continue; /* "a=1&&b=2" */
        const char *eq = memchr(kv, '=', kvn);
        size_t kn = eq != NULL ? (size_t)(eq - kv) : kvn;
        int which = -1;
        for (int k = 0; k < 5; k++)
            if (strlen(names[k]) == kn && memcmp(names[k], kv, kn) == 0)
                which = k;
        if (which < 0) {
            char name[40];
            size_t nl = 0;
            if (pct_decode(kv, kn < 32 ? kn : 32, name, sizeof(name), &nl) != 0)
                snprintf(name, sizeof(name), "?");
            snprintf(param, pcap, "%s", name);
            snprintf(msg, mcap, "unknown parameter \"%s\" (from, to, model, cursor, limit)", name);
            return TG_EINVALID_REQUEST;
        }
        const char *name = names[which];
        if (seen[which])
            return refuse(name, "given more than once", param, pcap, msg, mcap);
        seen[which] = true;
        char v[TG_USAGE_CURSOR_MAX + TG_USAGE_MODEL_MAX + 1];
        size_t vn = 0;
        if (eq == NULL || pct_decode(eq + 1, kvn - kn - 1, v, sizeof(v), &vn) != 0 || vn == 0)
            return refuse(name, "needs a value (percent-encoded)", param, pcap, msg, mcap);
        switch (which) {
        case 0:
        case 1: {
            int64_t us;
            if (tg_usage_time_parse(v, vn, &us) != 0)
                return refuse(name, "must be an RFC 3339 time (2026-12-04T10:00:00Z) or unix seconds", param,
                              pcap, msg, mcap);
            if (which == 0)
                out->has_from = true, out->from_us = us;
            else
                out->has_to = true, out->to_us = us;
            break;
        }
        case 2:
            if (vn > TG_USAGE_MODEL_MAX)
                return refuse(name, "is longer than 200 bytes", param, pcap, msg, mcap);
            memcpy(out->model, v, vn + 1);
            out->has_model = true;
            break;
        case 3:
            if (tg_usage_cursor_parse(v, vn, &out->cursor_us, out->cursor_rid) != 0)
                return refuse(name, "is not a cursor this endpoint gave (use next_cursor as is)", param, pcap,
                              msg, mcap);
            out->has_cursor = true;
            break;
        default: {
            if (!digits(v, vn) || vn > 3 || num(v, vn) < 1 || num(v, vn) > TG_USAGE_LIMIT_MAX)
                return refuse(name, "must be an integer from 1 to 100", param, pcap, msg, mcap);
            out->limit = (uint32_t)num(v, vn);
            break;
        }
        }
    }
    if (out->has_from && out->has_to && out->from_us >= out->to_us)
        return refuse("from", "must be earlier than to", param, pcap, msg, mcap);
    return 0;
}
