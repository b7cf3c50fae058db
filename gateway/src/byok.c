/*
 * byok.c - XChaCha20-Poly1305 sealing of tenants' provider keys, see byok.h.
 */
#include "byok.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* "tollgate-byok:v1:" + an int64 + ":" + 64 + ":" + 64 */
#define AD_MAX 192

static size_t build_ad(char ad[AD_MAX], int64_t tenant_id, const char *provider, const char *key_id)
{
    int n = snprintf(ad, AD_MAX, "tollgate-byok:v1:%lld:%s:%s", (long long)tenant_id, provider, key_id);
    return n > 0 && n < AD_MAX ? (size_t)n : 0;
}

bool tg_byok_provider_ok(const char *provider)
{
    return tg_keyring_id_ok(provider); /* the same character set and length as a key id */
}

/* sodium_malloc puts the allocation right before a guard page, so its address is only as aligned
 * as its size: a multiple of 16 keeps the struct's size_t aligned. */
static tg_secret_t *secret_alloc(size_t len)
{
    return sodium_malloc((sizeof(tg_secret_t) + len + 1 + 15) & ~(size_t)15);
}

tg_secret_t *tg_secret_new(const char *p, size_t len)
{
    tg_secret_t *s = secret_alloc(len);
    if (s == NULL)
        return NULL;
    s->len = len;
    if (len > 0)
        memcpy(s->s, p, len);
    s->s[len] = '\0';
    return s;
}

void tg_secret_free(tg_secret_t *s)
{
    if (s != NULL)
        sodium_free(s); /* wipes the whole allocation */
}

int tg_byok_seal(const tg_keyring_t *kr, int64_t tenant_id, const char *provider, const char *key, size_t len,
                 tg_sealed_t *out)
{
    const tg_master_key_t *mk = tg_keyring_active(kr);
    if (mk == NULL)
        return TG_ECONFIG;
    if (key == NULL || len == 0 || len > TG_BYOK_KEY_MAX || !tg_byok_provider_ok(provider))
        return TG_EINVALID_REQUEST;
    char ad[AD_MAX];
    size_t adlen = build_ad(ad, tenant_id, provider, mk->id);
    if (adlen == 0)
        return TG_EINVALID_REQUEST;
    memcpy(out->key_id, mk->id, strlen(mk->id) + 1);
    randombytes_buf(out->nonce, sizeof(out->nonce)); /* 192 random bits: no counter needed */
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out->sealed, &clen, (const unsigned char *)key, len,
                                               (const unsigned char *)ad, adlen, NULL, out->nonce, mk->key);
    out->len = (size_t)clen;
    return 0;
}

int tg_byok_open(const tg_keyring_t *kr, int64_t tenant_id, const char *provider, const tg_sealed_t *blob,
                 tg_secret_t **out)
{
    *out = NULL;
    const tg_master_key_t *mk = tg_keyring_find(kr, blob->key_id);
    if (mk == NULL)
        return TG_ENOT_FOUND;
    if (blob->len < TG_BYOK_TAG_LEN + 1 || blob->len > TG_BYOK_SEALED_MAX || !tg_byok_provider_ok(provider))
        return TG_EFORBIDDEN;
    char ad[AD_MAX];
    size_t adlen = build_ad(ad, tenant_id, provider, mk->id);
    if (adlen == 0)
        return TG_EFORBIDDEN;
    size_t plen = blob->len - TG_BYOK_TAG_LEN;
    tg_secret_t *s = secret_alloc(plen);
    if (s == NULL)
        return TG_ENOMEM;
    unsigned long long mlen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *)s->s, &mlen, NULL, blob->sealed,
                                                   blob->len, (const unsigned char *)ad, adlen, blob->nonce,
                                                   mk->key) != 0) {
        sodium_free(s); /* libsodium writes nothing on failure; freed wiped anyway */
        return TG_EFORBIDDEN;
    }
    s->len = (size_t)mlen;
    s->s[s->len] = '\0';
    *out = s;
    return 0;
}

int tg_byok_reseal(const tg_keyring_t *kr, int64_t tenant_id, const char *provider, const tg_sealed_t *blob,
                   tg_sealed_t *out)
{
    tg_secret_t *s = NULL;
    int rc = tg_byok_open(kr, tenant_id, provider, blob, &s);
    if (rc != 0)
        return rc;
    rc = tg_byok_seal(kr, tenant_id, provider, s->s, s->len, out);
    tg_secret_free(s);
    return rc;
}

void tg_byok_last4(const char *key, size_t len, char out[5])
{
    out[0] = '\0';
    if (key == NULL || len < 16)
        return;
    for (size_t i = len - 4; i < len; i++)
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e)
            return;
    memcpy(out, key + len - 4, 4);
    out[4] = '\0';
}
