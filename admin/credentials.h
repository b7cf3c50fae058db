/*
 * credentials.h - managing tenants' own provider keys (BYOK): set, delete, list, and re-seal every
 * key under the active master key (rotation).
 *
 * The functions the admin API will call; until it exists, `tollgate byok` and
 * `tollgate rotate-master-key` (gateway/src/cli_byok.c) do. They use a blocking libpq connection
 * and must never run on a worker's loop. A key is sealed with gateway/src/byok.h before it leaves
 * the process: the database sees the master key id, the nonce, the sealed bytes and at most the
 * key's last four characters, never the key. Every change fires the provider_credentials trigger
 * (migrations/0003_tenants.sql), whose NOTIFY makes every gateway drop what it cached.
 */
#ifndef TG_ADMIN_CREDENTIALS_H
#define TG_ADMIN_CREDENTIALS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "keyring.h"

/**
 * Seals key[0..len) for (tenant, provider) under the active master key and stores it, replacing
 * the tenant's key for that provider if there was one. `provider` is a provider name of the config.
 * Returns 0, TG_ENOT_FOUND (no such tenant), TG_ECONFIG (no master key), TG_EINVALID_REQUEST
 * (an empty or oversized key, a bad provider name), TG_EDB_UNAVAILABLE. err->detail says why,
 * never with the key.
 */
TG_MUST_CHECK int tg_cred_set(PGconn *db, const tg_keyring_t *kr, const char *tenant, const char *provider,
                              const char *key, size_t len, tg_error_t *err);
/** Deletes the tenant's key for provider. 0, TG_ENOT_FOUND (no such tenant or key), TG_EDB_UNAVAILABLE. */
TG_MUST_CHECK int tg_cred_delete(PGconn *db, const char *tenant, const char *provider, tg_error_t *err);
/** Metadata of the stored keys (of one tenant, or all when tenant is NULL), never a key or a blob:
 *  *out = [{"tenant","tenant_id","provider","master_key_id","last4","created_at","updated_at"}]. */
TG_MUST_CHECK int tg_cred_list(PGconn *db, const char *tenant, json_t **out, tg_error_t *err);

typedef struct tg_cred_rotation {
    uint64_t resealed;  /* opened under an older master key and sealed again under the active one */
    uint64_t current;   /* already under the active key when its turn came (another run was faster) */
    uint64_t failed;    /* did not open (its master key is not in the keyring, or it was tampered with) */
    uint64_t remaining; /* rows not under the active key after the run (failed ones included) */
} tg_cred_rotation_t;

/**
 * Re-seals every stored key that is not under the keyring's active master key, `batch` rows per
 * read (walked in primary-key order), each row in its own short transaction that locks it
 * (SELECT ... FOR UPDATE), so gateways keep reading and serving throughout. Idempotent and
 * resumable: a second run finds nothing to do; an interrupted one is finished by the next.
 * `progress` (may be NULL) is called after each batch. Returns 0 when the walk finished (failed
 * rows are counted, not fatal), or TG_ECONFIG / TG_EDB_UNAVAILABLE.
 */
TG_MUST_CHECK int tg_cred_rotate(PGconn *db, const tg_keyring_t *kr, size_t batch, tg_cred_rotation_t *counts,
                                 void (*progress)(void *ud, const tg_cred_rotation_t *c), void *ud,
                                 tg_error_t *err);

#endif
