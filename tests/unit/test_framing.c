/*
 * test_framing.c - framing.c's verdict on HTTP/1 request heads: one Content-Length or one
 * `Transfer-Encoding: chunked` passes; every head whose body length two parsers could read
 * differently is refused with a reason. The wire behaviour (400, connection closed, the request
 * hidden after the body never served) is tests/integration/framing.test.mjs.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "err.h"
#include "framing.h"

static int check(const char *head, const char **why)
{
    *why = NULL;
    return tg_framing_check_head(head, strlen(head), why);
}

static void assert_passes(const char *head)
{
    const char *why;
    assert_int_equal(check(head, &why), 0);
    assert_null(why);
}

static void assert_refused(const char *head, const char *reason)
{
    const char *why;
    assert_int_equal(check(head, &why), TG_EINVALID_REQUEST);
    assert_non_null(why);
    assert_string_equal(why, reason);
}

static void test_plain_heads_pass(void **state)
{
    assert_passes("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_passes("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
    assert_passes("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    assert_passes("POST / HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\n\r\n");
    assert_passes("POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    /* what follows the head is not the head's business */
    assert_passes("GET / HTTP/1.1\r\n\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
}

static void test_content_length_twice(void **state)
{
    assert_refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\n",
                   "more than one Content-Length header");
    /* equal values too: RFC 9112 would allow it, a front proxy might not */
    assert_refused("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
                   "more than one Content-Length header");
}

static void test_content_length_and_chunked(void **state)
{
    assert_refused("POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                   "both Content-Length and Transfer-Encoding");
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
                   "both Content-Length and Transfer-Encoding");
}

static void test_transfer_encoding_other_than_chunked(void **state)
{
    /* h2o takes the last Transfer-Encoding: `gzip` then `chunked` would be read as chunked */
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                   "more than one Transfer-Encoding header");
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                   "Transfer-Encoding other than chunked");
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked \r\n\r\n",
                   "Transfer-Encoding other than chunked");
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
                   "Transfer-Encoding other than chunked");
    assert_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                   "Transfer-Encoding in an HTTP/1.0 request");
}

static void test_folded_lines_and_broken_heads(void **state)
{
    assert_refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n , identity\r\n\r\n",
                   "folded header lines (obs-fold) are not accepted");
    assert_refused("POST / HTTP/1.1\r\nHost: x\r\n", "request head could not be read"); /* incomplete */
    assert_refused("POST / HTTP/1.1\r\nBad Header: x\r\n\r\n", "request head could not be read");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_heads_pass),
        cmocka_unit_test(test_content_length_twice),
        cmocka_unit_test(test_content_length_and_chunked),
        cmocka_unit_test(test_transfer_encoding_other_than_chunked),
        cmocka_unit_test(test_folded_lines_and_broken_heads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
