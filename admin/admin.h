/*
 * admin.h - the admin REST API served under /admin/ on the admin listener.
 *
 * server.c hands every /admin/... request to tg_admin_route (main.c wires it with
 * tg_server_set_admin_router, so the gateway library does not depend on admin/). Every route needs
 * a bearer token (authn.h); the framework the resources are written against is api.h.
 */
#ifndef TG_ADMIN_H
#define TG_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "h2o.h"

/** Routes one /admin/ request. Returns 0 when answered (or taken over), -1 for "no such route". */
int tg_admin_route(h2o_req_t *req);

/* ---- route tables (one per resource file; router.c lists them) ---- */

extern const tg_adm_route_t tg_adm_routes_breakers[];      /* breakers.c */
extern const tg_adm_route_t tg_adm_routes_events[];        /* events.c */
extern const tg_adm_route_t tg_adm_routes_tenants[];       /* tenants_api.c */
extern const tg_adm_route_t tg_adm_routes_keys[];          /* keys_api.c */
extern const tg_adm_route_t tg_adm_routes_provider_keys[]; /* provider_keys_api.c */
extern const tg_adm_route_t tg_adm_routes_policy[];        /* policy_api.c */
extern const tg_adm_route_t tg_adm_routes_audit[];         /* audit.c */
extern const tg_adm_route_t tg_adm_routes_openapi[];       /* openapi.c */
/* money and catalog (admin/README.md, "Money and catalog") */
extern const tg_adm_route_t tg_adm_routes_wallet[];  /* wallet_api.c */
extern const tg_adm_route_t tg_adm_routes_usage[];   /* usage_api.c */
extern const tg_adm_route_t tg_adm_routes_catalog[]; /* catalog_api.c */
extern const tg_adm_route_t tg_adm_routes_chains[];  /* chains_api.c */
/** Keeps the first error of each field: a resource's own checks after tg_adm_check may name a
 *  field again (chains_api.c). */
void tg_adm_dedupe_fields(tg_mgmt_err_t *err);

/** POST /admin/v1/breakers/{target}/reset (operator); `target` is already URL-decoded (breakers.c). */
void tg_admin_breaker_reset(tg_adm_ctx_t *c, const char *target);

/* ---- pure parsers of events.c, exposed for unit tests ---- */

/** "since": RFC 3339 (2024-05-01T12:00:00Z, fractions and offsets allowed) or unix milliseconds. */
int tg_admin_parse_since(const char *s, int64_t *unix_ms);
/** Opaque keyset cursor: base64url of "<at unix µs>.<id>". */
int tg_admin_cursor_encode(int64_t at_us, int64_t id, char *out, size_t cap);
int tg_admin_cursor_decode(const char *s, int64_t *at_us, int64_t *id);

#endif
