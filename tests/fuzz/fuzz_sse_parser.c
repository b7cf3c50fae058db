/*
 * fuzz_sse_parser.c - the SSE parser under arbitrary bytes and chunk
 * boundaries. The first input byte picks the chunk size, so the fuzzer
 * explores splits (the usual place SSE parsers break). Checks the contract:
 * every event's data is NUL-terminated at data_len and within the limit.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

#define MAX_EVENT 4096

static int on_event(void *ud, const tg_sse_event_t *ev)
{
    (void)ud;
    /* fields may hold NUL bytes from the input, so only the terminators are checked */
    if (ev->data[ev->data_len] != '\0' || ev->data_len > MAX_EVENT || ev->event[ev->event_len] != '\0')
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t step = (size_t)data[0] + 1;
    data++;
    size--;
    tg_sse_parser_t p;
    tg_sse_parser_init(&p, MAX_EVENT);
    int rc = 0;
    for (size_t off = 0; off < size && rc == 0; off += step)
        rc = tg_sse_parser_feed(&p, (const char *)data + off, off + step > size ? size - off : step, on_event,
                                NULL);
    if (rc != 0 && rc != TG_ETOO_LARGE)
        abort();
    tg_sse_parser_dispose(&p);
    return 0;
}
