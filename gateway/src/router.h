/*
 * router.h - chain resolution: which targets a chat request may be served by.
 *
 * One interface for every way a request names its chain, so admin-managed
 * chains can plug in later without touching the request path:
 *   1. "models": ["a", "b", ...] in the body: a per-request chain of model names;
 *   2. "model" naming a chain of the config (tg_config_find_chain);
 *   3. "model" naming a single model: a chain of one (still protected by its breaker).
 * A model name and a chain name share one namespace (CONVENTIONS.md).
 *
 * Pure: reads the config snapshot and the body, no I/O. Every pointer in a
 * tg_route_t is borrowed from the snapshot and stays valid while the caller
 * holds its reference. Thread: any.
 */
#ifndef TG_ROUTER_H
#define TG_ROUTER_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "err.h"
#include "failover.h"

typedef struct tg_route {
    const tg_model_cfg_t *targets[TG_PLAN_MAX_TARGETS];
    size_t n_targets;
    const tg_model_cfg_t *context_fallback; /* NULL: none */
    /* chain name for events and logs: the chain's name, the model name, or "request" */
    char name[64];
} tg_route_t;

/**
 * Resolves the chain of `body` (a JSON object, borrowed). Returns 0 with *out filled, or:
 *   TG_EINVALID_REQUEST  "models"/"model" missing or mistyped; err->detail is a public message and
 *                        `param` (may be NULL) receives the field path;
 *   TG_EMODEL_NOT_FOUND  a name that is neither a model nor a chain; err->detail is a public message
 *                        naming it, `param` receives the field path.
 * A "models" list may name models only (not chains); a name repeated in the list is tried once.
 */
TG_MUST_CHECK int tg_router_resolve(const tg_config_t *cfg, const json_t *body, tg_route_t *out, char *param,
                                    size_t param_len, tg_error_t *err);

#endif
