/*
 * tchains.h - a tenant's own named chains on the request path (migration 0011_tenant_chains.sql;
 * managed by admin/chains.h).
 *
 * A request whose "model" names a chain resolves the tenant's chain of that name first, then the
 * config's. A name that is a model of the config is always that model (management refuses tenant
 * chains named like a model; one that a later reload adds wins), so a request for a plain model
 * never looks at tenant chains, and neither does one of a tenant that has none: the principal
 * says whether its tenant has chains (auth.c reads it with the key).
 *
 * The chains ride with the principal: the key lookup's one query (TG_KEY_SQL) also returns the
 * tenant's chains, which are kept here, per tenant, as one immutable refcounted snapshot of names
 * (not config pointers: ROUTE resolves them in the call's own config snapshot, skipping a model a
 * reload removed). tg_auth_cache_clear drops this cache too, so the NOTIFY on tollgate_tenants
 * that a change of tenant_chains fires reaches every worker within a second, as a policy change
 * does. A key still cached while its tenant's chains were evicted or expired costs the call one
 * async query (ROUTE pending). Answers that a clear overtook are not cached (generations).
 *
 * Bounded: TG_TCHAINS_SLOTS tenants, TG_TCHAINS_BYTES of snapshots in all (past it a snapshot
 * serves its call and is not cached). Thread: any.
 */
#ifndef TG_TCHAINS_H
#define TG_TCHAINS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "err.h"

#define TG_TCHAINS_SLOTS      1024
#define TG_TCHAINS_BYTES      (16u << 20)
#define TG_TCHAINS_JSON_MAX   (512u << 10) /* the chains column of one tenant, at most */
#define TG_TCHAINS_PER_TENANT 100          /* admin/chains.h's bound */

typedef struct tg_tchain {
    const char *name;
    size_t n_targets;
    const char **targets;           /* model names */
    const char *context_fallback;   /* NULL: none */
    uint32_t request_first_byte_ms; /* 0: the config's top-level budget */
} tg_tchain_t;

typedef struct tg_tchains {
    _Atomic long refcnt;
    int64_t tenant_id;
    size_t n;
    tg_tchain_t *chains; /* by name */
    size_t bytes;        /* what the snapshot costs (the cache's budget) */
} tg_tchains_t;

/* The SQL expression of the tenant's chains as one JSON text (NULL when it has none), given the
 * tenant id expression `t`: [[name, [targets...], context_fallback|null, budget|null], ...]. */
#define TG_TCHAINS_JSON_SQL(t)                                                     \
    "(SELECT json_agg(json_build_array(tc.name, tc.targets, tc.context_fallback, " \
    "tc.request_first_byte_ms) ORDER BY tc.name)::text FROM tenant_chains tc WHERE tc.tenant_id = " t ")"

/** Builds a snapshot from the JSON text above ("" or NULL: no chains). *out has refcnt 1.
 *  TG_EINTERNAL for a text of another shape; TG_ENOMEM. */
TG_MUST_CHECK int tg_tchains_parse(int64_t tenant_id, const char *json, size_t len, tg_tchains_t **out);
tg_tchains_t *tg_tchains_ref(tg_tchains_t *t);
void tg_tchains_unref(tg_tchains_t *t); /* NULL-safe */
/** The chain named `name`, or NULL. */
const tg_tchain_t *tg_tchains_find(const tg_tchains_t *t, const char *name);

/** The current generation (read before asking the database). */
uint32_t tg_tchains_generation(void);
/** 1 with *out a new reference (a live entry), 0 a miss. */
int tg_tchains_cache_get(int64_t tenant_id, uint64_t now_ms, tg_tchains_t **out);
/** Caches t (a reference of its own) until expires_ms, unless a clear came after gen or the budget
 *  is spent. Returns whether it was cached. */
bool tg_tchains_cache_put(tg_tchains_t *t, uint64_t expires_ms, uint32_t gen);
/** Drops every entry (tg_auth_cache_clear calls it). */
void tg_tchains_cache_clear(void);

/* ---- the request path (tchain_route.c) ---- */

struct tg_call;

/** POLICY: whether the model check waits for ROUTE, because "model" may name a chain of the
 *  tenant (ROUTE then checks the chain's models, or the name, itself). */
bool tg_tchains_defer_policy(const struct tg_call *c);
/**
 * ROUTE, first: when "model" names a chain of the tenant, fills c->route from it (in the call's
 * config), checks the key's allowed models against every model it can reach, and sets
 * c->tchain_routed. Returns TG_STAGE_GO (routed or not: then the config resolves the name),
 * TG_STAGE_PENDING (the tenant's chains are being read; ROUTE runs again), or a TG_E* error with
 * the call's error message set.
 */
int tg_tchains_route(struct tg_call *c);
/** Reads the tenant's chains into the call (c->tchains) when its principal says it has some and
 *  they are not read yet: TG_STAGE_GO (read, from the cache, or none), TG_STAGE_PENDING (one async
 *  query; the stage `again` runs again once they are read), or a TG_E* error. */
int tg_tchains_read(struct tg_call *c, int again);
/** GET /v1/models: whether the config's chain `name` is shadowed by one of the tenant's. */
bool tg_tchains_shadows(const struct tg_call *c, const char *name);
/** GET /v1/models: appends the tenant's chains that the key may use (every model they reach allowed,
 *  one of their targets in the config), owned by the tenant. */
int tg_tchains_list(struct tg_call *c, json_t *data);
/** The routed tenant chain's request first-byte budget, or 0 (the config's rules). */
uint32_t tg_tchains_budget(const struct tg_call *c);
/** Drops the call's reference (call.c, when the call is freed). */
void tg_tchains_call_free(struct tg_call *c);

#endif
