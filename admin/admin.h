/*
 * admin.h - the admin REST API served under /admin/ on the admin listener.
 *
 * server.c hands every /admin/... request to tg_admin_route (main.c wires it with
 * tg_server_set_admin_router, so the gateway library does not depend on admin/). The admin listener
 * binds to loopback only until admin authentication (JWT) exists.
 */
#ifndef TG_ADMIN_H
#define TG_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "h2o.h"

/** Routes one /admin/ request. Returns 0 when answered (or taken over), -1 for "no such route". */
int tg_admin_route(h2o_req_t *req);

/* ---- handlers (one file per concern) ---- */

/** GET /admin/v1/breakers -> {"data":[breaker, ...]} (breakers.c) */
void tg_admin_breakers_list(h2o_req_t *req);
/** POST /admin/v1/breakers/{target}/reset; `target` is already URL-decoded (breakers.c). */
void tg_admin_breaker_reset(h2o_req_t *req, const char *target);
/** GET /admin/v1/failover-events?since=&tenant=&limit=&cursor= (events.c) */
void tg_admin_events_list(h2o_req_t *req);
/** GET /admin/v1/openapi.json: admin/openapi.json, embedded at build time (openapi.c). */
void tg_admin_openapi(h2o_req_t *req);

/* ---- pure parsers of events.c, exposed for unit tests ---- */

/** "since": RFC 3339 (2024-05-01T12:00:00Z, fractions and offsets allowed) or unix milliseconds. */
int tg_admin_parse_since(const char *s, int64_t *unix_ms);
/** Opaque keyset cursor: base64url of "<at unix µs>.<id>". */
int tg_admin_cursor_encode(int64_t at_us, int64_t id, char *out, size_t cap);
int tg_admin_cursor_decode(const char *s, int64_t *at_us, int64_t *id);

#endif
