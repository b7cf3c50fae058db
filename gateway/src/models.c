/*
 * models.c - GET /v1/models: the models and chains a key may call, in OpenAI's list shape.
 *
 * The RELAY of a models call (it has no PARSE, ROUTE or ATTEMPT): the listing is built from the
 * call's config snapshot, narrowed to what the key's effective policy allows: a model when it is
 * allowed, a chain when every model it can reach is (policy.h), so the list holds exactly the
 * names a chat request of this key may use.
 */
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "err.h"
#include "policy.h"
#include "tchains.h"

int tg_stage_models(void *call)
{
    tg_call_t *c = call;
    int trc = tg_tchains_read(c, TG_STAGE_RELAY); /* the tenant's own chains are listed too (tchains.h) */
    if (trc != TG_STAGE_GO)
        return trc;
    json_t *data = json_array();
    json_t *root = json_pack("{s:s,s:o}", "object", "list", "data", data);
    if (root == NULL)
        return TG_ENOMEM;
    const tg_policy_t *pol = &c->principal.policy;
    for (size_t i = 0; i < c->cfg->n_models; i++) {
        if (!tg_policy_allows_model(pol, c->cfg->models[i].name))
            continue;
        json_array_append_new(data,
                              json_pack("{s:s,s:s,s:i,s:s}", "id", c->cfg->models[i].name, "object", "model",
                                        "created", 0, "owned_by", c->cfg->models[i].provider->name));
    }
    for (size_t i = 0; i < c->cfg->n_chains; i++) {
        if (!tg_policy_allows_chain(pol, &c->cfg->chains[i]) || tg_tchains_shadows(c, c->cfg->chains[i].name))
            continue;
        json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id", c->cfg->chains[i].name, "object",
                                              "model", "created", 0, "owned_by", "tollgate"));
    }
    if (tg_tchains_list(c, data) != 0) {
        json_decref(root);
        return TG_ENOMEM;
    }
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL)
        return TG_ENOMEM;
    tg_respond_raw(c, 200, s, strlen(s));
    free(s);
    return TG_STAGE_GO;
}
