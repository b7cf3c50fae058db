/*
 * test_pathguard.c - admin/pathguard.h: dot segments in any spelling are found, names with dots
 * are not, the query is not looked at.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "pathguard.h"

static bool has(const char *p)
{
    return tg_adm_path_has_dot_segment(p, strlen(p));
}

static void test_dot_segments(void **state)
{
    (void)state;
    assert_true(has("/admin/v1/tenants/1/keys/../policy"));
    assert_true(has("/admin/v1/tenants/1/keys/.."));
    assert_true(has("/admin/v1/tenants/./1"));
    assert_true(has("/admin/v1/tenants/1/keys/%2e%2e/policy"));
    assert_true(has("/admin/v1/tenants/1/keys/%2E./policy"));
    assert_true(has("/admin/v1/tenants/1/keys/.%2E"));
    assert_true(has("/admin/v1/tenants/1/keys/%2e"));
    assert_true(has("/admin/v1/../v1/tenants?limit=1"));
}

static void test_ordinary_paths(void **state)
{
    (void)state;
    assert_false(has("/admin/v1/tenants/1/chains/my.chain"));
    assert_false(has("/admin/v1/tenants/1/chains/..."));
    assert_false(has("/admin/v1/tenants/1/chains/.hidden"));
    assert_false(has("/admin/v1/tenants/1/chains/a..b"));
    assert_false(has("/admin/v1/openapi.json"));
    assert_false(has("/admin/v1/breakers/sim-openai%2Fgpt-4o/reset"));
    assert_false(has("/admin/v1/tenants?cursor=..&x=/../"));
    assert_false(has("/admin/v1/tenants/1/chains/%2e%2e%2e"));
    assert_false(has(""));
    assert_false(has("/"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_segments),
        cmocka_unit_test(test_ordinary_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
