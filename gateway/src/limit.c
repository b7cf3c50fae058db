/*
 * limit.c - LIMIT: how fast the tenant and its key may go, across every instance on the database.
 *
 * After ROUTE (the models, so the output cap, are known) and before the credit reservation. A
 * call counts one request and, when a token limit applies, its tokens at admission: the prompt
 * estimate plus what it may produce (estimate.h). It is charged on its key's limits, then on its
 * tenant's (policy key_rpm/key_tpm, rpm/tpm; 0 = none), each against this instance's slice of
 * the window (ratelimit.h); a slice that falls short is topped up from PostgreSQL (ratelease.h)
 * while the call waits (PENDING, resumed by the lease's callback through tg_call_resume). SETTLE
 * replaces the token charge with the actual usage (tg_limit_settle).
 *
 * Over a limit: 429 rate_limited naming the limit, Retry-After (seconds until the window ends)
 * and the x-ratelimit-* headers, which also go out with every answer under a limit, streams
 * included (OpenAI's names and duration format; per dimension, the scope with the least left).
 * A call with no limit does nothing here: no estimate, no lock, no header.
 *
 * The database down (a lease that fails or cannot be sent): limits fail open to this instance's
 * own count. For TG_RL_OFFLINE_MS after a failure no lease is tried; each instance admits up to
 * the whole limit by itself in a window, and the next lease of the same window charges what it
 * admitted meanwhile (its debt). Why open: the database is not what the limits protect, a frozen
 * database already leaves cached keys served, and refusing only the tenants with limits would
 * make a database hiccup their outage; the money stop is the credit ledger's (a later issue).
 *
 * Old windows are deleted by a sweep that the first limited call after TG_RL_SWEEP_MS sends.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "clock.h"
#include "err.h"
#include "estimate.h"
#include "log.h"
#include "metrics.h"
#include "ratelease.h"

/* After a failed lease, limits are kept locally this long before the database is tried again. */
#define TG_RL_OFFLINE_MS 1000u
/* How often an instance deletes old windows. */
#define TG_RL_SWEEP_MS 60000u
/* An outage is logged once, not once per retry: again only after this long without a failure. */
#define TG_RL_OFFLINE_LOG_MS 60000u

static tg_rl_t *g_rl;
static pthread_once_t g_rl_once = PTHREAD_ONCE_INIT;
static _Atomic uint64_t g_offline_until_ms, g_next_sweep_ms;

static void rl_init(void)
{
    g_rl = tg_rl_create(0);
    /* refusals by the limit that refused: the access log has each one, the counter the rate */
    tg_metrics_register("tollgate_rate_limited_total", "Calls refused by a rate limit (429), by the limit",
                        TG_METRIC_COUNTER);
    static const char *const labels[] = {"limit=\"key_requests\"", "limit=\"key_tokens\"",
                                         "limit=\"tenant_requests\"", "limit=\"tenant_tokens\""};
    for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++)
        tg_metrics_add("tollgate_rate_limited_total", labels[i], 0);
}

static tg_rl_t *rl_table(void)
{
    pthread_once(&g_rl_once, rl_init);
    return g_rl;
}

static void note_offline(uint64_t now_ms)
{
    uint64_t was = atomic_exchange(&g_offline_until_ms, now_ms + TG_RL_OFFLINE_MS);
    if (was + TG_RL_OFFLINE_LOG_MS <= now_ms)
        TG_LOG(TG_LOG_WARN, "rate_limits_local",
               TG_KV_STR("why", "the database did not answer a lease: each instance keeps the limits alone"));
}

static void maybe_sweep(tg_call_t *c, uint64_t now_ms)
{
    uint64_t due = atomic_load_explicit(&g_next_sweep_ms, memory_order_relaxed);
    if (now_ms >= due && atomic_compare_exchange_strong(&g_next_sweep_ms, &due, now_ms + TG_RL_SWEEP_MS))
        tg_ratelease_sweep(c->worker->pg, now_ms);
}

/* ------------------------------------------------------------------------------ admission */

static uint32_t route_output_cap(const tg_call_t *c)
{
    uint32_t cap = 0;
    for (size_t i = 0; i < c->route.n_targets; i++)
        if (c->route.targets[i]->max_output_tokens > cap)
            cap = c->route.targets[i]->max_output_tokens;
    const tg_model_cfg_t *cf = c->route.context_fallback;
    if (cf != NULL && cf->max_output_tokens > cap)
        cap = cf->max_output_tokens;
    return cap;
}

static void hold_start(tg_call_t *c)
{
    tg_limit_hold_t *h = &c->limit;
    const tg_policy_t *pol = &c->principal.policy;
    h->started = true;
    if (pol->tpm != 0 || pol->key_tpm != 0) {
        h->prompt_tokens = tg_estimate_prompt_tokens(c->body);
        uint64_t out = tg_estimate_output_tokens(c->body, route_output_cap(c));
        h->tokens = h->prompt_tokens + out;
        if (h->tokens < h->prompt_tokens) /* an absurd n */
            h->tokens = UINT64_MAX;
    }
    tg_rl_charge_t *k = &h->charges[TG_RL_KEY], *t = &h->charges[TG_RL_TENANT];
    k->kind = TG_RL_KEY;
    k->id = c->principal.key_id;
    k->lim.max[TG_RL_REQUESTS] = pol->key_rpm;
    k->lim.max[TG_RL_TOKENS] = pol->key_tpm;
    t->kind = TG_RL_TENANT;
    t->id = c->principal.tenant_id;
    t->lim.max[TG_RL_REQUESTS] = pol->rpm;
    t->lim.max[TG_RL_TOKENS] = pol->tpm;
    for (int s = 0; s < TG_RL_SCOPES; s++) {
        h->charges[s].amount[TG_RL_REQUESTS] = 1;
        h->charges[s].amount[TG_RL_TOKENS] = h->tokens;
    }
}

static void on_lease(void *arg, const PGresult *res, const char *errmsg);

/* ------------------------------------------------------------------------------- headers */

static void add_header(h2o_req_t *req, const char *name, size_t nlen, const char *v, size_t vlen)
{
    /* names are lower-case literals, stored by pointer; values are copied into the pool */
    h2o_iovec_t val = h2o_strdup(&req->pool, v, vlen);
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, nlen, 0, NULL, val.base, val.len);
}

#define ADD_HEADER(req, lit, v, n) add_header((req), lit, sizeof(lit) - 1, (v), (n))

static void add_headers(h2o_req_t *req, const tg_rl_view_t *v)
{
    char num[21], dur[32];
    size_t dl = tg_rl_duration(dur, sizeof(dur), v->reset_ms);
    if (v->max[TG_RL_REQUESTS] != 0) {
        ADD_HEADER(req, "x-ratelimit-limit-requests", num, tg_rl_u64(num, v->max[TG_RL_REQUESTS]));
        ADD_HEADER(req, "x-ratelimit-remaining-requests", num, tg_rl_u64(num, v->remaining[TG_RL_REQUESTS]));
        ADD_HEADER(req, "x-ratelimit-reset-requests", dur, dl);
    }
    if (v->max[TG_RL_TOKENS] != 0) {
        ADD_HEADER(req, "x-ratelimit-limit-tokens", num, tg_rl_u64(num, v->max[TG_RL_TOKENS]));
        ADD_HEADER(req, "x-ratelimit-remaining-tokens", num, tg_rl_u64(num, v->remaining[TG_RL_TOKENS]));
        ADD_HEADER(req, "x-ratelimit-reset-tokens", dur, dl);
    }
}

static const char *limit_name(tg_rl_kind_t kind, tg_rl_dim_t dim)
{
    static const char *const names[TG_RL_SCOPES][TG_RL_DIMS] = {{"key_requests", "key_tokens"},
                                                                {"tenant_requests", "tenant_tokens"}};
    return names[kind][dim];
}

/* The refusal: what the client is told (the limit, when to come back) and what is given back. */
static int refuse(tg_call_t *c, tg_rl_kind_t kind, const tg_rl_result_t *r)
{
    tg_limit_hold_t *h = &c->limit;
    for (int s = 0; s < TG_RL_SCOPES; s++)
        if (h->charges[s].slot_gen != 0)
            tg_rl_uncharge(rl_table(), &h->charges[s]);
    h->refused = limit_name(kind, r->refused_dim);
    char label[48];
    snprintf(label, sizeof(label), "limit=\"%s\"", h->refused);
    tg_metrics_add("tollgate_rate_limited_total", label, 1);
    tg_rl_view_t v = h->view;
    tg_rl_view_merge(&v, &r->view);
    /* the refusing limit is the one the headers name */
    v.max[r->refused_dim] = r->view.max[r->refused_dim];
    v.remaining[r->refused_dim] = r->view.remaining[r->refused_dim];
    add_headers(c->req, &v);

    const char *who = kind == TG_RL_KEY ? "this API key" : "this tenant";
    const char *what = r->refused_dim == TG_RL_REQUESTS ? "requests" : "tokens";
    unsigned long long max = r->view.max[r->refused_dim];
    char per[40];
    if (c->cfg->rate_window_ms == 60000)
        snprintf(per, sizeof(per), "per minute");
    else
        snprintf(per, sizeof(per), "per %u ms", c->cfg->rate_window_ms);
    char msg[200];
    if (r->too_big) {
        /* waiting would not help: no Retry-After */
        snprintf(msg, sizeof(msg),
                 "this request may use %llu tokens, more than the limit of %s (%llu tokens %s): lower "
                 "max_tokens or the prompt",
                 (unsigned long long)h->tokens, who, max, per);
    } else {
        uint32_t after = tg_rl_retry_after_s(r->view.reset_ms);
        char ra[21];
        size_t n = tg_rl_u64(ra, after);
        h2o_add_header(&c->req->pool, &c->req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                       h2o_strdup(&c->req->pool, ra, n).base, n);
        snprintf(msg, sizeof(msg), "rate limit of %s reached: %llu %s %s; retry in %u s", who, max, what, per,
                 after);
    }
    tg_call_set_error(c, msg, NULL);
    return TG_ERATE_LIMITED;
}

/* ---------------------------------------------------------------------------------- LIMIT */

int tg_stage_limit(void *call)
{
    tg_call_t *c = call;
    const tg_policy_t *pol = &c->principal.policy;
    if ((pol->rpm | pol->key_rpm) == 0 && (pol->tpm | pol->key_tpm) == 0)
        return TG_STAGE_GO; /* no limit: no work, no header */
    tg_rl_t *rl = rl_table();
    if (rl == NULL)
        return TG_ENOMEM;
    tg_limit_hold_t *h = &c->limit;
    if (!h->started)
        hold_start(c);
    uint64_t now = (uint64_t)tg_unix_now_ms();
    for (; h->next < TG_RL_SCOPES; h->next++) {
        tg_rl_charge_t *ch = &h->charges[h->next];
        if (ch->lim.max[TG_RL_REQUESTS] == 0 && ch->lim.max[TG_RL_TOKENS] == 0)
            continue;
        tg_rl_result_t r;
        if (h->answered) {
            r = h->answer;
            h->answered = false;
        } else {
            bool offline = now < atomic_load_explicit(&g_offline_until_ms, memory_order_relaxed);
            r = tg_rl_charge(rl, ch, now, c->cfg->rate_window_ms, offline, &h->lease);
            if (r.verdict == TG_RL_LEASE) {
                tg_call_ref(c); /* the lease's, until its callback */
                if (tg_ratelease_send(c->worker->pg, ch, &h->lease, on_lease, c) == 0) {
                    h->waiting = true;
                    maybe_sweep(c, now);
                    return TG_STAGE_PENDING;
                }
                tg_call_unref(c);
                note_offline(now);
                r = tg_rl_lease_failed(rl, ch, &h->lease, now);
            }
        }
        if (r.verdict == TG_RL_REFUSED)
            return refuse(c, (tg_rl_kind_t)h->next, &r);
        h->local = h->local || r.local;
        tg_rl_view_merge(&h->view, &r.view);
    }
    add_headers(c->req, &h->view);
    return TG_STAGE_GO;
}

static void on_lease(void *arg, const PGresult *res, const char *errmsg)
{
    tg_call_t *c = arg;
    tg_limit_hold_t *h = &c->limit;
    tg_rl_charge_t *ch = &h->charges[h->next];
    tg_rl_t *rl = rl_table();
    uint64_t now = (uint64_t)tg_unix_now_ms();
    tg_rl_answer_t a;
    tg_rl_result_t r;
    if (res != NULL && tg_ratelease_parse(res, &a) == 0) {
        r = tg_rl_granted(rl, ch, &h->lease, &a, now);
    } else {
        if (res == NULL && errmsg != NULL)
            TG_LOG(TG_LOG_DEBUG, "rate_lease_failed", TG_KV_STR("error", errmsg)); /* no parameter in it */
        note_offline(now);
        r = tg_rl_lease_failed(rl, ch, &h->lease, now);
    }
    h->waiting = false;
    if (h->settled) {
        /* the call ended while the lease was out: the database's grant stays with this instance,
         * the call's charge goes */
        if (ch->slot_gen != 0)
            tg_rl_uncharge(rl, ch);
    } else {
        h->answer = r;
        h->answered = true;
        tg_call_resume(c, TG_STAGE_LIMIT, 0);
    }
    tg_call_unref(c);
}

/* ---------------------------------------------------------------------------------- SETTLE */

/* Tokens given back to the database: the answer tells the table (the call may be long gone). */
typedef struct give_back {
    tg_rl_charge_t ch;
    uint64_t tokens;
} give_back_t;

static void on_given_back(void *arg, const PGresult *res, const char *errmsg)
{
    give_back_t *g = arg;
    (void)errmsg;
    tg_rl_answer_t a;
    bool ok = res != NULL && tg_ratelease_parse(res, &a) == 0;
    tg_rl_released(rl_table(), &g->ch, g->tokens, ok ? &a : NULL);
    free(g);
}

static void give_back(tg_call_t *c, const tg_rl_charge_t *ch, uint64_t tokens)
{
    give_back_t *g = malloc(sizeof(*g));
    if (g != NULL) {
        g->ch = *ch;
        g->tokens = tokens;
        if (tg_ratelease_give_back(c->worker->pg, ch, tokens, on_given_back, g) == 0)
            return;
        free(g);
    }
    tg_rl_released(rl_table(), ch, tokens, NULL); /* not sent: still ours */
}

/* What the call actually cost in tokens: nothing when nothing was served; the provider's figures
 * (the prompt estimate where it gave none); the admission when it reported nothing at all. */
static uint64_t actual_tokens(const tg_call_t *c)
{
    if (c->served == NULL && !c->committed)
        return 0;
    if (!c->usage.present && !c->usage_estimated)
        return c->limit.tokens;
    uint64_t prompt = c->usage.prompt_tokens > 0 ? (uint64_t)c->usage.prompt_tokens : c->limit.prompt_tokens;
    uint64_t completion = c->usage.completion_tokens > 0 ? (uint64_t)c->usage.completion_tokens : 0;
    return prompt + completion;
}

void tg_limit_settle(tg_call_t *c)
{
    tg_limit_hold_t *h = &c->limit;
    if (!h->started || h->settled)
        return;
    h->settled = true;
    tg_rl_t *rl = rl_table();
    /* a call that never reached a provider (refused after LIMIT, its client gone) costs nothing */
    bool tried = tg_plan_attempt_count(&c->plan) > 0;
    uint64_t actual = tried ? actual_tokens(c) : 0;
    uint64_t now = (uint64_t)tg_unix_now_ms();
    for (int s = 0; s < TG_RL_SCOPES; s++) {
        tg_rl_charge_t *ch = &h->charges[s];
        if (ch->slot_gen == 0 || (h->waiting && s == h->next))
            continue; /* not charged, or its lease's callback gives it back */
        if (!tried) {
            tg_rl_uncharge(rl, ch);
            continue;
        }
        uint64_t back = tg_rl_correct(rl, ch, actual, now);
        if (back > 0)
            give_back(c, ch, back);
    }
}
