/*
 * test_err.c - the error table: numbers are stable and without a gap, every code maps to a
 * status, an OpenAI type and code, and a public message, and its ready-made JSON body parses
 * back to the same fields.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "err.h"

static void test_numbers_are_stable(void **state)
{
    /* dashboards and logs key on these numbers and names: never renumber */
    assert_int_equal(TG_ENOMEM, -1);
    assert_int_equal(TG_EINVALID_JSON, -2);
    assert_int_equal(TG_EUNAUTHENTICATED, -4);
    assert_int_equal(TG_EMODEL_NOT_FOUND, -6);
    assert_int_equal(TG_ETOO_LARGE, -9);
    assert_int_equal(TG_EUPSTREAM_UNREACHABLE, -11);
    assert_int_equal(TG_EUPSTREAM_TIMEOUT, -14);
}

static void test_http_mapping(void **state)
{
    assert_int_equal(tg_err_http_status(TG_EINVALID_JSON), 400);
    assert_int_equal(tg_err_http_status(TG_EINVALID_REQUEST), 400);
    assert_int_equal(tg_err_http_status(TG_EUNAUTHENTICATED), 401);
    assert_int_equal(tg_err_http_status(TG_EMODEL_NOT_FOUND), 404);
    assert_int_equal(tg_err_http_status(TG_ETOO_LARGE), 413);
    assert_int_equal(tg_err_http_status(TG_ERATE_LIMITED), 429);
    assert_int_equal(tg_err_http_status(TG_EUPSTREAM_UNREACHABLE), 502);
    assert_int_equal(tg_err_http_status(TG_EUPSTREAM_TIMEOUT), 504);
    assert_int_equal(tg_err_http_status(TG_ENO_TARGET), 503);
    assert_int_equal(tg_err_http_status(12345), 500); /* unknown codes are internal errors */
    assert_int_equal(tg_err_http_status(0), 500);
}

static void test_names_and_codes(void **state)
{
    assert_string_equal(tg_err_name(TG_EMODEL_NOT_FOUND), "MODEL_NOT_FOUND");
    assert_string_equal(tg_err_code(TG_EMODEL_NOT_FOUND), "model_not_found");
    assert_string_equal(tg_err_type(TG_EUNAUTHENTICATED), "authentication_error");
    assert_string_equal(tg_err_type(TG_EINVALID_JSON), "invalid_request_error");
    assert_string_equal(tg_err_name(-999), "UNKNOWN");
}

static void test_every_code_is_complete(void **state)
{
    for (int e = -1; e >= -TG_ERR_COUNT; --e) {
        assert_string_not_equal(tg_err_name(e), "UNKNOWN");
        assert_true(strlen(tg_err_type(e)) > 0);
        const char *code = tg_err_code(e);
        for (const char *p = code; *p; ++p) /* the OpenAI code is lower snake case */
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        assert_true(strlen(tg_err_public_msg(e)) > 0);
        int s = tg_err_http_status(e);
        assert_true(s >= 400 && s <= 599);
    }
    assert_string_equal(tg_err_name(-TG_ERR_COUNT - 1), "UNKNOWN");
}

/* Every row of the table, in the order written, with its number and name. */
static const struct {
    int num;
    const char *name;
} rows[] = {
#define TG_X(num, name, code, http, type, msg) {num, #name},
    TG_ERR_MAP(TG_X)
#undef TG_X
};

static void test_numbering_has_no_gap(void **state)
{
    /* err.c finds a code by its position: row i must be code -(i + 1), so the codes run from -1 to
     * -TG_ERR_COUNT with no gap, no repeat and no row out of order, and each code finds its own row */
    size_t n = sizeof(rows) / sizeof(rows[0]);
    assert_int_equal(n, TG_ERR_COUNT);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].num, -(int)(i + 1));
        assert_string_equal(tg_err_name(rows[i].num), rows[i].name);
    }
}

static void test_table_entries_the_code_relies_on(void **state)
{
    /* docs/CONVENTIONS.md names this code for an exhausted chain; failover.c sends it */
    assert_string_equal(tg_err_code(TG_ENO_TARGET), "no_target_available");
    assert_int_equal(tg_err_http_status(TG_ENO_TARGET), 503);
    /* OpenAI's own code for it; failover.c uses it when a provider names none */
    assert_string_equal(tg_err_code(TG_ECONTEXT_LENGTH), "context_length_exceeded");
    /* nginx's status for a client that left before the answer (logged and counted as such) */
    assert_int_equal(tg_err_http_status(TG_ECLIENT_CLOSED), 499);
    assert_string_equal(tg_err_code(TG_ECLIENT_CLOSED), "client_closed");
    /* running out of memory is the server's fault, never the caller's (not a 401, not a 400) */
    int s = tg_err_http_status(TG_ENOMEM);
    assert_true(s >= 500 && s <= 599);
}

static void test_json_bodies(void **state)
{
    for (int e = -1; e >= -TG_ERR_COUNT; --e) {
        json_error_t jerr;
        json_t *root = json_loads(tg_err_json(e), 0, &jerr);
        assert_non_null(root);
        json_t *err = json_object_get(root, "error");
        assert_string_equal(json_string_value(json_object_get(err, "message")), tg_err_public_msg(e));
        assert_string_equal(json_string_value(json_object_get(err, "type")), tg_err_type(e));
        assert_string_equal(json_string_value(json_object_get(err, "code")), tg_err_code(e));
        assert_true(json_is_null(json_object_get(err, "param")));
        assert_int_equal(json_object_size(err), 4);
        json_decref(root);
    }
    assert_string_equal(tg_err_json(12345), tg_err_json(TG_EINTERNAL));
}

static void test_error_set(void **state)
{
    tg_error_t err;
    assert_int_equal(tg_error_set(&err, TG_EUPSTREAM_FAILED, "%s answered %d", "p", 503),
                     TG_EUPSTREAM_FAILED);
    assert_int_equal(err.code, TG_EUPSTREAM_FAILED);
    assert_string_equal(err.detail, "p answered 503");
    assert_int_equal(tg_error_set(NULL, TG_ENOMEM, "x"), TG_ENOMEM); /* NULL-safe */
    char big[600];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    tg_error_set(&err, TG_EINTERNAL, "%s", big); /* truncated, still terminated */
    assert_int_equal(strlen(err.detail), sizeof(err.detail) - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_are_stable),
        cmocka_unit_test(test_http_mapping),
        cmocka_unit_test(test_names_and_codes),
        cmocka_unit_test(test_every_code_is_complete),
        cmocka_unit_test(test_error_set),
        cmocka_unit_test(test_numbering_has_no_gap),
        cmocka_unit_test(test_table_entries_the_code_relies_on),
        cmocka_unit_test(test_json_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
