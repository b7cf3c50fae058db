/*
 * auth.c - API keys: generation, keyed hashing, the key cache and the async lookup, see auth.h.
 *
 * The cache is keyed by the 32-byte keyed hash, never by the key: a memory
 * dump shows no usable key. It is process-wide and split into shards, each a
 * fixed array behind its own mutex, so workers rarely contend and the memory
 * is bounded (no allocation after start). Each hash maps to a small probe
 * window inside its shard; when the window is full, the entry that expires
 * first is evicted, which sacrifices negative entries (short TTL) before
 * positive ones, so a flood of made-up keys cannot push real tenants out for
 * long. Clearing bumps a per-shard generation instead of touching every slot.
 *
 * A lookup reads its shard's generation before it asks the database and
 * caches the answer only if no clear came in between: a key revoked (or
 * created) while its query was in flight would otherwise be cached under the
 * new generation, stale, for a whole TTL.
 */
#include "auth.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "credcache.h"
#include "log.h"
#include "tchains.h"

#define SHARDS       16
#define SLOTS        512 /* per shard: 8k entries in all (an entry is about 1.2 KiB) */
#define PROBE_WINDOW 8
#define KEY_PREFIX   "tg_"
/* One query reads everything the request path needs about a key: its tenant, the tenant's policy
 * with the key's overrides, and the providers the tenant has its own key for (served by the unique
 * index on api_keys.key_hash and the primary keys of the others). A NULL list column means "no
 * restriction"; an empty one (an intersection with nothing in common) allows nothing. */
#define TG_KEY_SQL                                                                                           \
    "WITH k AS (SELECT k.*, tollgate_models_and(tollgate_models_and(tp.allowed_models, kp.allowed_models), " \
    "k.allowed_models) AS models, tp.byok_fallback, COALESCE(kp.max_tokens, tp.max_tokens) AS max_tokens, "  \
    "tp.rpm, tp.tpm, COALESCE(kp.key_rpm, tp.key_rpm) AS key_rpm, COALESCE(kp.key_tpm, tp.key_tpm) AS "      \
    "key_tpm "                                                                                               \
    "FROM api_keys k LEFT JOIN policies tp ON tp.tenant_id = k.tenant_id AND tp.key_id IS NULL "             \
    "LEFT JOIN policies kp ON kp.tenant_id = k.tenant_id AND kp.key_id = k.id "                              \
    "WHERE k.key_hash = decode($1,'hex') AND k.revoked_at IS NULL) "                                         \
    "SELECT k.id, k.tenant_id, t.name, t.status = 'suspended', "                                             \
    "COALESCE((extract(epoch FROM k.expires_at) * 1000)::bigint, 0), t.zero_retention, "                     \
    "COALESCE(k.byok_fallback, true), k.models IS NOT NULL, "                                                \
    "COALESCE((SELECT string_agg(m || E'\\n', '') FROM unnest(k.models) m), ''), "                           \
    "COALESCE(k.max_tokens, 0), COALESCE(k.rpm, 0), COALESCE(k.key_rpm, 0), COALESCE(k.tpm, 0), "            \
    "COALESCE(k.key_tpm, 0), COALESCE((SELECT string_agg(c.provider || E'\\n', '' ORDER BY c.provider) "     \
    "FROM provider_credentials c WHERE c.tenant_id = k.tenant_id), '') "                                     \
    ", " TG_TCHAINS_JSON_SQL("k.tenant_id") " "                                                              \
                                            "FROM k JOIN tenants t ON t.id = k.tenant_id"
#define TG_KEY_COLUMNS 16

typedef struct entry {
    uint8_t hash[32];
    uint64_t expires_ms;
    uint32_t gen; /* valid only when equal to the shard's gen */
    bool used;
    bool negative;
    tg_principal_t p;
} entry_t;

typedef struct shard {
    pthread_mutex_t mu;
    uint32_t gen;
    entry_t slots[SLOTS];
} shard_t;

static shard_t g_shards[SHARDS] = {
#define S_INIT                                    \
    {                                             \
        .mu = PTHREAD_MUTEX_INITIALIZER, .gen = 1 \
    }
    S_INIT, S_INIT, S_INIT, S_INIT, S_INIT, S_INIT, S_INIT, S_INIT,
    S_INIT, S_INIT, S_INIT, S_INIT, S_INIT, S_INIT, S_INIT, S_INIT,
#undef S_INIT
};

void tg_api_key_generate(char out[TG_API_KEY_LEN + 1])
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof(raw));
    memcpy(out, KEY_PREFIX, 3);
    sodium_bin2base64(out + 3, TG_API_KEY_LEN + 1 - 3, raw, sizeof(raw),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof(raw));
}

void tg_api_key_hash(uint8_t out[32], const char *key, size_t len, const uint8_t pepper[32])
{
    crypto_generichash(out, 32, (const unsigned char *)key, len, pepper, 32);
}

void tg_api_key_prefix(char out[11], const char *key)
{
    size_t n = strnlen(key, 10);
    memcpy(out, key, n);
    out[n] = '\0';
}

bool tg_api_key_well_formed(const char *key, size_t len)
{
    if (key == NULL || len != TG_API_KEY_LEN || memcmp(key, KEY_PREFIX, 3) != 0)
        return false;
    for (size_t i = 3; i < len; i++) {
        char c = key[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_'))
            return false;
    }
    /* 43 characters carry 258 bits for 32 bytes: the last one's 2 low bits are padding and must be
     * zero, so each key has one spelling (what a strict decoder checks, without decoding a copy of
     * the key on every request) */
    char last = key[len - 1];
    int v = last >= 'A' && last <= 'Z'   ? last - 'A'
            : last >= 'a' && last <= 'z' ? last - 'a' + 26
            : last >= '0' && last <= '9' ? last - '0' + 52
            : last == '-'                ? 62
                                         : 63;
    return (v & 3) == 0;
}

static shard_t *shard_of(const uint8_t hash[32])
{
    return &g_shards[hash[0] % SHARDS];
}

static size_t slot_of(const uint8_t hash[32])
{
    /* the hash is keyed BLAKE2b: its bytes are already uniformly spread */
    return ((size_t)hash[1] | (size_t)hash[2] << 8 | (size_t)hash[3] << 16) % SLOTS;
}

int tg_auth_cache_get(const uint8_t hash[32], uint64_t now_ms, tg_principal_t *out)
{
    shard_t *s = shard_of(hash);
    size_t base = slot_of(hash);
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < PROBE_WINDOW; i++) {
        entry_t *e = &s->slots[(base + i) % SLOTS];
        if (!e->used || e->gen != s->gen || sodium_memcmp(e->hash, hash, 32) != 0)
            continue;
        if (e->expires_ms <= now_ms) {
            e->used = false; /* expired: the caller asks the database again */
            break;
        }
        if (e->negative) {
            rc = TG_EUNAUTHENTICATED;
        } else {
            if (out != NULL)
                *out = e->p;
            rc = 1;
        }
        break;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint32_t tg_auth_cache_generation(const uint8_t hash[32])
{
    shard_t *s = shard_of(hash);
    pthread_mutex_lock(&s->mu);
    uint32_t gen = s->gen;
    pthread_mutex_unlock(&s->mu);
    return gen;
}

/* Stores the entry under the shard's current generation. Thread: holds s->mu. */
static void put_locked(shard_t *s, const uint8_t hash[32], const tg_principal_t *p, uint64_t expires_ms)
{
    size_t base = slot_of(hash);
    entry_t *victim = NULL;
    bool victim_valid = false;
    for (size_t i = 0; i < PROBE_WINDOW; i++) {
        entry_t *e = &s->slots[(base + i) % SLOTS];
        bool valid = e->used && e->gen == s->gen;
        if (valid && sodium_memcmp(e->hash, hash, 32) == 0) {
            victim = e; /* the same key again: overwrite in place */
            break;
        }
        /* prefer a free slot; otherwise evict the entry that would expire first */
        if (victim == NULL || (victim_valid && (!valid || e->expires_ms < victim->expires_ms))) {
            victim = e;
            victim_valid = valid;
        }
    }
    memcpy(victim->hash, hash, 32);
    victim->expires_ms = expires_ms;
    victim->gen = s->gen;
    victim->used = true;
    victim->negative = p == NULL;
    if (p != NULL)
        victim->p = *p;
    else
        memset(&victim->p, 0, sizeof(victim->p));
}

void tg_auth_cache_put(const uint8_t hash[32], const tg_principal_t *p, uint64_t expires_ms)
{
    shard_t *s = shard_of(hash);
    pthread_mutex_lock(&s->mu);
    put_locked(s, hash, p, expires_ms);
    pthread_mutex_unlock(&s->mu);
}

bool tg_auth_cache_put_gen(const uint8_t hash[32], const tg_principal_t *p, uint64_t expires_ms, uint32_t gen)
{
    shard_t *s = shard_of(hash);
    pthread_mutex_lock(&s->mu);
    bool current = s->gen == gen;
    if (current)
        put_locked(s, hash, p, expires_ms);
    pthread_mutex_unlock(&s->mu);
    return current;
}

void tg_auth_cache_clear(void)
{
    tg_credcache_clear();     /* the tenants' sealed BYOK keys go with their principals (credcache.h) */
    tg_tchains_cache_clear(); /* and so do their chains (tchains.h) */
    for (size_t i = 0; i < SHARDS; i++) {
        pthread_mutex_lock(&g_shards[i].mu);
        g_shards[i].gen++;
        if (g_shards[i].gen == 0) /* wrapped: old entries could look current again */
            for (size_t k = 0; k < SLOTS; k++)
                g_shards[i].slots[k].used = false;
        pthread_mutex_unlock(&g_shards[i].mu);
    }
}

typedef struct lookup {
    uint8_t hash[32];
    uint64_t now_ms;
    uint32_t ttl_ms;
    uint32_t gen;        /* the shard's generation when the query was sent */
    uint32_t tchain_gen; /* the tenant chain cache's, likewise (tchains.h) */
    tg_auth_cb cb;
    void *arg;
} lookup_t;

/* Copies a tenant name, cut on a UTF-8 character boundary if it is too long. */
static void copy_name(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Copies a '\n'-terminated list column; false when it does not fit (the schema bounds it). */
static bool copy_list(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

static uint64_t col_u64(const PGresult *res, int col)
{
    long long v = strtoll(PQgetvalue(res, 0, col), NULL, 10);
    return v > 0 ? (uint64_t)v : 0;
}

static bool col_bool(const PGresult *res, int col)
{
    return PQgetvalue(res, 0, col)[0] == 't';
}

/* Fills p from the lookup's row; false when a column is out of the bounds the schema promises. */
static bool principal_of_row(const PGresult *res, tg_principal_t *p)
{
    memset(p, 0, sizeof(*p));
    p->key_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    p->tenant_id = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    copy_name(p->tenant_name, sizeof(p->tenant_name), PQgetvalue(res, 0, 2));
    p->suspended = col_bool(res, 3);
    p->expires_unix_ms = strtoll(PQgetvalue(res, 0, 4), NULL, 10);
    tg_policy_t *pol = &p->policy;
    pol->zero_retention = col_bool(res, 5);
    pol->byok_fallback = col_bool(res, 6);
    pol->has_models = col_bool(res, 7);
    uint64_t max_tokens = col_u64(res, 9), rpm = col_u64(res, 10), key_rpm = col_u64(res, 11);
    pol->max_tokens = max_tokens > UINT32_MAX ? UINT32_MAX : (uint32_t)max_tokens;
    pol->rpm = rpm > UINT32_MAX ? UINT32_MAX : (uint32_t)rpm;
    pol->key_rpm = key_rpm > UINT32_MAX ? UINT32_MAX : (uint32_t)key_rpm;
    pol->tpm = col_u64(res, 12);
    pol->key_tpm = col_u64(res, 13);
    p->has_chains = !PQgetisnull(res, 0, 15);
    return copy_list(pol->models, sizeof(pol->models), PQgetvalue(res, 0, 8)) &&
           copy_list(p->byok, sizeof(p->byok), PQgetvalue(res, 0, 14));
}

/* The tenant's chains came with the key (column 15): cached for ROUTE, so that a key-cache miss
 * stays one query (tchains.h). A text that does not parse is left to ROUTE's own query. */
static void tchains_note(const PGresult *res, const tg_principal_t *p, uint64_t expires_ms, uint32_t gen)
{
    if (!p->has_chains)
        return;
    tg_tchains_t *t = NULL;
    if (tg_tchains_parse(p->tenant_id, PQgetvalue(res, 0, 15), (size_t)PQgetlength(res, 0, 15), &t) != 0)
        return;
    TG_IGNORE_RESULT(tg_tchains_cache_put(t, expires_ms, gen));
    tg_tchains_unref(t);
}

static void on_key_row(void *arg, const PGresult *res, const char *errmsg)
{
    lookup_t *l = arg;
    (void)errmsg; /* may quote the query's parameter (the hash): not logged */
    tg_principal_t p;
    if (res == NULL) {
        TG_LOG(TG_LOG_WARN, "auth_lookup_failed", TG_KV_STR("reason", "database error"));
        l->cb(l->arg, TG_EDB_UNAVAILABLE, NULL);
    } else if (PQntuples(res) == 0 || PQnfields(res) < TG_KEY_COLUMNS) {
        if (l->ttl_ms != 0) {
            uint32_t neg = l->ttl_ms < TG_AUTH_NEGATIVE_TTL_MS ? l->ttl_ms : TG_AUTH_NEGATIVE_TTL_MS;
            TG_IGNORE_RESULT(tg_auth_cache_put_gen(l->hash, NULL, l->now_ms + neg, l->gen));
        }
        l->cb(l->arg, TG_EUNAUTHENTICATED, NULL);
    } else if (!principal_of_row(res, &p)) {
        /* a list longer than the schema allows: refuse rather than act on half a policy */
        TG_LOG(TG_LOG_ERROR, "auth_policy_unreadable", TG_KV_INT("tenant_id", p.tenant_id));
        l->cb(l->arg, TG_EINTERNAL, NULL);
    } else {
        /* Not cached when a clear overtook the query (false: nothing to undo). The caller still
         * gets the row: its request came before the change. */
        if (l->ttl_ms != 0) {
            TG_IGNORE_RESULT(tg_auth_cache_put_gen(l->hash, &p, l->now_ms + l->ttl_ms, l->gen));
            tchains_note(res, &p, l->now_ms + l->ttl_ms, l->tchain_gen);
        }
        l->cb(l->arg, 0, &p);
    }
    sodium_memzero(l->hash, sizeof(l->hash));
    free(l);
}

bool tg_name_listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    if (n == 0)
        return false;
    for (const char *p = list; *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (len == n && memcmp(p, name, n) == 0)
            return true;
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    return false;
}

bool tg_policy_allows_model(const tg_policy_t *pol, const char *name)
{
    return !pol->has_models || tg_name_listed(pol->models, name);
}

int tg_principal_check(const tg_principal_t *p, int64_t now_unix_ms)
{
    if (p->expires_unix_ms != 0 && now_unix_ms >= p->expires_unix_ms)
        return TG_EKEY_EXPIRED;
    if (p->suspended)
        return TG_ETENANT_SUSPENDED;
    return 0;
}

int tg_auth_lookup(tg_pgpool_t *pg, const uint8_t pepper[32], uint32_t ttl_ms, uint64_t now_ms,
                   const char *key, size_t len, tg_principal_t *out, tg_auth_cb cb, void *arg)
{
    /* a malformed key costs neither a hash nor a query */
    if (!tg_api_key_well_formed(key, len))
        return TG_EUNAUTHENTICATED;
    uint8_t hash[32];
    tg_api_key_hash(hash, key, len, pepper);
    int rc = tg_auth_cache_get(hash, now_ms, out);
    if (rc != 0) {
        sodium_memzero(hash, sizeof(hash));
        return rc;
    }
    if (pg == NULL || cb == NULL) {
        sodium_memzero(hash, sizeof(hash));
        return TG_EDB_UNAVAILABLE;
    }
    lookup_t *l = malloc(sizeof(*l));
    if (l == NULL) {
        sodium_memzero(hash, sizeof(hash));
        return TG_ENOMEM;
    }
    memcpy(l->hash, hash, sizeof(hash));
    l->gen = tg_auth_cache_generation(hash); /* before the query: a clear from now on wins */
    l->tchain_gen = tg_tchains_generation();
    l->now_ms = now_ms;
    l->ttl_ms = ttl_ms;
    l->cb = cb;
    l->arg = arg;
    char hex[65];
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    const char *params[1] = {hex};
    rc = tg_pgpool_query(pg, TG_KEY_SQL, 1, params, on_key_row, l); /* libpq copies params */
    sodium_memzero(hex, sizeof(hex));
    sodium_memzero(hash, sizeof(hash));
    if (rc != 0) {
        sodium_memzero(l->hash, sizeof(l->hash));
        free(l);
        return TG_EDB_UNAVAILABLE;
    }
    return 0;
}
