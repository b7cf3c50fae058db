/*
 * test_byok.c - BYOK sealing (gateway/src/byok.c) and the master keyring (gateway/core/keyring.c):
 * a round trip; a blob that does not open for another tenant, another provider, a relabelled or
 * unknown master key id, or with any byte flipped; rotation re-seals under the new id, and both
 * ids open meanwhile; key files: raw, hex, a file others may read is refused, an unknown id; the
 * cache of sealed blobs (gateway/src/credcache.c): hits, absences, expiry, a clear, an answer that a
 * clear overtook, and its bound; what a failed tenant key means to the plan (tg_outcome_byok).
 */
#define _GNU_SOURCE /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "byok.h"
#include "credcache.h"
#include "keyring.h"
#include "outcome.h"

static const char *const KEY = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz";

static tg_keyring_t *ring(const char *const *ids, size_t n, uint8_t seed)
{
    uint8_t keys[TG_KEYRING_MAX * TG_KEYRING_KEY_LEN];
    for (size_t i = 0; i < n * TG_KEYRING_KEY_LEN; i++)
        keys[i] = (uint8_t)(seed + i * 7 + i / TG_KEYRING_KEY_LEN);
    return tg_keyring_from_bytes(ids, keys, n);
}

static void test_round_trip(void **state)
{
    const char *ids[] = {"mk1"};
    tg_keyring_t *kr = ring(ids, 1, 1);
    assert_non_null(kr);
    tg_sealed_t b;
    assert_int_equal(tg_byok_seal(kr, 42, "openai", KEY, strlen(KEY), &b), 0);
    assert_string_equal(b.key_id, "mk1");
    assert_int_equal(b.len, strlen(KEY) + TG_BYOK_TAG_LEN);
    assert_null(memmem(b.sealed, b.len, KEY, strlen(KEY))); /* no plaintext in the blob */
    tg_secret_t *s = NULL;
    assert_int_equal(tg_byok_open(kr, 42, "openai", &b, &s), 0);
    assert_non_null(s);
    assert_int_equal(s->len, strlen(KEY));
    assert_string_equal(s->s, KEY);
    tg_secret_free(s);

    /* two seals of one key differ (random nonce) */
    tg_sealed_t b2;
    assert_int_equal(tg_byok_seal(kr, 42, "openai", KEY, strlen(KEY), &b2), 0);
    assert_memory_not_equal(b.nonce, b2.nonce, TG_BYOK_NONCE_LEN);
    assert_memory_not_equal(b.sealed, b2.sealed, b.len);
    tg_keyring_free(kr);
}

static void test_associated_data_binds(void **state)
{
    const char *ids[] = {"mk1", "mk2"};
    tg_keyring_t *kr = ring(ids, 2, 3);
    tg_sealed_t b;
    assert_int_equal(tg_byok_seal(kr, 42, "openai", KEY, strlen(KEY), &b), 0);
    tg_secret_t *s = (tg_secret_t *)1;
    assert_int_equal(tg_byok_open(kr, 43, "openai", &b, &s), TG_EFORBIDDEN); /* another tenant */
    assert_null(s);
    assert_int_equal(tg_byok_open(kr, 42, "anthropic", &b, &s), TG_EFORBIDDEN); /* another provider */
    assert_int_equal(tg_byok_open(kr, -42, "openai", &b, &s), TG_EFORBIDDEN);
    tg_sealed_t relabelled = b;
    memcpy(relabelled.key_id, "mk2", 4); /* the other master key of the ring */
    assert_int_equal(tg_byok_open(kr, 42, "openai", &relabelled, &s), TG_EFORBIDDEN);
    tg_sealed_t unknown = b;
    memcpy(unknown.key_id, "mk9", 4);
    assert_int_equal(tg_byok_open(kr, 42, "openai", &unknown, &s), TG_ENOT_FOUND);
    assert_null(s);
    tg_keyring_free(kr);
}

static void test_tampered_fails(void **state)
{
    const char *ids[] = {"mk1"};
    tg_keyring_t *kr = ring(ids, 1, 5);
    tg_sealed_t b;
    assert_int_equal(tg_byok_seal(kr, 7, "p", KEY, strlen(KEY), &b), 0);
    tg_secret_t *s = NULL;
    for (size_t i = 0; i < b.len; i++) {
        tg_sealed_t t = b;
        t.sealed[i] ^= 0x01;
        assert_int_equal(tg_byok_open(kr, 7, "p", &t, &s), TG_EFORBIDDEN);
    }
    for (size_t i = 0; i < TG_BYOK_NONCE_LEN; i++) {
        tg_sealed_t t = b;
        t.nonce[i] ^= 0x80;
        assert_int_equal(tg_byok_open(kr, 7, "p", &t, &s), TG_EFORBIDDEN);
    }
    tg_sealed_t cut = b;
    cut.len -= 1;
    assert_int_equal(tg_byok_open(kr, 7, "p", &cut, &s), TG_EFORBIDDEN);
    cut.len = TG_BYOK_TAG_LEN; /* nothing but a tag */
    assert_int_equal(tg_byok_open(kr, 7, "p", &cut, &s), TG_EFORBIDDEN);
    /* the same master key bytes under another id: its blobs are not this id's */
    const char *other[] = {"mk0"};
    tg_keyring_t *kr2 = ring(other, 1, 5);
    tg_sealed_t moved = b;
    memcpy(moved.key_id, "mk0", 4);
    assert_int_equal(tg_byok_open(kr2, 7, "p", &moved, &s), TG_EFORBIDDEN);
    assert_null(s);
    tg_keyring_free(kr2);
    tg_keyring_free(kr);
}

static void test_rotation(void **state)
{
    const char *old_ids[] = {"2026-01"};
    tg_keyring_t *old_ring = ring(old_ids, 1, 9);
    tg_sealed_t b;
    assert_int_equal(tg_byok_seal(old_ring, 1, "openai", KEY, strlen(KEY), &b), 0);

    /* during the rotation: the new key first (it seals), the old one still opens */
    const char *ids[] = {"2026-06", "2026-01"};
    uint8_t keys[2 * TG_KEYRING_KEY_LEN];
    randombytes_buf(keys, TG_KEYRING_KEY_LEN);
    for (size_t i = 0; i < TG_KEYRING_KEY_LEN; i++)
        keys[TG_KEYRING_KEY_LEN + i] = old_ring->keys[0].key[i];
    tg_keyring_t *both = tg_keyring_from_bytes(ids, keys, 2);
    assert_non_null(both);
    tg_secret_t *s = NULL;
    assert_int_equal(tg_byok_open(both, 1, "openai", &b, &s), 0);
    tg_secret_free(s);
    tg_sealed_t r;
    assert_int_equal(tg_byok_reseal(both, 1, "openai", &b, &r), 0);
    assert_string_equal(r.key_id, "2026-06");
    assert_int_equal(tg_byok_reseal(both, 1, "openai", &b, &b), 0); /* in place */
    assert_string_equal(b.key_id, "2026-06");

    /* after it: only the new key; the re-sealed blob opens, one sealed under the old id does not */
    const char *new_ids[] = {"2026-06"};
    tg_keyring_t *new_ring = tg_keyring_from_bytes(new_ids, keys, 1);
    assert_int_equal(tg_byok_open(new_ring, 1, "openai", &r, &s), 0);
    assert_string_equal(s->s, KEY);
    tg_secret_free(s);
    tg_sealed_t stale;
    assert_int_equal(tg_byok_seal(old_ring, 1, "openai", KEY, strlen(KEY), &stale), 0);
    assert_int_equal(tg_byok_open(new_ring, 1, "openai", &stale, &s), TG_ENOT_FOUND);
    sodium_memzero(keys, sizeof(keys));
    tg_keyring_free(new_ring);
    tg_keyring_free(both);
    tg_keyring_free(old_ring);
}

static void test_refusals_and_last4(void **state)
{
    const char *ids[] = {"mk1"};
    tg_keyring_t *kr = ring(ids, 1, 11);
    tg_sealed_t b;
    assert_int_equal(tg_byok_seal(NULL, 1, "openai", KEY, strlen(KEY), &b), TG_ECONFIG);
    assert_int_equal(tg_byok_seal(kr, 1, "openai", KEY, 0, &b), TG_EINVALID_REQUEST);
    assert_int_equal(tg_byok_seal(kr, 1, "bad provider", KEY, strlen(KEY), &b), TG_EINVALID_REQUEST);
    char big[TG_BYOK_KEY_MAX + 1];
    memset(big, 'k', sizeof(big));
    assert_int_equal(tg_byok_seal(kr, 1, "openai", big, sizeof(big), &b), TG_EINVALID_REQUEST);
    assert_int_equal(tg_byok_seal(kr, 1, "openai", big, TG_BYOK_KEY_MAX, &b), 0);
    assert_int_equal(b.len, TG_BYOK_SEALED_MAX); /* the schema's bound: 4112 bytes */
    char l4[5];
    tg_byok_last4(KEY, strlen(KEY), l4);
    assert_string_equal(l4, "wxyz");
    tg_byok_last4("short-key", 9, l4);
    assert_string_equal(l4, "");
    tg_keyring_free(kr);
}

/* Writes a key file with mode `mode`; returns its path (static buffer per call site). */
static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void test_key_files(void **state)
{
    char dir[] = "/tmp/tg_byok_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char raw_p[64], hex_p[64], open_p[64], bad_p[64];
    snprintf(raw_p, sizeof(raw_p), "%s/raw", dir);
    snprintf(hex_p, sizeof(hex_p), "%s/hex", dir);
    snprintf(open_p, sizeof(open_p), "%s/open", dir);
    snprintf(bad_p, sizeof(bad_p), "%s/bad", dir);
    uint8_t raw[32];
    for (int i = 0; i < 32; i++)
        raw[i] = (uint8_t)(0xa0 + i);
    raw[31] = '\n'; /* a raw key may end in what looks like whitespace: it is kept */
    write_file(raw_p, raw, 32, 0600);
    char hex[66];
    sodium_bin2hex(hex, 65, raw, 32);
    hex[64] = '\n';
    write_file(hex_p, hex, 65, 0400);
    write_file(open_p, hex, 65, 0644);
    write_file(bad_p, "not a key\n", 10, 0600);

    char js[512];
    snprintf(js, sizeof(js), "[{\"id\":\"a\",\"file\":\"%s\"},{\"id\":\"b\",\"file\":\"%s\"}]", raw_p, hex_p);
    json_t *list = json_loads(js, 0, NULL);
    tg_buf_t errs;
    tg_buf_init(&errs, 4096);
    tg_keyring_t *kr = NULL;
    assert_int_equal(tg_keyring_load(list, "secrets.master_keys", &kr, &errs), 0);
    assert_non_null(kr);
    assert_int_equal(kr->n, 2);
    assert_string_equal(tg_keyring_active(kr)->id, "a");
    assert_memory_equal(tg_keyring_find(kr, "a")->key, raw, 32);
    assert_memory_equal(tg_keyring_find(kr, "b")->key, raw, 32);
    assert_null(tg_keyring_find(kr, "c"));
    tg_keyring_free(kr);
    json_decref(list);

    /* readable by others, not a key, a duplicate id, a bad id, a missing file: every problem */
    snprintf(js, sizeof(js),
             "[{\"id\":\"a\",\"file\":\"%s\"},{\"id\":\"b\",\"file\":\"%s\"},{\"id\":\"a\",\"file\":\"%s\"},"
             "{\"id\":\"b/c\",\"file\":\"%s\"},{\"id\":\"d\",\"file\":\"%s/none\"}]",
             open_p, bad_p, raw_p, raw_p, dir);
    list = json_loads(js, 0, NULL);
    kr = (tg_keyring_t *)1;
    assert_int_equal(tg_keyring_load(list, "secrets.master_keys", &kr, &errs), 5);
    assert_null(kr);
    assert_non_null(strstr(errs.data, "secrets.master_keys[0].file"));
    assert_non_null(strstr(errs.data, "group or others"));
    assert_non_null(strstr(errs.data, "secrets.master_keys[1].file"));
    assert_non_null(strstr(errs.data, "already used"));
    assert_null(memmem(errs.data, errs.len, hex, 64)); /* never a key's bytes */
    json_decref(list);
    tg_buf_dispose(&errs);
    unlink(raw_p);
    unlink(hex_p);
    unlink(open_p);
    unlink(bad_p);
    rmdir(dir);
}

static void test_credcache(void **state)
{
    const char *ids[] = {"mk1"};
    tg_keyring_t *kr = ring(ids, 1, 13);
    tg_sealed_t b, got;
    assert_int_equal(tg_byok_seal(kr, 5, "openai", KEY, strlen(KEY), &b), 0);
    uint32_t gen = tg_credcache_generation();
    assert_int_equal(tg_credcache_get(5, "openai", 1000, &got), 0); /* a miss */
    assert_true(tg_credcache_put(5, "openai", &b, 2000, gen));
    assert_true(tg_credcache_put(5, "anthropic", NULL, 2000, gen)); /* no such row */
    assert_int_equal(tg_credcache_get(5, "openai", 1000, &got), 1);
    assert_string_equal(got.key_id, "mk1");
    assert_int_equal(got.len, b.len);
    assert_memory_equal(got.sealed, b.sealed, b.len);
    assert_memory_equal(got.nonce, b.nonce, TG_BYOK_NONCE_LEN);
    assert_int_equal(tg_credcache_get(5, "anthropic", 1000, &got), TG_ENOT_FOUND);
    assert_int_equal(tg_credcache_get(6, "openai", 1000, &got), 0); /* another tenant */
    assert_int_equal(tg_credcache_get(5, "openai", 2000, &got), 0); /* expired */

    /* a clear (a NOTIFY) drops everything; an answer read before it is not cached after it */
    assert_true(tg_credcache_put(5, "openai", &b, 5000, gen));
    tg_credcache_clear();
    assert_int_equal(tg_credcache_get(5, "openai", 1000, &got), 0);
    assert_false(tg_credcache_put(5, "openai", &b, 5000, gen));
    assert_int_equal(tg_credcache_get(5, "openai", 1000, &got), 0);

    /* bounded: four times more tenants than slots, the cache keeps working */
    gen = tg_credcache_generation();
    for (int64_t t = 1; t <= 4 * TG_CREDCACHE_SLOTS; t++)
        assert_true(tg_credcache_put(t, "openai", &b, 9000 + (uint64_t)t, gen));
    assert_int_equal(tg_credcache_get(4 * TG_CREDCACHE_SLOTS, "openai", 1000, &got), 1);
    size_t kept = 0;
    for (int64_t t = 1; t <= 4 * TG_CREDCACHE_SLOTS; t++)
        kept += tg_credcache_get(t, "openai", 1000, &got) == 1;
    assert_true(kept <= TG_CREDCACHE_SLOTS);
    tg_credcache_clear();
    tg_keyring_free(kr);
}

static void test_outcome_byok(void **state)
{
    tg_classified_t c;
    /* no fallback: the tenant's error, the table's words, nothing counted against any breaker */
    tg_outcome_byok(&c, true, 401, false);
    assert_int_equal(c.cls, TG_OUTCOME_CALLER);
    assert_int_equal(c.status, 400);
    assert_string_equal(c.code, "byok_key_rejected");
    assert_string_equal(c.reason, "byok_key_rejected");
    assert_string_equal(c.message, tg_err_public_msg(TG_EBYOK_REJECTED));
    assert_int_equal(tg_outcome_breaker_result(c.cls), TG_RESULT_NEUTRAL);
    tg_outcome_byok(&c, false, 0, false);
    assert_int_equal(c.cls, TG_OUTCOME_CALLER);
    assert_int_equal(c.status, 422);
    assert_string_equal(c.code, "byok_key_unusable");
    /* with fallback: the attempt fails over (to the platform key) and opens the credential's breaker */
    tg_outcome_byok(&c, true, 403, true);
    assert_int_equal(c.cls, TG_OUTCOME_MISCONFIGURED);
    assert_int_equal(c.status, 403);
    assert_string_equal(c.reason, "byok_key_rejected");
    assert_int_equal(tg_outcome_breaker_result(c.cls), TG_RESULT_FAILURE_OPEN);
    tg_outcome_byok(&c, false, 0, true);
    assert_int_equal(c.cls, TG_OUTCOME_MISCONFIGURED);
    assert_string_equal(c.reason, "byok_key_unusable");
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),         cmocka_unit_test(test_associated_data_binds),
        cmocka_unit_test(test_tampered_fails),     cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_refusals_and_last4), cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_credcache),          cmocka_unit_test(test_outcome_byok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
