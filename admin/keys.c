/*
 * keys.c - the key lifecycle: create, revoke, rotate, list (manage.h).
 *
 * A key keeps today's format and hashing (gateway/src/auth.c): "tg_" + 43 base64url characters,
 * stored as its BLAKE2b hash keyed with the pepper plus a 10-character display prefix. The key
 * itself exists only in the caller's tg_key_secret_t and in this function's stack, wiped before
 * return; the hash travels to PostgreSQL as a parameter and is never part of an error.
 *
 * Rotation creates the successor (same tenant, label, expiry, allowed models and per-key policy
 * row; rotated_from = the old id) and shortens the old key's expires_at to now + grace, in one
 * transaction: both work during the grace, then the old one answers 401 key_expired.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "err.h"
#include "manage_db.h"

/* The columns every key query returns, in key_of_row's order: never the hash. */
#define KEY_COLS                                                                                         \
    "id, tenant_id, prefix, name, (extract(epoch FROM created_at) * 1000)::bigint, "                     \
    "(extract(epoch FROM expires_at) * 1000)::bigint, (extract(epoch FROM revoked_at) * 1000)::bigint, " \
    "(extract(epoch FROM last_used_at) * 1000)::bigint, rotated_from, array_to_string(allowed_models, "  \
    "E'\\n')"

static void key_of_row(const PGresult *r, int row, tg_key_row_t *k)
{
    memset(k, 0, sizeof(*k));
    k->id = tg_mgmt_col_i64(r, row, 0);
    k->tenant_id = tg_mgmt_col_i64(r, row, 1);
    tg_mgmt_col_text(r, row, 2, k->prefix, sizeof(k->prefix));
    tg_mgmt_col_text(r, row, 3, k->label, sizeof(k->label));
    k->created_ms = tg_mgmt_col_i64(r, row, 4);
    k->expires_ms = tg_mgmt_col_i64(r, row, 5);
    k->revoked_ms = tg_mgmt_col_i64(r, row, 6);
    k->last_used_ms = tg_mgmt_col_i64(r, row, 7);
    k->rotated_from = tg_mgmt_col_i64(r, row, 8);
    tg_mgmt_col_list(r, row, 9, &k->has_models, k->models, sizeof(k->models));
}

void tg_key_secret_wipe(tg_key_secret_t *s)
{
    sodium_memzero(s, sizeof(*s));
}

/* A fresh key in out->key and its prefix; the hash's hex (the INSERT's parameter) in hex. */
static void new_secret(const uint8_t pepper[32], tg_key_secret_t *out, char hex[65])
{
    uint8_t hash[32];
    tg_api_key_generate(out->key);
    tg_api_key_hash(hash, out->key, TG_API_KEY_LEN, pepper);
    tg_api_key_prefix(out->prefix, out->key);
    sodium_bin2hex(hex, 65, hash, sizeof(hash));
    sodium_memzero(hash, sizeof(hash));
}

/* The tenant of a new key: found, or (create_tenant) created by name in the same transaction. */
static int key_tenant(PGconn *db, const tg_key_new_t *in, int64_t *id, tg_mgmt_err_t *err)
{
    if (!in->create_tenant || in->tenant.id > 0)
        return tg_mgmt_tenant_id(db, in->tenant, false, id, err);
    const char *p[1] = {in->tenant.name};
    int rc;
    PGresult *r =
        tg_mgmt_exec(db,
                     "WITH ins AS (INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING "
                     "RETURNING id) SELECT id FROM ins UNION ALL SELECT id FROM tenants WHERE name = $1",
                     1, p, "create the tenant", &rc, err);
    if (r == NULL)
        return rc;
    if (PQntuples(r) < 1) {
        PQclear(r);
        return tg_mgmt_fail(err, TG_EINTERNAL, "create the tenant: no row");
    }
    *id = tg_mgmt_col_i64(r, 0, 0);
    PQclear(r);
    /* a tenant created here gets its wallet like any other (once: a second call grants nothing) */
    return tg_mgmt_wallet_open(db, *id, in->trial_credits, err);
}

int tg_key_create(PGconn *db, const uint8_t pepper[32], const tg_config_t *catalog, const tg_key_new_t *in,
                  tg_key_secret_t *out, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    memset(out, 0, sizeof(*out));
    if (!tg_mgmt_check_key_new(catalog, in, tg_unix_now_ms(), err))
        return err->code;
    char models[TG_POLICY_MODELS_MAX * 2 + 64];
    if (in->models.set && !tg_mgmt_models_literal(&in->models, models, sizeof(models))) {
        tg_mgmt_field(err, "models", "too long");
        return err->code;
    }
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    int64_t tenant_id = 0;
    rc = key_tenant(db, in, &tenant_id, err);
    if (rc != 0) {
        tg_mgmt_rollback(db);
        return rc;
    }
    char hex[65], tid[TG_MGMT_I64_STR], exp[TG_MGMT_I64_STR];
    new_secret(pepper, out, hex);
    snprintf(tid, sizeof(tid), "%lld", (long long)tenant_id);
    snprintf(exp, sizeof(exp), "%lld", (long long)in->expires_unix_ms);
    const char *p[6] = {tid,
                        hex,
                        out->prefix,
                        in->label,
                        in->expires_unix_ms != 0 ? exp : NULL,
                        in->models.set ? models : NULL};
    PGresult *r =
        tg_mgmt_exec(db,
                     "INSERT INTO api_keys (tenant_id, key_hash, prefix, name, expires_at, allowed_models) "
                     "VALUES ($1::bigint, decode($2, 'hex'), $3, $4, to_timestamp($5::bigint / 1000.0), "
                     "$6::text[]) RETURNING id, (extract(epoch FROM expires_at) * 1000)::bigint",
                     6, p, "create the key", &rc, err);
    sodium_memzero(hex, sizeof(hex));
    if (r == NULL) {
        tg_mgmt_rollback(db);
        tg_key_secret_wipe(out);
        return rc;
    }
    out->id = tg_mgmt_col_i64(r, 0, 0);
    out->expires_ms = tg_mgmt_col_i64(r, 0, 1);
    out->tenant_id = tenant_id;
    PQclear(r);
    rc = tg_mgmt_commit(db, err);
    if (rc != 0)
        tg_key_secret_wipe(out);
    return rc;
}

/* The key's tenant condition: "" (any) or the resolved id of t. */
static int key_scope(PGconn *db, tg_tenant_ref_t t, char tid[TG_MGMT_I64_STR], tg_mgmt_err_t *err)
{
    tid[0] = '\0';
    if (t.id <= 0 && t.name == NULL)
        return 0;
    int64_t id = 0;
    int rc = tg_mgmt_tenant_id(db, t, false, &id, err);
    if (rc == 0)
        snprintf(tid, TG_MGMT_I64_STR, "%lld", (long long)id);
    return rc;
}

static bool check_key_args(tg_tenant_ref_t t, int64_t key_id, tg_mgmt_err_t *err)
{
    bool ok = true;
    if (key_id <= 0) {
        tg_mgmt_field(err, "key_id", "must be a key id");
        ok = false;
    }
    if (t.id > 0 || t.name != NULL)
        ok &= tg_mgmt_check_ref(t, err);
    return ok;
}

/* Reads the key (of tenant tid when not empty), locked for the transaction. */
static int read_key(PGconn *db, int64_t key_id, const char *tid, tg_key_row_t *k, tg_mgmt_err_t *err)
{
    char kid[TG_MGMT_I64_STR];
    snprintf(kid, sizeof(kid), "%lld", (long long)key_id);
    const char *p[2] = {kid, tid[0] != '\0' ? tid : NULL};
    int rc;
    PGresult *r = tg_mgmt_exec(db,
                               "SELECT " KEY_COLS " FROM api_keys WHERE id = $1::bigint "
                               "AND ($2::bigint IS NULL OR tenant_id = $2::bigint) FOR UPDATE",
                               2, p, "read the key", &rc, err);
    if (r == NULL)
        return rc;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return tg_mgmt_fail(err, TG_ENOT_FOUND, "no key with id %lld%s", (long long)key_id,
                            tid[0] != '\0' ? " for this tenant" : "");
    }
    key_of_row(r, 0, k);
    PQclear(r);
    return 0;
}

int tg_key_revoke(PGconn *db, tg_tenant_ref_t t, int64_t key_id, tg_key_row_t *out, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    if (!check_key_args(t, key_id, err))
        return err->code;
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    char tid[TG_MGMT_I64_STR];
    tg_key_row_t k;
    if ((rc = key_scope(db, t, tid, err)) != 0 || (rc = read_key(db, key_id, tid, &k, err)) != 0) {
        tg_mgmt_rollback(db);
        return rc;
    }
    if (k.revoked_ms == 0) {
        char kid[TG_MGMT_I64_STR];
        snprintf(kid, sizeof(kid), "%lld", (long long)key_id);
        const char *p[1] = {kid};
        PGresult *r = tg_mgmt_exec(db,
                                   "UPDATE api_keys SET revoked_at = now() WHERE id = $1::bigint "
                                   "RETURNING (extract(epoch FROM revoked_at) * 1000)::bigint",
                                   1, p, "revoke the key", &rc, err);
        if (r == NULL) {
            tg_mgmt_rollback(db);
            return rc;
        }
        k.revoked_ms = tg_mgmt_col_i64(r, 0, 0);
        PQclear(r);
    }
    rc = tg_mgmt_commit(db, err);
    if (rc == 0 && out != NULL)
        *out = k;
    return rc;
}

int tg_key_rotate(PGconn *db, const uint8_t pepper[32], tg_tenant_ref_t t, int64_t key_id, int64_t grace_ms,
                  tg_key_secret_t *out, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    memset(out, 0, sizeof(*out));
    bool ok = check_key_args(t, key_id, err);
    if (grace_ms < 0)
        grace_ms = TG_MGMT_GRACE_DEFAULT_MS;
    if (grace_ms > TG_MGMT_GRACE_MAX_MS) {
        tg_mgmt_field(err, "grace", "must be at most 30 days");
        ok = false;
    }
    if (!ok)
        return err->code;
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    char tid[TG_MGMT_I64_STR];
    tg_key_row_t k;
    if ((rc = key_scope(db, t, tid, err)) != 0 || (rc = read_key(db, key_id, tid, &k, err)) != 0) {
        tg_mgmt_rollback(db);
        return rc;
    }
    if (k.revoked_ms != 0 || (k.expires_ms != 0 && k.expires_ms <= tg_unix_now_ms())) {
        tg_mgmt_rollback(db);
        tg_mgmt_field(err, "key_id", "key %lld is %s: create a new key instead", (long long)key_id,
                      k.revoked_ms != 0 ? "revoked" : "expired");
        return err->code;
    }
    char hex[65], kid[TG_MGMT_I64_STR], grace[TG_MGMT_I64_STR];
    snprintf(kid, sizeof(kid), "%lld", (long long)key_id);
    snprintf(grace, sizeof(grace), "%lld", (long long)grace_ms);
    new_secret(pepper, out, hex);
    const char *pn[3] = {kid, hex, out->prefix};
    PGresult *r = tg_mgmt_exec(
        db,
        "INSERT INTO api_keys (tenant_id, key_hash, prefix, name, expires_at, allowed_models, rotated_from) "
        "SELECT tenant_id, decode($2, 'hex'), $3, name, expires_at, allowed_models, id FROM api_keys "
        "WHERE id = $1::bigint RETURNING id, tenant_id, (extract(epoch FROM expires_at) * 1000)::bigint",
        3, pn, "create the new key", &rc, err);
    sodium_memzero(hex, sizeof(hex));
    if (r == NULL)
        goto fail;
    out->id = tg_mgmt_col_i64(r, 0, 0);
    out->tenant_id = tg_mgmt_col_i64(r, 0, 1);
    out->expires_ms = tg_mgmt_col_i64(r, 0, 2);
    out->rotated_from = key_id;
    PQclear(r);

    char nid[TG_MGMT_I64_STR];
    snprintf(nid, sizeof(nid), "%lld", (long long)out->id);
    const char *pp[2] = {kid, nid};
    r = tg_mgmt_exec(
        db,
        "INSERT INTO policies (tenant_id, key_id, allowed_models, max_tokens, rpm, tpm, key_rpm, "
        "key_tpm, byok_fallback) SELECT tenant_id, $2::bigint, allowed_models, max_tokens, rpm, "
        "tpm, key_rpm, key_tpm, byok_fallback FROM policies WHERE key_id = $1::bigint",
        2, pp, "copy the key's policy", &rc, err);
    if (r == NULL)
        goto fail;
    PQclear(r);

    const char *pg[2] = {kid, grace};
    r = tg_mgmt_exec(db,
                     "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, 'infinity'::timestamptz), "
                     "now() + $2::bigint * interval '1 millisecond') WHERE id = $1::bigint "
                     "RETURNING (extract(epoch FROM expires_at) * 1000)::bigint",
                     2, pg, "set the old key's grace", &rc, err);
    if (r == NULL)
        goto fail;
    out->old_expires_ms = tg_mgmt_col_i64(r, 0, 0);
    PQclear(r);
    rc = tg_mgmt_commit(db, err);
    if (rc != 0)
        tg_key_secret_wipe(out);
    return rc;
fail:
    tg_mgmt_rollback(db);
    tg_key_secret_wipe(out);
    return rc;
}

int tg_key_list(PGconn *db, tg_tenant_ref_t t, bool include_revoked, int64_t after_id, size_t limit,
                tg_key_page_t *out, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    memset(out, 0, sizeof(*out));
    tg_mgmt_check_ref(t, err);
    tg_mgmt_page_t pg;
    tg_mgmt_page_init(&pg, after_id, limit, "a key id", err);
    if (err->code != 0)
        return err->code;
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    int64_t tenant_id = 0;
    if ((rc = tg_mgmt_tenant_id(db, t, false, &tenant_id, err)) != 0) {
        tg_mgmt_rollback(db);
        return rc;
    }
    char tid[TG_MGMT_I64_STR];
    snprintf(tid, sizeof(tid), "%lld", (long long)tenant_id);
    const char *p[4] = {tid, pg.after, pg.fetch, include_revoked ? "true" : "false"};
    PGresult *r =
        tg_mgmt_exec(db,
                     "SELECT " KEY_COLS " FROM api_keys WHERE tenant_id = $1::bigint AND id > $2::bigint "
                     "AND ($4::boolean OR revoked_at IS NULL) ORDER BY id LIMIT $3::int",
                     4, p, "list the keys", &rc, err);
    if (r == NULL) {
        tg_mgmt_rollback(db);
        return rc;
    }
    size_t shown;
    bool more;
    out->rows = tg_mgmt_page_rows(&pg, r, sizeof(*out->rows), &shown, &more);
    if (out->rows == NULL) {
        PQclear(r);
        tg_mgmt_rollback(db);
        return tg_mgmt_fail(err, TG_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < shown; i++)
        key_of_row(r, (int)i, &out->rows[i]);
    out->n = shown;
    out->next_after = more ? out->rows[shown - 1].id : 0;
    PQclear(r);
    rc = tg_mgmt_commit(db, err);
    if (rc != 0)
        tg_key_page_free(out);
    return rc;
}

void tg_key_page_free(tg_key_page_t *p)
{
    free(p->rows);
    memset(p, 0, sizeof(*p));
}
