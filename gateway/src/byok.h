/*
 * byok.h - sealing a tenant's own provider key (BYOK) under the master keyring, and opening it.
 *
 * Pure functions over bytes and a keyring (core/keyring.h): no I/O, no database, tested alone
 * (unit.byok). The gateway opens a blob per attempt (credential.c); `tollgate byok set` and
 * `tollgate rotate-master-key` seal (admin/credentials.c).
 *
 * Format (one row of provider_credentials, migrations/0003_tenants.sql):
 *   master_key_id  the id of the master key that sealed it (keyring.h)
 *   nonce          24 random bytes (XChaCha20's nonce is large enough to draw at random)
 *   sealed         crypto_aead_xchacha20poly1305_ietf_encrypt(key) : ciphertext || 16-byte tag
 * with the associated data "tollgate-byok:v1:<tenant_id>:<provider>:<master_key_id>", so a blob
 * copied to another tenant's row, another provider's row, or relabelled with another master key
 * id does not open. The plaintext never touches the database.
 *
 * A plaintext key lives only in a tg_secret_t: sodium_malloc'd (guard pages, not swapped when the
 * system allows), wiped and freed by tg_secret_free.
 */
#ifndef TG_BYOK_H
#define TG_BYOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "keyring.h"

#define TG_BYOK_NONCE_LEN    24
#define TG_BYOK_TAG_LEN      16
#define TG_BYOK_KEY_MAX      4096 /* longest provider key accepted (sealed: + 16, as the schema bounds) */
#define TG_BYOK_SEALED_MAX   (TG_BYOK_KEY_MAX + TG_BYOK_TAG_LEN)
#define TG_BYOK_PROVIDER_MAX 64

/** A plaintext secret in guarded memory: len bytes at s, then a NUL. */
typedef struct tg_secret {
    size_t len;
    char s[];
} tg_secret_t;

/** A sealed key as stored (the bytes only: no plaintext). */
typedef struct tg_sealed {
    char key_id[TG_KEYRING_ID_MAX + 1];
    uint8_t nonce[TG_BYOK_NONCE_LEN];
    size_t len;
    uint8_t sealed[TG_BYOK_SEALED_MAX];
} tg_sealed_t;

/** A new secret holding a copy of p[0..len) (sodium_malloc'd); NULL when out of memory. */
tg_secret_t *tg_secret_new(const char *p, size_t len);
/** Wipes and frees. NULL-safe. */
void tg_secret_free(tg_secret_t *s);

/**
 * Seals key[0..len) for (tenant_id, provider) under the keyring's active master key.
 * Returns 0, TG_ECONFIG (no master key configured), TG_EINVALID_REQUEST (an empty key, one over
 * TG_BYOK_KEY_MAX, a provider name the schema refuses).
 */
TG_MUST_CHECK int tg_byok_seal(const tg_keyring_t *kr, int64_t tenant_id, const char *provider,
                               const char *key, size_t len, tg_sealed_t *out);
/**
 * Opens a blob stored for (tenant_id, provider) into a new secret (*out). Returns 0,
 * TG_ENOT_FOUND (no master key with the blob's id: a key retired too early),
 * TG_EFORBIDDEN (it does not open: another tenant's or provider's blob, or tampered with), or
 * TG_ENOMEM. Nothing of the key is left anywhere on failure.
 */
TG_MUST_CHECK int tg_byok_open(const tg_keyring_t *kr, int64_t tenant_id, const char *provider,
                               const tg_sealed_t *blob, tg_secret_t **out);
/** Opens under the blob's master key and seals again under the active one (rotation). Returns as
 *  tg_byok_open; `out` may be `blob`. */
TG_MUST_CHECK int tg_byok_reseal(const tg_keyring_t *kr, int64_t tenant_id, const char *provider,
                                 const tg_sealed_t *blob, tg_sealed_t *out);
/** What may be shown of a key: its last four characters when it has at least 16 (printable ASCII
 *  only), else "". */
void tg_byok_last4(const char *key, size_t len, char out[5]);
/** Whether a provider name fits provider_credentials.provider ([A-Za-z0-9_.-], 1 to 64). */
bool tg_byok_provider_ok(const char *provider);

#endif
