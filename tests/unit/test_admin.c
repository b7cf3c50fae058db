/*
 * test_admin.c - the admin API's pure parts: JWT verification against every attack of
 * admin/README.md "Auth" (alg none, algorithm confusion with the ES256 public key as an HMAC
 * secret, forged and foreign signatures, an unpinned algorithm), exp/nbf with the clock skew,
 * iss and aud, the role claims; minting; route patterns and odd segments; the body validation
 * listing every bad field; cursors, ETags and If-Match; the config's admin_auth block.
 *
 * The ES256 keys are test fixtures (tests/fixtures/admin_es256_*): made for this test only.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "token.h"

#define NOW    INT64_C(1800000000)
#define ISS    "https://auth.test"
#define AUD    "tollgate-admin"
#define SECRET "0123456789abcdef0123456789abcdef-hs256"
#define SKEW   60

static char *read_fixture(const char *name)
{
    const char *d = getenv("TG_FIXTURES");
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", d != NULL ? d : "tests/fixtures", name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char bufs[4][4096];
    static int next;
    char *b = bufs[next++ % 4];
    size_t n = fread(b, 1, 4095, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

/* A config with both keys (or one of them) pinned. */
static tg_config_t make_cfg(bool hs, bool es)
{
    tg_config_t c;
    memset(&c, 0, sizeof(c));
    c.admin_auth.enabled = true;
    c.admin_auth.issuer = ISS;
    c.admin_auth.audience = AUD;
    c.admin_auth.skew_s = SKEW;
    if (hs) {
        c.admin_auth.hs256_secret = SECRET;
        c.admin_auth.hs256_len = strlen(SECRET);
    }
    if (es)
        c.admin_auth.es256_public_key = read_fixture("admin_es256_test.pub");
    return c;
}

/* A token with the given claims (JSON text) signed with alg and key. */
static char *sign(jwt_alg_t alg, const char *key, size_t keylen, const char *claims)
{
    jwt_t *j = NULL;
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(jwt_add_grants_json(j, claims), 0);
    assert_int_equal(jwt_set_alg(j, alg, (const unsigned char *)key, (int)keylen), 0);
    char *s = jwt_encode_str(j);
    jwt_free(j);
    assert_non_null(s);
    return s;
}

static char *claims(const char *extra)
{
    static char buf[1024];
    snprintf(buf, sizeof(buf),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD
             "\",\"sub\":\"alice\",\"role\":\"operator\",\"exp\":%lld%s%s}",
             (long long)(NOW + 600), extra[0] != '\0' ? "," : "", extra);
    return buf;
}

static int verify(const tg_config_t *c, const char *tok, tg_adm_principal_t *p, const char **why)
{
    return tg_jwt_verify(c, tok, strlen(tok), NOW, p, why);
}

static void test_jwt_valid(void **state)
{
    (void)state;
    tg_config_t c = make_cfg(true, true);
    tg_adm_principal_t p;
    const char *why = NULL;
    char *t = sign(JWT_ALG_HS256, SECRET, strlen(SECRET), claims(""));
    assert_int_equal(verify(&c, t, &p, &why), 0);
    assert_int_equal(p.role, TG_ROLE_OPERATOR);
    assert_string_equal(p.actor, "alice");
    free(t);
    const char *priv = read_fixture("admin_es256_test.key");
    char cl[512];
    snprintf(cl, sizeof(cl),
             "{\"iss\":\"" ISS "\",\"aud\":[\"other\",\"" AUD
             "\"],\"sub\":\"bob\",\"role\":\"auditor\",\"exp\":%lld}",
             (long long)(NOW + 60));
    t = sign(JWT_ALG_ES256, priv, strlen(priv), cl);
    assert_int_equal(verify(&c, t, &p, &why), 0);
    assert_int_equal(p.role, TG_ROLE_AUDITOR);
    free(t);
}

static void test_jwt_attacks(void **state)
{
    (void)state;
    tg_adm_principal_t p;
    const char *why = NULL;
    const char *pub = read_fixture("admin_es256_test.pub");
    /* algorithm confusion: HS256 with the ES256 public key PEM as the HMAC secret */
    char *t = sign(JWT_ALG_HS256, pub, strlen(pub), claims(""));
    for (int k = 0; k < 2; k++) {
        tg_config_t c = make_cfg(k == 0, true); /* with and without an HS256 secret configured */
        assert_int_equal(verify(&c, t, &p, &why), TG_EUNAUTHENTICATED);
    }
    free(t);
    /* alg none: a header saying none, no signature */
    tg_config_t c = make_cfg(true, true);
    const char *none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." /* {"alg":"none","typ":"JWT"} */
        "eyJpc3MiOiJodHRwczovL2F1dGgudGVzdCIsImF1ZCI6InRvbGxnYXRlLWFkbWluIiwic3ViIjoiYSIsInJvbGUiOiJv"
        "cGVyYXRvciIsImV4cCI6MTkwMDAwMDAwMH0.";
    assert_int_equal(verify(&c, none, &p, &why), TG_EUNAUTHENTICATED);
    /* a forged payload under a real signature */
    t = sign(JWT_ALG_HS256, SECRET, strlen(SECRET), claims(""));
    char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    char forged[2048];
    char *payload =
        "eyJpc3MiOiJodHRwczovL2F1dGgudGVzdCIsImF1ZCI6InRvbGxnYXRlLWFkbWluIiwic3ViIjoibWFsbG9yeSIsInJvbGUi"
        "OiJvcGVyYXRvciIsImV4cCI6MTkwMDAwMDAwMH0";
    snprintf(forged, sizeof(forged), "%.*s.%s%s", (int)(d1 - t), t, payload, d2);
    assert_int_equal(verify(&c, forged, &p, &why), TG_EUNAUTHENTICATED);
    /* a flipped signature byte */
    size_t n = strlen(t);
    t[n - 3] = t[n - 3] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(&c, t, &p, &why), TG_EUNAUTHENTICATED);
    free(t);
    /* the right algorithm, another key: wrong HS256 secret, a foreign ES256 key */
    t = sign(JWT_ALG_HS256, "another-secret-of-32-bytes-or-more!!", 36, claims(""));
    assert_int_equal(verify(&c, t, &p, &why), TG_EUNAUTHENTICATED);
    free(t);
    const char *other = read_fixture("admin_es256_other.key");
    t = sign(JWT_ALG_ES256, other, strlen(other), claims(""));
    assert_int_equal(verify(&c, t, &p, &why), TG_EUNAUTHENTICATED);
    free(t);
    /* an algorithm no key is pinned to, even with the right secret */
    t = sign(JWT_ALG_HS384, SECRET, strlen(SECRET), claims(""));
    assert_int_equal(verify(&c, t, &p, &why), TG_EUNAUTHENTICATED);
    assert_string_equal(why, "alg");
    free(t);
    /* ES256 configured only: an HS256 token has no key */
    tg_config_t es = make_cfg(false, true);
    t = sign(JWT_ALG_HS256, SECRET, strlen(SECRET), claims(""));
    assert_int_equal(verify(&es, t, &p, &why), TG_EUNAUTHENTICATED);
    free(t);
    /* junk and size */
    assert_int_equal(verify(&c, "", &p, &why), TG_EUNAUTHENTICATED);
    assert_int_equal(verify(&c, "a.b.c", &p, &why), TG_EUNAUTHENTICATED);
    static char big[TG_JWT_MAX_LEN + 10];
    memset(big, 'a', sizeof(big) - 1);
    assert_int_equal(verify(&c, big, &p, &why), TG_EUNAUTHENTICATED);
    assert_string_equal(why, "size");
    /* admin_auth off: nothing verifies */
    tg_config_t off;
    memset(&off, 0, sizeof(off));
    t = sign(JWT_ALG_HS256, SECRET, strlen(SECRET), claims(""));
    assert_int_equal(verify(&off, t, &p, &why), TG_EUNAUTHENTICATED);
    free(t);
}

static int verify_claims(const char *json, const char **why)
{
    tg_config_t c = make_cfg(true, false);
    tg_adm_principal_t p;
    char *t = sign(JWT_ALG_HS256, SECRET, strlen(SECRET), json);
    int rc = verify(&c, t, &p, why);
    free(t);
    return rc;
}

static void test_jwt_claims_and_skew(void **state)
{
    (void)state;
    const char *why = NULL;
    char j[512];
#define CL(fmt, ...) (snprintf(j, sizeof(j), fmt, __VA_ARGS__), j)
    const char *base = "\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"a\",\"role\":\"operator\"";
    /* exp: within the skew passes, beyond it does not; missing or a string is refused */
    assert_int_equal(verify_claims(CL("{%s,\"exp\":%lld}", base, (long long)(NOW - SKEW)), &why), 0);
    assert_int_equal(verify_claims(CL("{%s,\"exp\":%lld}", base, (long long)(NOW - SKEW - 1)), &why),
                     TG_EUNAUTHENTICATED);
    assert_string_equal(why, "expired");
    assert_int_equal(verify_claims(CL("{%s}", base), &why), TG_EUNAUTHENTICATED);
    assert_int_equal(verify_claims(CL("{%s,\"exp\":\"%lld\"}", base, (long long)(NOW + 60)), &why),
                     TG_EUNAUTHENTICATED);
    /* nbf */
    long long exp = NOW + 600;
    assert_int_equal(
        verify_claims(CL("{%s,\"exp\":%lld,\"nbf\":%lld}", base, exp, (long long)(NOW + SKEW)), &why), 0);
    assert_int_equal(
        verify_claims(CL("{%s,\"exp\":%lld,\"nbf\":%lld}", base, exp, (long long)(NOW + SKEW + 1)), &why),
        TG_EUNAUTHENTICATED);
    assert_string_equal(why, "nbf");
    /* iss, aud */
    assert_int_equal(verify_claims(CL("{\"iss\":\"https://evil\",\"aud\":\"" AUD
                                      "\",\"sub\":\"a\",\"role\":\"operator\",\"exp\":%lld}",
                                      exp),
                                   &why),
                     TG_EUNAUTHENTICATED);
    assert_string_equal(why, "iss");
    assert_int_equal(
        verify_claims(CL("{\"iss\":\"" ISS "\",\"aud\":\"other\",\"sub\":\"a\",\"role\":\"operator\","
                         "\"exp\":%lld}",
                         exp),
                      &why),
        TG_EUNAUTHENTICATED);
    assert_string_equal(why, "aud");
    assert_int_equal(
        verify_claims(CL("{\"iss\":\"" ISS "\",\"sub\":\"a\",\"role\":\"operator\",\"exp\":%lld}", exp),
                      &why),
        TG_EUNAUTHENTICATED);
    /* roles */
    const char *ia = "\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"a\"";
    assert_int_equal(verify_claims(CL("{%s,\"role\":\"root\",\"exp\":%lld}", ia, exp), &why),
                     TG_EUNAUTHENTICATED);
    assert_string_equal(why, "role");
    assert_int_equal(verify_claims(CL("{%s,\"exp\":%lld}", ia, exp), &why), TG_EUNAUTHENTICATED);
    assert_int_equal(verify_claims(CL("{%s,\"role\":\"tenant_admin\",\"exp\":%lld}", ia, exp), &why),
                     TG_EUNAUTHENTICATED);
    assert_string_equal(why, "tenant");
    assert_int_equal(
        verify_claims(CL("{%s,\"role\":\"tenant_admin\",\"tenant\":0,\"exp\":%lld}", ia, exp), &why),
        TG_EUNAUTHENTICATED);
    assert_int_equal(
        verify_claims(CL("{%s,\"role\":\"tenant_admin\",\"tenant\":\"12x\",\"exp\":%lld}", ia, exp), &why),
        TG_EUNAUTHENTICATED);
    tg_config_t c = make_cfg(true, false);
    tg_adm_principal_t p;
    char *t = sign(JWT_ALG_HS256, SECRET, strlen(SECRET),
                   CL("{%s,\"role\":\"tenant_admin\",\"tenant\":\"42\",\"exp\":%lld}", ia, exp));
    assert_int_equal(verify(&c, t, &p, &why), 0);
    assert_int_equal(p.role, TG_ROLE_TENANT_ADMIN);
    assert_int_equal(p.tenant_id, 42);
    free(t);
    /* sub: required, printable, bounded */
    assert_int_equal(
        verify_claims(CL("{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"role\":\"operator\",\"exp\":%lld}", exp),
                      &why),
        TG_EUNAUTHENTICATED);
    assert_string_equal(why, "sub");
    assert_int_equal(verify_claims(CL("{\"iss\":\"" ISS "\",\"aud\":\"" AUD
                                      "\",\"sub\":\"a\\nb\",\"role\":\"operator\",\"exp\":%lld}",
                                      exp),
                                   &why),
                     TG_EUNAUTHENTICATED);
#undef CL
}

static void test_jwt_mint(void **state)
{
    (void)state;
    tg_config_t c = make_cfg(true, true);
    char *t = NULL;
    assert_int_equal(tg_jwt_mint(&c, "ops", TG_ROLE_TENANT_ADMIN, 7, 3600, NOW, &t), 0);
    tg_adm_principal_t p;
    const char *why = NULL;
    assert_int_equal(verify(&c, t, &p, &why), 0);
    assert_int_equal(p.role, TG_ROLE_TENANT_ADMIN);
    assert_int_equal(p.tenant_id, 7);
    assert_string_equal(p.actor, "ops");
    /* past its ttl (and the skew) it is refused */
    assert_int_equal(tg_jwt_verify(&c, t, strlen(t), NOW + 3600 + SKEW + 1, &p, &why), TG_EUNAUTHENTICATED);
    free(t);
    assert_int_equal(tg_jwt_mint(&c, "ops", TG_ROLE_TENANT_ADMIN, 0, 3600, NOW, &t), TG_EINVALID_REQUEST);
    assert_int_equal(tg_jwt_mint(&c, "", TG_ROLE_OPERATOR, 0, 3600, NOW, &t), TG_EINVALID_REQUEST);
    tg_config_t es = make_cfg(false, true);
    assert_int_equal(tg_jwt_mint(&es, "ops", TG_ROLE_OPERATOR, 0, 3600, NOW, &t), TG_ECONFIG);
    assert_int_equal(tg_role_parse("operator"), TG_ROLE_OPERATOR);
    assert_int_equal(tg_role_parse("Operator"), TG_ROLE_NONE);
    assert_string_equal(tg_role_name(TG_ROLE_AUDITOR), "auditor");
}

static bool match(const char *pattern, const char *path, tg_adm_param_t *ps, size_t *n)
{
    return tg_adm_match(pattern, path, strlen(path), ps, n);
}

static void test_route_match(void **state)
{
    (void)state;
    tg_adm_param_t ps[TG_ADM_PARAMS_MAX];
    size_t n = 0;
    const char *k = "/admin/v1/tenants/{id}/keys/{key_id}";
    assert_true(match(k, "/admin/v1/tenants/12/keys/345", ps, &n));
    assert_int_equal(n, 2);
    assert_string_equal(ps[0].name, "id");
    assert_int_equal(ps[0].id, 12);
    assert_int_equal(ps[1].id, 345);
    const char *bad[] = {"/admin/v1/tenants/12/keys",        "/admin/v1/tenants/12/keys/",
                         "/admin/v1/tenants//keys/1",        "/admin/v1/tenants/012/keys/1",
                         "/admin/v1/tenants/0/keys/1",       "/admin/v1/tenants/-1/keys/1",
                         "/admin/v1/tenants/1e3/keys/1",     "/admin/v1/tenants/1234567890123456789/keys/1",
                         "/admin/v1/tenants/1/keys/1/extra", "/admin/v1/tenants/1%27/keys/1",
                         "/admin/v1/tenants/ 1/keys/1",      "/admin/v1/tenant/1/keys/1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(match(k, bad[i], ps, &n));
    const char *p = "/admin/v1/tenants/{id}/provider-keys/{provider}";
    assert_true(match(p, "/admin/v1/tenants/1/provider-keys/sim-openai.v2_x", ps, &n));
    assert_string_equal(ps[1].value, "sim-openai.v2_x");
    assert_int_equal(ps[1].id, 0);
    assert_false(match(p, "/admin/v1/tenants/1/provider-keys/a%2Fb", ps, &n));
    assert_false(match(p, "/admin/v1/tenants/1/provider-keys/a;drop", ps, &n));
    char longname[100];
    memset(longname, 'a', sizeof(longname));
    snprintf(longname + 40, 60, "%s", "/admin/v1/tenants/1/provider-keys/");
    char path[300];
    memset(path, 'a', 65);
    path[65] = '\0';
    char full[400];
    snprintf(full, sizeof(full), "/admin/v1/tenants/1/provider-keys/%s", path);
    assert_false(match(p, full, ps, &n)); /* 65 bytes: over TG_ADM_PARAM_MAX */
    assert_true(match("/admin/v1/tenants", "/admin/v1/tenants", ps, &n));
    assert_int_equal(n, 0);
    assert_false(match("/admin/v1/tenants", "/admin/v1/tenants/", ps, &n));
    assert_false(match("/admin/v1/tenants", "/admin/v1/tenantsx", ps, &n));
}

static void test_validation_lists_every_field(void **state)
{
    (void)state;
    static const tg_adm_field_t f[] = {
        {"name", TG_ADM_STR, true, false, 1, 10}, {"n", TG_ADM_INT, false, false, 1, 100},
        {"b", TG_ADM_BOOL, false, true, 0, 0},    {"list", TG_ADM_STR_LIST, false, false, 0, 2},
        {"need", TG_ADM_INT, true, false, 0, 1},
    };
    json_t *o = json_loads("{\"name\":\"a\\u0007b\",\"n\":101,\"b\":null,\"list\":[\"x\",3,\"y\"],\"zz\":1}",
                           0, NULL);
    assert_non_null(o);
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    assert_false(tg_adm_check(o, f, 5, &err));
    assert_int_equal(err.code, TG_EINVALID_REQUEST);
    /* name (control character), n (bound), list (too many), zz (unknown), need (missing); b null is allowed
     */
    const char *want[] = {"name", "n", "list", "zz", "need"};
    assert_int_equal(err.n_fields, 5);
    for (size_t i = 0; i < 5; i++) {
        bool seen = false;
        for (size_t j = 0; j < err.n_fields; j++)
            seen |= strcmp(err.fields[j].field, want[i]) == 0;
        assert_true(seen);
    }
    json_decref(o);
    o = json_loads("{\"name\":\"ok\",\"need\":1,\"list\":[\"a\",\"\"]}", 0, NULL);
    tg_mgmt_err_reset(&err);
    assert_false(tg_adm_check(o, f, 5, &err));
    assert_string_equal(err.fields[0].field, "list[1]");
    json_decref(o);
    o = json_loads("{\"name\":\"ok\",\"need\":0}", 0, NULL);
    tg_mgmt_err_reset(&err);
    assert_true(tg_adm_check(o, f, 5, &err));
    assert_int_equal(err.code, 0);
    json_decref(o);
}

static void test_cursor_etag_if_match(void **state)
{
    (void)state;
    char c[48];
    int64_t id = 0;
    tg_adm_cursor_of(987654321, c, sizeof(c));
    assert_int_equal(tg_adm_cursor_id(c, &id), 0);
    assert_int_equal(id, 987654321);
    const char *bad[] = {"",    "!!", "MTIz" /* "123" without the tag */, "aQ" /* "i" */, "aTA" /* "i0" */,
                         "aS0x" /* "i-1" */};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_not_equal(tg_adm_cursor_id(bad[i], &id), 0);

    json_t *a = json_loads("{\"a\":1,\"b\":[1,2]}", 0, NULL),
           *b = json_loads("{\"b\":[1,2],\"a\":1}", 0, NULL);
    json_t *d = json_loads("{\"a\":2,\"b\":[1,2]}", 0, NULL);
    char ea[TG_ADM_ETAG_LEN], eb[TG_ADM_ETAG_LEN], ed[TG_ADM_ETAG_LEN];
    tg_adm_etag(a, ea);
    tg_adm_etag(b, eb);
    tg_adm_etag(d, ed);
    assert_string_equal(ea, eb); /* key order does not matter */
    assert_string_not_equal(ea, ed);
    assert_int_equal(strlen(ea), 34);
    assert_true(tg_adm_if_match(NULL, ea));
    assert_true(tg_adm_if_match("*", ea));
    assert_true(tg_adm_if_match(ea, ea));
    char list[128];
    snprintf(list, sizeof(list), "%s , %s", ed, ea);
    assert_true(tg_adm_if_match(list, ea));
    assert_false(tg_adm_if_match(ed, ea));
    assert_false(tg_adm_if_match("", ea));
    assert_false(tg_adm_if_match("W/x", ea));
    json_decref(a);
    json_decref(b);
    json_decref(d);
}

static int parse_cfg(const char *admin_auth, const char *listen_admin, tg_buf_t *errors, tg_config_t **out)
{
    char json[4096];
    snprintf(json, sizeof(json),
             "{\"listen\":{\"data\":\"127.0.0.1:18080\",\"admin\":\"%s\"},%s%s"
             "\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:1/v1\"}},"
             "\"models\":{\"m\":{\"provider\":\"p\",\"upstream\":\"m\"}}}",
             listen_admin, admin_auth, admin_auth[0] != '\0' ? "," : "");
    return tg_config_parse(json, strlen(json), "t.json", out, errors);
}

static void test_config_admin_auth(void **state)
{
    (void)state;
    char dir[] = "/tmp/tg-test-admin-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char secret[300], shortf[300];
    snprintf(secret, sizeof(secret), "%s/hs", dir);
    snprintf(shortf, sizeof(shortf), "%s/short", dir);
    FILE *f = fopen(secret, "w");
    fputs(SECRET "\n", f);
    fclose(f);
    f = fopen(shortf, "w");
    fputs("short\n", f);
    fclose(f);
    tg_buf_t e;
    tg_buf_init(&e, 8192);
    tg_config_t *c = NULL;
    /* without admin_auth: loopback only */
    assert_int_not_equal(parse_cfg("", "0.0.0.0:18081", &e, &c), 0);
    assert_non_null(
        strstr(e.data, "listen.admin: must be a loopback address unless admin_auth is configured"));
    tg_buf_reset(&e);
    /* with it, beyond loopback is allowed, and the secret is loaded */
    char block[1200];
    snprintf(block, sizeof(block),
             "\"admin_auth\":{\"issuer\":\"i\",\"audience\":\"a\",\"hs256_secret_file\":\"%s\",\"skew_s\":5}",
             secret);
    assert_int_equal(parse_cfg(block, "0.0.0.0:18081", &e, &c), 0);
    assert_true(c->admin_auth.enabled);
    assert_int_equal(c->admin_auth.skew_s, 5);
    assert_int_equal(c->admin_auth.hs256_len, strlen(SECRET));
    assert_int_equal(c->admin_auth.threads, 2);
    tg_config_unref(c);
    c = NULL;
    /* every error at once: short secret, no issuer, skew out of bounds, unknown key, bad PEM */
    snprintf(
        block, sizeof(block),
        "\"admin_auth\":{\"audience\":\"a\",\"hs256_secret_file\":\"%s\",\"es256_public_key_file\":\"%s\","
        "\"skew_s\":301,\"color\":1}",
        shortf, secret);
    assert_int_not_equal(parse_cfg(block, "127.0.0.1:18081", &e, &c), 0);
    const char *want[] = {"admin_auth.color: unknown key", "admin_auth.skew_s",
                          "issuer and audience are required", "at least 32 bytes", "not a PEM public key"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_non_null(strstr(e.data, want[i]));
    assert_null(strstr(e.data, "short\n")); /* the secret itself never appears */
    tg_buf_dispose(&e);
    unlink(secret);
    unlink(shortf);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwt_valid),
        cmocka_unit_test(test_jwt_attacks),
        cmocka_unit_test(test_jwt_claims_and_skew),
        cmocka_unit_test(test_jwt_mint),
        cmocka_unit_test(test_route_match),
        cmocka_unit_test(test_validation_lists_every_field),
        cmocka_unit_test(test_cursor_etag_if_match),
        cmocka_unit_test(test_config_admin_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
