/*
 * fuzz_stream.c - one provider's stream translator fed through the SSE
 * parser (built once per adapter with -DFUZZ_ADAPTER=tg_adapter_<kind>).
 * The first byte picks the chunk size. Every emitted chunk must be a
 * chat.completion.chunk object; errors must be TG_E* codes with no leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "providers/provider.h"
#include "sse.h"

typedef struct {
    tg_stream_t *st;
    tg_usage_t usage;
    tg_error_t err;
    int done;
} run_t;

static int on_chunk(void *ud, json_t *chunk)
{
    (void)ud;
    const char *obj = json_string_value(json_object_get(chunk, "object"));
    if (obj == NULL || strcmp(obj, "chat.completion.chunk") != 0 ||
        !json_is_array(json_object_get(chunk, "choices")))
        abort();
    char *s = json_dumps(chunk, JSON_COMPACT); /* the gateway serialises every chunk */
    if (s == NULL)
        abort();
    free(s);
    return 0;
}

static int on_event(void *ud, const tg_sse_event_t *ev)
{
    run_t *r = ud;
    if (r->done)
        return 1;
    int rc = FUZZ_ADAPTER.stream_event(r->st, ev, on_chunk, r, &r->usage, &r->err);
    if (rc < 0 && (rc < -22))
        abort(); /* not an error-table code */
    if (rc != 0)
        r->done = 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t step = (size_t)data[0] + 1;
    data++;
    size--;
    tg_resp_in_t in = {.model = "fuzz-model", .request_id = "fuzz", .created = 1};
    run_t r = {0};
    r.st = FUZZ_ADAPTER.stream_create(&in);
    if (r.st == NULL)
        return 0;
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, 1 << 16);
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += step)
        rc = tg_sse_parser_feed(&p, (const char *)data + off, off + step > size ? size - off : step, on_event,
                                &r);
    (void)rc;
    tg_sse_parser_dispose(&p);
    FUZZ_ADAPTER.stream_destroy(r.st);
    return 0;
}
