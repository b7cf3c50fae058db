/*
 * tchain_route.c - ROUTE through a chain of the tenant's own, see tchains.h.
 *
 * The order of resolution for "model": a model of the config, then a chain of the tenant, then a
 * chain of the config. The key's allowed models (policy.h) apply to a tenant chain as to a config
 * chain: every model it can reach must be allowed, else 403 model_not_allowed naming the model and
 * the chain. POLICY cannot tell a tenant chain's name from an unknown one before the chains are
 * read, so it leaves the model check of such a name to ROUTE (tg_tchains_defer_policy).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "clock.h"
#include "log.h"
#include "policy.h"
#include "tchains.h"

#define NAME_SHOWN 128

typedef struct fetch {
    tg_call_t *c; /* holds a reference until the answer */
    uint32_t gen;
    tg_stage_t again; /* the stage that asked, run again with the chains read */
} fetch_t;

/* The name "model" gives when it may be a tenant chain; NULL otherwise. */
static const char *candidate(const tg_call_t *c)
{
    if (c->kind != TG_CALL_CHAT || !c->principal.has_chains || c->body == NULL)
        return NULL;
    const json_t *list = json_object_get(c->body, "models");
    if (list != NULL && !json_is_null(list))
        return NULL; /* a request's own list names models only */
    const char *name = json_string_value(json_object_get(c->body, "model"));
    if (name == NULL || tg_config_find_model(c->cfg, name) != NULL)
        return NULL;
    return name;
}

bool tg_tchains_defer_policy(const tg_call_t *c)
{
    return candidate(c) != NULL;
}

static void on_rows(void *arg, const PGresult *res, const char *errmsg)
{
    (void)errmsg; /* may quote the parameter: not logged */
    fetch_t *f = arg;
    tg_call_t *c = f->c;
    int rc = TG_EDB_UNAVAILABLE;
    if (res != NULL && PQntuples(res) == 1 && PQnfields(res) == 1) {
        tg_tchains_t *t = NULL;
        rc = tg_tchains_parse(c->principal.tenant_id, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0),
                              &t);
        if (rc == 0) {
            TG_IGNORE_RESULT(tg_tchains_cache_put(t, tg_now_ms() + c->cfg->key_cache_ttl_ms, f->gen));
            tg_tchains_unref(c->tchains);
            c->tchains = t;
            c->tchains_read = true;
        }
    }
    if (rc != 0) {
        TG_LOG(TG_LOG_WARN, "tenant_chains_lookup_failed", TG_KV_STR("request_id", c->request_id),
               TG_KV_INT("tenant_id", c->principal.tenant_id), TG_KV_INT("code", rc));
        tg_call_resume(c, TG_STAGE_SETTLE, rc);
    } else {
        tg_call_resume(c, f->again, 0); /* the asking stage again, with the chains read */
    }
    tg_call_unref(c); /* the query's reference */
    free(f);
}

int tg_tchains_read(tg_call_t *c, int again)
{
    if (c->tchains_read || !c->principal.has_chains)
        return TG_STAGE_GO;
    tg_tchains_t *t = NULL;
    uint32_t gen = tg_tchains_generation(); /* before asking: a clear from now on wins */
    if (tg_tchains_cache_get(c->principal.tenant_id, tg_now_ms(), &t) == 1) {
        c->tchains = t;
        c->tchains_read = true;
        return TG_STAGE_GO;
    }
    fetch_t *f = malloc(sizeof(*f));
    if (f == NULL)
        return TG_ENOMEM;
    f->c = c;
    f->gen = gen;
    f->again = (tg_stage_t)again;
    char tid[24];
    snprintf(tid, sizeof(tid), "%lld", (long long)c->principal.tenant_id);
    const char *params[1] = {tid};
    tg_call_ref(c); /* held by the query until on_rows */
    if (tg_pgpool_query(c->worker->pg, "SELECT " TG_TCHAINS_JSON_SQL("$1::bigint"), 1, params, on_rows, f) !=
        0) {
        tg_call_unref(c);
        free(f);
        return TG_EDB_UNAVAILABLE;
    }
    return TG_STAGE_PENDING;
}

static int refuse(tg_call_t *c, const char *model, const char *chain)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "model \"%.*s\" (reached by chain \"%.*s\") is not allowed for this API key",
             NAME_SHOWN, model, NAME_SHOWN, chain);
    tg_call_set_error(c, msg, "model");
    return TG_EMODEL_NOT_ALLOWED;
}

/* Adds the model `name` to the route unless the call's config lacks it (a reload removed it since
 * the chain was stored) or it is there already. */
static const tg_model_cfg_t *model_of(tg_call_t *c, const char *chain, const char *name)
{
    const tg_model_cfg_t *m = tg_config_find_model(c->cfg, name);
    if (m == NULL)
        TG_LOG(TG_LOG_WARN, "tenant_chain_model_missing", TG_KV_STR("request_id", c->request_id),
               TG_KV_INT("tenant_id", c->principal.tenant_id), TG_KV_STR("chain", chain),
               TG_KV_STR("model", name));
    return m;
}

int tg_tchains_route(tg_call_t *c)
{
    const char *name = candidate(c);
    if (name == NULL)
        return TG_STAGE_GO;
    int rc = tg_tchains_read(c, TG_STAGE_ROUTE);
    if (rc != TG_STAGE_GO)
        return rc;
    const tg_policy_t *pol = &c->principal.policy;
    const tg_tchain_t *ch = tg_tchains_find(c->tchains, name);
    if (ch == NULL) {
        /* not the tenant's: the config resolves it, after the model check POLICY left to us */
        char param[128] = "";
        tg_error_t err = {0};
        rc = tg_policy_check_models(pol, c->cfg, c->body, param, sizeof(param), &err);
        if (rc != 0)
            tg_call_set_error(c, err.detail[0] != '\0' ? err.detail : NULL, param[0] != '\0' ? param : NULL);
        return rc;
    }
    tg_route_t *r = &c->route;
    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i < ch->n_targets && r->n_targets < TG_PLAN_MAX_TARGETS; i++) {
        const tg_model_cfg_t *m = model_of(c, ch->name, ch->targets[i]);
        if (m == NULL)
            continue;
        if (!tg_policy_allows_model(pol, m->name))
            return refuse(c, m->name, ch->name);
        bool seen = false;
        for (size_t k = 0; k < r->n_targets; k++)
            seen |= r->targets[k] == m;
        if (!seen)
            r->targets[r->n_targets++] = m;
    }
    if (ch->context_fallback != NULL) {
        const tg_model_cfg_t *m = model_of(c, ch->name, ch->context_fallback);
        if (m != NULL && !tg_policy_allows_model(pol, m->name))
            return refuse(c, m->name, ch->name);
        r->context_fallback = m;
    }
    if (r->n_targets == 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "chain \"%.*s\" names no model of the current catalog", NAME_SHOWN,
                 ch->name);
        tg_call_set_error(c, msg, "model");
        return TG_EMODEL_NOT_FOUND;
    }
    tg_str_copy(r->name, sizeof(r->name), ch->name);
    c->tchain_routed = true;
    c->tchain_budget_ms = ch->request_first_byte_ms;
    return TG_STAGE_GO;
}

uint32_t tg_tchains_budget(const tg_call_t *c)
{
    return c->tchain_routed ? c->tchain_budget_ms : 0;
}

void tg_tchains_call_free(tg_call_t *c)
{
    tg_tchains_unref(c->tchains);
    c->tchains = NULL;
}

bool tg_tchains_shadows(const tg_call_t *c, const char *name)
{
    return tg_tchains_find(c->tchains, name) != NULL && tg_config_find_model(c->cfg, name) == NULL;
}

int tg_tchains_list(tg_call_t *c, json_t *data)
{
    const tg_tchains_t *t = c->tchains;
    const tg_policy_t *pol = &c->principal.policy;
    for (size_t i = 0; t != NULL && i < t->n; i++) {
        const tg_tchain_t *ch = &t->chains[i];
        if (tg_config_find_model(c->cfg, ch->name) != NULL)
            continue; /* the model wins (see above) */
        /* listed when a request could use it: some target in this config, every model allowed */
        bool usable = false, allowed = true;
        for (size_t k = 0; k < ch->n_targets; k++) {
            const tg_model_cfg_t *m = tg_config_find_model(c->cfg, ch->targets[k]);
            usable |= m != NULL;
            allowed &= m == NULL || tg_policy_allows_model(pol, m->name);
        }
        const tg_model_cfg_t *fb =
            ch->context_fallback != NULL ? tg_config_find_model(c->cfg, ch->context_fallback) : NULL;
        allowed &= fb == NULL || tg_policy_allows_model(pol, fb->name);
        if (!usable || !allowed)
            continue;
        if (json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id", ch->name, "object", "model",
                                                  "created", 0, "owned_by", c->principal.tenant_name)) != 0)
            return TG_ENOMEM;
    }
    return 0;
}
