/*
 * row.c - a usage record as a stage COPY text row (row.h), formatted by hand.
 */
#include "row.h"

#include <string.h>

#include "copytext.h"

typedef struct out {
    char *p, *end; /* end: the last byte usable for text (one is kept for the NUL) */
    bool ok;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (!o->ok || n > (size_t)(o->end - o->p)) {
        o->ok = false;
        return;
    }
    memcpy(o->p, s, n);
    o->p += n;
}

static void put_ch(out_t *o, char c)
{
    put(o, &c, 1);
}

static void put_i64(out_t *o, int64_t v)
{
    char d[24], *p = d + sizeof(d);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do
        *--p = (char)('0' + u % 10);
    while ((u /= 10) > 0);
    if (v < 0)
        *--p = '-';
    put(o, p, (size_t)(d + sizeof(d) - p));
}

static void put_bool(out_t *o, bool b)
{
    put_ch(o, b ? 't' : 'f');
}

static void put_name(out_t *o, const char *s)
{
    char esc[TG_COPY_TEXT_MAX(200)];
    size_t n = strnlen(s, 200);
    char *e = tg_copy_text_put(esc, s, n);
    put(o, esc, (size_t)(e - esc));
}

static void put_2(char *p, int v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS" of a unix second (UTC, proleptic Gregorian; days to a civil date by the
 * usual era arithmetic: 400-year eras of 146097 days, years starting in March). Years 0-9999. */
static void utc_second(int64_t s, char out[19])
{
    int64_t days = s >= 0 ? s / 86400 : (s - 86399) / 86400;
    int64_t sod = s - days * 86400;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    if (m <= 2)
        y++;
    int yy = (int)(y < 0 ? 0 : y > 9999 ? 9999 : y);
    put_2(out, yy / 100);
    put_2(out + 2, yy % 100);
    out[4] = '-';
    put_2(out + 5, m);
    out[7] = '-';
    put_2(out + 8, d);
    out[10] = 'T';
    put_2(out + 11, (int)(sod / 3600));
    out[13] = ':';
    put_2(out + 14, (int)(sod / 60 % 60));
    out[16] = ':';
    put_2(out + 17, (int)(sod % 60));
}

/* The time with its microseconds: the second's text is kept per thread (a call's thread formats
 * many records a second). */
static void put_time(out_t *o, int64_t us)
{
    static __thread int64_t t_sec = -1;
    static __thread char t_text[19];
    int64_t s = us >= 0 ? us / 1000000 : (us - 999999) / 1000000;
    int64_t frac = us - s * 1000000;
    if (s != t_sec) {
        utc_second(s, t_text);
        t_sec = s;
    }
    char f[9] = {'.', 0, 0, 0, 0, 0, 0, 'Z', 0};
    for (int i = 6; i >= 1; i--, frac /= 10)
        f[i] = (char)('0' + frac % 10);
    put(o, t_text, sizeof(t_text));
    put(o, f, 8);
}

size_t tg_usage_row_format(const tg_usage_row_t *r, char *out, size_t cap)
{
    if (cap < 2)
        return 0;
    out_t o = {.p = out, .end = out + cap - 1, .ok = true};
    put_i64(&o, r->tenant_id);
    put_ch(&o, '\t');
    put(&o, r->request_id, strlen(r->request_id));
    put_ch(&o, '\t');
    put_time(&o, r->created_us);
    put_ch(&o, '\t');
    put_i64(&o, r->key_id);
    put_ch(&o, '\t');
    put_name(&o, r->model);
    put_ch(&o, '\t');
    put_name(&o, r->provider);
    put_ch(&o, '\t');
    put_bool(&o, r->byok);
    const int64_t tokens[3] = {r->input, r->output, r->cached};
    for (int i = 0; i < 3; i++) {
        put_ch(&o, '\t');
        put_i64(&o, tokens[i]);
    }
    put_ch(&o, '\t');
    put_bool(&o, r->estimated);
    const int64_t price[5] = {r->price_id, r->price_input, r->price_output, r->price_cached, r->platform_fee};
    for (int i = 0; i < 5; i++) {
        put_ch(&o, '\t');
        put_i64(&o, price[i]);
    }
    put_ch(&o, '\t');
    put_bool(&o, r->billed);
    put_ch(&o, '\t');
    put_i64(&o, r->cost);
    put_ch(&o, '\t');
    put_i64(&o, r->charge);
    put_ch(&o, '\t');
    if (r->lease_id != 0)
        put_i64(&o, r->lease_id);
    else
        put(&o, "\\N", 2);
    const int64_t tail[3] = {r->latency_ms, r->attempts, r->status};
    for (int i = 0; i < 3; i++) {
        put_ch(&o, '\t');
        put_i64(&o, tail[i]);
    }
    put_ch(&o, '\t');
    if (r->error != NULL)
        put(&o, r->error, strlen(r->error));
    else
        put(&o, "\\N", 2);
    put_ch(&o, '\n');
    if (!o.ok)
        return 0;
    *o.p = '\0';
    return (size_t)(o.p - out);
}
