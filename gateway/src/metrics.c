/*
 * metrics.c - Prometheus text exposition.
 *
 * Series live in one fixed-size open-addressing table of atomic pointers:
 * a lookup on the hot path is a hash and a few acquire loads, without a
 * lock; only creating a series takes met_mu. Values are doubles stored as
 * bits in atomic 64-bit words and updated with compare-and-swap, so
 * concurrent updates never lose an increment. Series are never removed
 * (label sets are bounded by config: targets, providers, routes), and the
 * table has a hard limit: beyond it new series are dropped and counted.
 */
#include "metrics.h"

#include "log.h"
#include "pgpool.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TG_MET_MAX_FAMILIES 64
#define TG_MET_SLOTS        4096 /* power of two; at most half of it is used */
#define TG_MET_MAX_SERIES   (TG_MET_SLOTS / 2)
#define TG_MET_MAX_HOOKS    16
#define TG_MET_NAME_MAX     128
#define TG_MET_LABELS_MAX   512

/* Histogram upper bounds in seconds (1 ms .. 60 s), then +Inf. */
static const double bucket_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                   0.5,   1,      2.5,   5,    10,    30,   60};
#define TG_MET_NBUCKETS (sizeof(bucket_le) / sizeof(bucket_le[0]))

typedef struct family {
    char name[TG_MET_NAME_MAX];
    char help[256];
    tg_metric_type_t type;
    struct series *first, *last; /* insertion order, for rendering; appended under met_mu */
} family_t;

typedef struct series {
    family_t *fam;
    char *labels;
    uint32_t hash;
    _Atomic uint64_t value;                        /* double bits: counter / gauge value, histogram sum */
    _Atomic uint64_t count;                        /* histogram */
    _Atomic uint64_t buckets[TG_MET_NBUCKETS + 1]; /* histogram, not cumulative; last = +Inf */
    struct series *next;
} series_t;

/* met_mu protects: families (count and contents), series creation, hooks, dropped_series.
 * Never held while a hook runs. */
static pthread_mutex_t met_mu = PTHREAD_MUTEX_INITIALIZER;
static family_t families[TG_MET_MAX_FAMILIES];
static size_t n_families;
static _Atomic(series_t *) slots[TG_MET_SLOTS];
static size_t n_series;
static uint64_t dropped_series;
static struct {
    void (*fn)(void *);
    void *ud;
} hooks[TG_MET_MAX_HOOKS];
static size_t n_hooks;

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static void atomic_add_double(_Atomic uint64_t *a, double delta)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, d2u(u2d(old) + delta), memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

static uint32_t hash2(const char *a, const char *b)
{
    uint32_t h = 2166136261u;
    for (; *a != '\0'; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ 0xffu) * 16777619u; /* separator: "ab","c" differs from "a","bc" */
    for (; *b != '\0'; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

static family_t *family_find_locked(const char *name)
{
    for (size_t i = 0; i < n_families; i++)
        if (strcmp(families[i].name, name) == 0)
            return &families[i];
    return NULL;
}

static family_t *family_add_locked(const char *name, const char *help, tg_metric_type_t type)
{
    family_t *f = family_find_locked(name);
    if (f != NULL)
        return f;
    if (n_families == TG_MET_MAX_FAMILIES || strlen(name) >= TG_MET_NAME_MAX)
        return NULL;
    f = &families[n_families++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    snprintf(f->help, sizeof(f->help), "%s", help != NULL ? help : "");
    f->type = type;
    return f;
}

void tg_metrics_register(const char *name, const char *help, tg_metric_type_t type)
{
    pthread_mutex_lock(&met_mu);
    family_t *f = family_find_locked(name);
    if (f == NULL) {
        (void)family_add_locked(name, help, type);
    } else if (f->help[0] == '\0' && help != NULL) {
        /* created implicitly by an update before registration: take the real help and type */
        snprintf(f->help, sizeof(f->help), "%s", help);
        f->type = type;
    }
    pthread_mutex_unlock(&met_mu);
}

static series_t *probe(const char *name, const char *labels, uint32_t h, size_t *free_slot)
{
    for (size_t i = 0; i < TG_MET_SLOTS; i++) {
        size_t idx = (h + i) & (TG_MET_SLOTS - 1);
        series_t *s = atomic_load_explicit(&slots[idx], memory_order_acquire);
        if (s == NULL) {
            if (free_slot != NULL)
                *free_slot = idx;
            return NULL;
        }
        if (s->hash == h && strcmp(s->labels, labels) == 0 && strcmp(s->fam->name, name) == 0)
            return s;
    }
    return NULL; /* unreachable: the table is never more than half full */
}

/* Finds the series, creating it (and, if needed, its family with `implicit_type`). */
static series_t *series_get(const char *name, const char *labels, tg_metric_type_t implicit_type)
{
    if (labels == NULL)
        labels = "";
    uint32_t h = hash2(name, labels);
    series_t *s = probe(name, labels, h, NULL);
    if (s != NULL)
        return s;

    pthread_mutex_lock(&met_mu);
    size_t slot = TG_MET_SLOTS;
    s = probe(name, labels, h, &slot);
    if (s == NULL && n_series < TG_MET_MAX_SERIES && slot < TG_MET_SLOTS &&
        strlen(labels) < TG_MET_LABELS_MAX) {
        family_t *f = family_add_locked(name, NULL, implicit_type);
        if (f != NULL && (s = calloc(1, sizeof(*s))) != NULL) {
            s->labels = strdup(labels);
            if (s->labels == NULL) {
                free(s);
                s = NULL;
            } else {
                s->fam = f;
                s->hash = h;
                if (f->last != NULL)
                    f->last->next = s;
                else
                    f->first = s;
                f->last = s;
                n_series++;
                atomic_store_explicit(&slots[slot], s, memory_order_release);
            }
        }
    }
    if (s == NULL)
        dropped_series++;
    pthread_mutex_unlock(&met_mu);
    return s;
}

void tg_metrics_add(const char *name, const char *labels, double delta)
{
    series_t *s = series_get(name, labels, TG_METRIC_COUNTER);
    if (s != NULL)
        atomic_add_double(&s->value, delta);
}

void tg_metrics_set(const char *name, const char *labels, double value)
{
    series_t *s = series_get(name, labels, TG_METRIC_GAUGE);
    if (s != NULL)
        atomic_store_explicit(&s->value, d2u(value), memory_order_relaxed);
}

void tg_metrics_observe(const char *name, const char *labels, double seconds)
{
    series_t *s = series_get(name, labels, TG_METRIC_HISTOGRAM);
    if (s == NULL)
        return;
    size_t b = 0;
    while (b < TG_MET_NBUCKETS && !(seconds <= bucket_le[b]))
        b++;
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    atomic_add_double(&s->value, seconds);
}

double tg_metrics_get(const char *name, const char *labels)
{
    if (labels == NULL)
        labels = "";
    series_t *s = probe(name, labels, hash2(name, labels), NULL);
    if (s == NULL)
        return 0;
    if (s->fam->type == TG_METRIC_HISTOGRAM)
        return (double)atomic_load_explicit(&s->count, memory_order_relaxed);
    return u2d(atomic_load_explicit(&s->value, memory_order_relaxed));
}

void tg_metrics_on_render(void (*fn)(void *ud), void *ud)
{
    pthread_mutex_lock(&met_mu);
    if (n_hooks < TG_MET_MAX_HOOKS) {
        hooks[n_hooks].fn = fn;
        hooks[n_hooks].ud = ud;
        n_hooks++;
    }
    pthread_mutex_unlock(&met_mu);
}

/* Prometheus number: integers without a fraction, others with enough digits. */
static int append_num(tg_buf_t *out, double v)
{
    if (isnan(v))
        return tg_buf_append_str(out, "NaN");
    if (isinf(v))
        return tg_buf_append_str(out, v > 0 ? "+Inf" : "-Inf");
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        return tg_buf_appendf(out, "%.0f", v);
    /* the shortest text that reads back as the same double: 0.1 stays "0.1" */
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    return tg_buf_append_str(out, tmp);
}

/* HELP text escaping: backslash and newline. */
static int append_help(tg_buf_t *out, const char *s)
{
    int rc = 0;
    for (; rc == 0 && *s != '\0'; s++) {
        if (*s == '\\')
            rc = tg_buf_append_str(out, "\\\\");
        else if (*s == '\n')
            rc = tg_buf_append_str(out, "\\n");
        else
            rc = tg_buf_append(out, s, 1);
    }
    return rc;
}

static const char *type_name(tg_metric_type_t t)
{
    switch (t) {
    case TG_METRIC_COUNTER:
        return "counter";
    case TG_METRIC_GAUGE:
        return "gauge";
    case TG_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

static int render_histogram(tg_buf_t *out, const family_t *f, series_t *s)
{
    const char *sep = s->labels[0] != '\0' ? "," : "";
    uint64_t cum = 0;
    int rc = 0;
    for (size_t b = 0; rc == 0 && b <= TG_MET_NBUCKETS; b++) {
        cum += atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
        rc = tg_buf_appendf(out, "%s_bucket{%s%sle=\"", f->name, s->labels, sep);
        if (rc == 0)
            rc = b < TG_MET_NBUCKETS ? tg_buf_appendf(out, "%g", bucket_le[b])
                                     : tg_buf_append_str(out, "+Inf");
        if (rc == 0)
            rc = tg_buf_appendf(out, "\"} %llu\n", (unsigned long long)cum);
    }
    /* _count equals the +Inf bucket: a reader must never see count != +Inf */
    if (rc == 0)
        rc = tg_buf_appendf(out, "%s_sum%s%s%s ", f->name, s->labels[0] ? "{" : "", s->labels,
                            s->labels[0] ? "}" : "");
    if (rc == 0)
        rc = append_num(out, u2d(atomic_load_explicit(&s->value, memory_order_relaxed)));
    if (rc == 0)
        rc = tg_buf_appendf(out, "\n%s_count%s%s%s %llu\n", f->name, s->labels[0] ? "{" : "", s->labels,
                            s->labels[0] ? "}" : "", (unsigned long long)cum);
    return rc;
}

int tg_metrics_render(tg_buf_t *out)
{
    /* hooks set gauges through tg_metrics_set, which may take met_mu: run them unlocked */
    void (*fns[TG_MET_MAX_HOOKS])(void *);
    void *uds[TG_MET_MAX_HOOKS];
    pthread_mutex_lock(&met_mu);
    size_t nh = n_hooks;
    for (size_t i = 0; i < nh; i++) {
        fns[i] = hooks[i].fn;
        uds[i] = hooks[i].ud;
    }
    pthread_mutex_unlock(&met_mu);
    for (size_t i = 0; i < nh; i++)
        fns[i](uds[i]);

    int rc = 0;
    pthread_mutex_lock(&met_mu);
    for (size_t i = 0; rc == 0 && i < n_families; i++) {
        family_t *f = &families[i];
        if (f->help[0] != '\0') {
            rc = tg_buf_appendf(out, "# HELP %s ", f->name);
            if (rc == 0)
                rc = append_help(out, f->help);
            if (rc == 0)
                rc = tg_buf_append_str(out, "\n");
        }
        if (rc == 0)
            rc = tg_buf_appendf(out, "# TYPE %s %s\n", f->name, type_name(f->type));
        for (series_t *s = f->first; rc == 0 && s != NULL; s = s->next) {
            if (f->type == TG_METRIC_HISTOGRAM) {
                rc = render_histogram(out, f, s);
                continue;
            }
            rc = tg_buf_appendf(out, "%s%s%s%s ", f->name, s->labels[0] ? "{" : "", s->labels,
                                s->labels[0] ? "}" : "");
            if (rc == 0)
                rc = append_num(out, u2d(atomic_load_explicit(&s->value, memory_order_relaxed)));
            if (rc == 0)
                rc = tg_buf_append_str(out, "\n");
        }
    }
    /* pgpool, a core primitive too: the database path's failures, which never block a request */
    tg_pgpool_counts_t pg;
    tg_pgpool_counts(&pg);
    if (rc == 0)
        rc = tg_buf_appendf(
            out,
            "# HELP tollgate_db_queries_total Queries the request path sent to the database\n"
            "# TYPE tollgate_db_queries_total counter\n"
            "tollgate_db_queries_total %llu\n"
            "# HELP tollgate_db_jobs_failed_total Database jobs failed without waiting: past their "
            "deadline, or refused (queue full, no connection)\n"
            "# TYPE tollgate_db_jobs_failed_total counter\n"
            "tollgate_db_jobs_failed_total{reason=\"timeout\"} %llu\n"
            "tollgate_db_jobs_failed_total{reason=\"refused\"} %llu\n"
            "# HELP tollgate_db_connect_timeouts_total Database connection attempts past their "
            "deadline\n"
            "# TYPE tollgate_db_connect_timeouts_total counter\n"
            "tollgate_db_connect_timeouts_total %llu\n",
            (unsigned long long)pg.jobs_sent, (unsigned long long)pg.jobs_timed_out,
            (unsigned long long)pg.jobs_refused, (unsigned long long)pg.connect_timeouts);
    /* log.c is a core primitive and registers nothing: its drop count is read here */
    if (rc == 0)
        rc = tg_buf_appendf(out,
                            "# HELP tollgate_log_dropped_total Log lines dropped because the log sink fell "
                            "behind\n"
                            "# TYPE tollgate_log_dropped_total counter\n"
                            "tollgate_log_dropped_total %llu\n",
                            (unsigned long long)tg_log_dropped());
    if (rc == 0 && dropped_series > 0)
        rc = tg_buf_appendf(
            out,
            "# HELP tollgate_metrics_series_dropped_total Series not created: the table is full\n"
            "# TYPE tollgate_metrics_series_dropped_total counter\n"
            "tollgate_metrics_series_dropped_total %llu\n",
            (unsigned long long)dropped_series);
    pthread_mutex_unlock(&met_mu);
    return rc;
}

void tg_metrics_label(char *dst, size_t cap, const char *key, const char *value)
{
    if (dst == NULL || cap == 0)
        return;
    size_t len = strnlen(dst, cap);
    if (len >= cap)
        return;
    size_t start = len;
    bool ok = true;
#define PUT(c)                \
    do {                      \
        if (len + 1 >= cap) { \
            ok = false;       \
            goto done;        \
        }                     \
        dst[len++] = (c);     \
    } while (0)
    if (start > 0)
        PUT(',');
    for (const char *k = key; *k != '\0'; k++)
        PUT(*k);
    PUT('=');
    PUT('"');
    for (const char *v = value != NULL ? value : ""; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"') {
            PUT('\\');
            PUT(*v);
        } else if (*v == '\n') {
            PUT('\\');
            PUT('n');
        } else {
            PUT(*v);
        }
    }
    PUT('"');
#undef PUT
done:
    /* a label that does not fit is left out whole, never cut in the middle of a value */
    dst[ok ? len : start] = '\0';
}

void tg_metrics_reset(void)
{
    /* zero the values but keep families, series and hooks: other modules registered them once */
    for (size_t i = 0; i < TG_MET_SLOTS; i++) {
        series_t *s = atomic_load_explicit(&slots[i], memory_order_acquire);
        if (s == NULL)
            continue;
        atomic_store_explicit(&s->value, d2u(0), memory_order_relaxed);
        atomic_store_explicit(&s->count, 0, memory_order_relaxed);
        for (size_t b = 0; b <= TG_MET_NBUCKETS; b++)
            atomic_store_explicit(&s->buckets[b], 0, memory_order_relaxed);
    }
}
