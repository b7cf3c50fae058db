/*
 * fuzz_jsonmem.c - the memory budget on tenant bytes: the pre-scan never reads outside the body and,
 * whenever jansson accepts it, estimates no more than jansson really asks for (else the pre-scan
 * would refuse a body the budget allows); a parse under a budget of any size either returns the
 * tree or fails with a TG_E* code, without a leak, and the budget's boundary is exact; a valid
 * request translated by each adapter under a smaller budget fails cleanly (jansson's building
 * functions see refused allocations; its lexer, for tool arguments, must not).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jsonmem.h"
#include "providers/provider.h"

/* A valid request translated by each adapter under budgets below what it needs: a clean failure
 * (no abort inside jansson, no leak), and success at exactly what it needs. */
static void translate_under_budget(const json_t *req)
{
    char param[64];
    tg_error_t err;
    if (!json_is_object(req) || tg_canon_validate(req, param, sizeof(param), &err) != 0)
        return;
    tg_provider_cfg_t prov = {.name = "p", .base_url = "http://h"};
    const tg_adapter_t *ads[] = {&tg_adapter_openai, &tg_adapter_anthropic, &tg_adapter_gemini};
    for (int i = 0; i < 3; i++) {
        tg_build_in_t in = {.provider = &prov, .upstream_model = "m", .api_key = "k", .stream = i == 1};
        tg_upstream_req_t out = {0};
        tg_jsonmem_arm(SIZE_MAX);
        int rc = ads[i]->build_request(&in, req, &out, &err);
        size_t need = tg_jsonmem_disarm(NULL);
        tg_upstream_req_dispose(&out);
        if (rc != 0)
            continue;
        const size_t budgets[] = {need - 1, need / 2, need / 3, need / 7};
        for (size_t b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++) {
            memset(&out, 0, sizeof(out));
            tg_jsonmem_arm(budgets[b]);
            rc = ads[i]->build_request(&in, req, &out, &err);
            bool exceeded;
            tg_jsonmem_disarm(&exceeded);
            if (!exceeded && rc == 0 && budgets[b] < need)
                abort(); /* built whole with less than it needed: the count is not deterministic */
            tg_upstream_req_dispose(&out);
        }
    }
}

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
    translate_under_budget(v);
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
