/*
 * openai.c - the pass-through adapter for OpenAI and OpenAI-compatible hosts.
 *
 * This runs on every request, so it avoids deep copies: the upstream body is
 * a shallow copy of the canonical request (values shared by reference) with
 * "model" swapped, "models" removed and, for streams, include_usage forced on
 * (tollgate always bills from provider-reported usage; the gateway hides the
 * usage chunk from clients that did not ask for it).
 */
#include "provider.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_bearer(tg_upstream_req_t *out, const char *key)
{
    char auth[1024];
    int n = snprintf(auth, sizeof(auth), "Bearer %s", key);
    int rc = n > 0 && (size_t)n < sizeof(auth) ? tg_upstream_req_add_header(out, "Authorization", auth)
                                               : TG_ETOO_LARGE;
    sodium_memzero(auth, sizeof(auth)); /* the stack copy holds the key */
    return rc;
}

static int oa_build_request(const tg_build_in_t *in, const json_t *canon, tg_upstream_req_t *out,
                            tg_error_t *err)
{
    /* json_copy is shallow: only the top-level object is new, nested values are shared */
    json_t *body = json_copy((json_t *)canon);
    if (body == NULL)
        return tg_error_set(err, TG_ENOMEM, "cannot copy the request");
    int rc = 0;
    json_object_del(body, "models");
    if (json_object_set_new(body, "model", json_string(in->upstream_model)) != 0)
        rc = TG_ENOMEM;
    if (in->stream) {
        json_t *so = json_object_get(canon, "stream_options");
        json_t *nso = json_is_object(so) ? json_copy(so) : json_object();
        if (nso == NULL || json_object_set_new(nso, "include_usage", json_true()) != 0 ||
            json_object_set_new(body, "stream_options", nso) != 0)
            rc = TG_ENOMEM;
        if (json_object_set_new(body, "stream", json_true()) != 0)
            rc = TG_ENOMEM;
    } else {
        /* OpenAI rejects stream_options on a non-stream request */
        json_object_del(body, "stream_options");
        json_object_del(body, "stream");
    }
    if (rc == 0)
        rc = tg_prov_set_body(out, body, err);
    json_decref(body);
    if (rc == 0)
        rc = tg_prov_set_url(out, in->provider->base_url, "/chat/completions", NULL, NULL);
    if (rc == 0)
        rc = tg_upstream_req_add_header(out, "Content-Type", "application/json");
    if (rc == 0 && in->api_key != NULL && in->api_key[0] != '\0')
        rc = add_bearer(out, in->api_key);
    if (rc != 0)
        return tg_error_set(err, rc, "cannot build the upstream request");
    out->method = "POST";
    return 0;
}

/* Reads an OpenAI "usage" object. */
static void read_usage(const json_t *u, tg_usage_t *usage)
{
    if (!json_is_object(u) || usage == NULL)
        return;
    usage->present = true;
    usage->prompt_tokens = tg_prov_int(u, "prompt_tokens");
    usage->completion_tokens = tg_prov_int(u, "completion_tokens");
    usage->cached_tokens = tg_prov_int(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
}

/* A 2xx body that is an error object anyway (some compatible hosts do this). */
static int body_error(const json_t *root, tg_error_t *err)
{
    json_t *e = json_object_get(root, "error");
    if (e == NULL || json_is_null(e))
        return 0;
    char msg[200];
    tg_prov_copy_public(msg, sizeof(msg),
                        json_is_object(e) ? json_string_value(json_object_get(e, "message"))
                                          : json_string_value(e));
    return tg_error_set(err, TG_EUPSTREAM_FAILED, "%s", msg[0] ? msg : "upstream error");
}

static int oa_parse_response(const tg_resp_in_t *in, const char *body, size_t len, json_t **out,
                             tg_usage_t *usage, tg_error_t *err)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream body is not a JSON object");
    }
    int rc = body_error(root, err);
    if (rc != 0) {
        json_decref(root);
        return rc;
    }
    if (!json_is_array(json_object_get(root, "choices"))) {
        json_decref(root);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream body has no choices");
    }
    read_usage(json_object_get(root, "usage"), usage);
    if (in->model != NULL && json_object_set_new(root, "model", json_string(in->model)) != 0) {
        json_decref(root);
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    }
    if (!json_is_string(json_object_get(root, "object")))
        json_object_set_new(root, "object", json_string("chat.completion"));
    *out = root;
    return 0;
}

/* ---- streams ---- */

struct tg_stream {
    tg_chunk_ctx_t ctx;
};

static tg_stream_t *oa_stream_create(const tg_resp_in_t *in)
{
    tg_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (tg_chunk_ctx_init(&s->ctx, in) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

static void oa_stream_destroy(tg_stream_t *s)
{
    if (s == NULL)
        return;
    tg_chunk_ctx_dispose(&s->ctx);
    free(s);
}

static int oa_stream_event(tg_stream_t *s, const tg_sse_event_t *ev, tg_chunk_cb emit, void *ud,
                           tg_usage_t *usage, tg_error_t *err)
{
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0)
        return 1;
    json_error_t jerr;
    json_t *chunk = json_loadb(ev->data, ev->data_len, 0, &jerr);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "stream event is not a JSON object");
    }
    int rc = body_error(chunk, err);
    if (rc != 0) {
        json_decref(chunk);
        return rc;
    }
    json_t *choices = json_object_get(chunk, "choices");
    json_t *u = json_object_get(chunk, "usage");
    if (!json_is_array(choices)) {
        /* a chunk is choices and/or usage; anything else is not OpenAI's stream format */
        if (!json_is_object(u) || json_object_set_new(chunk, "choices", json_array()) != 0) {
            json_decref(chunk);
            return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "stream chunk has no choices");
        }
        choices = json_object_get(chunk, "choices");
    }
    if (!json_is_string(json_object_get(chunk, "object")) ||
        strcmp(json_string_value(json_object_get(chunk, "object")), "chat.completion.chunk") != 0)
        json_object_set_new(chunk, "object", json_string("chat.completion.chunk"));
    if (json_is_object(u))
        read_usage(u, usage);
    if (json_object_set_new(chunk, "model", json_string(s->ctx.model)) != 0) {
        json_decref(chunk);
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    }
    if (json_is_object(u) && json_is_array(choices) && json_array_size(choices) > 0) {
        /* some hosts put usage on the last content chunk: split it so the usage chunk is
         * always the one with empty choices, which the gateway may hide */
        json_t *uchunk = json_copy(chunk);
        json_object_del(chunk, "usage");
        if (uchunk == NULL || json_object_set_new(uchunk, "choices", json_array()) != 0) {
            json_decref(uchunk);
            json_decref(chunk);
            return tg_error_set(err, TG_ENOMEM, "out of memory");
        }
        rc = tg_prov_emit(emit, ud, chunk);
        if (rc == 0)
            rc = tg_prov_emit(emit, ud, uchunk);
        else
            json_decref(uchunk);
        return rc == 0 ? 0 : tg_error_set(err, rc, "stream consumer stopped");
    }
    if (u != NULL && json_is_null(u))
        json_object_del(chunk, "usage"); /* include_usage adds "usage": null to every chunk */
    rc = tg_prov_emit(emit, ud, chunk);
    return rc == 0 ? 0 : tg_error_set(err, rc, "stream consumer stopped");
}

/* ---- errors ---- */

static void oa_classify(int status, const char *retry_after, const char *body, size_t len,
                        tg_classified_t *out)
{
    tg_prov_classified_init(out, status, retry_after);
    json_error_t jerr;
    json_t *root = body != NULL ? json_loadb(body, len, 0, &jerr) : NULL;
    json_t *e = json_object_get(root, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *type = json_string_value(json_object_get(e, "type"));
    json_t *jcode = json_object_get(e, "code");
    const char *param = json_string_value(json_object_get(e, "param"));
    if (json_is_string(e))
        msg = json_string_value(e);
    if (msg != NULL && status != 401 && status != 403) /* auth messages echo part of the key */
        tg_prov_copy_public(out->message, sizeof(out->message), msg);
    if (type != NULL)
        snprintf(out->type, sizeof(out->type), "%s", type);
    if (json_is_string(jcode))
        snprintf(out->code, sizeof(out->code), "%s", json_string_value(jcode));
    else if (json_is_integer(jcode))
        snprintf(out->code, sizeof(out->code), "%lld", (long long)json_integer_value(jcode));
    if (param != NULL)
        snprintf(out->param, sizeof(out->param), "%s", param);

    if (status == 404 && strcmp(out->code, "model_not_found") == 0)
        snprintf(out->reason, sizeof(out->reason), "model_not_found");
    if (status == 400 && (strcmp(out->code, "context_length_exceeded") == 0 ||
                          (msg != NULL && strstr(msg, "maximum context length") != NULL))) {
        out->cls = TG_OUTCOME_CONTEXT_LENGTH;
        snprintf(out->reason, sizeof(out->reason), "context_length");
    }
    if (status == 401 || status == 403)
        snprintf(out->message, sizeof(out->message), "upstream provider rejected the credentials (HTTP %d)",
                 status);
    json_decref(root);
}

static int oa_build_probe(const tg_provider_cfg_t *p, const char *api_key, tg_upstream_req_t *out,
                          tg_error_t *err)
{
    int rc = tg_prov_set_url(out, p->base_url, "/models", NULL, NULL);
    if (rc == 0 && api_key != NULL && api_key[0] != '\0')
        rc = add_bearer(out, api_key);
    if (rc != 0)
        return tg_error_set(err, rc, "cannot build the probe");
    out->method = "GET";
    return 0;
}

const tg_adapter_t tg_adapter_openai = {
    .name = "openai",
    .kind = TG_KIND_OPENAI,
    .build_request = oa_build_request,
    .parse_response = oa_parse_response,
    .stream_create = oa_stream_create,
    .stream_event = oa_stream_event,
    .stream_destroy = oa_stream_destroy,
    .classify = oa_classify,
    .build_probe = oa_build_probe,
};
