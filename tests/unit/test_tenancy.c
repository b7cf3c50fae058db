/*
 * test_tenancy.c - the pure parts of tenancy: POLICY's checks (gateway/src/policy.c: allowed
 * models through a list, a chain or one model; max_tokens refused above the limit and set when
 * absent), the last-used set (gateway/src/lastused.c: a note per key, repeats merged, drops
 * counted when a probe window is full), the management validation (admin/manage.c: every bad
 * field reported at once, the catalog check, the array literal) and the CLI's value parsers
 * (gateway/src/cli_args.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "auth.h"
#include "cli_args.h"
#include "config.h"
#include "err.h"
#include "lastused.h"
#include "manage.h"
#include "policy.h"

static const char CONFIG[] =
    "{"
    "\"database\": {\"url\": \"postgresql:///tollgate?host=/tmp&port=5432\"},"
    "\"providers\": {"
    "  \"p-openai\": {\"kind\": \"openai\", \"base_url\": \"http://127.0.0.1:9/openai/v1\"},"
    "  \"p-anthropic\": {\"kind\": \"anthropic\", \"base_url\": \"http://127.0.0.1:9/anthropic\"}"
    "},"
    "\"models\": {"
    "  \"gpt-small\": {\"provider\": \"p-openai\", \"upstream\": \"gpt-4o-mini\"},"
    "  \"claude-small\": {\"provider\": \"p-anthropic\", \"upstream\": \"claude-3-5-haiku\"},"
    "  \"gpt-big\": {\"provider\": \"p-openai\", \"upstream\": \"gpt-4o\"}"
    "},"
    "\"chains\": {"
    "  \"smart\": {\"targets\": [\"gpt-small\", \"claude-small\"], \"context_fallback\": \"gpt-big\"},"
    "  \"cheap\": {\"targets\": [\"gpt-small\"]}"
    "}"
    "}";

static tg_config_t *g_cfg;

static int setup(void **state)
{
    (void)state;
    tg_buf_t errors;
    tg_buf_init(&errors, 65536);
    int rc = tg_config_parse(CONFIG, strlen(CONFIG), "test.json", &g_cfg, &errors);
    if (rc != 0)
        print_error("config errors:\n%s\n", errors.data != NULL ? errors.data : "(none)");
    tg_buf_dispose(&errors);
    return rc == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_config_unref(g_cfg);
    return 0;
}

static tg_policy_t policy_of(const char *models, uint32_t max_tokens)
{
    tg_policy_t p = {0};
    p.has_models = models != NULL;
    if (models != NULL)
        snprintf(p.models, sizeof(p.models), "%s", models);
    p.max_tokens = max_tokens;
    return p;
}

static int check_models(const tg_policy_t *p, const char *body, char *param, tg_error_t *err)
{
    json_t *j = json_loads(body, 0, NULL);
    assert_non_null(j);
    memset(err, 0, sizeof(*err));
    param[0] = '\0';
    int rc = tg_policy_check_models(p, g_cfg, j, param, 64, err);
    json_decref(j);
    return rc;
}

static void policy_models(void **state)
{
    (void)state;
    char param[64];
    tg_error_t err;
    tg_policy_t all = policy_of(NULL, 0);
    tg_policy_t small = policy_of("gpt-small\nclaude-small\n", 0);
    tg_policy_t three = policy_of("gpt-small\nclaude-small\ngpt-big\n", 0);

    assert_int_equal(check_models(&all, "{\"model\":\"gpt-big\"}", param, &err), 0);
    assert_int_equal(check_models(&small, "{\"model\":\"gpt-small\"}", param, &err), 0);
    assert_int_equal(check_models(&small, "{\"model\":\"gpt-big\"}", param, &err), TG_EMODEL_NOT_ALLOWED);
    assert_string_equal(param, "model");
    assert_non_null(strstr(err.detail, "\"gpt-big\""));

    /* a list: every entry, the refused one named with its index */
    assert_int_equal(check_models(&small, "{\"models\":[\"gpt-small\",\"claude-small\"]}", param, &err), 0);
    assert_int_equal(check_models(&small, "{\"models\":[\"gpt-small\",\"gpt-big\"]}", param, &err),
                     TG_EMODEL_NOT_ALLOWED);
    assert_string_equal(param, "models[1]");
    /* the list wins over "model", as in the router */
    assert_int_equal(check_models(&small, "{\"model\":\"gpt-big\",\"models\":[\"gpt-small\"]}", param, &err),
                     0);

    /* a chain: every model it can reach, its context fallback included; its name grants nothing */
    assert_int_equal(check_models(&small, "{\"model\":\"cheap\"}", param, &err), 0);
    assert_int_equal(check_models(&small, "{\"model\":\"smart\"}", param, &err), TG_EMODEL_NOT_ALLOWED);
    assert_non_null(strstr(err.detail, "\"gpt-big\""));
    assert_non_null(strstr(err.detail, "\"smart\""));
    assert_int_equal(check_models(&three, "{\"model\":\"smart\"}", param, &err), 0);
    tg_policy_t by_name = policy_of("smart\n", 0);
    assert_int_equal(check_models(&by_name, "{\"model\":\"smart\"}", param, &err), TG_EMODEL_NOT_ALLOWED);
    /* an empty list (an intersection with nothing in common) allows nothing */
    tg_policy_t none = policy_of("", 0);
    assert_int_equal(check_models(&none, "{\"model\":\"gpt-small\"}", param, &err), TG_EMODEL_NOT_ALLOWED);

    assert_true(tg_policy_allows_chain(&small, tg_config_find_chain(g_cfg, "cheap")));
    assert_false(tg_policy_allows_chain(&small, tg_config_find_chain(g_cfg, "smart")));
    assert_true(tg_policy_allows_chain(&all, tg_config_find_chain(g_cfg, "smart")));
}

static void policy_max_tokens(void **state)
{
    (void)state;
    char param[64] = "";
    tg_error_t err = {0};
    bool capped;
    tg_policy_t p = policy_of(NULL, 100);
    json_t *j = json_loads("{\"model\":\"gpt-small\",\"max_tokens\":100}", 0, NULL);
    assert_int_equal(tg_policy_check_max_tokens(&p, j, &capped, param, sizeof(param), &err), 0);
    assert_false(capped);
    json_decref(j);

    j = json_loads("{\"model\":\"gpt-small\",\"max_completion_tokens\":101}", 0, NULL);
    assert_int_equal(tg_policy_check_max_tokens(&p, j, &capped, param, sizeof(param), &err),
                     TG_EINVALID_REQUEST);
    assert_string_equal(param, "max_completion_tokens");
    assert_non_null(strstr(err.detail, "100"));
    json_decref(j);

    /* absent: the limit is asked for, so it bounds what the provider produces */
    j = json_loads("{\"model\":\"gpt-small\"}", 0, NULL);
    assert_int_equal(tg_policy_check_max_tokens(&p, j, &capped, param, sizeof(param), &err), 0);
    assert_true(capped);
    assert_int_equal(json_integer_value(json_object_get(j, "max_completion_tokens")), 100);
    json_decref(j);

    /* no limit: nothing checked, nothing added */
    tg_policy_t free_ = policy_of(NULL, 0);
    j = json_loads("{\"model\":\"gpt-small\",\"max_tokens\":100000}", 0, NULL);
    assert_int_equal(tg_policy_check_max_tokens(&free_, j, &capped, param, sizeof(param), &err), 0);
    assert_null(json_object_get(j, "max_completion_tokens"));
    json_decref(j);
}

static void lastused_set(void **state)
{
    (void)state;
    static int64_t out[TG_LASTUSED_SLOTS];
    tg_lastused_take(out, TG_LASTUSED_SLOTS); /* start empty */
    for (int i = 0; i < 1000; i++)
        tg_lastused_note(7);
    tg_lastused_note(3);
    tg_lastused_note(0);  /* ignored */
    tg_lastused_note(-1); /* ignored */
    size_t n = tg_lastused_take(out, TG_LASTUSED_SLOTS);
    assert_int_equal(n, 2);
    assert_int_equal(out[0], 3);
    assert_int_equal(out[1], 7);
    assert_int_equal(tg_lastused_take(out, TG_LASTUSED_SLOTS), 0);

    /* more distinct keys than slots: the rest is dropped and counted, never an allocation */
    uint64_t dropped = tg_lastused_dropped();
    for (int64_t id = 1; id <= TG_LASTUSED_SLOTS + 100; id++)
        tg_lastused_note(id);
    n = tg_lastused_take(out, TG_LASTUSED_SLOTS);
    uint64_t now_dropped = tg_lastused_dropped() - dropped;
    assert_true(n <= TG_LASTUSED_SLOTS);
    assert_int_equal(n + now_dropped, TG_LASTUSED_SLOTS + 100);
    assert_true(now_dropped >= 100);
    for (size_t i = 1; i < n; i++)
        assert_true(out[i - 1] < out[i]);
    /* a take smaller than the set leaves the rest for the next one */
    tg_lastused_note(11);
    tg_lastused_note(12);
    assert_int_equal(tg_lastused_take(out, 1), 1);
    assert_int_equal(tg_lastused_take(out, 4), 1);
}

static void manage_reports_every_field(void **state)
{
    (void)state;
    tg_mgmt_err_t err;
    memset(&err, 0, sizeof(err));
    const char *names[] = {"gpt-small", "nope", "gpt-small", "smart", "bad name"};
    tg_key_new_t in = {.tenant = {.name = ""},
                       .label = "line\nbreak",
                       .expires_unix_ms = 1000,
                       .models = {.set = true, .names = names, .n = 5}};
    assert_false(tg_mgmt_check_key_new(g_cfg, &in, 2000, &err));
    assert_int_equal(err.code, TG_EINVALID_REQUEST);
    const char *want[] = {"tenant",    "label",     "expires_at", "models[1]",
                          "models[2]", "models[3]", "models[4]"};
    assert_int_equal(err.n_fields, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < err.n_fields; i++)
        assert_string_equal(err.fields[i].field, want[i]);
    assert_non_null(strstr(err.fields[5].msg, "chain"));

    /* without a catalog only the shape counts */
    memset(&err, 0, sizeof(err));
    const char *ok_names[] = {"anything", "else"};
    tg_key_new_t good = {.tenant = {.name = "acme"}, .models = {.set = true, .names = ok_names, .n = 2}};
    assert_true(tg_mgmt_check_key_new(NULL, &good, 0, &err));
    assert_int_equal(err.code, 0);

    /* a key's override takes no tenant setting; numbers are bounded */
    memset(&err, 0, sizeof(err));
    tg_policy_update_t u = {.tenant = {.id = 3},
                            .key_id = 9,
                            .rpm = {TG_FIELD_SET, 5},
                            .max_tokens = {TG_FIELD_SET, 0},
                            .zero_retention = {TG_FIELD_CLEAR, false}};
    assert_false(tg_mgmt_check_policy(g_cfg, &u, &err));
    assert_int_equal(err.n_fields, 3);
    assert_string_equal(err.fields[0].field, "max_tokens");
    assert_string_equal(err.fields[1].field, "rpm");
    assert_string_equal(err.fields[2].field, "zero_retention");
    u.key_id = 0; /* the tenant's row takes them */
    u.max_tokens.value = 10;
    memset(&err, 0, sizeof(err));
    assert_true(tg_mgmt_check_policy(g_cfg, &u, &err));
}

static void manage_models_literal(void **state)
{
    (void)state;
    const char *names[] = {"a\"b", "c\\d", "e"};
    tg_models_arg_t m = {.set = true, .names = names, .n = 3};
    char out[64];
    assert_true(tg_mgmt_models_literal(&m, out, sizeof(out)));
    assert_string_equal(out, "{\"a\\\"b\",\"c\\\\d\",\"e\"}");
    assert_false(tg_mgmt_models_literal(&m, out, 8));
    tg_models_arg_t empty = {.set = true};
    assert_true(tg_mgmt_models_literal(&empty, out, sizeof(out)));
    assert_string_equal(out, "{}");
}

static void cli_values(void **state)
{
    (void)state;
    int64_t v;
    assert_true(tg_cli_parse_duration("24h", &v));
    assert_int_equal(v, 24 * 3600 * 1000LL);
    assert_true(tg_cli_parse_duration("0", &v));
    assert_int_equal(v, 0);
    assert_true(tg_cli_parse_duration("1500ms", &v));
    assert_int_equal(v, 1500);
    assert_false(tg_cli_parse_duration("5", &v));
    assert_false(tg_cli_parse_duration("-5s", &v));
    assert_false(tg_cli_parse_duration("h", &v));
    assert_true(tg_cli_parse_time("+2s", 1000, &v));
    assert_int_equal(v, 3000);
    assert_true(tg_cli_parse_time("2027-01-31T12:00:00.5Z", 0, &v));
    assert_int_equal(v, 1801396800500LL);
    assert_false(tg_cli_parse_time("2027-01-31 12:00", 0, &v));
    assert_false(tg_cli_parse_time("2027-01-31T12:00:00+02:00", 0, &v));
    assert_true(tg_cli_parse_id("42", &v));
    assert_false(tg_cli_parse_id("0", &v));
    assert_false(tg_cli_parse_id("4x", &v));
    assert_false(tg_cli_parse_id("", &v));
    tg_cli_names_t l;
    assert_true(tg_cli_split_names("a,b,,c", &l));
    assert_int_equal(l.n, 3);
    assert_string_equal(l.names[2], "c");
    tg_cli_names_free(&l);
    assert_true(tg_cli_split_names("", &l));
    assert_int_equal(l.n, 0);
    tg_cli_names_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(policy_models),         cmocka_unit_test(policy_max_tokens),
        cmocka_unit_test(lastused_set),          cmocka_unit_test(manage_reports_every_field),
        cmocka_unit_test(manage_models_literal), cmocka_unit_test(cli_values),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
