/*
 * fuzz_response.c - one provider's whole-response parser and error
 * classifier on arbitrary bodies (built once per adapter with
 * -DFUZZ_ADAPTER=tg_adapter_<kind>). The first byte picks the HTTP status
 * given to classify.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "providers/provider.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const int statuses[] = {400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504, 529, 302, 418};
    int status = statuses[data[0] % (sizeof(statuses) / sizeof(statuses[0]))];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    tg_resp_in_t in = {.model = "fuzz-model", .request_id = "fuzz", .created = 1};
    json_t *out = NULL;
    tg_usage_t usage = {0};
    tg_error_t err = {0};
    int rc = FUZZ_ADAPTER.parse_response(&in, body, len, &out, &usage, &err);
    if (rc == 0) {
        if (!json_is_object(out))
            abort();
        char *s = json_dumps(out, JSON_COMPACT);
        free(s);
    } else if (out != NULL) {
        abort(); /* no result on failure */
    }
    json_decref(out);

    tg_classified_t c;
    FUZZ_ADAPTER.classify(status, (data[0] & 1) ? "3" : NULL, body, len, &c);
    if (c.status != status || memchr(c.reason, '\0', sizeof(c.reason)) == NULL ||
        memchr(c.message, '\0', sizeof(c.message)) == NULL)
        abort();
    return 0;
}
