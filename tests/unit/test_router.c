/*
 * test_router.c - chain resolution (gateway/src/router.c) against configs built with tg_config_parse.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "config.h"
#include "router.h"

static const char CONFIG[] =
    "{"
    "\"database\": {\"url\": \"postgresql:///tollgate?host=/tmp&port=5432\"},"
    "\"providers\": {"
    "  \"p-openai\": {\"kind\": \"openai\", \"base_url\": \"http://127.0.0.1:9/openai/v1\"},"
    "  \"p-anthropic\": {\"kind\": \"anthropic\", \"base_url\": \"http://127.0.0.1:9/anthropic\"},"
    "  \"p-gemini\": {\"kind\": \"gemini\", \"base_url\": \"http://127.0.0.1:9/gemini\"}"
    "},"
    "\"models\": {"
    "  \"gpt-small\": {\"provider\": \"p-openai\", \"upstream\": \"gpt-4o-mini\", \"context_window\": "
    "128000},"
    "  \"claude-small\": {\"provider\": \"p-anthropic\", \"upstream\": \"claude-3-5-haiku\"},"
    "  \"gemini-big\": {\"provider\": \"p-gemini\", \"upstream\": \"gemini-1.5-pro\", \"context_window\": "
    "2000000}"
    "},"
    "\"chains\": {"
    "  \"smart\": {\"targets\": [\"gpt-small\", \"claude-small\"], \"context_fallback\": \"gemini-big\"},"
    "  \"solo\": {\"targets\": [\"claude-small\"]}"
    "}"
    "}";

typedef struct {
    tg_config_t *cfg;
} fixture_t;

static int setup(void **state)
{
    static fixture_t f;
    tg_buf_t errors;
    tg_buf_init(&errors, 65536);
    int rc = tg_config_parse(CONFIG, strlen(CONFIG), "test.json", &f.cfg, &errors);
    if (rc != 0)
        print_error("config errors:\n%s\n", errors.data != NULL ? errors.data : "(none)");
    tg_buf_dispose(&errors);
    *state = &f;
    return rc == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tg_config_unref(f->cfg);
    return 0;
}

/* Resolves a JSON body text; returns the router's code. */
static int resolve(fixture_t *f, const char *body, tg_route_t *route, char *param, size_t param_len,
                   tg_error_t *err)
{
    json_error_t jerr;
    json_t *j = json_loads(body, 0, &jerr);
    assert_non_null(j);
    memset(err, 0, sizeof(*err));
    int rc = tg_router_resolve(f->cfg, j, route, param, param_len, err);
    json_decref(j);
    return rc;
}

static void single_model_is_a_chain_of_one(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    assert_int_equal(resolve(f, "{\"model\":\"gpt-small\",\"messages\":[]}", &r, param, sizeof(param), &err),
                     0);
    assert_int_equal(r.n_targets, 1);
    assert_ptr_equal(r.targets[0], tg_config_find_model(f->cfg, "gpt-small"));
    assert_string_equal(r.targets[0]->upstream, "gpt-4o-mini");
    assert_null(r.context_fallback);
    assert_string_equal(r.name, "gpt-small");
}

static void named_chain_gives_its_targets_and_fallback(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    assert_int_equal(resolve(f, "{\"model\":\"smart\"}", &r, param, sizeof(param), &err), 0);
    assert_int_equal(r.n_targets, 2);
    assert_string_equal(r.targets[0]->name, "gpt-small");
    assert_string_equal(r.targets[1]->name, "claude-small");
    assert_non_null(r.context_fallback);
    assert_string_equal(r.context_fallback->name, "gemini-big");
    assert_string_equal(r.name, "smart");

    assert_int_equal(resolve(f, "{\"model\":\"solo\"}", &r, param, sizeof(param), &err), 0);
    assert_int_equal(r.n_targets, 1);
    assert_string_equal(r.targets[0]->name, "claude-small");
    assert_null(r.context_fallback);
}

static void models_list_wins_over_model(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    int rc = resolve(f, "{\"model\":\"smart\",\"models\":[\"claude-small\",\"gemini-big\",\"claude-small\"]}",
                     &r, param, sizeof(param), &err);
    assert_int_equal(rc, 0);
    /* the repeated name is tried once */
    assert_int_equal(r.n_targets, 2);
    assert_string_equal(r.targets[0]->name, "claude-small");
    assert_string_equal(r.targets[1]->name, "gemini-big");
    assert_null(r.context_fallback);
    assert_string_equal(r.name, "request");
}

static void unknown_model_is_404_naming_it(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    assert_int_equal(resolve(f, "{\"model\":\"nope-7b\"}", &r, param, sizeof(param), &err),
                     TG_EMODEL_NOT_FOUND);
    assert_int_equal(err.code, TG_EMODEL_NOT_FOUND);
    assert_non_null(strstr(err.detail, "nope-7b"));
    assert_string_equal(param, "model");
    assert_int_equal(tg_err_http_status(err.code), 404);

    assert_int_equal(resolve(f, "{\"models\":[\"gpt-small\",\"ghost\"]}", &r, param, sizeof(param), &err),
                     TG_EMODEL_NOT_FOUND);
    assert_non_null(strstr(err.detail, "ghost"));
    assert_string_equal(param, "models[1]");
}

static void models_list_names_models_not_chains(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    assert_int_equal(resolve(f, "{\"models\":[\"smart\"]}", &r, param, sizeof(param), &err),
                     TG_EMODEL_NOT_FOUND);
    assert_string_equal(param, "models[0]");
}

static void mistyped_fields_are_400(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    assert_int_equal(resolve(f, "{\"messages\":[]}", &r, param, sizeof(param), &err), TG_EINVALID_REQUEST);
    assert_string_equal(param, "model");
    assert_int_equal(resolve(f, "{\"model\":42}", &r, param, sizeof(param), &err), TG_EINVALID_REQUEST);
    assert_string_equal(param, "model");
    assert_int_equal(resolve(f, "{\"models\":\"gpt-small\"}", &r, param, sizeof(param), &err),
                     TG_EINVALID_REQUEST);
    assert_string_equal(param, "models");
    assert_int_equal(resolve(f, "{\"models\":[]}", &r, param, sizeof(param), &err), TG_EINVALID_REQUEST);
    assert_string_equal(param, "models");
    assert_int_equal(resolve(f, "{\"models\":[\"gpt-small\", 3]}", &r, param, sizeof(param), &err),
                     TG_EINVALID_REQUEST);
    assert_string_equal(param, "models[1]");
    assert_int_equal(tg_err_http_status(err.code), 400);
}

static void too_long_a_list_is_400(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    char body[1024] = "{\"models\":[";
    for (int i = 0; i <= TG_PLAN_MAX_TARGETS; i++)
        strcat(body, i == 0 ? "\"gpt-small\"" : ",\"gpt-small\"");
    strcat(body, "]}");
    assert_int_equal(resolve(f, body, &r, param, sizeof(param), &err), TG_EINVALID_REQUEST);
    assert_string_equal(param, "models");
}

static void null_models_falls_back_to_model(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    char param[64];
    tg_error_t err;
    assert_int_equal(
        resolve(f, "{\"model\":\"claude-small\",\"models\":null}", &r, param, sizeof(param), &err), 0);
    assert_int_equal(r.n_targets, 1);
    assert_string_equal(r.targets[0]->name, "claude-small");
}

static void param_may_be_null(void **state)
{
    fixture_t *f = *state;
    tg_route_t r;
    tg_error_t err;
    assert_int_equal(resolve(f, "{\"model\":\"ghost\"}", &r, NULL, 0, &err), TG_EMODEL_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_model_is_a_chain_of_one),
        cmocka_unit_test(named_chain_gives_its_targets_and_fallback),
        cmocka_unit_test(models_list_wins_over_model),
        cmocka_unit_test(unknown_model_is_404_naming_it),
        cmocka_unit_test(models_list_names_models_not_chains),
        cmocka_unit_test(mistyped_fields_are_400),
        cmocka_unit_test(too_long_a_list_is_400),
        cmocka_unit_test(null_models_falls_back_to_model),
        cmocka_unit_test(param_may_be_null),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
