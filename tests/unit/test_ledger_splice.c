/*
 * test_ledger_splice.c - the cost a pass-through stream's usage chunk gains (ledger.h,
 * tg_ledger_splice_cost): inserted as the usage object's first member, whatever blanks the provider
 * put around it; an empty usage object gets no comma; a chunk without usage, or with "usage":null,
 * is left as it is; the result parses as JSON with the cost an integer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "buf.h"
#include "ledger.h"

static char *splice(const char *in, int64_t cost)
{
    tg_buf_t b;
    tg_buf_init(&b, 1 << 20);
    assert_int_equal(tg_buf_append(&b, in, strlen(in)), 0);
    assert_int_equal(tg_ledger_splice_cost(&b, cost), 0);
    char *out = strndup(b.data, b.len);
    tg_buf_dispose(&b);
    return out;
}

static void assert_cost(const char *in, int64_t cost)
{
    char *out = splice(in, cost);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    if (j == NULL)
        fail_msg("not JSON after the splice: %s (%s)", out, e.text);
    json_t *c = json_object_get(json_object_get(j, "usage"), "cost");
    assert_true(json_is_integer(c));
    assert_int_equal(json_integer_value(c), cost);
    /* the other members are still there */
    json_t *orig = json_loads(in, 0, NULL);
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(orig, "usage"), k, v)
        assert_true(json_equal(v, json_object_get(json_object_get(j, "usage"), k)));
    json_decref(orig);
    json_decref(j);
    free(out);
}

static void test_inserted(void **state)
{
    (void)state;
    assert_cost("{\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3}}",
                1234);
    assert_cost("{\"choices\":[],\"usage\": {\"prompt_tokens\":10}}", 0);
    assert_cost("{\"choices\":[],\"usage\":\t{ \"prompt_tokens\":10 }}", 9007199254740991LL);
    assert_cost("{\"choices\":[],\"usage\":{}}", 7);
    assert_cost("{\"choices\":[],\"usage\":{ }}", 7);
    /* text that mentions usage inside a string is escaped, so it never matches */
    assert_cost(
        "{\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":{\"}}],\"usage\":{\"prompt_tokens\":1}}", 5);
}

static void test_left_alone(void **state)
{
    (void)state;
    const char *none = "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}";
    char *out = splice(none, 5);
    assert_string_equal(out, none);
    free(out);
    const char *null = "{\"choices\":[],\"usage\":null}";
    out = splice(null, 5);
    assert_string_equal(out, null);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inserted),
        cmocka_unit_test(test_left_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
