/*
 * credentials.c - BYOK management over a blocking connection, see credentials.h.
 *
 * Bytes go to PostgreSQL as binary parameters and come back hex-encoded (encode(..., 'hex')),
 * so no escaping is involved. A server error is reported by its primary message only: libpq's
 * detail lines may quote parameter values, and the parameters here include sealed blobs.
 */
#include "credentials.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "byok.h"

#define FIELD_MAX 2 * TG_BYOK_SEALED_MAX + 1

static int db_error(PGconn *db, const PGresult *r, tg_error_t *err, const char *what)
{
    const char *m = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (m == NULL)
        m = PQstatus(db) == CONNECTION_OK ? "unknown error" : "connection lost";
    return tg_error_set(err, TG_EDB_UNAVAILABLE, "%s: %s", what, m);
}

/* Runs a statement without rows; 0 or TG_EDB_UNAVAILABLE. */
static int exec_cmd(PGconn *db, const char *sql, tg_error_t *err)
{
    PGresult *r = PQexec(db, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : db_error(db, r, err, sql);
    PQclear(r);
    return rc;
}

/* The tenant's id by name into out (a decimal string); 0, TG_ENOT_FOUND or TG_EDB_UNAVAILABLE. */
static int tenant_id(PGconn *db, const char *tenant, char out[32], tg_error_t *err)
{
    const char *p[1] = {tenant};
    PGresult *r = PQexecParams(db, "SELECT id FROM tenants WHERE name = $1", 1, NULL, p, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = db_error(db, r, err, "cannot read the tenant");
    else if (PQntuples(r) != 1)
        rc = tg_error_set(err, TG_ENOT_FOUND, "no tenant named \"%.63s\"", tenant);
    else {
        snprintf(out, 32, "%s", PQgetvalue(r, 0, 0));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

/* Stores a sealed blob in the row of (tid, provider): an insert, or an update of the row. */
static int store(PGconn *db, const char *tid, const char *provider, const tg_sealed_t *b, const char *last4,
                 bool upsert, tg_error_t *err)
{
    const char *vals[6] = {tid, provider, b->key_id, (const char *)b->nonce, (const char *)b->sealed, last4};
    int lens[6] = {0, 0, 0, TG_BYOK_NONCE_LEN, (int)b->len, 0};
    int fmts[6] = {0, 0, 0, 1, 1, 0};
    const char *sql =
        upsert
            ? "INSERT INTO provider_credentials (tenant_id, provider, master_key_id, nonce, sealed, last4) "
              "VALUES ($1::bigint, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, provider) DO UPDATE SET "
              "master_key_id = EXCLUDED.master_key_id, nonce = EXCLUDED.nonce, sealed = EXCLUDED.sealed, "
              "last4 = EXCLUDED.last4, updated_at = now()"
            : "UPDATE provider_credentials SET master_key_id = $3, nonce = $4, sealed = $5, updated_at = "
              "now() "
              "WHERE tenant_id = $1::bigint AND provider = $2";
    PGresult *r = PQexecParams(db, sql, upsert ? 6 : 5, NULL, vals, lens, fmts, 0);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : db_error(db, r, err, "cannot store the sealed key");
    PQclear(r);
    return rc;
}

int tg_cred_set(PGconn *db, const tg_keyring_t *kr, const char *tenant, const char *provider, const char *key,
                size_t len, tg_error_t *err)
{
    if (tg_keyring_active(kr) == NULL)
        return tg_error_set(err, TG_ECONFIG, "the config has no master key (secrets.master_keys)");
    if (!tg_byok_provider_ok(provider))
        return tg_error_set(err, TG_EINVALID_REQUEST,
                            "a provider name is 1 to 64 characters of A-Z a-z 0-9 _ . -");
    if (len == 0 || len > TG_BYOK_KEY_MAX)
        return tg_error_set(err, TG_EINVALID_REQUEST, "a provider key is 1 to %d bytes", TG_BYOK_KEY_MAX);
    char tid[32];
    int rc = tenant_id(db, tenant, tid, err);
    if (rc != 0)
        return rc;
    tg_sealed_t *b = malloc(sizeof(*b));
    if (b == NULL)
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    rc = tg_byok_seal(kr, strtoll(tid, NULL, 10), provider, key, len, b);
    if (rc != 0) {
        free(b);
        return tg_error_set(err, rc, "the key could not be sealed");
    }
    char last4[5];
    tg_byok_last4(key, len, last4);
    rc = store(db, tid, provider, b, last4, true, err);
    free(b);
    return rc;
}

int tg_cred_delete(PGconn *db, const char *tenant, const char *provider, tg_error_t *err)
{
    char tid[32];
    int rc = tenant_id(db, tenant, tid, err);
    if (rc != 0)
        return rc;
    const char *p[2] = {tid, provider};
    PGresult *r =
        PQexecParams(db, "DELETE FROM provider_credentials WHERE tenant_id = $1::bigint AND provider = $2", 2,
                     NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = db_error(db, r, err, "cannot delete the key");
    else if (strcmp(PQcmdTuples(r), "0") == 0)
        rc = tg_error_set(err, TG_ENOT_FOUND, "tenant \"%.63s\" has no key for \"%.64s\"", tenant, provider);
    PQclear(r);
    return rc;
}

int tg_cred_list(PGconn *db, const char *tenant, json_t **out, tg_error_t *err)
{
    *out = NULL;
    const char *p[1] = {tenant};
    PGresult *r = PQexecParams(db,
                               "SELECT t.name, c.tenant_id, c.provider, c.master_key_id, c.last4, "
                               "to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                               "to_char(c.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                               "FROM provider_credentials c JOIN tenants t ON t.id = c.tenant_id "
                               "WHERE $1::text IS NULL OR t.name = $1 ORDER BY t.name, c.provider",
                               1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = db_error(db, r, err, "cannot list the keys");
        PQclear(r);
        return rc;
    }
    json_t *a = json_array();
    for (int i = 0; a != NULL && i < PQntuples(r); i++)
        json_array_append_new(a, json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "tenant", PQgetvalue(r, i, 0),
                                           "tenant_id", (json_int_t)strtoll(PQgetvalue(r, i, 1), NULL, 10),
                                           "provider", PQgetvalue(r, i, 2), "master_key_id",
                                           PQgetvalue(r, i, 3), "last4", PQgetvalue(r, i, 4), "created_at",
                                           PQgetvalue(r, i, 5), "updated_at", PQgetvalue(r, i, 6)));
    PQclear(r);
    if (a == NULL)
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    *out = a;
    return 0;
}

/* Decodes a hex column into dst (cap bytes); the decoded length, or -1. */
static long unhex(const char *hex, uint8_t *dst, size_t cap)
{
    size_t n = 0;
    if (sodium_hex2bin(dst, cap, hex, strlen(hex), NULL, &n, NULL) != 0)
        return -1;
    return (long)n;
}

/* One row, in its own transaction with the row locked: 1 resealed, 2 already current, 3 did not
 * open, 0 gone meanwhile, or a negative TG_E*. */
static int rotate_row(PGconn *db, const tg_keyring_t *kr, const char *tid, const char *provider,
                      tg_sealed_t *b, tg_error_t *err)
{
    int rc = exec_cmd(db, "BEGIN", err);
    if (rc != 0)
        return rc;
    const char *p[2] = {tid, provider};
    PGresult *r =
        PQexecParams(db,
                     "SELECT master_key_id, encode(nonce, 'hex'), encode(sealed, 'hex') "
                     "FROM provider_credentials WHERE tenant_id = $1::bigint AND provider = $2 FOR UPDATE",
                     2, NULL, p, NULL, NULL, 0);
    int out = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        out = db_error(db, r, err, "cannot lock the row");
    } else if (PQntuples(r) == 1) {
        const tg_master_key_t *active = tg_keyring_active(kr);
        tg_str_copy(b->key_id, sizeof(b->key_id), PQgetvalue(r, 0, 0));
        long nl = unhex(PQgetvalue(r, 0, 1), b->nonce, sizeof(b->nonce));
        long sl = unhex(PQgetvalue(r, 0, 2), b->sealed, sizeof(b->sealed));
        b->len = sl > 0 ? (size_t)sl : 0;
        if (strcmp(b->key_id, active->id) == 0)
            out = 2;
        else if (nl != TG_BYOK_NONCE_LEN || sl <= 0 ||
                 tg_byok_reseal(kr, strtoll(tid, NULL, 10), provider, b, b) != 0)
            out = 3;
        else
            out = store(db, tid, provider, b, "", false, err) == 0 ? 1 : TG_EDB_UNAVAILABLE;
    }
    PQclear(r);
    if (out < 0) {
        TG_IGNORE_RESULT(exec_cmd(db, "ROLLBACK", err));
        return out;
    }
    rc = exec_cmd(db, "COMMIT", err);
    return rc != 0 ? rc : out;
}

int tg_cred_rotate(PGconn *db, const tg_keyring_t *kr, size_t batch, tg_cred_rotation_t *counts,
                   void (*progress)(void *ud, const tg_cred_rotation_t *c), void *ud, tg_error_t *err)
{
    memset(counts, 0, sizeof(*counts));
    const tg_master_key_t *active = tg_keyring_active(kr);
    if (active == NULL)
        return tg_error_set(err, TG_ECONFIG, "the config has no master key (secrets.master_keys)");
    if (batch == 0)
        batch = 100;
    tg_sealed_t *b = malloc(sizeof(*b));
    if (b == NULL)
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    /* keyset walk over the primary key: rows that fail stay behind the cursor, so every row is
     * visited once per run */
    char last_tid[32] = "0", last_prov[TG_BYOK_PROVIDER_MAX + 1] = "", lim[24];
    snprintf(lim, sizeof(lim), "%zu", batch);
    int rc = 0;
    for (;;) {
        const char *p[4] = {active->id, last_tid, last_prov, lim};
        PGresult *r = PQexecParams(db,
                                   "SELECT tenant_id, provider FROM provider_credentials "
                                   "WHERE master_key_id <> $1 AND (tenant_id, provider) > ($2::bigint, $3) "
                                   "ORDER BY tenant_id, provider LIMIT $4::int",
                                   4, NULL, p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = db_error(db, r, err, "cannot read the keys to rotate");
            PQclear(r);
            break;
        }
        int n = PQntuples(r);
        for (int i = 0; i < n && rc == 0; i++) {
            tg_str_copy(last_tid, sizeof(last_tid), PQgetvalue(r, i, 0));
            tg_str_copy(last_prov, sizeof(last_prov), PQgetvalue(r, i, 1));
            int one = rotate_row(db, kr, last_tid, last_prov, b, err);
            if (one < 0)
                rc = one;
            else if (one == 1)
                counts->resealed++;
            else if (one == 2)
                counts->current++;
            else if (one == 3)
                counts->failed++;
        }
        PQclear(r);
        if (rc == 0 && progress != NULL)
            progress(ud, counts);
        if (rc != 0 || n < (int)batch)
            break;
    }
    sodium_memzero(b, sizeof(*b));
    free(b);
    if (rc != 0)
        return rc;
    const char *p[1] = {active->id};
    PGresult *r = PQexecParams(db, "SELECT count(*) FROM provider_credentials WHERE master_key_id <> $1", 1,
                               NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        counts->remaining = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    else
        rc = db_error(db, r, err, "cannot count the keys left");
    PQclear(r);
    return rc;
}
