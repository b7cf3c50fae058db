/*
 * tchains.c - tenants' chain snapshots and their cache, see tchains.h.
 *
 * A snapshot is one allocation: the header, the chains, every target pointer and every name, so
 * that it is freed at once and its size is known for the cache's budget.
 */
#include "tchains.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_WINDOW 8

/* ------------------------------------------------------------------------------ snapshots */

static bool entry_shape(const json_t *e)
{
    const json_t *name = json_array_get(e, 0), *targets = json_array_get(e, 1), *fb = json_array_get(e, 2),
                 *budget = json_array_get(e, 3);
    if (!json_is_array(e) || json_array_size(e) != 4 || !json_is_string(name) || !json_is_array(targets) ||
        json_array_size(targets) == 0 || (!json_is_null(fb) && !json_is_string(fb)) ||
        (!json_is_null(budget) && !json_is_integer(budget)))
        return false;
    size_t i;
    const json_t *t;
    json_array_foreach(targets, i, t) if (!json_is_string(t)) return false;
    return !json_is_integer(budget) ||
           (json_integer_value(budget) > 0 && json_integer_value(budget) <= 86400000);
}

static char *put_str(char **arena, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = *arena;
    memcpy(d, s, n);
    *arena += n;
    return d;
}

int tg_tchains_parse(int64_t tenant_id, const char *json, size_t len, tg_tchains_t **out)
{
    *out = NULL;
    json_t *root = NULL;
    if (json != NULL && len > 0) {
        if (len > TG_TCHAINS_JSON_MAX)
            return TG_EINTERNAL;
        root = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_array(root) || json_array_size(root) > TG_TCHAINS_PER_TENANT) {
            json_decref(root);
            return TG_EINTERNAL;
        }
    }
    size_t n = json_array_size(root), ptrs = 0, chars = 0, i;
    const json_t *e;
    json_array_foreach(root, i, e)
    {
        if (!entry_shape(e)) {
            json_decref(root);
            return TG_EINTERNAL;
        }
        const json_t *targets = json_array_get(e, 1);
        ptrs += json_array_size(targets);
        chars += strlen(json_string_value(json_array_get(e, 0))) + 1;
        size_t k;
        const json_t *t;
        json_array_foreach(targets, k, t) chars += strlen(json_string_value(t)) + 1;
        if (json_is_string(json_array_get(e, 2)))
            chars += strlen(json_string_value(json_array_get(e, 2))) + 1;
    }
    size_t bytes = sizeof(tg_tchains_t) + n * sizeof(tg_tchain_t) + ptrs * sizeof(char *) + chars;
    tg_tchains_t *s = malloc(bytes);
    if (s == NULL) {
        json_decref(root);
        return TG_ENOMEM;
    }
    atomic_init(&s->refcnt, 1);
    s->tenant_id = tenant_id;
    s->n = n;
    s->bytes = bytes;
    s->chains = (tg_tchain_t *)(s + 1);
    const char **ptr = (const char **)(s->chains + n);
    char *arena = (char *)(ptr + ptrs);
    json_array_foreach(root, i, e)
    {
        tg_tchain_t *c = &s->chains[i];
        const json_t *targets = json_array_get(e, 1), *fb = json_array_get(e, 2),
                     *budget = json_array_get(e, 3);
        c->name = put_str(&arena, json_string_value(json_array_get(e, 0)));
        c->targets = ptr;
        c->n_targets = json_array_size(targets);
        size_t k;
        const json_t *t;
        json_array_foreach(targets, k, t) *ptr++ = put_str(&arena, json_string_value(t));
        c->context_fallback = json_is_string(fb) ? put_str(&arena, json_string_value(fb)) : NULL;
        c->request_first_byte_ms = json_is_integer(budget) ? (uint32_t)json_integer_value(budget) : 0;
    }
    json_decref(root);
    *out = s;
    return 0;
}

tg_tchains_t *tg_tchains_ref(tg_tchains_t *t)
{
    if (t != NULL)
        atomic_fetch_add(&t->refcnt, 1);
    return t;
}

void tg_tchains_unref(tg_tchains_t *t)
{
    if (t != NULL && atomic_fetch_sub(&t->refcnt, 1) == 1)
        free(t);
}

const tg_tchain_t *tg_tchains_find(const tg_tchains_t *t, const char *name)
{
    if (t == NULL || name == NULL)
        return NULL;
    /* by name (the query's ORDER BY): a binary search */
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(t->chains[mid].name, name);
        if (cmp == 0)
            return &t->chains[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* PostgreSQL's collation may order names otherwise than strcmp: look at every one */
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->chains[i].name, name) == 0)
            return &t->chains[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------- cache */

typedef struct entry {
    bool used;
    uint32_t gen;
    int64_t tenant_id;
    uint64_t expires_ms;
    tg_tchains_t *snap; /* a reference of the cache's own */
} entry_t;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t g_gen = 1;
static size_t g_bytes; /* snapshots held by live or stale slots */
static entry_t g_slots[TG_TCHAINS_SLOTS];

static size_t slot_of(int64_t tenant_id)
{
    uint64_t h = (uint64_t)tenant_id * 11400714819323198485ull; /* Fibonacci hashing */
    return (size_t)(h >> 32) % TG_TCHAINS_SLOTS;
}

static bool live(const entry_t *e)
{
    return e->used && e->gen == g_gen;
}

/* Thread: holds g_mu. The snapshot may live on in calls that hold it. */
static void drop(entry_t *e)
{
    if (e->snap != NULL) {
        g_bytes -= e->snap->bytes;
        tg_tchains_unref(e->snap);
    }
    e->snap = NULL;
    e->used = false;
}

uint32_t tg_tchains_generation(void)
{
    pthread_mutex_lock(&g_mu);
    uint32_t gen = g_gen;
    pthread_mutex_unlock(&g_mu);
    return gen;
}

int tg_tchains_cache_get(int64_t tenant_id, uint64_t now_ms, tg_tchains_t **out)
{
    size_t base = slot_of(tenant_id);
    int rc = 0;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < PROBE_WINDOW; i++) {
        entry_t *e = &g_slots[(base + i) % TG_TCHAINS_SLOTS];
        if (!live(e) || e->tenant_id != tenant_id)
            continue;
        if (e->expires_ms <= now_ms) {
            drop(e);
            break;
        }
        *out = tg_tchains_ref(e->snap);
        rc = 1;
        break;
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

bool tg_tchains_cache_put(tg_tchains_t *t, uint64_t expires_ms, uint32_t gen)
{
    size_t base = slot_of(t->tenant_id);
    bool cached = false;
    pthread_mutex_lock(&g_mu);
    if (g_gen == gen) {
        entry_t *victim = NULL;
        for (size_t i = 0; i < PROBE_WINDOW; i++) {
            entry_t *e = &g_slots[(base + i) % TG_TCHAINS_SLOTS];
            if (live(e) && e->tenant_id == t->tenant_id) {
                victim = e; /* the same tenant again: replaced in place */
                break;
            }
            if (victim == NULL || (live(victim) && (!live(e) || e->expires_ms < victim->expires_ms)))
                victim = e;
        }
        drop(victim);
        if (g_bytes + t->bytes <= TG_TCHAINS_BYTES) {
            victim->used = true;
            victim->gen = g_gen;
            victim->tenant_id = t->tenant_id;
            victim->expires_ms = expires_ms;
            victim->snap = tg_tchains_ref(t);
            g_bytes += t->bytes;
            cached = true;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return cached;
}

void tg_tchains_cache_clear(void)
{
    pthread_mutex_lock(&g_mu);
    g_gen++;
    /* unlike the key cache, stale snapshots are dropped now: they count against the budget */
    for (size_t i = 0; i < TG_TCHAINS_SLOTS; i++)
        if (g_slots[i].used)
            drop(&g_slots[i]);
    pthread_mutex_unlock(&g_mu);
}
