/*
 * token.h - the admin API's bearer tokens: verification (every request) and minting (`tollgate
 * token`). Pure functions of the config's admin_auth block and a clock, for unit tests.
 *
 * libjwt 1.10 trusts the algorithm a token names and checks no claim, so both are done here:
 * each configured key is pinned to its algorithm (the HS256 secret verifies HS256 only, the ES256
 * public key ES256 only: an HS256 token whose HMAC key is the ES256 public key, `alg: none`, or a
 * forged signature never verifies), and exp (required), nbf, iss and aud are checked with the
 * configured clock skew. The claims: `sub` (the actor, 1..128 printable bytes), `role`
 * (operator, tenant_admin, auditor) and, for tenant_admin, `tenant` (a tenant id).
 */
#ifndef TG_ADMIN_JWT_H
#define TG_ADMIN_JWT_H

#include <stddef.h>
#include <stdint.h>

#include "api.h"
#include "config.h"

#define TG_JWT_MAX_LEN 4096 /* bytes of a token: a longer one is refused before decoding */

/**
 * Verifies `token` against cfg->admin_auth at time now_s (unix seconds). 0 and *out filled, or
 * TG_EUNAUTHENTICATED with *why a short log-only reason ("alg", "exp", "iss", ...).
 */
int tg_jwt_verify(const tg_config_t *cfg, const char *token, size_t len, int64_t now_s,
                  tg_adm_principal_t *out, const char **why);

/**
 * Mints an HS256 token with iss and aud of the config, sub, role, tenant (tenant_admin; else
 * 0 and left out), iat/nbf now_s and exp now_s + ttl_s. *out is malloc'd (free it).
 * TG_ECONFIG when no HS256 secret is configured, TG_EINVALID_REQUEST for a bad argument.
 */
int tg_jwt_mint(const tg_config_t *cfg, const char *sub, tg_role_t role, int64_t tenant, int64_t ttl_s,
                int64_t now_s, char **out);

#endif
