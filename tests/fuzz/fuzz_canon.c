/*
 * fuzz_canon.c - the tenant-controlled input: a client request body is
 * validated, and when valid, built into an upstream request by every adapter
 * (translation must never crash on any request the validator accepts). The
 * OpenAI adapter's raw fast path must send what its tree path sends: the same
 * JSON once parsed, whenever it does not decline.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <string.h>

#include "providers/provider.h"

static void check_raw_path(const tg_build_in_t *tree_in, const tg_upstream_req_t *tree_out,
                           const uint8_t *data, size_t size)
{
    tg_build_in_t in = *tree_in;
    in.raw = (const char *)data;
    in.raw_len = size;
    char *body = NULL;
    size_t len = 0;
    int rc = tg_openai_request_passthrough(&in, &body, &len);
    if (rc < 0 || (rc == 1 && body != NULL))
        abort();
    if (rc == 0) {
        json_error_t je;
        json_t *fast = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
        json_t *slow = json_loadb(tree_out->body, tree_out->body_len, 0, &je);
        if (fast == NULL || slow == NULL || !json_equal(fast, slow) || strlen(body) != len)
            abort();
        json_decref(fast);
        json_decref(slow);
    }
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t je;
    json_t *req = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (req == NULL)
        return 0;
    char param[64];
    tg_error_t err;
    if (tg_canon_validate(req, param, sizeof(param), &err) == 0) {
        tg_provider_cfg_t prov = {.name = "p", .base_url = "http://h"};
        const tg_adapter_t *ads[] = {&tg_adapter_openai, &tg_adapter_anthropic, &tg_adapter_gemini};
        for (int i = 0; i < 3; i++) {
            for (int stream = 0; stream < 2; stream++) {
                tg_build_in_t in = {
                    .provider = &prov, .upstream_model = "m", .api_key = "k", .stream = stream};
                tg_upstream_req_t out = {0};
                int rc = ads[i]->build_request(&in, req, &out, &err);
                if (rc == 0 && (out.body == NULL || out.url == NULL))
                    abort();
                if (rc == 0 && ads[i] == &tg_adapter_openai)
                    check_raw_path(&in, &out, data, size);
                tg_upstream_req_dispose(&out);
            }
        }
    }
    json_decref(req);
    return 0;
}
