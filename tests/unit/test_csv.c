/*
 * test_csv.c - the pure parts of the admin money routes: CSV fields (billing/csv.c: commas,
 * quotes, CR and LF quoted, quotes doubled, formula-injection leads guarded with an apostrophe,
 * numbers never guarded, a field that does not fit leaving the buffer as it was), the usage
 * cursor and day parsers (billing/usage.c), and a CSV read back by an RFC 4180 reader giving the
 * original text for 2000 random fields.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "usage.h"

static char *field(const char *s)
{
    static char out[512];
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    assert_int_equal(tg_csv_text(&b, s, strlen(s)), 0);
    snprintf(out, sizeof(out), "%s", b.data != NULL ? b.data : "");
    tg_buf_dispose(&b);
    return out;
}

static void csv_escaping(void **state)
{
    (void)state;
    assert_string_equal(field("plain"), "plain");
    assert_string_equal(field(""), "");
    assert_string_equal(field("a,b"), "\"a,b\"");
    assert_string_equal(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_string_equal(field("line\nbreak"), "\"line\nbreak\"");
    assert_string_equal(field("cr\rhere"), "\"cr\rhere\"");
    assert_string_equal(field("\""), "\"\"\"\"");
    /* formula injection: the cell shows text, never runs */
    assert_string_equal(field("=1+2"), "'=1+2");
    assert_string_equal(field("+cmd"), "'+cmd");
    assert_string_equal(field("-2"), "'-2");
    assert_string_equal(field("@SUM(A1)"), "'@SUM(A1)");
    assert_string_equal(field("\tx"), "'\tx");
    assert_string_equal(field("=HYPERLINK(\"http://x\",\"y\")"),
                        "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
    assert_string_equal(field("=a,b"), "\"'=a,b\"");
    assert_string_equal(field("a=b"), "a=b"); /* only a leading one */
    assert_true(tg_csv_formula_lead('='));
    assert_false(tg_csv_formula_lead('a'));

    /* numbers the export writes itself are never guarded */
    tg_buf_t b;
    tg_buf_init(&b, 64);
    assert_int_equal(tg_csv_int(&b, -42), 0);
    assert_int_equal(tg_csv_sep(&b), 0);
    assert_int_equal(tg_csv_int(&b, 7), 0);
    assert_int_equal(tg_csv_end(&b), 0);
    assert_string_equal(b.data, "-42,7\r\n");
    tg_buf_dispose(&b);

    /* a field that does not fit leaves the buffer as it was */
    tg_buf_init(&b, 8);
    assert_int_equal(tg_buf_append_str(&b, "ab,"), 0);
    assert_int_equal(tg_csv_text(&b, "x\"yz", 4), TG_ETOO_LARGE);
    assert_int_equal(b.len, 3);
    assert_string_equal(b.data, "ab,");
    tg_buf_dispose(&b);
}

/* An RFC 4180 reader of one field (quoted or not), for the round trip below. */
static size_t read_field(const char *s, size_t n, char *out, size_t *out_len)
{
    size_t i = 0, o = 0;
    if (n > 0 && s[0] == '"') {
        for (i = 1; i < n; i++) {
            if (s[i] == '"') {
                if (i + 1 < n && s[i + 1] == '"') {
                    out[o++] = '"';
                    i++;
                    continue;
                }
                i++;
                break;
            }
            out[o++] = s[i];
        }
    } else {
        while (i < n && s[i] != ',' && s[i] != '\r')
            out[o++] = s[i++];
    }
    *out_len = o;
    return i;
}

static void csv_round_trip(void **state)
{
    (void)state;
    static const char alphabet[] = "ab,\"\r\n=+-@\t x";
    srand(12345);
    for (int k = 0; k < 2000; k++) {
        char in[32];
        size_t n = (size_t)(rand() % 20);
        for (size_t i = 0; i < n; i++)
            in[i] = alphabet[rand() % (sizeof(alphabet) - 1)];
        tg_buf_t b;
        tg_buf_init(&b, 1024);
        assert_int_equal(tg_csv_text(&b, in, n), 0);
        assert_int_equal(tg_csv_sep(&b), 0);
        assert_int_equal(tg_csv_int(&b, k), 0);
        assert_int_equal(tg_csv_end(&b), 0);
        char got[64];
        size_t got_len = 0;
        size_t used = read_field(b.data, b.len, got, &got_len);
        /* what a reader sees is the text, with the guard's apostrophe in front of a formula lead */
        bool guarded = n > 0 && tg_csv_formula_lead((unsigned char)in[0]);
        assert_int_equal(got_len, n + (guarded ? 1 : 0));
        if (guarded)
            assert_int_equal(got[0], '\'');
        assert_memory_equal(got + (guarded ? 1 : 0), in, n);
        assert_int_equal(b.data[used], ',');
        assert_int_equal(atoi(b.data + used + 1), k);
        assert_memory_equal(b.data + b.len - 2, "\r\n", 2);
        tg_buf_dispose(&b);
    }
}

static void usage_cursor(void **state)
{
    (void)state;
    tg_usage_pos_t p = {.set = true, .at_us = 1733356800123456, .request_id = "req_ABCdef234"}, q = {0};
    char cur[TG_USAGE_CURSOR_MAX];
    assert_int_equal(tg_usage_cursor_encode(&p, cur, sizeof(cur)), 0);
    assert_int_equal(tg_usage_cursor_decode(cur, &q), 0);
    assert_true(q.set);
    assert_int_equal(q.at_us, p.at_us);
    assert_string_equal(q.request_id, p.request_id);
    /* refused: not base64url, no dot, no id, a negative time, a control character */
    assert_int_equal(tg_usage_cursor_decode("!!!", &q), -1);
    assert_int_equal(tg_usage_cursor_decode("MTIz", &q), -1);   /* "123" */
    assert_int_equal(tg_usage_cursor_decode("MTIzLg", &q), -1); /* "123." */
    assert_int_equal(tg_usage_cursor_decode("LTEuYQ", &q), -1); /* "-1.a" */
    assert_int_equal(tg_usage_cursor_decode("MS4KYQ", &q), -1); /* "1.\na" */
    assert_int_equal(tg_usage_cursor_decode("MS5h", &q), 0);    /* "1.a" */
    assert_int_equal(q.at_us, 1);

    assert_true(tg_usage_valid_day("2024-02-29"));
    assert_false(tg_usage_valid_day("2023-02-29"));
    assert_false(tg_usage_valid_day("2024-13-01"));
    assert_false(tg_usage_valid_day("2024-1-01"));
    assert_false(tg_usage_valid_day("2024-01-01x"));
    assert_false(tg_usage_valid_day("'; DROP--"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(csv_escaping),
        cmocka_unit_test(csv_round_trip),
        cmocka_unit_test(usage_cursor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
