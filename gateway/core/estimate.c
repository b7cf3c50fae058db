/*
 * estimate.c - a request's tokens before it runs, see estimate.h.
 */
#include "estimate.h"

#include <string.h>

/* Tool definitions are JSON schemas: nested, but not deeply. Deeper parts count as nothing (the
 * body's depth is bounded by the parse anyway). */
#define SCHEMA_DEPTH_MAX 32

/* Unicode code points of UTF-8 text: every byte that does not continue a sequence. */
static uint64_t chars_of(const char *s, size_t len)
{
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0u) != 0x80u;
    return n;
}

static uint64_t string_chars(const json_t *v)
{
    return json_is_string(v) ? chars_of(json_string_value(v), json_string_length(v)) : 0;
}

/* Every key and string of a value (a tool's name, description and parameter schema). */
static uint64_t tree_chars(const json_t *v, int depth)
{
    if (depth > SCHEMA_DEPTH_MAX)
        return 0;
    uint64_t n = 0;
    if (json_is_string(v)) {
        n = string_chars(v);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach((json_t *)v, k, x)
        {
            n += chars_of(k, strlen(k)) + tree_chars(x, depth + 1);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            n += tree_chars(x, depth + 1);
        }
    }
    return n;
}

uint64_t tg_estimate_prompt_tokens(const json_t *body)
{
    if (!json_is_object(body))
        return 0;
    uint64_t chars = 0, extra = TG_ESTIMATE_REPLY_TOKENS;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        extra += TG_ESTIMATE_MSG_TOKENS;
        chars += string_chars(json_object_get(m, "name"));
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content)) {
            chars += string_chars(content);
        } else {
            size_t j;
            json_t *part;
            json_array_foreach(content, j, part)
            {
                const char *type = json_string_value(json_object_get(part, "type"));
                if (type != NULL && strcmp(type, "image_url") == 0)
                    extra += TG_ESTIMATE_IMAGE_TOKENS;
                else
                    chars += string_chars(json_object_get(part, "text")) +
                             string_chars(json_object_get(part, "refusal"));
            }
        }
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(m, "tool_calls"), k, tc)
        {
            json_t *fn = json_object_get(tc, "function");
            chars +=
                string_chars(json_object_get(fn, "name")) + string_chars(json_object_get(fn, "arguments"));
        }
    }
    chars += tree_chars(json_object_get(body, "tools"), 0);
    return (chars + 3) / 4 + extra;
}

static uint64_t positive(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

uint64_t tg_estimate_output_tokens(const json_t *body, uint32_t model_cap)
{
    if (!json_is_object(body))
        return 0;
    uint64_t asked = positive(json_object_get(body, "max_completion_tokens"));
    if (asked == 0)
        asked = positive(json_object_get(body, "max_tokens"));
    if (asked == 0 || (model_cap != 0 && asked > model_cap))
        asked = model_cap;
    uint64_t n = positive(json_object_get(body, "n"));
    /* n is a small count in practice; a silly one must not overflow the product */
    if (n > 1 && asked != 0)
        asked = n > UINT64_MAX / asked ? UINT64_MAX : asked * n;
    return asked;
}
