/*
 * test_auth.c - key generation and format checks, the keyed hash (the pepper matters), and the
 * key cache: hits, misses, TTL expiry, negative entries, clearing and bounded eviction, a clear
 * that overtakes a lookup in flight (the answer is not cached), and a lookup past its database
 * job's deadline (TG_EDB_UNAVAILABLE).
 *
 * The last test runs a real lookup against PostgreSQL (TG_TEST_PG or TG_TEST_PG_FILE, see
 * pg_env.h; ctest passes the "pg" fixture's), in a schema of its own built from the embedded
 * migrations; it skips without a database.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "cli.h"
#include "pg_env.h"

static const uint8_t pepper_a[32] = {1, 2, 3};
static const uint8_t pepper_b[32] = {1, 2, 4};

static int setup(void **state)
{
    return sodium_init() < 0 ? -1 : 0;
}

static int clear_cache(void **state)
{
    tg_auth_cache_clear();
    return 0;
}

static void test_generate(void **state)
{
    char k1[TG_API_KEY_LEN + 1], k2[TG_API_KEY_LEN + 1];
    tg_api_key_generate(k1);
    tg_api_key_generate(k2);
    assert_int_equal(strlen(k1), TG_API_KEY_LEN);
    assert_memory_equal(k1, "tg_", 3);
    assert_null(strpbrk(k1 + 3, "+/="));
    assert_string_not_equal(k1, k2);
    assert_true(tg_api_key_well_formed(k1, strlen(k1)));
    assert_true(tg_api_key_well_formed(k2, strlen(k2)));

    char prefix[11];
    tg_api_key_prefix(prefix, k1);
    assert_int_equal(strlen(prefix), 10);
    assert_memory_equal(prefix, k1, 10);
}

static void test_well_formed(void **state)
{
    char k[TG_API_KEY_LEN + 1];
    tg_api_key_generate(k);
    size_t n = strlen(k);
    assert_false(tg_api_key_well_formed(k, n - 1)); /* too short */
    assert_false(tg_api_key_well_formed(NULL, 0));
    char bad[TG_API_KEY_LEN + 2];
    memcpy(bad, k, n + 1);
    bad[0] = 'x'; /* wrong prefix */
    assert_false(tg_api_key_well_formed(bad, n));
    memcpy(bad, k, n + 1);
    bad[10] = '+'; /* standard base64, not url-safe */
    assert_false(tg_api_key_well_formed(bad, n));
    memcpy(bad, k, n + 1);
    bad[20] = '\0'; /* an embedded NUL */
    assert_false(tg_api_key_well_formed(bad, n));
    /* the last character carries 2 padding bits that must be zero: 'B' (000001) is never canonical */
    memcpy(bad, k, n + 1);
    bad[n - 1] = 'B';
    assert_false(tg_api_key_well_formed(bad, n));
    bad[n - 1] = 'A';
    assert_true(tg_api_key_well_formed(bad, n));
    /* every possible last character: accepted exactly when a strict decoder accepts the key */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int accepted = 0;
    for (size_t i = 0; i < sizeof(alphabet) - 1; i++) {
        bad[n - 1] = alphabet[i];
        unsigned char raw[32];
        size_t bin_len = 0;
        bool strict = sodium_base642bin(raw, sizeof(raw), bad + 3, n - 3, NULL, &bin_len, NULL,
                                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
                      bin_len == 32;
        assert_int_equal(tg_api_key_well_formed(bad, n), strict);
        accepted += strict;
    }
    assert_int_equal(accepted, 16); /* 64 characters, 2 bits of padding */
}

static void test_hash(void **state)
{
    const char *key = "tg_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    uint8_t h1[32], h2[32], h3[32], want[32];
    tg_api_key_hash(h1, key, strlen(key), pepper_a);
    tg_api_key_hash(h2, key, strlen(key), pepper_a);
    tg_api_key_hash(h3, key, strlen(key), pepper_b);
    assert_memory_equal(h1, h2, 32);
    assert_memory_not_equal(h1, h3, 32); /* the pepper matters */
    /* it is BLAKE2b-256 keyed with the pepper, as the database expects */
    crypto_generichash(want, 32, (const unsigned char *)key, strlen(key), pepper_a, 32);
    assert_memory_equal(h1, want, 32);
    /* and differs from the unkeyed hash */
    crypto_generichash(want, 32, (const unsigned char *)key, strlen(key), NULL, 0);
    assert_memory_not_equal(h1, want, 32);
}

static void make_hash(uint8_t h[32], uint8_t tag)
{
    /* same shard (byte 0) and same probe window (bytes 1..3) for every tag */
    memset(h, 0x5a, 32);
    h[31] = tag;
}

static void test_cache_hit_miss_ttl(void **state)
{
    uint8_t h[32];
    make_hash(h, 1);
    tg_principal_t p = {.tenant_id = 7, .key_id = 9}, out;
    strcpy(p.tenant_name, "acme");

    assert_int_equal(tg_auth_cache_get(h, 1000, &out), 0);
    tg_auth_cache_put(h, &p, 2000);
    memset(&out, 0, sizeof(out));
    assert_int_equal(tg_auth_cache_get(h, 1999, &out), 1);
    assert_int_equal(out.tenant_id, 7);
    assert_int_equal(out.key_id, 9);
    assert_string_equal(out.tenant_name, "acme");
    assert_int_equal(tg_auth_cache_get(h, 2000, &out), 0); /* expired at its deadline */
    assert_int_equal(tg_auth_cache_get(h, 1500, &out), 0); /* and dropped, not resurrected */

    /* negative entry */
    uint8_t n[32];
    make_hash(n, 2);
    tg_auth_cache_put(n, NULL, 3000);
    assert_int_equal(tg_auth_cache_get(n, 2500, &out), TG_EUNAUTHENTICATED);
    assert_int_equal(tg_auth_cache_get(n, 3000, &out), 0);

    /* a different hash never matches */
    tg_auth_cache_put(h, &p, 5000);
    uint8_t other[32];
    make_hash(other, 3);
    assert_int_equal(tg_auth_cache_get(other, 100, &out), 0);

    /* clear drops everything */
    tg_auth_cache_clear();
    assert_int_equal(tg_auth_cache_get(h, 100, &out), 0);
}

static void test_cache_eviction(void **state)
{
    tg_principal_t p = {.tenant_id = 1}, out;
    uint8_t h[32];
    /* 8 entries fill the probe window; the negative one expires first */
    for (uint8_t i = 0; i < 8; i++) {
        make_hash(h, i);
        if (i == 3)
            tg_auth_cache_put(h, NULL, 1500);
        else
            tg_auth_cache_put(h, &p, 10000 + i);
    }
    for (uint8_t i = 0; i < 8; i++) {
        make_hash(h, i);
        assert_int_equal(tg_auth_cache_get(h, 1000, &out), i == 3 ? TG_EUNAUTHENTICATED : 1);
    }
    /* a 9th evicts the entry that expires first: the negative one, not a tenant's key */
    make_hash(h, 8);
    tg_auth_cache_put(h, &p, 20000);
    assert_int_equal(tg_auth_cache_get(h, 1000, &out), 1);
    make_hash(h, 3);
    assert_int_equal(tg_auth_cache_get(h, 1000, &out), 0);
    for (uint8_t i = 0; i < 9; i++) {
        make_hash(h, i);
        if (i != 3)
            assert_int_equal(tg_auth_cache_get(h, 1000, &out), 1);
    }
    /* re-putting an existing hash updates it in place */
    make_hash(h, 0);
    tg_auth_cache_put(h, NULL, 30000);
    assert_int_equal(tg_auth_cache_get(h, 1000, &out), TG_EUNAUTHENTICATED);
}

static void never_called(void *arg, int rc, const tg_principal_t *p)
{
    fail_msg("callback must not run");
}

static void test_lookup_without_db(void **state)
{
    tg_principal_t out;
    /* malformed: rejected at once, no callback, no query */
    assert_int_equal(tg_auth_lookup(NULL, pepper_a, 60000, 1000, "nope", 4, &out, never_called, NULL),
                     TG_EUNAUTHENTICATED);
    char k[TG_API_KEY_LEN + 1];
    tg_api_key_generate(k);
    /* well-formed, not cached, no database: unavailable */
    assert_int_equal(tg_auth_lookup(NULL, pepper_a, 60000, 1000, k, strlen(k), &out, never_called, NULL),
                     TG_EDB_UNAVAILABLE);
    /* cached under pepper_a: answered from the cache */
    uint8_t h[32];
    tg_api_key_hash(h, k, strlen(k), pepper_a);
    tg_principal_t p = {.tenant_id = 42, .key_id = 5};
    strcpy(p.tenant_name, "t42");
    tg_auth_cache_put(h, &p, 61000);
    memset(&out, 0, sizeof(out));
    assert_int_equal(tg_auth_lookup(NULL, pepper_a, 60000, 1000, k, strlen(k), &out, never_called, NULL), 1);
    assert_int_equal(out.tenant_id, 42);
    assert_string_equal(out.tenant_name, "t42");
    /* the same key under another pepper is another hash: not in the cache */
    assert_int_equal(tg_auth_lookup(NULL, pepper_b, 60000, 1000, k, strlen(k), &out, never_called, NULL),
                     TG_EDB_UNAVAILABLE);
    /* a negative entry answers at once too */
    tg_auth_cache_put(h, NULL, 2000);
    assert_int_equal(tg_auth_lookup(NULL, pepper_a, 60000, 1000, k, strlen(k), &out, never_called, NULL),
                     TG_EUNAUTHENTICATED);
}

static void test_clear_overtakes_put(void **state)
{
    uint8_t h[32];
    make_hash(h, 1);
    tg_principal_t p = {.tenant_id = 7, .key_id = 9}, out;
    /* no clear in between: cached */
    uint32_t gen = tg_auth_cache_generation(h);
    assert_true(tg_auth_cache_put_gen(h, &p, 5000, gen));
    assert_int_equal(tg_auth_cache_get(h, 1000, &out), 1);
    /* a clear between reading the generation and the answer: not cached, positive or negative */
    gen = tg_auth_cache_generation(h);
    tg_auth_cache_clear();
    assert_int_not_equal(tg_auth_cache_generation(h), gen);
    assert_false(tg_auth_cache_put_gen(h, &p, 5000, gen));
    assert_int_equal(tg_auth_cache_get(h, 1000, &out), 0);
    assert_false(tg_auth_cache_put_gen(h, NULL, 5000, gen));
    assert_int_equal(tg_auth_cache_get(h, 1000, &out), 0);
}

/* ---- a real lookup overtaken by a clear (the keywatch path) ---- */

#define RUN_UNTIL(loop, cond)                       \
    do {                                            \
        for (int i_ = 0; i_ < 600 && !(cond); i_++) \
            h2o_evloop_run((loop), 50);             \
        assert_true(cond);                          \
    } while (0)

typedef struct auth_result {
    int fired;
    int rc;
} auth_result_t;

static void on_auth(void *arg, int rc, const tg_principal_t *p)
{
    auth_result_t *r = arg;
    r->fired++;
    r->rc = rc;
}

static void exec_ok(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
}

/* Inserts a key for tenant 1 of the test schema; returns its id. */
static long insert_key(PGconn *db, const char *key)
{
    uint8_t h[32];
    char hex[65], sql[300];
    tg_api_key_hash(h, key, strlen(key), pepper_a);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    snprintf(sql, sizeof(sql),
             "INSERT INTO api_keys (tenant_id, key_hash, prefix) VALUES (1, decode('%s', 'hex'), 'tg_test') "
             "RETURNING id",
             hex);
    PGresult *r = PQexec(db, sql);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    long id = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return id;
}

/* The backend that test_revoked_during_lookup stops: continued by its teardown whatever happens
 * (the cluster is shared with other tests). */
static pid_t frozen_backend;

static int thaw_backend(void **state)
{
    if (frozen_backend > 0)
        kill(frozen_backend, SIGCONT);
    frozen_backend = 0;
    tg_auth_cache_clear();
    return 0;
}

typedef struct pid_result {
    int fired;
    char pid[16];
} pid_result_t;

static void on_pid(void *arg, const PGresult *res, const char *errmsg)
{
    pid_result_t *r = arg;
    r->fired++;
    if (res != NULL && PQntuples(res) == 1)
        snprintf(r->pid, sizeof(r->pid), "%s", PQgetvalue(res, 0, 0));
}

static void test_revoked_during_lookup(void **state)
{
    const char *pg = tg_test_pg_or_skip();
    PGconn *db = PQconnectdb(pg);
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    exec_ok(db, "SET client_min_messages = warning");
    exec_ok(db, "DROP SCHEMA IF EXISTS tg_auth_test CASCADE");
    exec_ok(db, "CREATE SCHEMA tg_auth_test");
    exec_ok(db, "SET search_path = tg_auth_test");
    for (size_t i = 0; i < tg_migrations_count; i++)
        exec_ok(db, tg_migrations[i].sql);
    exec_ok(db, "INSERT INTO tenants (id, name) VALUES (1, 'auth-test')");
    char k1[TG_API_KEY_LEN + 1], k2[TG_API_KEY_LEN + 1];
    tg_api_key_generate(k1);
    tg_api_key_generate(k2);
    long id1 = insert_key(db, k1);
    insert_key(db, k2);

    char conninfo[1200];
    snprintf(conninfo, sizeof(conninfo), "%s options='-c search_path=tg_auth_test'", pg);
    h2o_loop_t *loop = h2o_evloop_create();
    tg_pgpool_t *pool = tg_pgpool_create(loop, conninfo, &(tg_pgpool_opts_t){.job_timeout_ms = 300});
    RUN_UNTIL(loop, tg_pgpool_ready(pool));
    tg_principal_t out;

    /* the control: a lookup that nothing overtakes is cached */
    auth_result_t r2 = {0};
    assert_int_equal(tg_auth_lookup(pool, pepper_a, 60000, 1000, k2, TG_API_KEY_LEN, &out, on_auth, &r2), 0);
    RUN_UNTIL(loop, r2.fired);
    assert_int_equal(r2.rc, 0);
    assert_int_equal(tg_auth_lookup(pool, pepper_a, 60000, 1001, k2, TG_API_KEY_LEN, &out, on_auth, &r2), 1);

    /* k1's query is sent; the key changes meanwhile and keywatch clears the cache before the row
     * (read before the change) comes back */
    auth_result_t r1 = {0};
    assert_int_equal(tg_auth_lookup(pool, pepper_a, 60000, 1000, k1, TG_API_KEY_LEN, &out, on_auth, &r1), 0);
    tg_auth_cache_clear();
    RUN_UNTIL(loop, r1.fired);
    assert_int_equal(r1.rc, 0); /* this request asked before the change */
    char sql[120];
    snprintf(sql, sizeof(sql), "UPDATE api_keys SET revoked_at = now() WHERE id = %ld", id1);
    exec_ok(db, sql);

    /* the row was not cached: the next lookup asks the database and sees the revocation */
    auth_result_t again = {0};
    assert_int_equal(tg_auth_lookup(pool, pepper_a, 60000, 1002, k1, TG_API_KEY_LEN, &out, on_auth, &again),
                     0);
    RUN_UNTIL(loop, again.fired);
    assert_int_equal(again.rc, TG_EUNAUTHENTICATED);

    /* a lookup whose database stops answering fails with TG_EDB_UNAVAILABLE at its job's
     * deadline, and caches nothing */
    pid_result_t pid = {0};
    assert_int_equal(tg_pgpool_query(pool, "SELECT pg_backend_pid()", 0, NULL, on_pid, &pid), 0);
    RUN_UNTIL(loop, pid.fired);
    frozen_backend = (pid_t)atoi(pid.pid);
    assert_true(frozen_backend > 0);
    assert_int_equal(kill(frozen_backend, SIGSTOP), 0);
    char k3[TG_API_KEY_LEN + 1];
    tg_api_key_generate(k3);
    auth_result_t r3 = {0};
    assert_int_equal(tg_auth_lookup(pool, pepper_a, 60000, 1003, k3, TG_API_KEY_LEN, &out, on_auth, &r3), 0);
    RUN_UNTIL(loop, r3.fired);
    assert_int_equal(r3.rc, TG_EDB_UNAVAILABLE);
    assert_int_equal(kill(frozen_backend, SIGCONT), 0);
    frozen_backend = 0;
    RUN_UNTIL(loop, tg_pgpool_ready(pool));
    auth_result_t r4 = {0};
    assert_int_equal(tg_auth_lookup(pool, pepper_a, 60000, 1004, k3, TG_API_KEY_LEN, &out, on_auth, &r4), 0);
    RUN_UNTIL(loop, r4.fired);
    assert_int_equal(r4.rc, TG_EUNAUTHENTICATED); /* asked again, and answered */

    tg_pgpool_destroy(pool);
    h2o_evloop_destroy(loop);
    exec_ok(db, "DROP SCHEMA tg_auth_test CASCADE");
    PQfinish(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_well_formed),
        cmocka_unit_test(test_hash),
        cmocka_unit_test_setup(test_cache_hit_miss_ttl, clear_cache),
        cmocka_unit_test_setup(test_cache_eviction, clear_cache),
        cmocka_unit_test_setup(test_lookup_without_db, clear_cache),
        cmocka_unit_test_setup(test_clear_overtakes_put, clear_cache),
        cmocka_unit_test_setup_teardown(test_revoked_during_lookup, clear_cache, thaw_backend),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
