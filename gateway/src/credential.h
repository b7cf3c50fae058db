/*
 * credential.h - which key each attempt of a call runs on: the tenant's own (BYOK) or the
 * platform's. The request path's side of BYOK (byok.h seals and opens, credcache.h caches blobs).
 *
 *   ROUTE    tg_credential_route: every chain target whose provider the tenant holds a key for
 *            (tg_principal_t.byok) becomes its BYOK twin: the same model and provider under the
 *            target key "<target_key>#byok" (so failover events, route comments and attempt
 *            metrics say byok), with a breaker of its own per credential
 *            ("<target_key>#byok:<tenant_id>", tg_credential_breaker): a tenant's bad key opens
 *            no breaker that other tenants share. When the tenant's policy has byok_fallback, the
 *            target on the platform's key follows its twin in the plan (while the plan has room:
 *            TG_PLAN_MAX_TARGETS). c->target_byok[i] says which targets are twins.
 *            tg_credential_fetch then copies the tenant's sealed blobs into the call, from the
 *            process-wide cache or, on a miss, one async query (the stage is pending; the call
 *            resumes at LIMIT through tg_call_resume).
 *   ATTEMPT  tg_credential_open opens the twin's blob into sodium_malloc'd memory for the adapter
 *            to build the request with; the caller frees it (wiped) as soon as the request is
 *            built, whose header strings are wiped when disposed (tg_upstream_req_dispose).
 *            tg_credential_classify turns a provider's 401/403 to a BYOK attempt into the
 *            tenant's problem (outcome.h, tg_outcome_byok).
 * Health probes never come here: they use the platform's key (health.c).
 */
#ifndef TG_CREDENTIAL_H
#define TG_CREDENTIAL_H

#include <stdbool.h>

#include "breaker.h"
#include "byok.h"
#include "config.h"
#include "outcome.h"

struct tg_call;

/** ROUTE, after the chain is resolved and before breakers and plan: BYOK twins into c->route.
 *  0 or TG_ENOMEM. */
TG_MUST_CHECK int tg_credential_route(struct tg_call *c);
/** The breaker of route target t: its own per credential for a twin, the shared one otherwise. */
tg_breaker_t *tg_credential_breaker(struct tg_call *c, const tg_model_cfg_t *t);
/** ROUTE, last: TG_STAGE_GO when the call has every blob it needs (or needs none), TG_STAGE_PENDING
 *  while they are read, or TG_EDB_UNAVAILABLE. */
int tg_credential_fetch(struct tg_call *c);
/** ATTEMPT: *key = the opened key when target is a BYOK twin (NULL otherwise: the platform's key);
 *  returns 0, or -1 with *cls filled when the tenant's key cannot be used (a failed attempt). */
int tg_credential_open(struct tg_call *c, const tg_model_cfg_t *target, tg_secret_t **key,
                       tg_classified_t *cls);
/** A provider's answer to the current attempt was classified: a 401/403 to the tenant's own key
 *  is the tenant's problem, not the target's. */
void tg_credential_classify(struct tg_call *c, tg_classified_t *cls);
/** Frees the call's BYOK state (call.c, when the call is destroyed). */
void tg_credential_call_free(struct tg_call *c);

#endif
