/*
 * policy.h - what a key's effective policy (auth.h, tg_policy_t) allows a request: the pure
 * checks of POLICY (policy.c), also used by GET /v1/models (models.c).
 *
 * Models. A request names its models in one of three ways (router.h); each must be allowed:
 *   - a "models" list: every entry;
 *   - "model" naming a chain of the config: every model the chain can reach (its targets and its
 *     context fallback). A chain's own name grants nothing: a key limited to some models can never
 *     reach another through a chain, even after a reload adds a target to it;
 *   - "model" naming one model: that model.
 * A key whose policy lists no models may use every model and chain.
 *
 * max_tokens. With a policy limit, max_tokens and max_completion_tokens may not exceed it (400
 * naming the parameter and the limit); a request that gives neither gets max_completion_tokens =
 * the limit, so the limit bounds what the provider may produce (and what the LIMIT stage counts).
 */
#ifndef TG_POLICY_H
#define TG_POLICY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth.h"
#include "config.h"
#include "err.h"

/** Whether the key may use the chain: every model it can reach is allowed. */
bool tg_policy_allows_chain(const tg_policy_t *pol, const tg_chain_cfg_t *chain);
/** 0, or TG_EMODEL_NOT_ALLOWED with err->detail naming the model (public) and param the field. */
int tg_policy_check_models(const tg_policy_t *pol, const tg_config_t *cfg, const json_t *body, char *param,
                           size_t param_len, tg_error_t *err);
/** 0 (*capped true when max_completion_tokens was added), or TG_EINVALID_REQUEST naming the
 *  parameter and the limit. */
int tg_policy_check_max_tokens(const tg_policy_t *pol, json_t *body, bool *capped, char *param,
                               size_t param_len, tg_error_t *err);

#endif
