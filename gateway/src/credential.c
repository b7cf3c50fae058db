/*
 * credential.c - BYOK on the request path: twins in ROUTE, blobs for the call, the key opened per
 * attempt, see credential.h.
 *
 * The call keeps its own copy of the sealed blobs it may need (read in ROUTE), so a cache clear
 * or a rotation between ROUTE and ATTEMPT changes nothing for it; it opens them with the keyring
 * of its own config snapshot. A blob that does not open (moved to another tenant's row, its
 * master key retired too early, damaged) is logged without any of its bytes and makes the
 * attempt fail as the tenant's problem (tg_outcome_byok).
 */
#include "credential.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "call_internal.h"
#include "clock.h"
#include "credcache.h"
#include "err.h"
#include "log.h"

/* One blob per provider the tenant has a key for (TG_BYOK_LIST_MAX holds 8 names at most). */
#define CRED_MAX  8
#define TWINS_MAX (TG_PLAN_MAX_TARGETS + 1) /* every target, and the context fallback */

#define CRED_SQL                                                                   \
    "SELECT provider, master_key_id, encode(nonce, 'hex'), encode(sealed, 'hex') " \
    "FROM provider_credentials WHERE tenant_id = $1::bigint"

typedef enum { CRED_UNKNOWN = 0, CRED_HAVE, CRED_ABSENT } cred_state_t;

typedef struct cred {
    const tg_provider_cfg_t *provider;
    cred_state_t state;
    tg_sealed_t *blob; /* CRED_HAVE */
} cred_t;

struct tg_cred_call {
    size_t n_creds;
    cred_t creds[CRED_MAX];
    size_t n_twins;
    tg_model_cfg_t twins[TWINS_MAX]; /* a copy of the target with target_key "<key>#byok" */
};

typedef struct fetch {
    tg_call_t *c; /* holds a reference until the answer */
    uint32_t gen;
} fetch_t;

static bool is_twin(const struct tg_cred_call *cc, const tg_model_cfg_t *t)
{
    return cc != NULL && t >= cc->twins && t < cc->twins + cc->n_twins;
}

static cred_t *cred_of(struct tg_cred_call *cc, const tg_provider_cfg_t *p)
{
    for (size_t i = 0; i < cc->n_creds; i++)
        if (cc->creds[i].provider == p)
            return &cc->creds[i];
    return NULL;
}

/* The twin of t (made once per call), or NULL when out of memory or room. */
static const tg_model_cfg_t *twin_of(struct tg_cred_call *cc, const tg_model_cfg_t *t)
{
    for (size_t i = 0; i < cc->n_twins; i++)
        if (cc->twins[i].index == t->index && strcmp(cc->twins[i].name, t->name) == 0)
            return &cc->twins[i];
    if (cc->n_twins >= TWINS_MAX)
        return NULL;
    if (cred_of(cc, t->provider) == NULL) {
        if (cc->n_creds >= CRED_MAX)
            return NULL;
        cc->creds[cc->n_creds++] = (cred_t){.provider = t->provider};
    }
    size_t kl = strlen(t->target_key) + sizeof("#byok");
    char *key = malloc(kl);
    if (key == NULL)
        return NULL;
    snprintf(key, kl, "%s#byok", t->target_key);
    tg_model_cfg_t *tw = &cc->twins[cc->n_twins++];
    *tw = *t; /* name, upstream and provider borrowed from the call's config snapshot */
    tw->target_key = key;
    return tw;
}

void tg_credential_call_free(tg_call_t *c)
{
    struct tg_cred_call *cc = c->byok;
    if (cc == NULL)
        return;
    for (size_t i = 0; i < cc->n_twins; i++)
        free(cc->twins[i].target_key);
    for (size_t i = 0; i < cc->n_creds; i++)
        if (cc->creds[i].blob != NULL) {
            sodium_memzero(cc->creds[i].blob, sizeof(*cc->creds[i].blob));
            free(cc->creds[i].blob);
        }
    free(cc);
    c->byok = NULL;
}

/* ------------------------------------------------------------------------------- ROUTE */

int tg_credential_route(tg_call_t *c)
{
    const char *list = c->principal.byok;
    if (list[0] == '\0')
        return 0; /* the common case: a tenant without keys of its own */
    bool any = false;
    for (size_t i = 0; i < c->route.n_targets && !any; i++)
        any = tg_name_listed(list, c->route.targets[i]->provider->name);
    const tg_model_cfg_t *cf = c->route.context_fallback;
    bool ctx = cf != NULL && tg_name_listed(list, cf->provider->name);
    if (!any && !ctx)
        return 0;
    struct tg_cred_call *cc = calloc(1, sizeof(*cc));
    if (cc == NULL)
        return TG_ENOMEM;
    c->byok = cc;

    bool fallback = c->principal.policy.byok_fallback;
    const tg_model_cfg_t *out[TG_PLAN_MAX_TARGETS];
    bool flags[TG_PLAN_MAX_TARGETS];
    size_t n = c->route.n_targets, k = 0;
    for (size_t i = 0; i < n && k < TG_PLAN_MAX_TARGETS; i++) {
        const tg_model_cfg_t *t = c->route.targets[i];
        if (!tg_name_listed(list, t->provider->name)) {
            flags[k] = false;
            out[k++] = t;
            continue;
        }
        const tg_model_cfg_t *tw = twin_of(cc, t);
        if (tw == NULL)
            return TG_ENOMEM;
        flags[k] = true;
        out[k++] = tw;
        /* the platform's key after the tenant's, while every later target still fits */
        if (fallback && k + 1 + (n - i - 1) <= TG_PLAN_MAX_TARGETS) {
            flags[k] = false;
            out[k++] = t;
        }
    }
    memcpy(c->route.targets, out, k * sizeof(out[0]));
    memcpy(c->target_byok, flags, k * sizeof(flags[0]));
    c->route.n_targets = k;
    if (ctx) {
        /* the context fallback is one slot: it runs on the tenant's key */
        const tg_model_cfg_t *tw = twin_of(cc, cf);
        if (tw == NULL)
            return TG_ENOMEM;
        c->route.context_fallback = tw;
    }
    return 0;
}

tg_breaker_t *tg_credential_breaker(tg_call_t *c, const tg_model_cfg_t *t)
{
    if (!is_twin(c->byok, t))
        return tg_breaker_get(t->target_key, &t->provider->breaker);
    /* per credential: "<provider>/<upstream>#byok:<tenant_id>" */
    char key[320];
    snprintf(key, sizeof(key), "%s:%lld", t->target_key, (long long)c->principal.tenant_id);
    return tg_breaker_get(key, &t->provider->breaker);
}

/* Copies a blob into the call's cred. */
static void cred_fill(cred_t *cr, const tg_sealed_t *b)
{
    if (b == NULL) {
        cr->state = CRED_ABSENT;
        return;
    }
    if (cr->blob == NULL && (cr->blob = malloc(sizeof(*cr->blob))) == NULL)
        return; /* stays unknown: the attempt finds it unusable */
    *cr->blob = *b;
    cr->state = CRED_HAVE;
}

/* One row of CRED_SQL into b; false when a column is out of bounds. */
static bool parse_row(const PGresult *res, int row, tg_sealed_t *b)
{
    const char *kid = PQgetvalue(res, row, 1), *nonce = PQgetvalue(res, row, 2),
               *sealed = PQgetvalue(res, row, 3);
    size_t nl = 0, sl = 0;
    if (strlen(kid) >= sizeof(b->key_id) ||
        sodium_hex2bin(b->nonce, sizeof(b->nonce), nonce, strlen(nonce), NULL, &nl, NULL) != 0 ||
        nl != TG_BYOK_NONCE_LEN ||
        sodium_hex2bin(b->sealed, sizeof(b->sealed), sealed, strlen(sealed), NULL, &sl, NULL) != 0)
        return false;
    memcpy(b->key_id, kid, strlen(kid) + 1);
    b->len = sl;
    return true;
}

static void on_rows(void *arg, const PGresult *res, const char *errmsg)
{
    (void)errmsg; /* may quote the query's parameters: not logged */
    fetch_t *f = arg;
    tg_call_t *c = f->c;
    struct tg_cred_call *cc = c->byok;
    if (res == NULL) {
        TG_LOG(TG_LOG_WARN, "byok_lookup_failed", TG_KV_STR("request_id", c->request_id),
               TG_KV_INT("tenant_id", c->principal.tenant_id));
        tg_call_resume(c, TG_STAGE_SETTLE, TG_EDB_UNAVAILABLE);
    } else {
        tg_sealed_t *b = malloc(sizeof(*b));
        uint64_t expires = tg_now_ms() + c->cfg->key_cache_ttl_ms;
        for (int r = 0; b != NULL && r < PQntuples(res); r++) {
            const char *prov = PQgetvalue(res, r, 0);
            if (!parse_row(res, r, b))
                continue; /* the schema's checks make this impossible; such a row stays unusable */
            TG_IGNORE_RESULT(tg_credcache_put(c->principal.tenant_id, prov, b, expires, f->gen));
            for (size_t i = 0; i < cc->n_creds; i++)
                if (strcmp(cc->creds[i].provider->name, prov) == 0)
                    cred_fill(&cc->creds[i], b);
        }
        if (b != NULL) {
            sodium_memzero(b, sizeof(*b));
            free(b);
        }
        /* a provider in the principal's list without a row: deleted since (a NOTIFY is on its way) */
        for (size_t i = 0; i < cc->n_creds; i++)
            if (cc->creds[i].state == CRED_UNKNOWN) {
                cc->creds[i].state = CRED_ABSENT;
                TG_IGNORE_RESULT(tg_credcache_put(c->principal.tenant_id, cc->creds[i].provider->name, NULL,
                                                  expires, f->gen));
            }
        tg_call_resume(c, TG_STAGE_ROUTE + 1, 0);
    }
    tg_call_unref(c); /* the query's reference */
    free(f);
}

int tg_credential_fetch(tg_call_t *c)
{
    struct tg_cred_call *cc = c->byok;
    if (cc == NULL)
        return TG_STAGE_GO;
    uint32_t gen = tg_credcache_generation(); /* before asking: a clear from now on wins */
    uint64_t now = tg_now_ms();
    bool missing = false;
    tg_sealed_t *b = malloc(sizeof(*b));
    if (b == NULL)
        return TG_ENOMEM;
    for (size_t i = 0; i < cc->n_creds; i++) {
        int rc = tg_credcache_get(c->principal.tenant_id, cc->creds[i].provider->name, now, b);
        if (rc == 1)
            cred_fill(&cc->creds[i], b);
        else if (rc == TG_ENOT_FOUND)
            cc->creds[i].state = CRED_ABSENT;
        else
            missing = true;
    }
    sodium_memzero(b, sizeof(*b));
    free(b);
    if (!missing)
        return TG_STAGE_GO;
    fetch_t *f = malloc(sizeof(*f));
    if (f == NULL)
        return TG_ENOMEM;
    f->c = c;
    f->gen = gen;
    char tid[24];
    snprintf(tid, sizeof(tid), "%lld", (long long)c->principal.tenant_id);
    const char *params[1] = {tid};
    tg_call_ref(c); /* held by the query until on_rows */
    if (tg_pgpool_query(c->worker->pg, CRED_SQL, 1, params, on_rows, f) != 0) {
        tg_call_unref(c);
        free(f);
        return TG_EDB_UNAVAILABLE;
    }
    return TG_STAGE_PENDING;
}

/* ----------------------------------------------------------------------------- ATTEMPT */

int tg_credential_open(tg_call_t *c, const tg_model_cfg_t *target, tg_secret_t **key, tg_classified_t *cls)
{
    *key = NULL;
    c->attempt_byok = is_twin(c->byok, target);
    if (!c->attempt_byok)
        return 0;
    if (c->byok_attempts < UINT8_MAX)
        c->byok_attempts++;
    cred_t *cr = cred_of(c->byok, target->provider);
    int rc = TG_ENOT_FOUND;
    const char *why = "no stored key";
    if (cr != NULL && cr->state == CRED_HAVE) {
        rc = tg_byok_open(c->cfg->keyring, c->principal.tenant_id, target->provider->name, cr->blob, key);
        why = rc == TG_ENOT_FOUND   ? "its master key id is not in secrets.master_keys"
              : rc == TG_EFORBIDDEN ? "it does not open for this tenant and provider"
                                    : "out of memory";
    }
    if (rc == 0)
        return 0;
    /* names the master key id at most, never a byte of the blob */
    TG_LOG(TG_LOG_WARN, "byok_key_unusable", TG_KV_STR("request_id", c->request_id),
           TG_KV_INT("tenant_id", c->principal.tenant_id), TG_KV_STR("provider", target->provider->name),
           TG_KV_STR("master_key_id", cr != NULL && cr->state == CRED_HAVE ? cr->blob->key_id : "-"),
           TG_KV_STR("why", why));
    tg_outcome_byok(cls, false, 0, c->principal.policy.byok_fallback);
    return -1;
}

void tg_credential_classify(tg_call_t *c, tg_classified_t *cls)
{
    if (!c->attempt_byok || (cls->status != 401 && cls->status != 403))
        return;
    int status = cls->status;
    TG_LOG(TG_LOG_WARN, "byok_key_rejected", TG_KV_STR("request_id", c->request_id),
           TG_KV_INT("tenant_id", c->principal.tenant_id), TG_KV_STR("provider", c->target->provider->name),
           TG_KV_INT("http_status", status));
    tg_outcome_byok(cls, true, status, c->principal.policy.byok_fallback);
}
