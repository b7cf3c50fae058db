/*
 * repr.h - the JSON representations the admin API returns and audits (repr.c), shared by the
 * resource files. None of them holds a secret: a key's secret appears only in the body of the
 * answer that created it, built by keys_api.c itself and never audited.
 */
#ifndef TG_ADMIN_REPR_H
#define TG_ADMIN_REPR_H

#include <jansson.h>
#include <stdint.h>

#include "api.h"
#include "manage.h"

/** RFC 3339 UTC with milliseconds, or null for 0. */
json_t *tg_repr_time(int64_t unix_ms);
/** {id, name, status, zero_retention, created_at, updated_at} */
json_t *tg_repr_tenant(const tg_tenant_t *t);
/** {id, tenant_id, prefix, label, created_at, expires_at, revoked_at, last_used_at, rotated_from,
 *  allowed_models, status}: never the secret or its hash. */
json_t *tg_repr_key(const tg_key_row_t *k);
/** A '\n'-terminated list (auth.h's form) as an array of strings. */
json_t *tg_repr_models(const char *list);

/** Locks the tenant's row in the caller's transaction: 0, TG_ENOT_FOUND, or a database error. */
int tg_adm_lock_tenant(PGconn *db, int64_t tenant_id, tg_mgmt_err_t *err);

#endif
