/*
 * policy.c - POLICY: what the tenant and its key may do, between PARSE and ROUTE (policy.h).
 *
 * The key's effective policy came with its principal (auth.c reads the tenant's row, the key's
 * override and the key's own allowed models in one query; keywatch.c drops it from the cache
 * when any of them changes). A refusal is a stage error and goes through SETTLE and LOG like any
 * other: 403 model_not_allowed naming the model, 400 naming max_tokens and the limit.
 *
 * Every authenticated call is also noted for api_keys.last_used_at here (lastused.h), whatever
 * the policy then says: the key was used.
 */
#include "policy.h"

#include <stdio.h>
#include <string.h>

#include "call_internal.h"
#include "lastused.h"
#include "retention.h"
#include "tchains.h"

/* Public messages quote the client's own text: cut so a huge name cannot fill the log line. */
#define NAME_SHOWN 128

static bool model_allowed(const tg_policy_t *pol, const tg_model_cfg_t *m)
{
    return m == NULL || tg_policy_allows_model(pol, m->name);
}

bool tg_policy_allows_chain(const tg_policy_t *pol, const tg_chain_cfg_t *chain)
{
    if (!pol->has_models)
        return true;
    for (size_t i = 0; i < chain->n_targets; i++)
        if (!model_allowed(pol, chain->targets[i]))
            return false;
    return model_allowed(pol, chain->context_fallback);
}

static int refuse(tg_error_t *err, char *param, size_t param_len, const char *field, const char *name,
                  const char *chain)
{
    if (param != NULL && param_len > 0)
        snprintf(param, param_len, "%s", field);
    if (chain != NULL)
        return tg_error_set(err, TG_EMODEL_NOT_ALLOWED,
                            "model \"%.*s\" (reached by chain \"%.*s\") is not allowed for this API key",
                            NAME_SHOWN, name, NAME_SHOWN, chain);
    return tg_error_set(err, TG_EMODEL_NOT_ALLOWED, "model \"%.*s\" is not allowed for this API key",
                        NAME_SHOWN, name);
}

int tg_policy_check_models(const tg_policy_t *pol, const tg_config_t *cfg, const json_t *body, char *param,
                           size_t param_len, tg_error_t *err)
{
    if (!pol->has_models)
        return 0;
    /* the names the router will read (router.h): a list wins over "model"; a malformed one is
     * ROUTE's 400 */
    const json_t *list = json_object_get(body, "models");
    if (json_is_array(list)) {
        size_t i;
        const json_t *v;
        json_array_foreach(list, i, v)
        {
            if (json_is_string(v) && !tg_policy_allows_model(pol, json_string_value(v))) {
                char field[32];
                snprintf(field, sizeof(field), "models[%zu]", i);
                return refuse(err, param, param_len, field, json_string_value(v), NULL);
            }
        }
        return 0;
    }
    const char *name = json_string_value(json_object_get(body, "model"));
    if (name == NULL)
        return 0;
    const tg_chain_cfg_t *chain = tg_config_find_chain(cfg, name);
    if (chain == NULL)
        return tg_policy_allows_model(pol, name) ? 0 : refuse(err, param, param_len, "model", name, NULL);
    for (size_t i = 0; i < chain->n_targets; i++)
        if (!model_allowed(pol, chain->targets[i]))
            return refuse(err, param, param_len, "model", chain->targets[i]->name, chain->name);
    if (!model_allowed(pol, chain->context_fallback))
        return refuse(err, param, param_len, "model", chain->context_fallback->name, chain->name);
    return 0;
}

int tg_policy_check_max_tokens(const tg_policy_t *pol, json_t *body, bool *capped, char *param,
                               size_t param_len, tg_error_t *err)
{
    *capped = false;
    if (pol->max_tokens == 0)
        return 0;
    static const char *const names[] = {"max_tokens", "max_completion_tokens"};
    bool given = false;
    for (size_t i = 0; i < 2; i++) {
        const json_t *v = json_object_get(body, names[i]);
        if (v == NULL || json_is_null(v))
            continue;
        given = true;
        /* PARSE accepted only positive integers */
        json_int_t n = json_integer_value(v);
        if (n > (json_int_t)pol->max_tokens) {
            if (param != NULL && param_len > 0)
                snprintf(param, param_len, "%s", names[i]);
            return tg_error_set(err, TG_EINVALID_REQUEST, "%s is %lld, more than this API key's limit of %u",
                                names[i], (long long)n, pol->max_tokens);
        }
    }
    if (!given) {
        if (json_object_set_new(body, "max_completion_tokens", json_integer(pol->max_tokens)) != 0)
            return tg_error_set(err, TG_ENOMEM, "out of memory");
        *capped = true;
    }
    return 0;
}

int tg_stage_policy(void *call)
{
    tg_call_t *c = call;
    /* zero retention first: whatever refuses the call afterwards is logged under it */
    int rc = tg_retention_policy(c);
    if (rc != TG_STAGE_GO)
        return rc;
    tg_lastused_note(c->principal.key_id);
    if (c->kind != TG_CALL_CHAT)
        return TG_STAGE_GO; /* GET /v1/models lists what the policy allows (models.c) */
    const tg_policy_t *pol = &c->principal.policy;
    char param[128] = "";
    tg_error_t err = {0};
    /* a name that may be a chain of the tenant's own is checked in ROUTE, once the chains are read */
    rc = tg_tchains_defer_policy(c)
             ? 0
             : tg_policy_check_models(pol, c->cfg, c->body, param, sizeof(param), &err);
    if (rc == 0)
        rc = tg_policy_check_max_tokens(pol, c->body, &c->policy_capped, param, sizeof(param), &err);
    if (rc != 0) {
        tg_call_set_error(c, err.detail[0] != '\0' ? err.detail : NULL, param[0] != '\0' ? param : NULL);
        return rc;
    }
    c->body_rewritten |= c->policy_capped; /* the client's bytes lack the added member */
    return TG_STAGE_GO;
}
