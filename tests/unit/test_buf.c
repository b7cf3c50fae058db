/*
 * test_buf.c - the bounded buffer never grows past its cap and never half-writes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "buf.h"

static void test_append_and_cap(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 10);
    assert_int_equal(tg_buf_append_str(&b, "hello"), 0);
    assert_int_equal(tg_buf_append_str(&b, "world"), 0);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "helloworld");
    /* one byte over the cap: refused, and the buffer is unchanged */
    assert_int_equal(tg_buf_append(&b, "!", 1), TG_ETOO_LARGE);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "helloworld");
    tg_buf_dispose(&b);
}

static void test_appendf_and_consume(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 1 << 20);
    assert_int_equal(tg_buf_appendf(&b, "%d-%s", 42, "x"), 0);
    assert_string_equal(b.data, "42-x");
    tg_buf_consume(&b, 3);
    assert_string_equal(b.data, "x");
    tg_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    for (int i = 0; i < 10000; ++i)
        assert_int_equal(tg_buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(b.len, 100000);
    size_t n;
    char *p = tg_buf_take(&b, &n);
    assert_int_equal(n, 100000);
    assert_null(b.data);
    free(p);
    tg_buf_dispose(&b);
}

static void test_appendf_over_cap(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 4);
    assert_int_equal(tg_buf_appendf(&b, "%s", "abcdef"), TG_ETOO_LARGE);
    assert_int_equal(b.len, 0);
    tg_buf_dispose(&b);
}

static void test_reserve(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 1000);
    assert_int_equal(tg_buf_reserve(&b, 1001), TG_ETOO_LARGE); /* past the cap: refused, as an append */
    assert_null(b.data);
    assert_int_equal(tg_buf_reserve(&b, 1000), 0);
    assert_true(b.cap >= 1000);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, ""); /* still a C string */
    const char *before = b.data;
    for (int i = 0; i < 100; i++)
        assert_int_equal(tg_buf_append(&b, "0123456789", 10), 0);
    assert_ptr_equal(b.data, before); /* the appends fit: no reallocation */
    assert_int_equal(tg_buf_append(&b, "x", 1), TG_ETOO_LARGE);
    tg_buf_dispose(&b);
}

static void test_huge_length_does_not_wrap(void **state)
{
    tg_buf_t b;
    tg_buf_init(&b, 16);
    assert_int_equal(tg_buf_append_str(&b, "ab"), 0);
    assert_int_equal(tg_buf_append(&b, "x", SIZE_MAX), TG_ETOO_LARGE);
    assert_int_equal(b.len, 2);
    tg_buf_dispose(&b);
}

/* tg_str_copy: fits, cuts, NULL, and a source field that its text fills without a NUL (only
 * cap - 1 bytes of it may be read: ASan checks the bound on the 4-byte heap source). */
static void test_str_copy(void **state)
{
    (void)state;
    char dst[5];
    memset(dst, 'z', sizeof(dst));
    tg_str_copy(dst, sizeof(dst), "ab");
    assert_string_equal(dst, "ab");
    tg_str_copy(dst, sizeof(dst), "abcdefgh");
    assert_string_equal(dst, "abcd");
    tg_str_copy(dst, sizeof(dst), NULL);
    assert_string_equal(dst, "");
    tg_str_copy(dst, 1, "abc");
    assert_string_equal(dst, "");
    char *field = malloc(4);
    assert_non_null(field);
    memcpy(field, "wxyz", 4); /* full: no NUL */
    tg_str_copy(dst, sizeof(dst), field);
    assert_string_equal(dst, "wxyz");
    free(field);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_and_cap),
        cmocka_unit_test(test_appendf_and_consume),
        cmocka_unit_test(test_appendf_over_cap),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_huge_length_does_not_wrap),
        cmocka_unit_test(test_str_copy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
