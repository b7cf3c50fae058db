/*
 * auth.h - API keys: generation, keyed hashing, and the key cache.
 *
 * A tollgate key is "tg_" + base64url(32 random bytes). Only its BLAKE2b hash
 * keyed with the server's pepper is stored (api_keys.key_hash), plus a short
 * prefix for display. Lookups go through a process-wide sharded cache with a
 * TTL (positive and negative entries); a miss queries PostgreSQL through the
 * worker's async pipelined pool.
 */
#ifndef TG_AUTH_H
#define TG_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "pgpool.h"

#define TG_API_KEY_LEN 46 /* "tg_" + 43 */

/* Allowed model names as one string: each name followed by '\n' ("gpt-4o\nclaude\n"), bounded by
 * the schema (at most 480 bytes of names per list, migrations/0003_tenants.sql). */
#define TG_POLICY_MODELS_MAX 512
/* The providers a tenant holds its own key for, each followed by '\n' (8 of 64 bytes at most). */
#define TG_BYOK_LIST_MAX 520

/** The effective policy of one key: its tenant's row with the key's overrides applied (policies
 *  table). 0 means "no limit" for every number. */
typedef struct tg_policy {
    bool zero_retention; /* the tenant's: nothing of its requests' content is stored */
    bool byok_fallback;  /* a BYOK provider may fall back to the platform's key */
    bool has_models;     /* models[] restricts; otherwise every configured model is allowed */
    uint32_t max_tokens; /* the largest max_tokens a request may ask for */
    uint32_t rpm, key_rpm;
    uint64_t tpm, key_tpm;
    char models[TG_POLICY_MODELS_MAX];
} tg_policy_t;

/** Who is calling: one key of one tenant, and everything the request path needs to know about them,
 *  read by one query on a key-cache miss and cached with the key. */
typedef struct tg_principal {
    int64_t tenant_id;
    int64_t key_id;
    char tenant_name[64];
    bool suspended;          /* the tenant's status: every key answers 403 */
    int64_t expires_unix_ms; /* the key stops working then; 0 never */
    tg_policy_t policy;
    char byok[TG_BYOK_LIST_MAX]; /* providers with a tenant key ("openai\n"), "" none */
    bool has_chains;             /* the tenant has chains of its own (tchains.h, read with the key) */
} tg_principal_t;

/** Whether name is in a '\n'-terminated list (tg_policy_t.models, tg_principal_t.byok). */
bool tg_name_listed(const char *list, const char *name);
/** Whether the policy lets this key use model `name`. */
bool tg_policy_allows_model(const tg_policy_t *pol, const char *name);

void tg_api_key_generate(char out[TG_API_KEY_LEN + 1]);
void tg_api_key_hash(uint8_t out[32], const char *key, size_t len, const uint8_t pepper[32]);
/** Display prefix: the first 10 characters ("tg_AbCdEfG"). */
void tg_api_key_prefix(char out[11], const char *key);

/** Result of an async lookup: rc 0 with *p filled, TG_EUNAUTHENTICATED, or TG_EDB_UNAVAILABLE.
 *  A found key is returned whatever its state: the caller checks expiry and suspension
 *  (tg_principal_check), so a cached entry cannot outlive either. */
typedef void (*tg_auth_cb)(void *arg, int rc, const tg_principal_t *p);

/**
 * Looks up a bearer key. Returns 1 and fills *out when the cache answered (no callback),
 * TG_EUNAUTHENTICATED at once for a malformed or cached-unknown key (no callback), 0 when a
 * query was sent (cb fires exactly once later), or TG_EDB_UNAVAILABLE (no callback).
 */
int tg_auth_lookup(tg_pgpool_t *pg, const uint8_t pepper[32], uint32_t ttl_ms, uint64_t now_ms,
                   const char *key, size_t len, tg_principal_t *out, tg_auth_cb cb, void *arg);
/** 0 when the principal may act now; TG_EKEY_EXPIRED or TG_ETENANT_SUSPENDED otherwise. */
int tg_principal_check(const tg_principal_t *p, int64_t now_unix_ms);
/** Drops every cached entry (on LISTEN/NOTIFY of a key change, or reload). */
void tg_auth_cache_clear(void);

/* Lower-level pieces, exposed for tests and for callers that already hold a hash. */

/** "tg_" + 43 base64url characters that decode to exactly 32 bytes; no I/O. */
bool tg_api_key_well_formed(const char *key, size_t len);
/** Negative entries live at most this long (and never longer than the positive TTL). */
#define TG_AUTH_NEGATIVE_TTL_MS 5000u
/** 1 and *out filled: a live positive entry; TG_EUNAUTHENTICATED: a live negative entry; 0: miss. */
int tg_auth_cache_get(const uint8_t hash[32], uint64_t now_ms, tg_principal_t *out);
/** Caches p (NULL = a negative entry, "no such key") until expires_ms. */
void tg_auth_cache_put(const uint8_t hash[32], const tg_principal_t *p, uint64_t expires_ms);
/** The generation of hash's cache shard; tg_auth_cache_clear moves it on. */
uint32_t tg_auth_cache_generation(const uint8_t hash[32]);
/** tg_auth_cache_put only if the shard is still at generation gen (read before the database was
 *  asked): an answer that a clear overtook may predate the change behind the clear, and is not
 *  cached. Returns whether it was cached. */
TG_MUST_CHECK bool tg_auth_cache_put_gen(const uint8_t hash[32], const tg_principal_t *p, uint64_t expires_ms,
                                         uint32_t gen);

#endif
