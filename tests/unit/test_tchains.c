/*
 * test_tchains.c - tenants' own chains without a database: the management validation against the
 * catalog (admin/chains.c: every bad field at once, an unknown model named by its field, a name
 * that is a model's refused), the snapshot parsed from the key lookup's JSON column
 * (gateway/src/tchains.c: shapes refused, lookups by name), and the cache (a clear drops every
 * tenant's entry, an answer that a clear overtook is not cached, expiry, the references that
 * calls keep across a clear).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "chains.h"
#include "config.h"
#include "tchains.h"

static const char CONFIG[] =
    "{"
    "\"database\": {\"url\": \"postgresql:///tollgate?host=/tmp&port=5432\"},"
    "\"providers\": {\"p\": {\"kind\": \"openai\", \"base_url\": \"http://127.0.0.1:9/v1\"}},"
    "\"models\": {"
    "  \"small\": {\"provider\": \"p\", \"upstream\": \"s\"},"
    "  \"big\": {\"provider\": \"p\", \"upstream\": \"b\"}"
    "},"
    "\"chains\": {\"cheap\": {\"targets\": [\"small\"]}}"
    "}";

static tg_config_t *catalog(void)
{
    tg_config_t *cfg = NULL;
    tg_buf_t errs;
    tg_buf_init(&errs, 4096);
    assert_int_equal(tg_config_parse(CONFIG, strlen(CONFIG), "test.json", &cfg, &errs), 0);
    tg_buf_dispose(&errs);
    return cfg;
}

static bool has_field(const tg_mgmt_err_t *err, const char *field)
{
    for (size_t i = 0; i < err->n_fields; i++)
        if (strcmp(err->fields[i].field, field) == 0)
            return true;
    return false;
}

static void chain_validation(void **state)
{
    (void)state;
    tg_config_t *cfg = catalog();
    tg_mgmt_err_t err;
    const char *good[] = {"small", "big"};
    tg_chain_in_t in = {.name = "mine", .targets = good, .n_targets = 2, .context_fallback = "big"};
    tg_mgmt_err_reset(&err);
    assert_true(tg_chain_check(cfg, &in, &err));
    /* a config chain's name may be shadowed by a tenant's */
    in.name = "cheap";
    assert_true(tg_chain_check(cfg, &in, &err));

    /* every bad field at once, each named */
    const char *bad[] = {"small", "nope", "small"};
    tg_chain_in_t b = {.name = "big", /* a model's name */
                       .targets = bad,
                       .n_targets = 3,
                       .context_fallback = "gone",
                       .request_first_byte_ms = 86400001};
    tg_mgmt_err_reset(&err);
    assert_false(tg_chain_check(cfg, &b, &err));
    assert_int_equal(err.code, TG_EINVALID_REQUEST);
    assert_true(has_field(&err, "name"));
    assert_true(has_field(&err, "targets[1]"));
    assert_true(has_field(&err, "targets[2]")); /* listed twice */
    assert_true(has_field(&err, "context_fallback"));
    assert_true(has_field(&err, "request_first_byte_ms"));
    assert_int_equal(err.n_fields, 5);
    assert_non_null(strstr(err.fields[1].msg, "unknown model \"nope\""));

    /* shapes: no targets, too many, a name with a slash or too long, a space in a model name */
    const char *many[17];
    for (int i = 0; i < 17; i++)
        many[i] = "small";
    tg_chain_in_t s = {.name = "a/b", .targets = many, .n_targets = 17};
    tg_mgmt_err_reset(&err);
    assert_false(tg_chain_check(NULL, &s, &err));
    assert_true(has_field(&err, "name"));
    assert_true(has_field(&err, "targets"));
    s.n_targets = 0;
    s.name = "x234567890123456789012345678901234567890123456789012345678901234"; /* 64 */
    tg_mgmt_err_reset(&err);
    assert_false(tg_chain_check(NULL, &s, &err));
    assert_true(has_field(&err, "name"));
    assert_true(has_field(&err, "targets"));
    const char *quoted[] = {"a b"};
    tg_chain_in_t q = {.name = "ok", .targets = quoted, .n_targets = 1};
    tg_mgmt_err_reset(&err);
    assert_false(tg_chain_check(NULL, &q, &err));
    assert_true(has_field(&err, "targets[0]"));
    assert_true(tg_chain_name_ok("a.b-c_1"));
    assert_false(tg_chain_name_ok(""));
    tg_config_unref(cfg);
}

static const char JSON[] = "[[\"alpha\", [\"small\", \"big\"], null, null],"
                           " [\"beta\", [\"big\"], \"small\", 2500]]";

static void snapshot_parse(void **state)
{
    (void)state;
    tg_tchains_t *t = NULL;
    assert_int_equal(tg_tchains_parse(7, JSON, strlen(JSON), &t), 0);
    assert_int_equal(t->n, 2);
    assert_int_equal(t->tenant_id, 7);
    const tg_tchain_t *a = tg_tchains_find(t, "alpha"), *b = tg_tchains_find(t, "beta");
    assert_non_null(a);
    assert_int_equal(a->n_targets, 2);
    assert_string_equal(a->targets[1], "big");
    assert_null(a->context_fallback);
    assert_int_equal(a->request_first_byte_ms, 0);
    assert_string_equal(b->context_fallback, "small");
    assert_int_equal(b->request_first_byte_ms, 2500);
    assert_null(tg_tchains_find(t, "gamma"));
    tg_tchains_unref(t);

    /* no chains: an empty snapshot */
    assert_int_equal(tg_tchains_parse(7, NULL, 0, &t), 0);
    assert_int_equal(t->n, 0);
    assert_null(tg_tchains_find(t, "alpha"));
    tg_tchains_unref(t);

    static const char *const bad[] = {
        "{}",                            /* not an array */
        "[[\"a\", [], null, null]]",     /* no target */
        "[[\"a\", [1], null, null]]",    /* a target not a string */
        "[[\"a\", [\"x\"], 3, null]]",   /* fallback not a string */
        "[[\"a\", [\"x\"], null, -1]]",  /* budget out of range */
        "[[\"a\", [\"x\"], null]]",      /* short */
        "[[\"a\", [\"x\"], null, null]", /* not JSON */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = NULL;
        assert_int_equal(tg_tchains_parse(7, bad[i], strlen(bad[i]), &t), TG_EINTERNAL);
        assert_null(t);
    }
}

static void cache(void **state)
{
    (void)state;
    tg_tchains_cache_clear();
    tg_tchains_t *t = NULL, *got = NULL;
    assert_int_equal(tg_tchains_parse(42, JSON, strlen(JSON), &t), 0);
    uint32_t gen = tg_tchains_generation();
    assert_int_equal(tg_tchains_cache_get(42, 1000, &got), 0);
    assert_true(tg_tchains_cache_put(t, 5000, gen));
    assert_int_equal(tg_tchains_cache_get(42, 1000, &got), 1);
    assert_ptr_equal(got, t);
    tg_tchains_t *other = NULL;
    assert_int_equal(tg_tchains_cache_get(43, 1000, &other), 0); /* another tenant */

    /* a clear drops it; the reference a call holds stays valid */
    tg_tchains_t *held = tg_tchains_ref(t);
    tg_tchains_unref(got);
    tg_tchains_cache_clear();
    assert_int_equal(tg_tchains_cache_get(42, 1000, &got), 0);
    assert_non_null(tg_tchains_find(held, "alpha"));
    tg_tchains_unref(held);

    /* an answer read before a clear is not cached after it */
    gen = tg_tchains_generation();
    tg_tchains_cache_clear();
    assert_false(tg_tchains_cache_put(t, 5000, gen));
    assert_int_equal(tg_tchains_cache_get(42, 1000, &got), 0);

    /* expiry */
    assert_true(tg_tchains_cache_put(t, 5000, tg_tchains_generation()));
    assert_int_equal(tg_tchains_cache_get(42, 4999, &got), 1);
    tg_tchains_unref(got);
    assert_int_equal(tg_tchains_cache_get(42, 5000, &got), 0);

    /* many tenants: bounded slots, each lookup finds its own or nothing */
    for (int64_t id = 1; id <= 3 * TG_TCHAINS_SLOTS; id++) {
        tg_tchains_t *x = NULL;
        assert_int_equal(tg_tchains_parse(id, JSON, strlen(JSON), &x), 0);
        TG_IGNORE_RESULT(tg_tchains_cache_put(x, 10000, tg_tchains_generation()));
        tg_tchains_unref(x);
    }
    size_t found = 0;
    for (int64_t id = 1; id <= 3 * TG_TCHAINS_SLOTS; id++)
        if (tg_tchains_cache_get(id, 1000, &got) == 1) {
            assert_int_equal(got->tenant_id, id);
            tg_tchains_unref(got);
            found++;
        }
    assert_true(found > 0 && found <= TG_TCHAINS_SLOTS);
    tg_tchains_cache_clear();
    tg_tchains_unref(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chain_validation),
        cmocka_unit_test(snapshot_parse),
        cmocka_unit_test(cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
