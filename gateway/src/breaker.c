/*
 * breaker.c - circuit breakers: the state machine, the process-wide registry
 * and the latency tracker. The design notes (state machine, hysteresis) are in
 * FAILOVER.md, "Failover engine".
 */
#include "breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "metrics.h"

/* The latency tracker's EWMA weight of a new sample is 1/TG_LAT_EWMA_DIV. */
#define TG_LAT_EWMA_DIV 4
/* Hysteresis: degraded above threshold, restored only below this percentage of it, so a
 * latency hovering around the threshold does not flap the target's position in chains. */
#define TG_LAT_RESTORE_PCT 80

struct tg_breaker {
    char *key;
    /* mu protects every field below; held for a few instructions, never across I/O. */
    pthread_mutex_t mu;
    tg_breaker_opts_t opts;
    tg_breaker_state_t state; /* CLOSED, OPEN or HALF_OPEN as last stored (OPEN may have expired) */
    uint32_t consecutive_failures;
    uint64_t opened_at_ms;
    uint32_t probes_out;     /* half-open probes admitted and not yet reported */
    uint32_t extra_out;      /* extra probes (tg_breaker_admit_extra) not yet reported */
    uint64_t lease_until_ms; /* probes out past this are presumed lost (their owner vanished) */
    bool probe_forward;      /* a passing health probe: the next admit of an open breaker probes */
    uint64_t last_now_ms;    /* latest clock value seen: the time base of the no-`now` latency calls */
    uint64_t lat_ewma_us;    /* 0 = no sample yet */
    bool degraded;
    uint64_t degraded_at_ms; /* when it became degraded (or last confirmed so) */
    /* registry chain; written once before publication */
    struct tg_breaker *next;
};

static const tg_breaker_opts_t default_opts = {
    .failure_threshold = 3, .open_ms = 30000, .half_open_probes = 1, .probe_timeout_ms = 5000};

static void opts_sanitize(tg_breaker_opts_t *o, const tg_breaker_opts_t *in)
{
    *o = in != NULL ? *in : default_opts;
    if (o->failure_threshold == 0)
        o->failure_threshold = default_opts.failure_threshold;
    if (o->half_open_probes == 0)
        o->half_open_probes = default_opts.half_open_probes;
    if (o->probe_timeout_ms == 0)
        o->probe_timeout_ms = default_opts.probe_timeout_ms;
}

tg_breaker_t *tg_breaker_create(const char *key, const tg_breaker_opts_t *opts)
{
    tg_breaker_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->key = strdup(key != NULL ? key : "");
    if (b->key == NULL) {
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    opts_sanitize(&b->opts, opts);
    b->state = TG_BREAKER_CLOSED;
    return b;
}

void tg_breaker_destroy(tg_breaker_t *b)
{
    if (b == NULL)
        return;
    pthread_mutex_destroy(&b->mu);
    free(b->key);
    free(b);
}

const char *tg_breaker_key(const tg_breaker_t *b)
{
    return b->key;
}

static void touch(tg_breaker_t *b, uint64_t now_ms)
{
    if (now_ms > b->last_now_ms)
        b->last_now_ms = now_ms;
}

static void open_locked(tg_breaker_t *b, uint64_t now_ms)
{
    b->state = TG_BREAKER_OPEN;
    b->opened_at_ms = now_ms;
    b->probes_out = 0;
    b->extra_out = 0;
    b->probe_forward = false;
}

/* A probe's slot is leased: its transfer's first-byte timeout is probe_timeout_ms, so a result
 * comes by then unless the probe's owner vanished (a call that never reports). The lease covers
 * every probe out; the first one out starts it afresh, so a lease left by an earlier half-open
 * period never holds a new probe. */
static void lease_locked(tg_breaker_t *b, uint64_t until_ms)
{
    if (b->probes_out + b->extra_out == 1 || until_ms > b->lease_until_ms)
        b->lease_until_ms = until_ms;
}

/* An open breaker whose time is up (or whose probe a health check brought forward) becomes
 * half-open here, lazily, so no timer is needed. */
static void expire_locked(tg_breaker_t *b, uint64_t now_ms)
{
    if (b->state == TG_BREAKER_OPEN &&
        (b->probe_forward || now_ms >= b->opened_at_ms + (uint64_t)b->opts.open_ms)) {
        b->state = TG_BREAKER_HALF_OPEN;
        b->probes_out = 0;
        b->extra_out = 0;
        b->probe_forward = false;
    }
    /* Probes whose lease ran out are presumed lost: their slots are free again (a late result
     * still counts, as any probe result does while half-open). */
    if (b->state == TG_BREAKER_HALF_OPEN && (b->probes_out > 0 || b->extra_out > 0) &&
        now_ms >= b->lease_until_ms) {
        b->probes_out = 0;
        b->extra_out = 0;
    }
}

tg_admit_t tg_breaker_admit(tg_breaker_t *b, uint64_t now_ms)
{
    tg_admit_t a = TG_ADMIT_SKIP;
    pthread_mutex_lock(&b->mu);
    touch(b, now_ms);
    expire_locked(b, now_ms);
    switch (b->state) {
    case TG_BREAKER_CLOSED:
        a = TG_ADMIT_YES;
        break;
    case TG_BREAKER_OPEN:
        a = TG_ADMIT_SKIP;
        break;
    case TG_BREAKER_HALF_OPEN:
        if (b->probes_out < b->opts.half_open_probes) {
            b->probes_out++;
            lease_locked(b, now_ms + b->opts.probe_timeout_ms + TG_BREAKER_LEASE_GRACE_MS);
            a = TG_ADMIT_PROBE;
        }
        break;
    }
    pthread_mutex_unlock(&b->mu);
    return a;
}

tg_admit_t tg_breaker_admit_extra(tg_breaker_t *b, uint64_t now_ms)
{
    tg_admit_t a = TG_ADMIT_SKIP;
    pthread_mutex_lock(&b->mu);
    touch(b, now_ms);
    expire_locked(b, now_ms);
    if (b->state == TG_BREAKER_CLOSED) {
        a = TG_ADMIT_YES;
    } else if (b->state == TG_BREAKER_HALF_OPEN) {
        if (b->probes_out < b->opts.half_open_probes) {
            b->probes_out++;
            a = TG_ADMIT_PROBE;
        } else if (b->extra_out < TG_BREAKER_MAX_EXTRA) {
            b->extra_out++;
            a = TG_ADMIT_EXTRA;
        }
        if (a != TG_ADMIT_SKIP)
            lease_locked(b, now_ms + b->opts.probe_timeout_ms + TG_BREAKER_LEASE_GRACE_MS);
    }
    pthread_mutex_unlock(&b->mu);
    return a;
}

void tg_breaker_probe_streaming(tg_breaker_t *b, uint64_t now_ms, uint64_t lease_ms)
{
    pthread_mutex_lock(&b->mu);
    touch(b, now_ms);
    if (b->state == TG_BREAKER_HALF_OPEN)
        lease_locked(b, now_ms + lease_ms + TG_BREAKER_LEASE_GRACE_MS);
    pthread_mutex_unlock(&b->mu);
}

static void count_failure_locked(tg_breaker_t *b, uint64_t now_ms)
{
    if (b->consecutive_failures < UINT32_MAX)
        b->consecutive_failures++;
    if (b->state == TG_BREAKER_CLOSED && b->consecutive_failures >= b->opts.failure_threshold)
        open_locked(b, now_ms);
}

void tg_breaker_record(tg_breaker_t *b, uint64_t now_ms, tg_admit_t how, tg_result_t r)
{
    pthread_mutex_lock(&b->mu);
    touch(b, now_ms);
    expire_locked(b, now_ms);
    /* A probe result only decides while the breaker is still half-open: a reset or a
     * FAILURE_OPEN may have moved it on while the probe was in flight. */
    bool probe = (how == TG_ADMIT_PROBE || how == TG_ADMIT_EXTRA) && b->state == TG_BREAKER_HALF_OPEN;
    switch (r) {
    case TG_RESULT_SUCCESS:
        if (probe || b->state == TG_BREAKER_CLOSED) {
            b->state = TG_BREAKER_CLOSED;
            b->consecutive_failures = 0;
            b->probes_out = 0;
            b->extra_out = 0;
        }
        /* a late success of a request admitted before the breaker opened proves little:
         * the probe decides */
        break;
    case TG_RESULT_FAILURE:
        if (probe)
            open_locked(b, now_ms);
        else if (b->state == TG_BREAKER_CLOSED)
            count_failure_locked(b, now_ms);
        break;
    case TG_RESULT_FAILURE_OPEN:
        if (b->consecutive_failures < b->opts.failure_threshold)
            b->consecutive_failures = b->opts.failure_threshold;
        open_locked(b, now_ms);
        break;
    case TG_RESULT_NEUTRAL:
        if (probe && how == TG_ADMIT_EXTRA && b->extra_out > 0)
            b->extra_out--;
        else if (probe && how == TG_ADMIT_PROBE && b->probes_out > 0)
            b->probes_out--;
        break;
    }
    pthread_mutex_unlock(&b->mu);
}

tg_breaker_state_t tg_breaker_state(tg_breaker_t *b, uint64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    tg_breaker_state_t s = b->state;
    if (s == TG_BREAKER_OPEN && (b->probe_forward || now_ms >= b->opened_at_ms + (uint64_t)b->opts.open_ms))
        s = TG_BREAKER_HALF_OPEN;
    pthread_mutex_unlock(&b->mu);
    return s;
}

uint64_t tg_breaker_retry_in_ms(tg_breaker_t *b, uint64_t now_ms)
{
    uint64_t r = 0;
    pthread_mutex_lock(&b->mu);
    if (b->state == TG_BREAKER_OPEN && !b->probe_forward) {
        uint64_t until = b->opened_at_ms + (uint64_t)b->opts.open_ms;
        r = until > now_ms ? until - now_ms : 0;
    }
    pthread_mutex_unlock(&b->mu);
    return r;
}

void tg_breaker_reset(tg_breaker_t *b)
{
    pthread_mutex_lock(&b->mu);
    b->state = TG_BREAKER_CLOSED;
    b->consecutive_failures = 0;
    b->opened_at_ms = 0;
    b->probes_out = 0;
    b->extra_out = 0;
    b->lease_until_ms = 0;
    b->probe_forward = false;
    b->lat_ewma_us = 0;
    b->degraded = false;
    pthread_mutex_unlock(&b->mu);
}

void tg_breaker_health(tg_breaker_t *b, uint64_t now_ms, bool ok)
{
    pthread_mutex_lock(&b->mu);
    touch(b, now_ms);
    if (b->state == TG_BREAKER_HALF_OPEN)
        expire_locked(b, now_ms); /* probes past their lease no longer count as in flight */
    if (ok) {
        /* Only an open breaker gains from a passing probe: its half-open probe comes
         * forward. A closed breaker's failure count is left alone: the models list
         * answering says nothing about the chat endpoint's last errors. */
        if (b->state == TG_BREAKER_OPEN)
            b->probe_forward = true;
    } else {
        switch (b->state) {
        case TG_BREAKER_CLOSED:
            count_failure_locked(b, now_ms);
            break;
        case TG_BREAKER_OPEN:
            if (now_ms >= b->opened_at_ms + (uint64_t)b->opts.open_ms)
                open_locked(b, now_ms); /* due for a probe, but the provider is still down */
            else
                b->probe_forward = false;
            break;
        case TG_BREAKER_HALF_OPEN:
            /* a request probe may be in flight: it will report; if none is, re-open */
            if (b->probes_out == 0 && b->extra_out == 0)
                open_locked(b, now_ms);
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
}

/* A degraded mark expires after open_ms without a confirming sample, so a target that gets
 * no traffic (it is tried last) is measured again instead of staying degraded forever. */
static bool degraded_locked(tg_breaker_t *b, uint64_t now_ms)
{
    if (b->degraded && now_ms >= b->degraded_at_ms + (uint64_t)b->opts.open_ms) {
        b->degraded = false;
        b->lat_ewma_us = 0; /* the next sample starts a fresh average */
    }
    return b->degraded;
}

void tg_breaker_latency_at(tg_breaker_t *b, uint64_t now_ms, uint64_t latency_us, uint32_t threshold_ms)
{
    pthread_mutex_lock(&b->mu);
    touch(b, now_ms);
    (void)degraded_locked(b, b->last_now_ms);
    if (b->lat_ewma_us == 0)
        b->lat_ewma_us = latency_us > 0 ? latency_us : 1;
    else
        b->lat_ewma_us = (b->lat_ewma_us * (TG_LAT_EWMA_DIV - 1) + latency_us) / TG_LAT_EWMA_DIV;
    if (b->lat_ewma_us == 0)
        b->lat_ewma_us = 1;
    uint64_t thr_us = (uint64_t)threshold_ms * 1000u;
    if (threshold_ms == 0) {
        b->degraded = false;
    } else if (b->lat_ewma_us > thr_us) {
        b->degraded = true;
        b->degraded_at_ms = b->last_now_ms;
    } else if (b->degraded && b->lat_ewma_us < thr_us * TG_LAT_RESTORE_PCT / 100u) {
        b->degraded = false;
    }
    pthread_mutex_unlock(&b->mu);
}

void tg_breaker_latency(tg_breaker_t *b, uint64_t latency_us, uint32_t threshold_ms)
{
    pthread_mutex_lock(&b->mu);
    uint64_t now = b->last_now_ms;
    pthread_mutex_unlock(&b->mu);
    tg_breaker_latency_at(b, now, latency_us, threshold_ms);
}

bool tg_breaker_is_degraded_at(tg_breaker_t *b, uint64_t now_ms)
{
    pthread_mutex_lock(&b->mu);
    touch(b, now_ms);
    bool d = degraded_locked(b, b->last_now_ms);
    pthread_mutex_unlock(&b->mu);
    return d;
}

bool tg_breaker_is_degraded(tg_breaker_t *b)
{
    pthread_mutex_lock(&b->mu);
    bool d = degraded_locked(b, b->last_now_ms);
    pthread_mutex_unlock(&b->mu);
    return d;
}

uint64_t tg_breaker_latency_us(tg_breaker_t *b)
{
    pthread_mutex_lock(&b->mu);
    uint64_t v = b->lat_ewma_us;
    pthread_mutex_unlock(&b->mu);
    return v;
}

const char *tg_breaker_state_name(tg_breaker_state_t s)
{
    switch (s) {
    case TG_BREAKER_CLOSED:
        return "closed";
    case TG_BREAKER_OPEN:
        return "open";
    case TG_BREAKER_HALF_OPEN:
        return "half_open";
    }
    return "unknown";
}

/* Appends s as a JSON string (with quotes). Keys are config names, but escape anyway. */
static int append_json_str(tg_buf_t *out, const char *s)
{
    int rc = tg_buf_append(out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            rc = tg_buf_appendf(out, "\\%c", *p);
        else if (*p < 0x20)
            rc = tg_buf_appendf(out, "\\u%04x", *p);
        else
            rc = tg_buf_append(out, p, 1);
    }
    if (rc == 0)
        rc = tg_buf_append(out, "\"", 1);
    return rc;
}

int tg_breaker_to_json(tg_breaker_t *b, uint64_t now_ms, tg_buf_t *out)
{
    tg_breaker_state_t st = tg_breaker_state(b, now_ms);
    uint64_t retry = tg_breaker_retry_in_ms(b, now_ms);
    bool degraded = tg_breaker_is_degraded_at(b, now_ms);
    pthread_mutex_lock(&b->mu);
    uint32_t fails = b->consecutive_failures;
    uint64_t lat = b->lat_ewma_us;
    pthread_mutex_unlock(&b->mu);

    size_t mark = out->len;
    int rc = tg_buf_append_str(out, "{\"target\":");
    if (rc == 0)
        rc = append_json_str(out, b->key);
    if (rc == 0)
        rc = tg_buf_appendf(out,
                            ",\"state\":\"%s\",\"consecutive_failures\":%u,\"degraded\":%s,"
                            "\"retry_in_ms\":%llu,\"latency_us\":%llu}",
                            tg_breaker_state_name(st), fails, degraded ? "true" : "false",
                            (unsigned long long)retry, (unsigned long long)lat);
    if (rc != 0) {
        out->len = mark; /* leave the buffer as it was */
        if (out->data != NULL)
            out->data[mark] = '\0';
    }
    return rc;
}

/* ---- registry ---- */

#define TG_BREAKER_BUCKETS 256

/* Lookups walk the chains without the lock: a breaker is fully built before it is
 * published with a release store at the head of its chain, and never removed. */
static _Atomic(tg_breaker_t *) reg_buckets[TG_BREAKER_BUCKETS];
/* reg_mu serialises insertions (and the insertion-order list below). */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static tg_breaker_t **reg_all;
static size_t reg_n, reg_cap;
static pthread_once_t reg_metrics_once = PTHREAD_ONCE_INIT;

static uint32_t hash_key(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static tg_breaker_t *find_in(uint32_t bucket, const char *key)
{
    for (tg_breaker_t *b = atomic_load_explicit(&reg_buckets[bucket], memory_order_acquire); b != NULL;
         b = b->next)
        if (strcmp(b->key, key) == 0)
            return b;
    return NULL;
}

tg_breaker_t *tg_breaker_find(const char *key)
{
    if (key == NULL)
        return NULL;
    return find_in(hash_key(key) % TG_BREAKER_BUCKETS, key);
}

static void set_state_gauge(void *ud, tg_breaker_t *b)
{
    uint64_t now = *(const uint64_t *)ud;
    char labels[300] = "";
    tg_metrics_label(labels, sizeof(labels), "target", b->key);
    tg_metrics_set("tollgate_breaker_state", labels, (double)tg_breaker_state(b, now));
}

static void render_states(void *ud)
{
    (void)ud;
    uint64_t now = tg_now_ms();
    tg_breaker_foreach(set_state_gauge, &now);
}

static void register_metrics(void)
{
    tg_metrics_register("tollgate_breaker_state",
                        "Circuit breaker state per target (0 closed, 1 open, 2 half-open)", TG_METRIC_GAUGE);
    tg_metrics_on_render(render_states, NULL);
}

tg_breaker_t *tg_breaker_get(const char *key, const tg_breaker_opts_t *opts)
{
    if (key == NULL)
        return NULL;
    pthread_once(&reg_metrics_once, register_metrics);
    uint32_t bucket = hash_key(key) % TG_BREAKER_BUCKETS;
    tg_breaker_t *b = find_in(bucket, key);
    if (b == NULL) {
        pthread_mutex_lock(&reg_mu);
        b = find_in(bucket, key); /* another thread may have won the race */
        if (b == NULL && reg_n == reg_cap) {
            size_t ncap = reg_cap != 0 ? reg_cap * 2 : 32;
            tg_breaker_t **nall = realloc(reg_all, ncap * sizeof(*nall));
            if (nall == NULL) {
                pthread_mutex_unlock(&reg_mu);
                return NULL;
            }
            reg_all = nall;
            reg_cap = ncap;
        }
        if (b == NULL && (b = tg_breaker_create(key, opts)) != NULL) {
            b->next = atomic_load_explicit(&reg_buckets[bucket], memory_order_relaxed);
            atomic_store_explicit(&reg_buckets[bucket], b, memory_order_release);
            reg_all[reg_n++] = b;
        }
        pthread_mutex_unlock(&reg_mu);
        if (b == NULL)
            return NULL;
    }
    if (opts != NULL) {
        /* a reload may change the numbers; a breaker's state survives it */
        tg_breaker_opts_t o;
        opts_sanitize(&o, opts);
        pthread_mutex_lock(&b->mu);
        b->opts = o;
        pthread_mutex_unlock(&b->mu);
    }
    return b;
}

void tg_breaker_foreach(void (*fn)(void *ud, tg_breaker_t *b), void *ud)
{
    /* copy the list so fn may call anything (even tg_breaker_get) without deadlock */
    pthread_mutex_lock(&reg_mu);
    size_t n = reg_n;
    tg_breaker_t **copy = n != 0 ? malloc(n * sizeof(*copy)) : NULL;
    if (copy != NULL)
        memcpy(copy, reg_all, n * sizeof(*copy));
    pthread_mutex_unlock(&reg_mu);
    if (copy == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        fn(ud, copy[i]);
    free(copy);
}
