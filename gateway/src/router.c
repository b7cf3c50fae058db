/*
 * router.c - chain resolution (router.h).
 */
#include "router.h"

#include <stdio.h>
#include <string.h>

/* Writes the offending field's path: "model", "models" or "models[2]" (index < 0: none). */
static void set_param(char *param, size_t param_len, const char *field, long index)
{
    if (param == NULL || param_len == 0)
        return;
    if (index < 0)
        snprintf(param, param_len, "%s", field);
    else
        snprintf(param, param_len, "%s[%ld]", field, index);
}

/* Public messages quote the client's own text; cut it so a huge name cannot fill the log line. */
#define NAME_SHOWN 128

static int resolve_list(const tg_config_t *cfg, const json_t *list, tg_route_t *out, char *param,
                        size_t param_len, tg_error_t *err)
{
    size_t n = json_array_size(list);
    if (n == 0) {
        set_param(param, param_len, "models", -1);
        return tg_error_set(err, TG_EINVALID_REQUEST, "models must be a non-empty array of model names");
    }
    if (n > TG_PLAN_MAX_TARGETS) {
        set_param(param, param_len, "models", -1);
        return tg_error_set(err, TG_EINVALID_REQUEST, "models may name at most %d models",
                            TG_PLAN_MAX_TARGETS);
    }
    for (size_t i = 0; i < n; ++i) {
        const json_t *v = json_array_get(list, i);
        if (!json_is_string(v)) {
            set_param(param, param_len, "models", (long)i);
            return tg_error_set(err, TG_EINVALID_REQUEST, "models[%zu] must be a string", i);
        }
        const char *name = json_string_value(v);
        const tg_model_cfg_t *m = tg_config_find_model(cfg, name);
        if (m == NULL) {
            set_param(param, param_len, "models", (long)i);
            return tg_error_set(err, TG_EMODEL_NOT_FOUND, "model \"%.*s\" not found", NAME_SHOWN, name);
        }
        /* a repeated name would only spend a second attempt on the same breaker */
        bool seen = false;
        for (size_t j = 0; j < out->n_targets; ++j)
            seen |= out->targets[j] == m;
        if (!seen)
            out->targets[out->n_targets++] = m;
    }
    snprintf(out->name, sizeof(out->name), "request");
    return 0;
}

int tg_router_resolve(const tg_config_t *cfg, const json_t *body, tg_route_t *out, char *param,
                      size_t param_len, tg_error_t *err)
{
    memset(out, 0, sizeof(*out));
    if (param != NULL && param_len > 0)
        param[0] = '\0';
    if (!json_is_object(body)) {
        return tg_error_set(err, TG_EINVALID_REQUEST, "request body must be a JSON object");
    }

    const json_t *list = json_object_get(body, "models");
    if (list != NULL && !json_is_null(list)) {
        if (!json_is_array(list)) {
            set_param(param, param_len, "models", -1);
            return tg_error_set(err, TG_EINVALID_REQUEST, "models must be an array of model names");
        }
        return resolve_list(cfg, list, out, param, param_len, err);
    }

    const json_t *mv = json_object_get(body, "model");
    if (!json_is_string(mv)) {
        set_param(param, param_len, "model", -1);
        return tg_error_set(err, TG_EINVALID_REQUEST,
                            mv == NULL ? "model is required" : "model must be a string");
    }
    const char *name = json_string_value(mv);

    const tg_chain_cfg_t *chain = tg_config_find_chain(cfg, name);
    if (chain != NULL) {
        size_t n = chain->n_targets < TG_PLAN_MAX_TARGETS ? chain->n_targets : TG_PLAN_MAX_TARGETS;
        for (size_t i = 0; i < n; ++i)
            out->targets[out->n_targets++] = chain->targets[i];
        out->context_fallback = chain->context_fallback;
        snprintf(out->name, sizeof(out->name), "%s", chain->name);
        if (out->n_targets == 0)
            return tg_error_set(err, TG_EMODEL_NOT_FOUND, "model \"%.*s\" has no targets", NAME_SHOWN, name);
        return 0;
    }

    const tg_model_cfg_t *m = tg_config_find_model(cfg, name);
    if (m == NULL) {
        set_param(param, param_len, "model", -1);
        return tg_error_set(err, TG_EMODEL_NOT_FOUND, "model \"%.*s\" not found", NAME_SHOWN, name);
    }
    out->targets[0] = m;
    out->n_targets = 1;
    snprintf(out->name, sizeof(out->name), "%s", m->name);
    return 0;
}
