/*
 * test_manage.c - the management functions (admin/manage.h) and the last_used_at flusher
 * (gateway/src/lastused.c) against PostgreSQL, in a schema of their own (tg_manage_test) built from
 * the embedded migrations: tenants (conflict, suspension, keyset pages), keys (the stored hash is
 * the key's, nothing else of it is stored; rotation inherits and shortens; a refused rotation
 * changes nothing), policies (set, clear, a key of another tenant refused with nothing written),
 * and the flusher (one UPDATE for the keys noted, forward only, no NOTIFY).
 * Skips without a database (pg_env.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "cli.h"
#include "err.h"
#include "lastused.h"
#include "manage.h"
#include "pg_env.h"

#define SCHEMA "tg_manage_test"

static const uint8_t pepper[32] = {9, 8, 7};
static PGconn *g_db; /* the management connection (search_path = the test schema) */
static char g_conninfo[1400];

static void exec_ok(PGconn *db, const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    PQclear(r);
}

/* The first column of the first row of a query, as text ("" for none or NULL). */
static const char *one(PGconn *db, const char *sql)
{
    static char out[512];
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(db));
    snprintf(out, sizeof(out), "%s", PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return out;
}

static int setup(void **state)
{
    (void)state;
    if (sodium_init() < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (g_db != NULL) {
        exec_ok(g_db, "SET client_min_messages = warning");
        exec_ok(g_db, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE");
        PQfinish(g_db);
        g_db = NULL;
    }
    return 0;
}

/* Connects and builds the schema once; skips without a database. */
static PGconn *db(void)
{
    const char *pg = tg_test_pg_or_skip();
    if (g_db != NULL)
        return g_db;
    PGconn *c = PQconnectdb(pg);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    exec_ok(c, "SET client_min_messages = warning");
    exec_ok(c, "DROP SCHEMA IF EXISTS " SCHEMA " CASCADE");
    exec_ok(c, "CREATE SCHEMA " SCHEMA);
    exec_ok(c, "SET search_path = " SCHEMA);
    for (size_t i = 0; i < tg_migrations_count; i++)
        exec_ok(c, tg_migrations[i].sql);
    snprintf(g_conninfo, sizeof(g_conninfo), "%s options='-c search_path=" SCHEMA "'", pg);
    g_db = c;
    return c;
}

static void tenants(void **state)
{
    (void)state;
    PGconn *c = db();
    tg_tenant_t t;
    tg_mgmt_err_t err;
    assert_int_equal(tg_tenant_create(c, "t-one", true, 0, &t, &err), 0);
    assert_true(t.id > 0);
    assert_string_equal(t.name, "t-one");
    assert_true(t.zero_retention);
    assert_false(t.suspended);
    assert_int_equal(tg_tenant_create(c, "t-one", false, 0, &t, &err), TG_ECONFLICT);
    assert_non_null(strstr(err.msg, "already exists"));
    assert_int_equal(tg_tenant_create(c, "", false, 0, &t, &err), TG_EINVALID_REQUEST);
    assert_int_equal(err.n_fields, 1);
    assert_string_equal(err.fields[0].field, "name");

    tg_tenant_ref_t one = {.name = "t-one"};
    assert_int_equal(tg_tenant_set_suspended(c, one, true, &t, &err), 0);
    assert_true(t.suspended);
    assert_int_equal(tg_tenant_set_suspended(c, one, true, &t, &err), 0); /* idempotent */
    assert_true(t.suspended);
    assert_int_equal(tg_tenant_set_suspended(c, (tg_tenant_ref_t){.id = t.id}, false, &t, &err), 0);
    assert_false(t.suspended);
    assert_int_equal(tg_tenant_set_suspended(c, (tg_tenant_ref_t){.name = "nobody"}, true, &t, &err),
                     TG_ENOT_FOUND);
    assert_int_equal(tg_tenant_get(c, (tg_tenant_ref_t){.id = t.id}, &t, &err), 0);
    assert_string_equal(t.name, "t-one");

    /* keyset pages: 5 tenants in pages of 2 */
    char name[32];
    for (int i = 2; i <= 5; i++) {
        snprintf(name, sizeof(name), "t-%d", i);
        assert_int_equal(tg_tenant_create(c, name, false, 0, NULL, &err), 0);
    }
    int64_t after = 0;
    size_t seen = 0, pages = 0;
    do {
        tg_tenant_page_t p;
        assert_int_equal(tg_tenant_list(c, after, 2, &p, &err), 0);
        assert_true(p.n <= 2);
        for (size_t i = 0; i < p.n; i++)
            assert_true(p.rows[i].id > after && (i == 0 || p.rows[i].id > p.rows[i - 1].id));
        seen += p.n;
        pages++;
        after = p.next_after;
        tg_tenant_page_free(&p);
    } while (after != 0);
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);
    tg_tenant_page_t p;
    assert_int_equal(tg_tenant_list(c, 0, TG_MGMT_LIST_MAX + 1, &p, &err), TG_EINVALID_REQUEST);
    assert_string_equal(err.fields[0].field, "limit");
}

static void keys(void **state)
{
    (void)state;
    PGconn *c = db();
    tg_mgmt_err_t err;
    const char *models[] = {"m-a", "m-b"};
    tg_key_new_t in = {.tenant = {.name = "k-tenant"},
                       .create_tenant = true,
                       .label = "first",
                       .models = {.set = true, .names = models, .n = 2}};
    tg_key_secret_t s;
    assert_int_equal(tg_key_create(c, pepper, NULL, &in, &s, &err), 0);
    assert_true(tg_api_key_well_formed(s.key, strlen(s.key)));
    assert_memory_equal(s.prefix, s.key, 10);
    /* the stored hash is the key's keyed hash; no column holds the key */
    uint8_t h[32];
    char hex[65], sql[400];
    tg_api_key_hash(h, s.key, TG_API_KEY_LEN, pepper);
    sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
    snprintf(sql, sizeof(sql),
             "SELECT id || '/' || name || '/' || array_to_string(allowed_models, ',') FROM api_keys WHERE "
             "key_hash = "
             "decode('%s', 'hex')",
             hex);
    char want[64];
    snprintf(want, sizeof(want), "%lld/first/m-a,m-b", (long long)s.id);
    assert_string_equal(one(c, sql), want);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM api_keys k WHERE row_to_json(k)::text LIKE '%%%s%%'",
             s.key + 3);
    assert_string_equal(one(c, sql), "0");
    int64_t first = s.id, tenant = s.tenant_id;
    tg_key_secret_wipe(&s);

    /* rotation: same tenant, label, models and per-key policy; the old one expires after the grace */
    tg_policy_update_t u = {.tenant = {.id = tenant}, .key_id = first, .max_tokens = {TG_FIELD_SET, 77}};
    tg_policy_row_t row;
    assert_int_equal(tg_policy_set(c, NULL, &u, &row, &err), 0);
    assert_int_equal(row.max_tokens, 77);
    assert_int_equal(tg_key_rotate(c, pepper, (tg_tenant_ref_t){0}, first, 60000, &s, &err), 0);
    assert_int_equal(s.rotated_from, first);
    assert_int_equal(s.tenant_id, tenant);
    int64_t now_ms = (int64_t)time(NULL) * 1000;
    assert_true(s.old_expires_ms > now_ms + 50000 && s.old_expires_ms < now_ms + 70000);
    snprintf(sql, sizeof(sql),
             "SELECT k.name || '/' || array_to_string(k.allowed_models, ',') || '/' || p.max_tokens FROM "
             "api_keys k "
             "JOIN policies p ON p.key_id = k.id WHERE k.id = %lld AND k.rotated_from = %lld",
             (long long)s.id, (long long)first);
    assert_string_equal(one(c, sql), "first/m-a,m-b/77");
    int64_t second = s.id;
    tg_key_secret_wipe(&s);

    /* a second rotation with a longer grace keeps the earlier expiry */
    assert_int_equal(tg_key_rotate(c, pepper, (tg_tenant_ref_t){0}, first, 3600000, &s, &err), 0);
    assert_true(s.old_expires_ms < now_ms + 70000);
    tg_key_secret_wipe(&s);

    /* revoke, list; a revoked key cannot be rotated, and the refusal writes nothing */
    tg_key_row_t k;
    assert_int_equal(tg_key_revoke(c, (tg_tenant_ref_t){.id = tenant}, second, &k, &err), 0);
    assert_true(k.revoked_ms > 0);
    int64_t revoked_at = k.revoked_ms;
    assert_int_equal(tg_key_revoke(c, (tg_tenant_ref_t){0}, second, &k, &err), 0);
    assert_int_equal(k.revoked_ms, revoked_at); /* idempotent */
    assert_int_equal(tg_key_revoke(c, (tg_tenant_ref_t){.name = "t-one"}, second, &k, &err), TG_ENOT_FOUND);
    const char *count_sql = "SELECT count(*) FROM api_keys";
    char before[32];
    snprintf(before, sizeof(before), "%s", one(c, count_sql));
    assert_int_equal(tg_key_rotate(c, pepper, (tg_tenant_ref_t){0}, second, -1, &s, &err),
                     TG_EINVALID_REQUEST);
    assert_string_equal(err.fields[0].field, "key_id");
    assert_string_equal(one(c, count_sql), before);
    assert_string_equal(s.key, "");

    tg_key_page_t page;
    assert_int_equal(tg_key_list(c, (tg_tenant_ref_t){.id = tenant}, false, 0, 0, &page, &err), 0);
    assert_int_equal(page.n, 2); /* the first and the third; the second is revoked */
    assert_int_equal(page.rows[0].id, first);
    assert_true(page.rows[0].has_models);
    assert_string_equal(page.rows[0].models, "m-a\nm-b\n");
    tg_key_page_free(&page);
    assert_int_equal(tg_key_list(c, (tg_tenant_ref_t){.id = tenant}, true, 0, 0, &page, &err), 0);
    assert_int_equal(page.n, 3);
    tg_key_page_free(&page);

    /* a key for a tenant that does not exist, without create_tenant */
    tg_key_new_t missing = {.tenant = {.name = "nobody"}};
    assert_int_equal(tg_key_create(c, pepper, NULL, &missing, &s, &err), TG_ENOT_FOUND);
}

static void policies(void **state)
{
    (void)state;
    PGconn *c = db();
    tg_mgmt_err_t err;
    tg_tenant_t t;
    assert_int_equal(tg_tenant_create(c, "p-tenant", false, 0, &t, &err), 0);
    const char *models[] = {"m-a"};
    tg_policy_update_t u = {.tenant = {.name = "p-tenant"},
                            .models_op = TG_FIELD_SET,
                            .models = {.set = true, .names = models, .n = 1},
                            .rpm = {TG_FIELD_SET, 10},
                            .tpm = {TG_FIELD_SET, 1000},
                            .byok_fallback = {TG_FIELD_SET, false},
                            .zero_retention = {TG_FIELD_SET, true}};
    tg_policy_row_t row;
    assert_int_equal(tg_policy_set(c, NULL, &u, &row, &err), 0);
    assert_true(row.has_models);
    assert_string_equal(row.models, "m-a\n");
    assert_int_equal(row.rpm, 10);
    assert_int_equal(row.tpm, 1000);
    assert_int_equal(row.byok_fallback, 0);
    assert_true(row.zero_retention);
    assert_int_equal(row.key_id, 0);

    /* clear some fields back to inherit; the others stay */
    tg_policy_update_t clr = {.tenant = {.id = t.id},
                              .models_op = TG_FIELD_CLEAR,
                              .byok_fallback = {TG_FIELD_CLEAR, false},
                              .zero_retention = {TG_FIELD_CLEAR, false}};
    assert_int_equal(tg_policy_set(c, NULL, &clr, &row, &err), 0);
    assert_false(row.has_models);
    assert_int_equal(row.byok_fallback, -1);
    assert_false(row.zero_retention);
    assert_int_equal(row.rpm, 10);

    /* an empty list allows nothing and is kept as such (not NULL) */
    tg_policy_update_t empty = {.tenant = {.id = t.id}, .models_op = TG_FIELD_SET, .models = {.set = true}};
    assert_int_equal(tg_policy_set(c, NULL, &empty, &row, &err), 0);
    assert_true(row.has_models);
    assert_string_equal(row.models, "");

    /* a key of another tenant: refused, and nothing written */
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT id FROM api_keys WHERE tenant_id <> %lld ORDER BY id LIMIT 1",
             (long long)t.id);
    int64_t foreign = strtoll(one(c, sql), NULL, 10);
    assert_true(foreign > 0);
    tg_policy_update_t bad = {.tenant = {.id = t.id}, .key_id = foreign, .key_rpm = {TG_FIELD_SET, 5}};
    assert_int_equal(tg_policy_set(c, NULL, &bad, &row, &err), TG_ENOT_FOUND);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM policies WHERE key_id = %lld AND key_rpm = 5",
             (long long)foreign);
    assert_string_equal(one(c, sql), "0");
    tg_policy_update_t nothing = {.tenant = {.id = t.id}};
    assert_int_equal(tg_policy_set(c, NULL, &nothing, &row, &err), TG_EINVALID_REQUEST);
}

/* Waits (bounded) until sql answers want. */
static bool wait_for(PGconn *c, const char *sql, const char *want)
{
    for (int i = 0; i < 200; i++) {
        if (strcmp(one(c, sql), want) == 0)
            return true;
        struct timespec ts = {0, 25 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void lastused_flusher(void **state)
{
    (void)state;
    PGconn *c = db();
    tg_mgmt_err_t err;
    tg_key_secret_t s1, s2;
    tg_key_new_t in = {.tenant = {.name = "lu-tenant"}, .create_tenant = true};
    assert_int_equal(tg_key_create(c, pepper, NULL, &in, &s1, &err), 0);
    assert_int_equal(tg_key_create(c, pepper, NULL, &in, &s2, &err), 0);
    char sql[300];
    /* s2 was "used" in the future by another instance: the flush must not move it back */
    snprintf(sql, sizeof(sql), "UPDATE api_keys SET last_used_at = now() + interval '1 hour' WHERE id = %lld",
             (long long)s2.id);
    exec_ok(c, sql);
    exec_ok(c, "LISTEN tollgate_tenants");
    while (PQconsumeInput(c) && PQnotifies(c) != NULL) /* what earlier tests sent */
        ;
    uint64_t flushes = tg_lastused_flushes();
    int64_t drained[16];
    tg_lastused_take(drained, 16);
    assert_int_equal(tg_lastused_start(g_conninfo), 0);
    for (int i = 0; i < 1000; i++) {
        tg_lastused_note(s1.id);
        tg_lastused_note(s2.id);
    }
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM api_keys WHERE id = %lld AND last_used_at IS NOT NULL",
             (long long)s1.id);
    assert_true(wait_for(c, sql, "1"));
    tg_lastused_stop();
    /* 2000 notes of two keys: one UPDATE (two if a period ended in between) */
    uint64_t n = tg_lastused_flushes() - flushes;
    assert_true(n >= 1 && n <= 2);
    snprintf(sql, sizeof(sql),
             "SELECT last_used_at > now() + interval '50 minutes' FROM api_keys WHERE id = %lld",
             (long long)s2.id);
    assert_string_equal(one(c, sql), "t");
    /* last_used_at is not in the trigger's columns: no key cache anywhere was cleared */
    assert_true(PQconsumeInput(c));
    PGnotify *note = PQnotifies(c);
    assert_null(note);
    exec_ok(c, "UNLISTEN *");
    tg_key_secret_wipe(&s1);
    tg_key_secret_wipe(&s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tenants),
        cmocka_unit_test(keys),
        cmocka_unit_test(policies),
        cmocka_unit_test(lastused_flusher),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
