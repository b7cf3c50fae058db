/*
 * health.c - active health checks on one worker's loop.
 *
 * One probe slot per provider with health.enabled: a deadline (core/deadline.h)
 * fires every interval_ms +-10%, the
 * adapter builds the unbilled probe request, and the worker's upstream runs
 * it. The result goes to the breaker of every target (model) of that
 * provider. A new config snapshot replaces every slot: probes in flight are
 * cancelled (no callback runs after tg_transfer_cancel) and timers restart.
 */
#include "health.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "clock.h"
#include "deadline.h"
#include "log.h"
#include "metrics.h"

typedef struct probe_slot {
    struct tg_health *h;
    const tg_provider_cfg_t *provider; /* borrowed from h->cfg, which we hold a reference on */
    tg_deadline_t due;
    tg_transfer_t *xfer; /* in flight, or NULL */
    bool starting;       /* inside tg_transfer_start: on_done may not free anything yet */
    bool done_early;     /* on_done ran before tg_transfer_start returned */
    bool failing;        /* the last probe failed: logs only at transitions, not every interval */
    int status;
} probe_slot_t;

struct tg_health {
    h2o_loop_t *loop;
    tg_timers_t timers;
    tg_upstream_t *up;
    tg_config_t *cfg; /* our reference */
    probe_slot_t *slots;
    size_t n_slots;
    uint64_t rng;
};

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void register_metrics(void)
{
    tg_metrics_register("tollgate_health_probes_total", "Active health probes by provider and result",
                        TG_METRIC_COUNTER);
}

/* xorshift64*: jitter only, no need for a good generator */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ull;
}

/* interval +-10%, so probes of many instances (and providers) do not line up */
static uint64_t jittered(tg_health_t *h, uint32_t interval_ms)
{
    uint64_t span = (uint64_t)interval_ms / 5; /* 20% wide window */
    uint64_t base = (uint64_t)interval_ms - span / 2;
    uint64_t d = span > 0 ? base + rng_next(&h->rng) % (span + 1) : interval_ms;
    return d > 0 ? d : 1;
}

static void on_timer(tg_deadline_t *d);

static void arm(probe_slot_t *s, uint64_t delay_ms)
{
    tg_deadline_arm(&s->h->timers, &s->due, delay_ms, on_timer);
}

static void apply_result(probe_slot_t *s, bool ok)
{
    tg_health_t *h = s->h;
    uint64_t now = tg_now_ms();
    for (size_t i = 0; i < h->cfg->n_models; i++) {
        const tg_model_cfg_t *m = &h->cfg->models[i];
        if (m->provider != s->provider || m->target_key == NULL)
            continue;
        tg_breaker_t *b = tg_breaker_get(m->target_key, &s->provider->breaker);
        if (b != NULL)
            tg_breaker_health(b, now, ok);
    }
    char labels[256] = "";
    tg_metrics_label(labels, sizeof(labels), "provider", s->provider->name);
    tg_metrics_label(labels, sizeof(labels), "result", ok ? "ok" : "fail");
    tg_metrics_add("tollgate_health_probes_total", labels, 1);
    if (!ok && !s->failing)
        TG_LOG(TG_LOG_WARN, "health_probe_failed", TG_KV_STR("provider", s->provider->name),
               TG_KV_INT("status", s->status));
    else if (ok && s->failing)
        TG_LOG(TG_LOG_INFO, "health_probe_recovered", TG_KV_STR("provider", s->provider->name));
    s->failing = !ok;
}

static void on_head(void *ud, int status, const char *content_type, const char *retry_after)
{
    probe_slot_t *s = ud;
    s->status = status;
}

static int on_data(void *ud, const char *p, size_t n)
{
    return 0; /* the body (a models list) is not needed: discarded as it arrives */
}

static void on_done(void *ud, int rc, const char *timeout_kind)
{
    probe_slot_t *s = ud;
    bool ok = rc == 0 && s->status >= 200 && s->status <= 299;
    if (s->starting)
        s->done_early = true;
    s->xfer = NULL;
    apply_result(s, ok);
    arm(s, jittered(s->h, s->provider->health.interval_ms));
}

static void on_timer(tg_deadline_t *d)
{
    probe_slot_t *s = H2O_STRUCT_FROM_MEMBER(probe_slot_t, due, d);
    tg_health_t *h = s->h;
    const tg_provider_cfg_t *p = s->provider;
    if (s->xfer != NULL) /* still running (cannot happen: total timeout < interval); check later */
        goto rearm;

    const tg_adapter_t *ad = tg_adapter_for(p->kind);
    tg_upstream_req_t req;
    memset(&req, 0, sizeof(req));
    tg_error_t err = {0};
    if (ad == NULL || ad->build_probe == NULL || ad->build_probe(p, p->api_key, &req, &err) != 0) {
        tg_upstream_req_dispose(&req);
        TG_LOG(TG_LOG_WARN, "health_probe_build_failed", TG_KV_STR("provider", p->name));
        goto rearm;
    }
    tg_timeouts_t to = {.connect_ms = p->health.timeout_ms, .total_ms = p->health.timeout_ms};
    static const tg_transfer_cbs_t cbs = {.on_head = on_head, .on_data = on_data, .on_done = on_done};
    s->status = 0;
    s->starting = true;
    s->done_early = false;
    tg_transfer_t *t = tg_transfer_start(h->up, &req, &to, &cbs, s);
    s->starting = false;
    if (s->done_early)
        return; /* on_done already applied the result and re-armed */
    if (t == NULL) {
        /* could not even start (resources): counts as a failed probe */
        apply_result(s, false);
        goto rearm;
    }
    s->xfer = t;
    return;
rearm:
    arm(s, jittered(h, p->health.interval_ms));
}

tg_health_t *tg_health_start(h2o_loop_t *loop, tg_upstream_t *up)
{
    pthread_once(&metrics_once, register_metrics);
    tg_health_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->loop = loop;
    tg_timers_init(&h->timers, loop);
    h->up = up;
    h->rng = tg_now_us() ^ (uint64_t)(uintptr_t)h;
    if (h->rng == 0)
        h->rng = 0x9e3779b97f4a7c15ull;
    return h;
}

static void clear_slots(tg_health_t *h)
{
    for (size_t i = 0; i < h->n_slots; i++) {
        probe_slot_t *s = &h->slots[i];
        if (s->xfer != NULL) {
            tg_transfer_cancel(s->xfer);
            s->xfer = NULL;
        }
        tg_deadline_cancel(&s->due);
    }
    free(h->slots);
    h->slots = NULL;
    h->n_slots = 0;
}

void tg_health_apply(tg_health_t *h, tg_config_t *cfg)
{
    if (h == NULL)
        return;
    clear_slots(h);
    tg_config_t *old = h->cfg;
    h->cfg = cfg != NULL ? tg_config_ref(cfg) : NULL;
    tg_config_unref(old);
    if (h->cfg == NULL)
        return;

    size_t n = 0;
    for (size_t i = 0; i < h->cfg->n_providers; i++)
        if (h->cfg->providers[i].health.enabled && h->cfg->providers[i].health.interval_ms > 0)
            n++;
    if (n == 0)
        return;
    h->slots = calloc(n, sizeof(*h->slots));
    if (h->slots == NULL) {
        TG_LOG(TG_LOG_ERROR, "health_no_memory", TG_KV_INT("providers", n));
        return;
    }
    for (size_t i = 0; i < h->cfg->n_providers; i++) {
        const tg_provider_cfg_t *p = &h->cfg->providers[i];
        if (!p->health.enabled || p->health.interval_ms == 0)
            continue;
        probe_slot_t *s = &h->slots[h->n_slots++];
        s->h = h;
        s->provider = p;
        /* the first probe lands anywhere in the first interval: instances started (or
         * reloaded) together spread out at once */
        arm(s, 1 + rng_next(&h->rng) % p->health.interval_ms);
    }
}

void tg_health_stop(tg_health_t *h)
{
    if (h == NULL)
        return;
    clear_slots(h);
    tg_timers_dispose(&h->timers);
    tg_config_unref(h->cfg);
    free(h);
}
