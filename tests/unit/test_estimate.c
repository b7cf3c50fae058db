/*
 * test_estimate.c - a request's tokens before it runs (estimate.h): the prompt's characters over
 * four plus the per-message overhead, whatever form the content takes; the output's figure from
 * max_completion_tokens, max_tokens or the model's cap, times n.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>

#include "estimate.h"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, 0, &e);
    if (v == NULL)
        fail_msg("bad test JSON: %s", e.text);
    return v;
}

static uint64_t prompt_of(const char *text)
{
    json_t *v = parse(text);
    uint64_t n = tg_estimate_prompt_tokens(v);
    json_decref(v);
    return n;
}

static uint64_t output_of(const char *text, uint32_t cap)
{
    json_t *v = parse(text);
    uint64_t n = tg_estimate_output_tokens(v, cap);
    json_decref(v);
    return n;
}

#define OVERHEAD(messages) ((messages)*TG_ESTIMATE_MSG_TOKENS + TG_ESTIMATE_REPLY_TOKENS)

static void test_prompt(void **state)
{
    (void)state;
    /* 8 characters: 2 tokens; rounded up from 9 */
    assert_int_equal(prompt_of("{\"messages\":[{\"role\":\"user\",\"content\":\"abcdefgh\"}]}"),
                     2 + OVERHEAD(1));
    assert_int_equal(prompt_of("{\"messages\":[{\"role\":\"user\",\"content\":\"abcdefghi\"}]}"),
                     3 + OVERHEAD(1));
    /* characters, not bytes: "héllo wörld" is 11 characters in 13 bytes */
    assert_int_equal(
        prompt_of("{\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo w\\u00f6rld\"}]}"),
        3 + OVERHEAD(1));
    /* across messages (18 characters), with names; an assistant turn of tool calls only */
    assert_int_equal(prompt_of("{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
                               "{\"role\":\"user\",\"name\":\"ann\",\"content\":\"hi\"},"
                               "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
                               "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                               "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}]}"),
                     (18 + 3) / 4 + OVERHEAD(4));
    /* content parts: text counts, an image a fixed cost, whatever its URL's length */
    assert_int_equal(prompt_of("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                               "\"abcd\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;"
                               "base64,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}}]}]}"),
                     1 + TG_ESTIMATE_IMAGE_TOKENS + OVERHEAD(1));
    /* tool definitions: their keys and strings (47 characters) */
    assert_int_equal(prompt_of("{\"messages\":[{\"role\":\"user\",\"content\":\"\"}],\"tools\":[{\"type\":"
                               "\"function\",\"function\":{\"name\":\"get\",\"parameters\":{\"type\":"
                               "\"object\"}}}]}"),
                     (47 + 3) / 4 + OVERHEAD(1));
    /* nothing countable */
    assert_int_equal(prompt_of("[]"), 0);
    assert_int_equal(prompt_of("{\"messages\":7}"), TG_ESTIMATE_REPLY_TOKENS);
}

static void test_output(void **state)
{
    (void)state;
    assert_int_equal(output_of("{\"max_tokens\":100}", 4096), 100);
    /* the newer name wins */
    assert_int_equal(output_of("{\"max_tokens\":100,\"max_completion_tokens\":50}", 4096), 50);
    /* none asked: the model's cap */
    assert_int_equal(output_of("{}", 4096), 4096);
    assert_int_equal(output_of("{\"max_tokens\":null}", 2048), 2048);
    /* never more than the cap */
    assert_int_equal(output_of("{\"max_tokens\":1000000}", 4096), 4096);
    /* every choice may be that long */
    assert_int_equal(output_of("{\"max_tokens\":100,\"n\":3}", 4096), 300);
    assert_int_equal(output_of("{\"n\":2}", 4096), 8192);
    /* no cap known: the request's own figure, else nothing */
    assert_int_equal(output_of("{\"max_tokens\":777}", 0), 777);
    assert_int_equal(output_of("{}", 0), 0);
    /* an absurd n saturates */
    assert_int_equal(output_of("{\"max_tokens\":4096,\"n\":9223372036854775807}", 4096), UINT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt),
        cmocka_unit_test(test_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
