/*
 * fuzz_jsonmem.c - the memory budget on tenant bytes: the pre-scan never reads outside the body and,
 * whenever jansson accepts it, estimates no more than jansson really asks for (else the pre-scan
 * would refuse a body the budget allows); a parse under a budget of any size either returns the
 * tree or fails with a TG_E* code, without a leak, and the budget's boundary is exact.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "err.h"
#include "jsonmem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    size_t est = tg_jsonmem_estimate(buf, size, SIZE_MAX);
    json_error_t je;
    int rc;
    size_t used = 0;
    json_t *v =
        tg_json_load_bounded(buf, size, SIZE_MAX, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &rc, &used);
    if (v == NULL) {
        if (rc != TG_EINVALID_JSON)
            abort();
        return 0;
    }
    json_decref(v);
    if (est > used)
        abort(); /* not a lower bound: the pre-scan could refuse what the budget allows */
    if (used == 0)
        return 0; /* a literal: nothing allocated, no boundary to probe */
    v = tg_json_load_bounded(buf, size, used, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &rc, NULL);
    if (v == NULL || rc != 0)
        abort();
    json_decref(v);
    v = tg_json_load_bounded(buf, size, used - 1, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &rc, NULL);
    if (v != NULL || rc != TG_EBODY_TOO_COMPLEX)
        abort();
    size_t half = used / 2;
    v = tg_json_load_bounded(buf, size, half, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &rc, NULL);
    if ((v == NULL) != (rc != 0))
        abort();
    json_decref(v);
    return 0;
}
