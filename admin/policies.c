/*
 * policies.c - set a tenant's policy or one key's override (manage.h).
 *
 * The policies table holds one row per tenant (key_id NULL) and at most one per key. A NULL
 * column inherits: a key's row from its tenant's row, the tenant's row from "no limit". Each
 * field of an update is kept, set, or cleared back to NULL ("inherit"); one statement applies
 * them all (a CASE per column, so the SQL is fixed and every value is a parameter). Zero retention
 * is the tenant's own column (tenants.zero_retention). The rule that reads them, the effective
 * policy, is in the key lookup of gateway/src/auth.c and docs/CONVENTIONS.md.
 */
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "manage_db.h"

static const char *op_name(tg_field_op_t op)
{
    return op == TG_FIELD_SET ? "set" : op == TG_FIELD_CLEAR ? "clear" : "keep";
}

static bool any_change(const tg_policy_update_t *u)
{
    return u->models_op != TG_FIELD_KEEP || u->max_tokens.op != TG_FIELD_KEEP || u->rpm.op != TG_FIELD_KEEP ||
           u->tpm.op != TG_FIELD_KEEP || u->key_rpm.op != TG_FIELD_KEEP || u->key_tpm.op != TG_FIELD_KEEP ||
           u->byok_fallback.op != TG_FIELD_KEEP || u->zero_retention.op != TG_FIELD_KEEP;
}

/* The row's columns, in policy_of_row's order, read with the tenant's zero_retention. */
#define POLICY_SELECT                                                                                       \
    "SELECT p.tenant_id, p.key_id, array_to_string(p.allowed_models, E'\\n'), p.max_tokens, p.rpm, p.tpm, " \
    "p.key_rpm, p.key_tpm, p.byok_fallback, t.zero_retention FROM policies p JOIN tenants t ON t.id = "     \
    "p.tenant_id WHERE p.tenant_id = $1::bigint AND p.key_id IS NOT DISTINCT FROM $2::bigint"

static void policy_of_row(const PGresult *r, tg_policy_row_t *p)
{
    memset(p, 0, sizeof(*p));
    p->tenant_id = tg_mgmt_col_i64(r, 0, 0);
    p->key_id = tg_mgmt_col_i64(r, 0, 1);
    tg_mgmt_col_list(r, 0, 2, &p->has_models, p->models, sizeof(p->models));
    p->max_tokens = tg_mgmt_col_i64(r, 0, 3);
    p->rpm = tg_mgmt_col_i64(r, 0, 4);
    p->tpm = tg_mgmt_col_i64(r, 0, 5);
    p->key_rpm = tg_mgmt_col_i64(r, 0, 6);
    p->key_tpm = tg_mgmt_col_i64(r, 0, 7);
    p->byok_fallback = PQgetisnull(r, 0, 8) ? -1 : tg_mgmt_col_bool(r, 0, 8);
    p->zero_retention = tg_mgmt_col_bool(r, 0, 9);
}

/* A numeric field's op and value parameters. */
static void num_params(const tg_num_field_t *f, char buf[TG_MGMT_I64_STR], const char **op, const char **v)
{
    snprintf(buf, TG_MGMT_I64_STR, "%lld", (long long)f->value);
    *op = op_name(f->op);
    *v = f->op == TG_FIELD_SET ? buf : NULL;
}

int tg_policy_set(PGconn *db, const tg_config_t *catalog, const tg_policy_update_t *u, tg_policy_row_t *out,
                  tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    bool ok = tg_mgmt_check_policy(catalog, u, err);
    if (!any_change(u)) {
        tg_mgmt_field(err, "policy", "names no field to set or clear");
        ok = false;
    }
    char models[TG_POLICY_MODELS_MAX * 2 + 64];
    if (ok && u->models_op == TG_FIELD_SET && !tg_mgmt_models_literal(&u->models, models, sizeof(models))) {
        tg_mgmt_field(err, "models", "too long");
        ok = false;
    }
    if (!ok)
        return err->code;

    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    int64_t tenant_id = 0;
    if ((rc = tg_mgmt_tenant_id(db, u->tenant, true, &tenant_id, err)) != 0)
        goto fail;
    char tid[TG_MGMT_I64_STR], kid[TG_MGMT_I64_STR];
    snprintf(tid, sizeof(tid), "%lld", (long long)tenant_id);
    snprintf(kid, sizeof(kid), "%lld", (long long)u->key_id);
    const char *key_param = u->key_id > 0 ? kid : NULL;
    PGresult *r;
    if (u->key_id > 0) {
        const char *p[2] = {kid, tid};
        r = tg_mgmt_exec(db, "SELECT 1 FROM api_keys WHERE id = $1::bigint AND tenant_id = $2::bigint", 2, p,
                         "find the key", &rc, err);
        if (r == NULL)
            goto fail;
        bool found = PQntuples(r) == 1;
        PQclear(r);
        if (!found) {
            rc =
                tg_mgmt_fail(err, TG_ENOT_FOUND, "no key with id %lld for this tenant", (long long)u->key_id);
            goto fail;
        }
    }

    const char *pi[2] = {tid, key_param};
    r = tg_mgmt_exec(db,
                     "INSERT INTO policies (tenant_id, key_id) VALUES ($1::bigint, $2::bigint) "
                     "ON CONFLICT (tenant_id, key_id) DO NOTHING",
                     2, pi, "create the policy row", &rc, err);
    if (r == NULL)
        goto fail;
    PQclear(r);

    char b_mt[TG_MGMT_I64_STR], b_rpm[TG_MGMT_I64_STR], b_tpm[TG_MGMT_I64_STR], b_krpm[TG_MGMT_I64_STR],
        b_ktpm[TG_MGMT_I64_STR];
    const char *p[16] = {tid, key_param, op_name(u->models_op), u->models_op == TG_FIELD_SET ? models : NULL};
    num_params(&u->max_tokens, b_mt, &p[4], &p[5]);
    num_params(&u->rpm, b_rpm, &p[6], &p[7]);
    num_params(&u->tpm, b_tpm, &p[8], &p[9]);
    num_params(&u->key_rpm, b_krpm, &p[10], &p[11]);
    num_params(&u->key_tpm, b_ktpm, &p[12], &p[13]);
    p[14] = op_name(u->byok_fallback.op);
    p[15] = u->byok_fallback.value ? "true" : "false";
    r = tg_mgmt_exec(
        db,
        "UPDATE policies SET "
        "allowed_models = CASE $3 WHEN 'set' THEN $4::text[] WHEN 'clear' THEN NULL ELSE allowed_models END, "
        "max_tokens = CASE $5 WHEN 'set' THEN $6::integer WHEN 'clear' THEN NULL ELSE max_tokens END, "
        "rpm = CASE $7 WHEN 'set' THEN $8::integer WHEN 'clear' THEN NULL ELSE rpm END, "
        "tpm = CASE $9 WHEN 'set' THEN $10::bigint WHEN 'clear' THEN NULL ELSE tpm END, "
        "key_rpm = CASE $11 WHEN 'set' THEN $12::integer WHEN 'clear' THEN NULL ELSE key_rpm END, "
        "key_tpm = CASE $13 WHEN 'set' THEN $14::bigint WHEN 'clear' THEN NULL ELSE key_tpm END, "
        "byok_fallback = CASE $15 WHEN 'set' THEN $16::boolean WHEN 'clear' THEN NULL ELSE byok_fallback "
        "END, "
        "updated_at = now() WHERE tenant_id = $1::bigint AND key_id IS NOT DISTINCT FROM $2::bigint",
        16, p, "update the policy", &rc, err);
    if (r == NULL)
        goto fail;
    PQclear(r);

    if (u->zero_retention.op != TG_FIELD_KEEP) {
        const char *pz[2] = {tid, u->zero_retention.op == TG_FIELD_SET && u->zero_retention.value ? "true"
                                                                                                  : "false"};
        r = tg_mgmt_exec(
            db, "UPDATE tenants SET zero_retention = $2::boolean, updated_at = now() WHERE id = $1::bigint",
            2, pz, "set the tenant's zero retention", &rc, err);
        if (r == NULL)
            goto fail;
        PQclear(r);
    }

    r = tg_mgmt_exec(db, POLICY_SELECT, 2, pi, "read the policy", &rc, err);
    if (r == NULL)
        goto fail;
    if (PQntuples(r) == 1 && out != NULL)
        policy_of_row(r, out);
    PQclear(r);
    return tg_mgmt_commit(db, err);
fail:
    tg_mgmt_rollback(db);
    return rc;
}
