/*
 * authn.h - who is calling the admin API: the bearer token of a request, verified (token.h) against
 * the current config snapshot.
 */
#ifndef TG_ADMIN_AUTHN_H
#define TG_ADMIN_AUTHN_H

#include "api.h"

/**
 * Reads `Authorization: Bearer <token>` and verifies it. 0 with *who filled, or -1 after answering
 * 401 unauthenticated (with WWW-Authenticate: Bearer): no header, another scheme, a token that
 * does not verify, or admin_auth not configured (then no token can verify: the admin API is shut).
 */
int tg_adm_authenticate(h2o_req_t *req, tg_adm_principal_t *who);

/**
 * /metrics on the admin listener: open while the listener is on loopback; beyond loopback (which
 * admin_auth allows) it needs an operator or auditor token. 0 to serve it, -1 when answered.
 */
int tg_admin_metrics_guard(h2o_req_t *req);

#endif
