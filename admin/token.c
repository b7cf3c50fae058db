/*
 * token.c - see token.h. The algorithm a token claims picks the key it is checked with, and libjwt's
 * verdict is then re-checked against that key's pinned algorithm (jwt_get_alg), so no token can
 * make one key verify under another algorithm. Claims are read from the decoded payload with
 * jansson (types and all), not with jwt_get_grant_int, which cannot tell 0 from a string.
 */
#include "token.h"

#include <jansson.h>
#include <jwt.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* The `alg` of the token's header, without trusting anything else of it. */
static jwt_alg_t header_alg(const char *token, size_t len)
{
    const char *dot = memchr(token, '.', len);
    if (dot == NULL || dot == token || (size_t)(dot - token) > 512)
        return JWT_ALG_INVAL;
    unsigned char raw[400];
    size_t n = 0;
    if (sodium_base642bin(raw, sizeof(raw) - 1, token, (size_t)(dot - token), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return JWT_ALG_INVAL;
    json_t *h = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    jwt_alg_t a = JWT_ALG_INVAL;
    if (alg != NULL && strcmp(alg, "HS256") == 0)
        a = JWT_ALG_HS256;
    else if (alg != NULL && strcmp(alg, "ES256") == 0)
        a = JWT_ALG_ES256;
    json_decref(h);
    return a;
}

static bool printable(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static int fail(const char **why, const char *w)
{
    if (why != NULL)
        *why = w;
    return TG_EUNAUTHENTICATED;
}

static int check_claims(const tg_config_t *cfg, json_t *cl, int64_t now_s, tg_adm_principal_t *out,
                        const char **why)
{
    int64_t skew = cfg->admin_auth.skew_s;
    json_t *exp = json_object_get(cl, "exp"), *nbf = json_object_get(cl, "nbf");
    if (!json_is_integer(exp))
        return fail(why, "exp");
    if (now_s > json_integer_value(exp) + skew)
        return fail(why, "expired");
    if (nbf != NULL && (!json_is_integer(nbf) || now_s + skew < json_integer_value(nbf)))
        return fail(why, "nbf");
    const char *iss = json_string_value(json_object_get(cl, "iss"));
    if (iss == NULL || cfg->admin_auth.issuer == NULL || strcmp(iss, cfg->admin_auth.issuer) != 0)
        return fail(why, "iss");
    json_t *aud = json_object_get(cl, "aud");
    bool aud_ok = false;
    if (json_is_string(aud)) {
        aud_ok = strcmp(json_string_value(aud), cfg->admin_auth.audience) == 0;
    } else if (json_is_array(aud)) {
        size_t i;
        json_t *a;
        json_array_foreach(aud, i, a) if (json_is_string(a) &&
                                          strcmp(json_string_value(a), cfg->admin_auth.audience) == 0)
            aud_ok = true;
    }
    if (!aud_ok)
        return fail(why, "aud");
    const char *sub = json_string_value(json_object_get(cl, "sub"));
    if (sub == NULL || sub[0] == '\0' || strlen(sub) > TG_ADM_ACTOR_MAX || !printable(sub))
        return fail(why, "sub");
    tg_role_t role = tg_role_parse(json_string_value(json_object_get(cl, "role")));
    if (role == TG_ROLE_NONE)
        return fail(why, "role");
    int64_t tenant = 0;
    if (role == TG_ROLE_TENANT_ADMIN) {
        json_t *t = json_object_get(cl, "tenant");
        if (json_is_integer(t))
            tenant = json_integer_value(t);
        else if (json_is_string(t)) {
            const char *s = json_string_value(t);
            char *end = NULL;
            tenant = s[0] >= '1' && s[0] <= '9' && strlen(s) <= 18 ? strtoll(s, &end, 10) : 0;
            if (end == NULL || *end != '\0')
                tenant = 0;
        }
        if (tenant <= 0)
            return fail(why, "tenant");
    }
    memset(out, 0, sizeof(*out));
    out->role = role;
    out->tenant_id = tenant;
    snprintf(out->actor, sizeof(out->actor), "%s", sub);
    return 0;
}

int tg_jwt_verify(const tg_config_t *cfg, const char *token, size_t len, int64_t now_s,
                  tg_adm_principal_t *out, const char **why)
{
    if (!cfg->admin_auth.enabled)
        return fail(why, "not_configured");
    if (token == NULL || len == 0 || len > TG_JWT_MAX_LEN || memchr(token, '\0', len) != NULL)
        return fail(why, "size");
    jwt_alg_t want = header_alg(token, len);
    const unsigned char *key = NULL;
    int keylen = 0;
    if (want == JWT_ALG_HS256 && cfg->admin_auth.hs256_secret != NULL) {
        key = (const unsigned char *)cfg->admin_auth.hs256_secret;
        keylen = (int)cfg->admin_auth.hs256_len;
    } else if (want == JWT_ALG_ES256 && cfg->admin_auth.es256_public_key != NULL) {
        key = (const unsigned char *)cfg->admin_auth.es256_public_key;
        keylen = (int)strlen(cfg->admin_auth.es256_public_key);
    } else {
        return fail(why, "alg");
    }
    char tok[TG_JWT_MAX_LEN + 1];
    memcpy(tok, token, len);
    tok[len] = '\0';
    jwt_t *jwt = NULL;
    /* never a NULL key: libjwt then skips verification */
    if (jwt_decode(&jwt, tok, key, keylen) != 0 || jwt == NULL)
        return fail(why, "signature");
    int rc;
    if (jwt_get_alg(jwt) != want) {
        rc = fail(why, "alg");
    } else {
        char *claims = jwt_get_grants_json(jwt, NULL);
        json_t *cl = claims != NULL ? json_loads(claims, JSON_REJECT_DUPLICATES, NULL) : NULL;
        rc = json_is_object(cl) ? check_claims(cfg, cl, now_s, out, why) : fail(why, "claims");
        json_decref(cl);
        free(claims);
    }
    jwt_free(jwt);
    return rc;
}

int tg_jwt_mint(const tg_config_t *cfg, const char *sub, tg_role_t role, int64_t tenant, int64_t ttl_s,
                int64_t now_s, char **out)
{
    *out = NULL;
    if (!cfg->admin_auth.enabled || cfg->admin_auth.hs256_secret == NULL)
        return TG_ECONFIG;
    if (sub == NULL || sub[0] == '\0' || strlen(sub) > TG_ADM_ACTOR_MAX || !printable(sub) ||
        role == TG_ROLE_NONE || ttl_s <= 0 || (role == TG_ROLE_TENANT_ADMIN && tenant <= 0))
        return TG_EINVALID_REQUEST;
    jwt_t *jwt = NULL;
    if (jwt_new(&jwt) != 0)
        return TG_ENOMEM;
    unsigned char jti_raw[12];
    char jti[24];
    randombytes_buf(jti_raw, sizeof(jti_raw));
    sodium_bin2base64(jti, sizeof(jti), jti_raw, sizeof(jti_raw), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int rc = jwt_add_grant(jwt, "iss", cfg->admin_auth.issuer) |
             jwt_add_grant(jwt, "aud", cfg->admin_auth.audience) | jwt_add_grant(jwt, "sub", sub) |
             jwt_add_grant(jwt, "role", tg_role_name(role)) | jwt_add_grant(jwt, "jti", jti) |
             jwt_add_grant_int(jwt, "iat", (long)now_s) | jwt_add_grant_int(jwt, "nbf", (long)now_s) |
             jwt_add_grant_int(jwt, "exp", (long)(now_s + ttl_s));
    if (role == TG_ROLE_TENANT_ADMIN)
        rc |= jwt_add_grant_int(jwt, "tenant", (long)tenant);
    rc |= jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)cfg->admin_auth.hs256_secret,
                      (int)cfg->admin_auth.hs256_len);
    char *s = rc == 0 ? jwt_encode_str(jwt) : NULL;
    jwt_free(jwt);
    if (s == NULL)
        return TG_ENOMEM;
    *out = strdup(s);
    free(s);
    return *out != NULL ? 0 : TG_ENOMEM;
}

const char *tg_role_name(tg_role_t r)
{
    switch (r) {
    case TG_ROLE_OPERATOR:
        return "operator";
    case TG_ROLE_TENANT_ADMIN:
        return "tenant_admin";
    case TG_ROLE_AUDITOR:
        return "auditor";
    default:
        return "none";
    }
}

tg_role_t tg_role_parse(const char *s)
{
    if (s == NULL)
        return TG_ROLE_NONE;
    if (strcmp(s, "operator") == 0)
        return TG_ROLE_OPERATOR;
    if (strcmp(s, "tenant_admin") == 0)
        return TG_ROLE_TENANT_ADMIN;
    if (strcmp(s, "auditor") == 0)
        return TG_ROLE_AUDITOR;
    return TG_ROLE_NONE;
}
