/*
 * request.c - PARSE and ROUTE: the client's body becomes a canonical request, then a plan.
 *
 * PARSE reads the JSON body (duplicates refused, its tree bounded by the call's memory budget),
 * checks it against the canonical format (the
 * OpenAI chat request), and notes what the answer must look like (stream, usage in the stream,
 * route-event comments). ROUTE resolves the chain (a request "models" list, a named chain or one
 * model), takes each target's breaker and starts the failover planner. Every refusal is the
 * caller's 400 with the parameter named.
 */
#include <string.h>
#include <strings.h>

#include "call_internal.h"
#include "credential.h"
#include "err.h"
#include "jsonmem.h"
#include "retention.h"
#include "tchains.h"

int tg_stage_parse(void *call)
{
    tg_call_t *c = call;
    h2o_req_t *req = c->req;
    json_error_t jerr;
    int jrc;
    /* the tree may cost what the body's size allows, no more (jsonmem.h): a body of tiny values
     * built to amplify memory is refused before it costs it */
    size_t budget = tg_jsonmem_budget(req->entity.len, c->cfg->body_memory_factor);
    c->body = tg_json_load_bounded(req->entity.base != NULL ? req->entity.base : "", req->entity.len, budget,
                                   JSON_REJECT_DUPLICATES, &jerr, &jrc, NULL);
    if (c->body == NULL) {
        if (jrc == TG_EBODY_TOO_COMPLEX)
            tg_jsonmem_explain(jerr.text, sizeof(jerr.text), req->entity.len, c->cfg->body_memory_factor);
        tg_call_set_error(c, jerr.text, NULL);
        return jrc;
    }
    if (!json_is_object(c->body)) {
        tg_call_set_error(c, "request body must be a JSON object", NULL);
        return TG_EINVALID_REQUEST;
    }
    /* A per-request chain may stand in for "model"; the canonical format still wants one. */
    json_t *models = json_object_get(c->body, "models");
    if (json_object_get(c->body, "model") == NULL && json_is_string(json_array_get(models, 0)))
        json_object_set(c->body, "model", json_array_get(models, 0));

    char param[128] = "";
    tg_error_t err = {0};
    if (tg_canon_validate(c->body, param, sizeof(param), &err) != 0) {
        tg_call_set_error(c, err.detail[0] != '\0' ? err.detail : NULL, param[0] != '\0' ? param : NULL);
        return TG_EINVALID_REQUEST;
    }
    c->stream = json_is_true(json_object_get(c->body, "stream"));
    c->client_usage = c->stream && json_is_true(json_object_get(json_object_get(c->body, "stream_options"),
                                                                "include_usage"));
    const h2o_iovec_t *re = tg_http_header(req, "x-tollgate-route-events");
    c->route_events = c->stream && re != NULL && re->len == 4 && strncasecmp(re->base, "true", 4) == 0;
    return TG_STAGE_GO;
}

int tg_stage_route(void *call)
{
    tg_call_t *c = call;
    char param[128] = "";
    tg_error_t err = {0};
    int trc = tg_tchains_route(c); /* a chain of the tenant's own first (tchains.h) */
    if (trc != TG_STAGE_GO)
        return trc;
    if (!c->tchain_routed && tg_router_resolve(c->cfg, c->body, &c->route, param, sizeof(param), &err) != 0) {
        tg_call_set_error(c, err.detail[0] != '\0' ? err.detail : NULL, param[0] != '\0' ? param : NULL);
        return err.code != 0 ? err.code : TG_EINVALID_REQUEST;
    }
    json_object_del(c->body, "models"); /* tollgate's own field: never sent upstream */
    int brc = tg_credential_route(c);   /* BYOK twins of the targets (credential.h) */
    if (brc != 0)
        return brc;
    /* zero retention keeps only the targets that may see the content (after the BYOK flags) */
    int zrc = tg_retention_route(c);
    if (zrc != TG_STAGE_GO)
        return zrc;

    for (size_t i = 0; i < c->route.n_targets; i++)
        c->breakers[i] = tg_credential_breaker(c, c->route.targets[i]);
    const tg_model_cfg_t *cf = c->route.context_fallback;
    if (cf != NULL)
        c->ctx_breaker = tg_credential_breaker(c, cf);
    tg_plan_opts_t opts = {.max_attempts_per_target = c->cfg->max_attempts_per_target,
                           .retry_wait_cap_ms = c->cfg->retry_wait_cap_ms,
                           .short_wait_ms = TG_CALL_SHORT_WAIT_MS,
                           .request_first_byte_ms = c->tchain_routed && tg_tchains_budget(c) > 0
                                                        ? tg_tchains_budget(c)
                                                        : tg_plan_request_budget(c->cfg, c->route.name),
                           .start_ms = c->start_us / 1000};
    tg_plan_init(&c->plan, c->route.targets, c->breakers, c->route.n_targets, cf, c->ctx_breaker, &opts);
    return tg_credential_fetch(c); /* the tenant's sealed keys, when a target runs on one */
}
