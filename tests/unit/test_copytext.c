/*
 * test_copytext.c - one COPY text field: the characters that would end a field or a row are
 * escaped, and a byte the server would reject a whole batch for (a NUL, anything that is not valid
 * UTF-8) becomes '?', whatever the input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "copytext.h"

/* Escapes n bytes of s into a fresh NUL-terminated string. */
static char *field(const char *s, size_t n)
{
    char *out = malloc(TG_COPY_TEXT_MAX(n) + 1);
    char *end = tg_copy_text_put(out, s, n);
    assert_true((size_t)(end - out) <= TG_COPY_TEXT_MAX(n));
    *end = '\0';
    return out;
}

static void expect(const char *in, size_t n, const char *want)
{
    char *got = field(in, n);
    assert_string_equal(got, want);
    free(got);
}

static void test_escapes(void **state)
{
    (void)state;
    expect("plain text", 10, "plain text");
    expect("a\tb\nc\rd\\e", 9, "a\\tb\\nc\\rd\\\\e");
    expect("a\0b", 3, "a?b"); /* a NUL inside a length-bounded field */
    expect("", 0, "");
}

static void test_utf8(void **state)
{
    (void)state;
    expect("caf\xc3\xa9", 5, "caf\xc3\xa9");           /* 2 bytes */
    expect("\xe2\x82\xac", 3, "\xe2\x82\xac");         /* 3 bytes */
    expect("\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"); /* 4 bytes */
    expect("\xc0\xaf", 2, "??");                       /* overlong '/' */
    expect("\xed\xa0\x80", 3, "???");                  /* a surrogate */
    expect("\xf4\x90\x80\x80", 4, "????");             /* past U+10FFFF */
    expect("\x80x", 2, "?x");                          /* a lone continuation */
    expect("\xe2\x82", 2, "??");                       /* cut at the end of the field */
    expect("\xe2\x82\xac\xe2", 4, "\xe2\x82\xac?");    /* a sequence the length cuts */
    assert_int_equal(tg_utf8_seq_len((const unsigned char *)"\xe2\x82\xac", 2), 0); /* not all readable */
}

/* Any input: the output has no raw tab, newline, carriage return or NUL, and no invalid UTF-8. */
static void test_random_inputs(void **state)
{
    (void)state;
    unsigned seed = 12345;
    unsigned char in[64];
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(round % 64);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = (unsigned char)(seed >> 16);
        }
        char *out = field((const char *)in, n);
        const unsigned char *p = (const unsigned char *)out;
        while (*p != '\0') {
            assert_true(*p != '\t' && *p != '\n' && *p != '\r');
            if (*p >= 0x80) {
                size_t k = tg_utf8_seq_len(p, strlen((const char *)p));
                assert_true(k >= 2);
                p += k;
            } else {
                p += *p == '\\' ? 2 : 1; /* an escape is two characters */
            }
        }
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escapes),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_random_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
