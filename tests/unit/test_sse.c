/*
 * test_sse.c - the SSE parser under every chunking and line ending, its
 * limit, and the writer (round trip through the parser).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sse.h"

typedef struct {
    int n;
    char events[8][32];
    char data[8][256];
    int stop_at; /* return 7 from this event index, -1: never */
} collect_t;

static int on_event(void *ud, const tg_sse_event_t *ev)
{
    collect_t *c = ud;
    assert_int_equal(strlen(ev->data), ev->data_len); /* NUL-terminated at data_len */
    if (c->n < 8) {
        snprintf(c->events[c->n], sizeof(c->events[0]), "%.*s", (int)ev->event_len, ev->event);
        snprintf(c->data[c->n], sizeof(c->data[0]), "%s", ev->data);
    }
    return c->n++ == c->stop_at ? 7 : 0;
}

static const char STREAM[] = ": comment to ignore\n"
                             "event: message_start\n"
                             "data: {\"a\":1}\n"
                             "\n"
                             "data: line1\n"
                             "data:line2\n"
                             "id: 42\n"
                             "retry: 10\n"
                             "\n"
                             "event: ping\n"
                             "\n" /* no data: not dispatched */
                             "data: [DONE]\n"
                             "\n";

static void check_stream(const collect_t *c)
{
    assert_int_equal(c->n, 3);
    assert_string_equal(c->events[0], "message_start");
    assert_string_equal(c->data[0], "{\"a\":1}");
    assert_string_equal(c->events[1], "");
    assert_string_equal(c->data[1], "line1\nline2");
    assert_string_equal(c->events[2], "");
    assert_string_equal(c->data[2], "[DONE]");
}

/* Replaces every \n of src with `eol`. */
static void with_eol(const char *src, const char *eol, char *dst, size_t n)
{
    size_t w = 0;
    for (; *src && w + 3 < n; src++) {
        if (*src == '\n')
            for (const char *e = eol; *e; e++)
                dst[w++] = *e;
        else
            dst[w++] = *src;
    }
    dst[w] = '\0';
}

static void test_every_chunking_and_line_end(void **state)
{
    (void)state;
    const char *eols[] = {"\n", "\r\n", "\r"};
    char text[1024];
    for (size_t e = 0; e < 3; e++) {
        with_eol(STREAM, eols[e], text, sizeof(text));
        size_t n = strlen(text);
        for (size_t step = 1; step <= n; step++) {
            collect_t c = {.stop_at = -1};
            tg_sse_parser_t p;
            tg_sse_parser_init(&p, 1024);
            for (size_t off = 0; off < n; off += step)
                assert_int_equal(
                    tg_sse_parser_feed(&p, text + off, off + step > n ? n - off : step, on_event, &c), 0);
            tg_sse_parser_dispose(&p);
            check_stream(&c);
        }
    }
}

static void test_crlf_split_between_feeds(void **state)
{
    (void)state;
    collect_t c = {.stop_at = -1};
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 1024);
    /* "\r" ends the line; the "\n" arriving next must not count as an empty line */
    assert_int_equal(tg_sse_parser_feed(&p, "data: a\r", 8, on_event, &c), 0);
    assert_int_equal(tg_sse_parser_feed(&p, "\ndata: b\r\n\r\n", 12, on_event, &c), 0);
    tg_sse_parser_dispose(&p);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.data[0], "a\nb");
}

static void test_empty_data_and_no_space(void **state)
{
    (void)state;
    collect_t c = {.stop_at = -1};
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 1024);
    const char *s = "data\n\ndata:x\n\nevent:e\ndata:  two spaces\n\n";
    assert_int_equal(tg_sse_parser_feed(&p, s, strlen(s), on_event, &c), 0);
    tg_sse_parser_dispose(&p);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.data[0], "");
    assert_string_equal(c.data[1], "x");
    assert_string_equal(c.events[2], "e");
    assert_string_equal(c.data[2], " two spaces"); /* only one leading space is stripped */
}

static void test_incomplete_event_not_dispatched(void **state)
{
    (void)state;
    collect_t c = {.stop_at = -1};
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 1024);
    assert_int_equal(tg_sse_parser_feed(&p, "data: partial\n", 14, on_event, &c), 0);
    assert_int_equal(c.n, 0);
    tg_sse_parser_dispose(&p); /* frees the pending data */
}

static void test_limit(void **state)
{
    (void)state;
    char big[200];
    memset(big, 'x', sizeof(big));
    collect_t c = {.stop_at = -1};
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 64);
    /* one long partial line */
    assert_int_equal(tg_sse_parser_feed(&p, "data: ", 6, on_event, &c), 0);
    assert_int_equal(tg_sse_parser_feed(&p, big, sizeof(big), on_event, &c), TG_ETOO_LARGE);
    tg_sse_parser_dispose(&p);

    /* many short data lines that add up past the limit */
    tg_sse_parser_init(&p, 64);
    int rc = 0;
    for (int i = 0; i < 20 && rc == 0; i++)
        rc = tg_sse_parser_feed(&p, "data: 0123456789\n", 17, on_event, &c);
    assert_int_equal(rc, TG_ETOO_LARGE);
    assert_int_equal(c.n, 0);
    tg_sse_parser_dispose(&p);

    /* exactly at the limit is fine */
    tg_sse_parser_init(&p, 64);
    char line[80] = "data: ";
    memset(line + 6, 'y', 63);
    line[69] = '\n';
    line[70] = '\n';
    assert_int_equal(tg_sse_parser_feed(&p, line, 71, on_event, &c), 0);
    assert_int_equal(c.n, 1);
    assert_int_equal(strlen(c.data[0]), 63);
    tg_sse_parser_dispose(&p);
}

static void test_callback_stops_feed(void **state)
{
    (void)state;
    collect_t c = {.stop_at = 0};
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 1024);
    const char *s = "data: 1\n\ndata: 2\n\n";
    assert_int_equal(tg_sse_parser_feed(&p, s, strlen(s), on_event, &c), 7);
    assert_int_equal(c.n, 1);
    tg_sse_parser_dispose(&p);
}

static void roundtrip(const char *data)
{
    tg_buf_t out;
    tg_buf_init(&out, 4096);
    assert_int_equal(tg_sse_write_data(&out, data, strlen(data)), 0);
    collect_t c = {.stop_at = -1};
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 1024);
    assert_int_equal(tg_sse_parser_feed(&p, out.data, out.len, on_event, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.data[0], data);
    tg_sse_parser_dispose(&p);
    tg_buf_dispose(&out);
}

static void test_writer(void **state)
{
    (void)state;
    tg_buf_t out;
    tg_buf_init(&out, 4096);
    assert_int_equal(tg_sse_write_data(&out, "{\"x\":1}", 7), 0);
    assert_string_equal(out.data, "data: {\"x\":1}\n\n");
    tg_buf_reset(&out);
    assert_int_equal(tg_sse_write_data(&out, "a\nb", 3), 0);
    assert_string_equal(out.data, "data: a\ndata: b\n\n");
    tg_buf_reset(&out);
    assert_int_equal(tg_sse_write_comment(&out, "trying x\nretry: 1"), 0);
    assert_string_equal(out.data, ": trying x retry: 1\n\n");
    tg_buf_reset(&out);
    assert_int_equal(tg_sse_write_done(&out), 0);
    assert_string_equal(out.data, "data: [DONE]\n\n");
    tg_buf_dispose(&out);

    roundtrip("{\"a\":\"b\"}");
    roundtrip("multi\nline\n");
    roundtrip("");
}

static void test_writer_full_buffer_unchanged(void **state)
{
    (void)state;
    tg_buf_t out;
    tg_buf_init(&out, 20);
    assert_int_equal(tg_sse_write_data(&out, "ok", 2), 0);
    size_t before = out.len;
    assert_int_equal(tg_sse_write_data(&out, "a\nb\nc\nd", 7), TG_ETOO_LARGE);
    assert_int_equal(out.len, before);
    assert_string_equal(out.data, "data: ok\n\n");
    assert_int_equal(tg_sse_write_comment(&out, "0123456789abcdef"), TG_ETOO_LARGE);
    assert_int_equal(out.len, before);
    tg_buf_dispose(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_chunking_and_line_end),
        cmocka_unit_test(test_crlf_split_between_feeds),
        cmocka_unit_test(test_empty_data_and_no_space),
        cmocka_unit_test(test_incomplete_event_not_dispatched),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_callback_stops_feed),
        cmocka_unit_test(test_writer),
        cmocka_unit_test(test_writer_full_buffer_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
