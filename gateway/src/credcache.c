/*
 * credcache.c - the bounded cache of sealed BYOK blobs, see credcache.h.
 */
#include "credcache.h"

#include <pthread.h>
#include <sodium.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"

#define PROBE_WINDOW 8

typedef struct entry {
    bool used;
    uint32_t gen;
    int64_t tenant_id;
    uint64_t expires_ms;
    char provider[TG_BYOK_PROVIDER_MAX + 1];
    tg_sealed_t *blob; /* NULL: the row does not exist; malloc'd to its length */
} entry_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t g_gen = 1;
static entry_t g_slots[TG_CREDCACHE_SLOTS];

static size_t slot_of(int64_t tenant_id, const char *provider)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)tenant_id; /* FNV-1a over the id and the name */
    for (const char *p = provider; *p != '\0'; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (size_t)(h % TG_CREDCACHE_SLOTS);
}

static bool live(const entry_t *e)
{
    return e->used && e->gen == g_gen;
}

static void drop(entry_t *e)
{
    if (e->blob != NULL) {
        sodium_memzero(e->blob, offsetof(tg_sealed_t, sealed) + e->blob->len);
        free(e->blob);
    }
    e->blob = NULL;
    e->used = false;
}

uint32_t tg_credcache_generation(void)
{
    pthread_mutex_lock(&g_mu);
    uint32_t gen = g_gen;
    pthread_mutex_unlock(&g_mu);
    return gen;
}

int tg_credcache_get(int64_t tenant_id, const char *provider, uint64_t now_ms, tg_sealed_t *out)
{
    size_t base = slot_of(tenant_id, provider);
    int rc = 0;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < PROBE_WINDOW; i++) {
        entry_t *e = &g_slots[(base + i) % TG_CREDCACHE_SLOTS];
        if (!live(e) || e->tenant_id != tenant_id || strcmp(e->provider, provider) != 0)
            continue;
        if (e->expires_ms <= now_ms) {
            drop(e);
            break;
        }
        if (e->blob == NULL) {
            rc = TG_ENOT_FOUND;
        } else {
            memcpy(out->key_id, e->blob->key_id, sizeof(out->key_id));
            memcpy(out->nonce, e->blob->nonce, sizeof(out->nonce));
            out->len = e->blob->len;
            memcpy(out->sealed, e->blob->sealed, e->blob->len);
            rc = 1;
        }
        break;
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

bool tg_credcache_put(int64_t tenant_id, const char *provider, const tg_sealed_t *b, uint64_t expires_ms,
                      uint32_t gen)
{
    if (strlen(provider) > TG_BYOK_PROVIDER_MAX || (b != NULL && b->len > TG_BYOK_SEALED_MAX))
        return false;
    /* the copy is made before the lock: the section stays short */
    tg_sealed_t *copy = NULL;
    if (b != NULL) {
        copy = malloc(offsetof(tg_sealed_t, sealed) + b->len);
        if (copy == NULL)
            return false;
        memcpy(copy->key_id, b->key_id, sizeof(copy->key_id));
        memcpy(copy->nonce, b->nonce, sizeof(copy->nonce));
        copy->len = b->len;
        memcpy(copy->sealed, b->sealed, b->len);
    }
    size_t base = slot_of(tenant_id, provider);
    pthread_mutex_lock(&g_mu);
    bool current = g_gen == gen;
    if (current) {
        entry_t *victim = NULL;
        for (size_t i = 0; i < PROBE_WINDOW; i++) {
            entry_t *e = &g_slots[(base + i) % TG_CREDCACHE_SLOTS];
            if (live(e) && e->tenant_id == tenant_id && strcmp(e->provider, provider) == 0) {
                victim = e; /* the same key again: replaced in place */
                break;
            }
            if (victim == NULL || (live(victim) && (!live(e) || e->expires_ms < victim->expires_ms)))
                victim = e;
        }
        drop(victim);
        victim->used = true;
        victim->gen = g_gen;
        victim->tenant_id = tenant_id;
        victim->expires_ms = expires_ms;
        tg_str_copy(victim->provider, sizeof(victim->provider), provider);
        victim->blob = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&g_mu);
    free(copy);
    return current;
}

void tg_credcache_clear(void)
{
    pthread_mutex_lock(&g_mu);
    g_gen++;
    /* stale entries are freed when their slot is reused; a wrapped generation frees them now, or
     * they could look current again */
    if (g_gen == 0)
        for (size_t i = 0; i < TG_CREDCACHE_SLOTS; i++)
            drop(&g_slots[i]);
    pthread_mutex_unlock(&g_mu);
}
