/*
 * credcache.h - the process-wide cache of tenants' SEALED provider keys (BYOK), per (tenant,
 * provider).
 *
 * It holds what provider_credentials holds (master key id, nonce, sealed bytes), never a
 * plaintext key: an attempt opens its blob when it needs it (credential.c). A miss costs the
 * call one async query; the answer is cached, as is the absence of a row, until the entry's TTL
 * (the key cache's) or until tg_credcache_clear, which tg_auth_cache_clear calls: every NOTIFY of
 * tollgate_tenants (keywatch.c, fired by a change of a credential) drops both caches at once.
 * Like the key cache, an answer that a clear overtook is not cached (generations).
 *
 * Bounded: TG_CREDCACHE_SLOTS entries in a fixed table (a small probe window per key, the entry
 * that expires first evicted), each blob malloc'd to its size (at most 4112 bytes). Thread: any
 * (one mutex: an entry is touched once per BYOK call).
 */
#ifndef TG_CREDCACHE_H
#define TG_CREDCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "byok.h"

#define TG_CREDCACHE_SLOTS 1024

/** The current generation (read before asking the database). */
uint32_t tg_credcache_generation(void);
/** 1 with *out filled (a live entry), TG_ENOT_FOUND (a live "no such row" entry), 0 (a miss). */
int tg_credcache_get(int64_t tenant_id, const char *provider, uint64_t now_ms, tg_sealed_t *out);
/** Caches b (NULL: the row does not exist) until expires_ms, unless a clear came after `gen`.
 *  Returns whether it was cached. */
bool tg_credcache_put(int64_t tenant_id, const char *provider, const tg_sealed_t *b, uint64_t expires_ms,
                      uint32_t gen);
/** Drops every entry. */
void tg_credcache_clear(void);

#endif
