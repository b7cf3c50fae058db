/*
 * fuzz_passthrough.c - differential target: the OpenAI fast paths (tg_openai_passthrough,
 * tg_openai_stream_passthrough) against the slow paths (parse_response, stream_event plus the
 * gateway's usage filter) on arbitrary input. Byte 0 picks the mode: bit 0 stream chunk vs whole
 * answer, bit 1 the client asked for usage, bit 2 the reported model (plain or needing escapes).
 * The rest is the body, or one SSE data payload. Whenever the fast path serves, its output must
 * parse to the slow path's JSON with the same usage; any disagreement aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "providers/provider.h"

#define OUT_MAX (1u << 22)

static void disagree(const char *why, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_passthrough: %s; input (%zu bytes): %.*s\n", why, size, (int)size,
            (const char *)data);
    abort();
}

static int usage_equal(const tg_usage_t *a, const tg_usage_t *b)
{
    return a->present == b->present && a->prompt_tokens == b->prompt_tokens &&
           a->completion_tokens == b->completion_tokens && a->cached_tokens == b->cached_tokens;
}

static void check_resp(const char *model, const char *body, size_t len)
{
    tg_resp_in_t in = {.model = model, .request_id = "fuzz", .created = 1};
    tg_buf_t out;
    tg_buf_init(&out, OUT_MAX);
    bool same = false;
    tg_usage_t fu = {0}, su = {0};
    int frc = tg_openai_passthrough(&in, body, len, &out, &same, &fu);
    json_t *slow = NULL;
    tg_error_t err = {0};
    int src = tg_adapter_openai.parse_response(&in, body, len, &slow, &su, &err);
    if (frc != 0 && frc != 1)
        disagree("fast path error", (const uint8_t *)body, len);
    if (frc == 1 && out.len != 0)
        disagree("declined but wrote", (const uint8_t *)body, len);
    if (frc == 0) {
        if (src != 0 || slow == NULL)
            disagree("fast served, slow refused", (const uint8_t *)body, len);
        json_error_t je;
        json_t *fast = same ? json_loadb(body, len, 0, &je) : json_loadb(out.data, out.len, 0, &je);
        if (!json_equal(fast, slow))
            disagree("outputs differ", (const uint8_t *)body, len);
        json_decref(fast);
        if (!usage_equal(&fu, &su))
            disagree("usage differs", (const uint8_t *)body, len);
    }
    json_decref(slow);
    tg_buf_dispose(&out);
}

typedef struct {
    bool client_usage;
    json_t *got;
    int n;
} sink_t;

/* relay.c on_chunk: strip usage for a client that did not ask, drop a chunk left empty */
static int sink_chunk(void *ud, json_t *chunk)
{
    sink_t *k = ud;
    json_t *out = json_incref(chunk);
    if (!k->client_usage && json_object_get(chunk, "usage") != NULL) {
        json_decref(out);
        out = json_copy(chunk);
        json_object_del(out, "usage");
        if (json_array_size(json_object_get(out, "choices")) == 0) {
            json_decref(out);
            return 0;
        }
    }
    if (k->n++ == 0)
        k->got = out;
    else
        json_decref(out);
    return 0;
}

static void check_chunk(const char *model, const char *data, size_t len, bool client_usage)
{
    tg_resp_in_t in = {.model = model, .request_id = "fuzz", .created = 1};
    tg_stream_t *st = tg_adapter_openai.stream_create(&in);
    if (st == NULL)
        return;
    tg_sse_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.data = data;
    ev.data_len = len;
    sink_t k = {.client_usage = client_usage};
    tg_usage_t fu = {0}, su = {0};
    tg_error_t err = {0};
    int src = tg_adapter_openai.stream_event(st, &ev, sink_chunk, &k, &su, &err);
    tg_buf_t out;
    tg_buf_init(&out, OUT_MAX);
    bool drop = false;
    int frc = tg_openai_stream_passthrough(model, data, len, client_usage, &out, &drop, &fu, NULL);
    if (frc != 0 && frc != 1)
        disagree("stream fast path error", (const uint8_t *)data, len);
    if (frc == 1 && (out.len != 0 || drop))
        disagree("stream declined but wrote", (const uint8_t *)data, len);
    if (frc == 0) {
        if (src != 0)
            disagree("stream fast served, slow refused", (const uint8_t *)data, len);
        if (drop && k.n != 0)
            disagree("stream fast dropped, slow emitted", (const uint8_t *)data, len);
        if (!drop) {
            json_error_t je;
            json_t *fast = json_loadb(out.data, out.len, 0, &je);
            if (k.n != 1 || !json_equal(fast, k.got))
                disagree("stream outputs differ", (const uint8_t *)data, len);
            json_decref(fast);
        }
        if (!usage_equal(&fu, &su))
            disagree("stream usage differs", (const uint8_t *)data, len);
    }
    json_decref(k.got);
    tg_buf_dispose(&out);
    tg_adapter_openai.stream_destroy(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    const char *model = (mode & 4) ? "gpt \"q\" \\ \xc3\xa9\n" : "fuzz-model";
    /* the SSE parser hands out NUL-terminated data; the copy also lets ASan see overreads */
    char *body = malloc(size);
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, size - 1);
    body[size - 1] = '\0';
    if (mode & 1)
        check_chunk(model, body, size - 1, (mode & 2) != 0);
    else
        check_resp(model, body, size - 1);
    free(body);
    return 0;
}
