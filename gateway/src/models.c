/*
 * models.c - GET /v1/models: the models and chains a key may call, in OpenAI's list shape.
 *
 * The RELAY of a models call (it has no PARSE, ROUTE or ATTEMPT): the listing is built from the
 * call's config snapshot. The tenant's allowed models (POLICY) will narrow it.
 */
#include <stdlib.h>
#include <string.h>

#include "call_internal.h"
#include "err.h"

int tg_stage_models(void *call)
{
    tg_call_t *c = call;
    json_t *data = json_array();
    json_t *root = json_pack("{s:s,s:o}", "object", "list", "data", data);
    if (root == NULL)
        return TG_ENOMEM;
    for (size_t i = 0; i < c->cfg->n_models; i++)
        json_array_append_new(data,
                              json_pack("{s:s,s:s,s:i,s:s}", "id", c->cfg->models[i].name, "object", "model",
                                        "created", 0, "owned_by", c->cfg->models[i].provider->name));
    for (size_t i = 0; i < c->cfg->n_chains; i++)
        json_array_append_new(data, json_pack("{s:s,s:s,s:i,s:s}", "id", c->cfg->chains[i].name, "object",
                                              "model", "created", 0, "owned_by", "tollgate"));
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL)
        return TG_ENOMEM;
    tg_respond_raw(c, 200, s, strlen(s));
    free(s);
    return TG_STAGE_GO;
}
