/*
 * test_log.c - the JSON escaper is correct for quotes, backslashes, control characters and
 * invalid UTF-8, and a log line is one valid JSON object, filtered by level and cut safely; with
 * the writer thread started, a sink nobody reads never blocks the thread that logs: lines are
 * dropped whole and counted, warnings still get in, and what reaches the sink is whole lines.
 */
#define _GNU_SOURCE /* F_GETPIPE_SZ */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static void assert_escapes(const char *in, const char *want)
{
    char out[256];
    int n = tg_json_escape(out, sizeof(out), in);
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

static void test_escape(void **state)
{
    assert_escapes("plain", "plain");
    assert_escapes("a\"b\\c", "a\\\"b\\\\c");
    assert_escapes("l1\nl2\r\t\b\f", "l1\\nl2\\r\\t\\b\\f");
    assert_escapes("\x01\x1f\x7f", "\\u0001\\u001f\\u007f");
    assert_escapes("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* invalid bytes: a lone continuation, a truncated sequence, an overlong '/', a surrogate, > U+10FFFF */
    assert_escapes("a\x80"
                   "b",
                   "a\\ufffdb");
    assert_escapes("\xe2\x82", "\\ufffd\\ufffd");
    assert_escapes("\xc0\xaf", "\\ufffd\\ufffd");
    assert_escapes("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd");
    assert_escapes("\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd");
    assert_escapes("\xff", "\\ufffd");
    assert_escapes("", "");
}

static void test_escape_bounds(void **state)
{
    char out[8];
    /* "a\"" needs 3 bytes + NUL: fits in 4, not in 3 */
    assert_int_equal(tg_json_escape(out, 4, "a\""), 3);
    assert_string_equal(out, "a\\\"");
    assert_int_equal(tg_json_escape(out, 3, "a\""), -1);
    assert_int_equal(tg_json_escape(out, 0, "a"), -1);
    /* an escape is never split */
    assert_int_equal(tg_json_escape(out, 6, "\x01"), -1);
    assert_int_equal(tg_json_escape(out, 7, "\x01"), 6);
}

static void test_escape_round_trip(void **state)
{
    /* every byte value, through the escaper and back through a strict JSON parser */
    char in[256], esc[256 * 6 + 3];
    for (int i = 1; i < 256; i++)
        in[i - 1] = (char)i;
    in[255] = '\0';
    esc[0] = '"';
    int n = tg_json_escape(esc + 1, sizeof(esc) - 2, in);
    assert_true(n > 0);
    esc[n + 1] = '"';
    esc[n + 2] = '\0';
    json_error_t err;
    json_t *j = json_loads(esc, JSON_DECODE_ANY, &err);
    assert_non_null(j);
    /* ASCII survives unchanged */
    assert_memory_equal(json_string_value(j), in, 127);
    json_decref(j);
}

/* Reads what the logger wrote into the pipe. */
static size_t drain(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return len;
}

static void test_line(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    tg_log_set_fd(p[1]);
    tg_log_set_level(TG_LOG_WARN);

    TG_LOG(TG_LOG_INFO, "filtered_out", TG_KV_STR("k", "v"));
    TG_LOG(TG_LOG_WARN, "upstream_failed", TG_KV_STR("provider", "sim \"x\"\n"), TG_KV_INT("status", 503),
           TG_KV_INT("neg", -7), TG_KV_STR("nil", NULL));
    static char out[32768];
    size_t len = drain(p[0], out, sizeof(out));
    assert_true(len > 0);
    assert_int_equal(out[len - 1], '\n');
    assert_ptr_equal(strchr(out, '\n'), out + len - 1); /* exactly one line: the info one was filtered */

    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "event")), "upstream_failed");
    assert_string_equal(json_string_value(json_object_get(j, "provider")), "sim \"x\"\n");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 503);
    assert_int_equal(json_integer_value(json_object_get(j, "neg")), -7);
    assert_true(json_is_null(json_object_get(j, "nil")));
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24); /* 2026-01-02T03:04:05.678Z */
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[23], 'Z');
    assert_null(json_object_get(j, "truncated"));
    json_decref(j);

    /* a value longer than the line buffer is cut, and the line is still one valid object */
    char *big = malloc(20000);
    memset(big, 'x', 19999);
    big[19999] = '\0';
    big[100] = '"';
    TG_LOG(TG_LOG_ERROR, "big", TG_KV_STR("body", big), TG_KV_INT("after", 1));
    free(big);
    len = drain(p[0], out, sizeof(out));
    assert_true(len > 1000 && len <= 8192);
    assert_ptr_equal(strchr(out, '\n'), out + len - 1);
    j = json_loads(out, 0, &err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    assert_string_equal(json_string_value(json_object_get(j, "event")), "big");
    assert_int_equal(json_string_value(json_object_get(j, "body"))[100], '"');
    json_decref(j);

    tg_log_set_fd(2);
    tg_log_set_level(TG_LOG_INFO);
    close(p[0]);
    close(p[1]);
}

/* ---------------------------------------------------------------- a stalled sink */

enum { FLOOD_LINE = 200 }; /* about the size of one flood line */

typedef struct flood {
    int lines;
} flood_t;

static void *flood_main(void *arg)
{
    flood_t *f = arg;
    char pad[FLOOD_LINE];
    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < f->lines; i++)
        TG_LOG(TG_LOG_INFO, "flood", TG_KV_INT("seq", i), TG_KV_STR("pad", pad));
    return NULL;
}

typedef struct stopper {
    int write_end;
} stopper_t;

/* Stops the writer (it writes what is queued as the test reads), then closes the pipe: EOF. */
static void *stopper_main(void *arg)
{
    stopper_t *s = arg;
    tg_log_stop(-1);
    tg_log_set_fd(2);
    close(s->write_end);
    return NULL;
}

static void test_stalled_sink_drops_instead_of_blocking(void **state)
{
    int p[2];
    assert_int_equal(pipe(p), 0); /* blocking, like a stderr pipe: a direct write would wait forever */
    long pipe_bytes = fcntl(p[1], F_GETPIPE_SZ);
    assert_true(pipe_bytes > 0);
    enum { QUEUE = 64 * 1024 };
    tg_log_set_fd(p[1]);
    tg_log_set_level(TG_LOG_INFO);
    uint64_t dropped_before = tg_log_dropped();
    assert_int_equal(tg_log_start(QUEUE), 0);

    /* four times what the pipe and the queue together can hold, and nobody reads the pipe: before
     * the writer thread existed, this thread blocked in write(2) for good */
    flood_t f = {.lines = (int)(4 * (pipe_bytes + QUEUE) / FLOOD_LINE)};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, flood_main, &f), 0);
    assert_int_equal(pthread_join(tid, NULL), 0);
    uint64_t dropped = tg_log_dropped() - dropped_before;
    assert_true(dropped > 0);
    assert_true(dropped < (uint64_t)f.lines);
    /* info lines stop at three quarters of the queue: a warning still has room */
    TG_LOG(TG_LOG_WARN, "after_flood");
    assert_int_equal(tg_log_dropped() - dropped_before, dropped);

    /* now read it all: every line is one whole JSON object, in order, and every line logged was
     * either written or counted as dropped */
    stopper_t st = {.write_end = p[1]};
    assert_int_equal(pthread_create(&tid, NULL, stopper_main, &st), 0);
    size_t cap = (size_t)f.lines * (FLOOD_LINE + 128), len = 0;
    char *out = malloc(cap + 1);
    assert_non_null(out);
    ssize_t r;
    while ((r = read(p[0], out + len, cap - len)) > 0)
        len += (size_t)r;
    assert_true(len < cap);
    out[len] = '\0';
    assert_int_equal(pthread_join(tid, NULL), 0);
    close(p[0]);

    int written = 0, last_seq = -1, warnings = 0;
    for (char *line = out, *nl; *line != '\0'; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_non_null(nl); /* the output ends with a whole line */
        json_error_t err;
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, &err);
        assert_non_null(j);
        const char *event = json_string_value(json_object_get(j, "event"));
        assert_non_null(event);
        if (strcmp(event, "flood") == 0) {
            int seq = (int)json_integer_value(json_object_get(j, "seq"));
            assert_true(seq > last_seq);
            last_seq = seq;
            assert_int_equal(strlen(json_string_value(json_object_get(j, "pad"))), FLOOD_LINE - 1);
            written++;
        } else {
            assert_string_equal(event, "after_flood");
            warnings++;
        }
        json_decref(j);
    }
    assert_int_equal(warnings, 1);
    assert_int_equal((uint64_t)written + dropped, (uint64_t)f.lines);
    free(out);

    /* stopped: lines are written at once again */
    int q[2];
    assert_int_equal(pipe(q), 0);
    assert_int_equal(fcntl(q[0], F_SETFL, O_NONBLOCK), 0);
    tg_log_set_fd(q[1]);
    TG_LOG(TG_LOG_WARN, "direct_again");
    char buf[512];
    assert_true(drain(q[0], buf, sizeof(buf)) > 0);
    assert_non_null(strstr(buf, "\"direct_again\""));
    tg_log_set_fd(2);
    close(q[0]);
    close(q[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_escape_bounds),
        cmocka_unit_test(test_escape_round_trip),
        cmocka_unit_test(test_line),
        cmocka_unit_test(test_stalled_sink_drops_instead_of_blocking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
