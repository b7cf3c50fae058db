/*
 * gemini.c - the Google Gemini adapter (generateContent and
 * streamGenerateContent?alt=sse, key in x-goog-api-key).
 *
 * Gemini's turns are "user" and "model"; system/developer text goes to
 * systemInstruction; tool calls are functionCall parts and tool results
 * functionResponse parts (named by function, not by call id, so the name is
 * looked up from the assistant turn that made the call). Gemini gives no call
 * ids: tollgate makes deterministic ones from the request id. A stream has no
 * terminator event: the chunk carrying finishReason ends it.
 */
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonmem.h"

/* ---- request ---- */

/* Gemini's schema dialect (an OpenAPI subset) rejects these JSON-Schema keywords. */
static bool unsupported_keyword(const char *k)
{
    return strcmp(k, "additionalProperties") == 0 || strcmp(k, "$schema") == 0 || strcmp(k, "strict") == 0;
}

/* Deep copy of a schema without the unsupported keywords; `names` marks a "properties" map, whose
 * keys are property names (a property may well be called "strict"). Depth is bounded by jansson's
 * parser limit. */
static json_t *clean_schema_in(const json_t *schema, bool names)
{
    if (json_is_array(schema)) {
        json_t *a = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(schema, i, v)
        {
            json_array_append_new(a, clean_schema_in(v, false));
        }
        return a;
    }
    if (!json_is_object(schema))
        return json_deep_copy(schema);
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)schema, k, v)
    {
        if (!names && unsupported_keyword(k))
            continue;
        json_object_set_new(o, k, clean_schema_in(v, !names && strcmp(k, "properties") == 0));
    }
    return o;
}

static json_t *clean_schema(const json_t *schema)
{
    return clean_schema_in(schema, false);
}

/* How Gemini writes each piece of a canonical message; the walk itself is common.c's. */

static int set_system(json_t *body, const char *text, size_t len)
{
    json_t *si = json_pack("{s:[{s:s%}]}", "parts", "text", text, len);
    return json_object_set_new(body, "systemInstruction", si) == 0 ? 0 : TG_ENOMEM;
}

static json_t *text_part(const json_t *text)
{
    return json_pack("{s:O}", "text", text);
}

static json_t *image_part(const char *url, const char *path, tg_error_t *err)
{
    const char *mime, *payload;
    size_t mime_len;
    if (tg_prov_data_url(url, &mime, &mime_len, &payload) == 0)
        return json_pack("{s:{s:s%, s:s}}", "inlineData", "mimeType", mime, mime_len, "data", payload);
    if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0 || strncmp(url, "gs://", 5) == 0)
        return json_pack("{s:{s:s, s:s}}", "fileData", "mimeType", tg_prov_mime_from_url(url), "fileUri",
                         url);
    tg_error_set(err, TG_EINVALID_REQUEST, "%s must be an http(s) URL or a base64 data URL", path);
    return NULL;
}

static json_t *function_call_part(const json_t *call, json_t *args)
{
    return json_pack("{s:{s:O, s:o}}", "functionCall", "name",
                     json_object_get(json_object_get(call, "function"), "name"), "args", args);
}

/* The function name of an earlier assistant tool call, by its id. */
static const char *tool_name_for(const json_t *msgs, size_t before, const char *call_id)
{
    for (size_t i = before; i-- > 0;) {
        size_t k;
        json_t *tc;
        json_array_foreach(json_object_get(json_array_get(msgs, i), "tool_calls"), k, tc)
        {
            const char *id = json_string_value(json_object_get(tc, "id"));
            if (id != NULL && call_id != NULL && strcmp(id, call_id) == 0)
                return json_string_value(json_object_get(json_object_get(tc, "function"), "name"));
        }
    }
    return NULL;
}

/* A functionResponse is matched by function name, not call id, and holds JSON, not content: the
 * result's text goes as the object it parses to, or wrapped. */
static int function_response_part(const tg_msg_walker_t *w, const json_t *msgs, size_t mi, json_t **item,
                                  tg_error_t *err)
{
    (void)w;
    (void)err; /* text is all Gemini takes from a result: nothing in it can be refused */
    json_t *m = json_array_get(msgs, mi);
    const char *id = json_string_value(json_object_get(m, "tool_call_id"));
    const char *name = tool_name_for(msgs, mi, id);
    tg_buf_t text;
    tg_buf_init(&text, 4u << 20);
    int rc = tg_prov_content_text(json_object_get(m, "content"), "", &text);
    if (rc != 0) {
        tg_buf_dispose(&text);
        return rc;
    }
    json_error_t jerr;
    json_t *resp = tg_jsonmem_loadb(text.data ? text.data : "", text.len, 0, &jerr); /* budget-safe */
    if (!json_is_object(resp)) {
        /* functionResponse.response must be an object: wrap anything else */
        json_decref(resp);
        resp = json_pack("{s:s%}", "output", text.data ? text.data : "", text.len);
    }
    tg_buf_dispose(&text);
    *item = json_pack("{s:{s:s, s:o}}", "functionResponse", "name", name != NULL ? name : (id ? id : ""),
                      "response", resp);
    return *item != NULL ? 0 : TG_ENOMEM;
}

static const tg_msg_walker_t gm_walker = {
    .turns_key = "contents",
    .items_key = "parts",
    .assistant_role = "model",
    .set_system = set_system,
    .text = text_part,
    .image = image_part,
    .tool_call = function_call_part,
    .tool_result = function_response_part,
};

static int translate_tools(const json_t *canon, json_t *body)
{
    json_t *tools = json_object_get(canon, "tools");
    json_t *choice = json_object_get(canon, "tool_choice");
    if (json_is_array(tools) && json_array_size(tools) > 0) {
        json_t *decls = json_array();
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            json_t *fn = json_object_get(t, "function");
            json_t *d = json_pack("{s:O}", "name", json_object_get(fn, "name"));
            json_t *desc = json_object_get(fn, "description");
            json_t *params = json_object_get(fn, "parameters");
            if (d != NULL && json_is_string(desc))
                json_object_set(d, "description", desc);
            /* an object schema without properties is rejected: omit it (no parameters) */
            if (d != NULL && json_is_object(params) &&
                json_object_size(json_object_get(params, "properties")) > 0)
                json_object_set_new(d, "parameters", clean_schema(params));
            json_array_append_new(decls, d);
        }
        json_object_set_new(body, "tools", json_pack("[{s:o}]", "functionDeclarations", decls));
    }
    json_t *fcc = NULL;
    if (json_is_string(choice)) {
        const char *c = json_string_value(choice);
        fcc = json_pack("{s:s}", "mode",
                        strcmp(c, "required") == 0 ? "ANY"
                        : strcmp(c, "none") == 0   ? "NONE"
                                                   : "AUTO");
    } else if (json_is_object(choice)) {
        fcc = json_pack("{s:s, s:[O]}", "mode", "ANY", "allowedFunctionNames",
                        json_object_get(json_object_get(choice, "function"), "name"));
    }
    if (fcc != NULL)
        json_object_set_new(body, "toolConfig", json_pack("{s:o}", "functionCallingConfig", fcc));
    return 0;
}

static int translate_params(const json_t *canon, json_t *body, tg_upstream_req_t *out)
{
    json_t *gc = json_object();
    if (gc == NULL)
        return TG_ENOMEM;
    json_t *mt = json_object_get(canon, "max_completion_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(canon, "max_tokens");
    if (json_is_integer(mt))
        json_object_set(gc, "maxOutputTokens", mt);
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)canon, key, v)
    {
        if (json_is_null(v) || strcmp(key, "model") == 0 || strcmp(key, "models") == 0 ||
            strcmp(key, "messages") == 0 || strcmp(key, "stream") == 0 ||
            strcmp(key, "stream_options") == 0 || strcmp(key, "max_tokens") == 0 ||
            strcmp(key, "max_completion_tokens") == 0 || strcmp(key, "tools") == 0 ||
            strcmp(key, "tool_choice") == 0)
            continue;
        if (strcmp(key, "temperature") == 0) {
            json_object_set(gc, "temperature", v);
        } else if (strcmp(key, "top_p") == 0) {
            json_object_set(gc, "topP", v);
        } else if (strcmp(key, "stop") == 0) {
            json_object_set_new(gc, "stopSequences",
                                json_is_string(v) ? json_pack("[O]", v) : json_incref(v));
        } else if (strcmp(key, "presence_penalty") == 0) {
            json_object_set(gc, "presencePenalty", v);
        } else if (strcmp(key, "frequency_penalty") == 0) {
            json_object_set(gc, "frequencyPenalty", v);
        } else if (strcmp(key, "seed") == 0) {
            json_object_set(gc, "seed", v);
        } else if (strcmp(key, "response_format") == 0) {
            const char *t = json_string_value(json_object_get(v, "type"));
            if (t != NULL && (strcmp(t, "json_object") == 0 || strcmp(t, "json_schema") == 0)) {
                json_object_set_new(gc, "responseMimeType", json_string("application/json"));
                json_t *schema = json_object_get(json_object_get(v, "json_schema"), "schema");
                if (json_is_object(schema))
                    json_object_set_new(gc, "responseSchema", clean_schema(schema));
            } else if (t == NULL || strcmp(t, "text") != 0) {
                tg_prov_drop(out, key);
            }
        } else if ((strcmp(key, "n") == 0 && json_integer_value(v) == 1) ||
                   (strcmp(key, "logprobs") == 0 && json_is_false(v)) ||
                   (strcmp(key, "parallel_tool_calls") == 0 && json_is_true(v))) {
            continue; /* the default: honoured */
        } else {
            tg_prov_drop(out, key);
        }
    }
    if (json_object_size(gc) > 0)
        return json_object_set_new(body, "generationConfig", gc) == 0 ? 0 : TG_ENOMEM;
    json_decref(gc);
    return 0;
}

static int gm_build_request(const tg_build_in_t *in, const json_t *canon, tg_upstream_req_t *out,
                            tg_error_t *err)
{
    json_t *body = json_object();
    if (body == NULL)
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    tg_error_t local = {0};
    int rc = tg_prov_walk_messages(json_object_get(canon, "messages"), &gm_walker, body, &local);
    if (rc == 0)
        rc = translate_tools(canon, body);
    if (rc == 0)
        rc = translate_params(canon, body, out);
    if (rc == 0)
        rc = tg_prov_set_body(out, body, err);
    json_decref(body);
    if (rc == 0)
        rc = tg_prov_set_url(out, in->provider->base_url, "/v1beta/models/", in->upstream_model,
                             in->stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    if (rc == 0)
        rc = tg_upstream_req_add_header(out, "Content-Type", "application/json");
    if (rc == 0 && in->api_key != NULL && in->api_key[0] != '\0')
        rc = tg_upstream_req_add_header(out, "x-goog-api-key", in->api_key);
    if (rc != 0) {
        if (rc == TG_EINVALID_REQUEST && err != NULL)
            *err = local;
        else
            tg_error_set(err, rc, "cannot build the upstream request");
        return rc;
    }
    out->method = "POST";
    return 0;
}

/* ---- responses ---- */

/* A functionCall's args as OpenAI's arguments string ("{}" when absent); malloc'd, may be NULL. */
static char *args_json(const json_t *fc)
{
    json_t *args = json_object_get(fc, "args");
    return args != NULL ? json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
}

static const char *finish_reason(const char *fr)
{
    if (fr == NULL)
        return NULL;
    if (strcmp(fr, "STOP") == 0)
        return "stop";
    if (strcmp(fr, "MAX_TOKENS") == 0)
        return "length";
    if (strcmp(fr, "SAFETY") == 0 || strcmp(fr, "RECITATION") == 0 || strcmp(fr, "BLOCKLIST") == 0 ||
        strcmp(fr, "PROHIBITED_CONTENT") == 0 || strcmp(fr, "SPII") == 0 || strcmp(fr, "IMAGE_SAFETY") == 0)
        return "content_filter";
    if (strcmp(fr, "MALFORMED_FUNCTION_CALL") == 0)
        return "stop";
    return "stop";
}

static void read_usage(const json_t *um, tg_usage_t *u)
{
    if (!json_is_object(um) || u == NULL)
        return;
    u->present = true;
    u->prompt_tokens = tg_prov_int(um, "promptTokenCount") + tg_prov_int(um, "toolUsePromptTokenCount");
    /* thinking tokens are billed as output */
    u->completion_tokens = tg_prov_int(um, "candidatesTokenCount") + tg_prov_int(um, "thoughtsTokenCount");
    u->cached_tokens = tg_prov_int(um, "cachedContentTokenCount");
}

static int error_in_body(const json_t *root, tg_error_t *err)
{
    json_t *e = json_object_get(root, "error");
    char msg[200];
    tg_prov_copy_public(msg, sizeof(msg), json_string_value(json_object_get(e, "message")));
    return tg_error_set(err, TG_EUPSTREAM_FAILED, "%s", msg[0] ? msg : "upstream error");
}

/* Gemini wraps some bodies in a one-element array (streamed errors). */
static json_t *unwrap(json_t *root)
{
    if (json_is_array(root) && json_array_size(root) == 1 && json_is_object(json_array_get(root, 0))) {
        json_t *o = json_incref(json_array_get(root, 0));
        json_decref(root);
        return o;
    }
    return root;
}

static int gm_parse_response(const tg_resp_in_t *in, const char *body, size_t len, json_t **out,
                             tg_usage_t *usage, tg_error_t *err)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = unwrap(json_loadb(body, len, 0, &jerr));
    int rc = 0;
    tg_buf_t text;
    tg_buf_init(&text, len + 1);
    json_t *calls = json_array();
    if (!json_is_object(root) || calls == NULL) {
        rc = tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream body is not a JSON object");
        goto out;
    }
    if (json_object_get(root, "error") != NULL) {
        rc = error_in_body(root, err);
        goto out;
    }
    json_t *cands = json_object_get(root, "candidates");
    json_t *cand = json_array_get(cands, 0);
    const char *fr = NULL;
    if (cand == NULL) {
        /* no candidate: the prompt itself was blocked (promptFeedback.blockReason) */
        if (json_object_get(root, "promptFeedback") == NULL) {
            rc = tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream body has no candidates");
            goto out;
        }
        fr = "content_filter";
    } else {
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(json_object_get(cand, "content"), "parts"), i, p)
        {
            json_t *t = json_object_get(p, "text");
            json_t *fc = json_object_get(p, "functionCall");
            if (json_is_true(json_object_get(p, "thought")))
                continue; /* thought summaries are not part of the answer */
            if (json_is_string(t)) {
                if (tg_buf_append(&text, json_string_value(t), json_string_length(t)) != 0) {
                    rc = tg_error_set(err, TG_ENOMEM, "out of memory");
                    goto out;
                }
            } else if (json_is_object(fc)) {
                char *args = args_json(fc);
                char id[192];
                json_t *fid = json_object_get(fc, "id");
                if (json_is_string(fid))
                    snprintf(id, sizeof(id), "%s", json_string_value(fid));
                else
                    snprintf(id, sizeof(id), "call_%s_%zu", in->request_id ? in->request_id : "0",
                             json_array_size(calls));
                json_t *call =
                    json_pack("{s:s, s:s, s:{s:O?, s:s}}", "id", id, "type", "function", "function", "name",
                              json_object_get(fc, "name"), "arguments", args ? args : "{}");
                free(args);
                if (call == NULL || json_array_append_new(calls, call) != 0) {
                    rc = tg_error_set(err, TG_ENOMEM, "out of memory");
                    goto out;
                }
            }
        }
        fr = json_array_size(calls) > 0
                 ? "tool_calls"
                 : finish_reason(json_string_value(json_object_get(cand, "finishReason")));
    }
    tg_usage_t u = {0};
    read_usage(json_object_get(root, "usageMetadata"), &u);
    if (usage != NULL && u.present)
        *usage = u;
    *out = tg_prov_completion_new(in, &text, calls, fr, &u);
    if (*out == NULL)
        rc = tg_error_set(err, TG_ENOMEM, "out of memory");
out:
    json_decref(calls);
    json_decref(root);
    tg_buf_dispose(&text);
    return rc;
}

/* ---- streams ---- */

struct tg_stream {
    tg_chunk_ctx_t ctx;
    char request_id[128];
    bool started;
    int n_tools;
    tg_usage_t usage;
};

static tg_stream_t *gm_stream_create(const tg_resp_in_t *in)
{
    tg_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (tg_chunk_ctx_init(&s->ctx, in) != 0) {
        free(s);
        return NULL;
    }
    snprintf(s->request_id, sizeof(s->request_id), "%s", in->request_id ? in->request_id : "0");
    return s;
}

static void gm_stream_destroy(tg_stream_t *s)
{
    if (s == NULL)
        return;
    tg_chunk_ctx_dispose(&s->ctx);
    free(s);
}

static int gm_stream_event(tg_stream_t *s, const tg_sse_event_t *ev, tg_chunk_cb emit, void *ud,
                           tg_usage_t *usage, tg_error_t *err)
{
    json_error_t jerr;
    json_t *root = unwrap(json_loadb(ev->data, ev->data_len, 0, &jerr));
    int rc = 0;
    if (!json_is_object(root)) {
        json_decref(root);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "stream event is not a JSON object");
    }
    if (json_object_get(root, "error") != NULL) {
        rc = error_in_body(root, err);
        json_decref(root);
        return rc;
    }
    if (!s->started) {
        s->started = true;
        rc = tg_prov_emit(
            emit, ud,
            tg_prov_chunk_new(&s->ctx, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL));
    }
    json_t *cand = json_array_get(json_object_get(root, "candidates"), 0);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(cand, "content"), "parts"), i, p)
    {
        if (rc != 0)
            break;
        json_t *t = json_object_get(p, "text");
        json_t *fc = json_object_get(p, "functionCall");
        if (json_is_true(json_object_get(p, "thought")))
            continue;
        if (json_is_string(t) && json_string_length(t) > 0) {
            rc = tg_prov_emit(emit, ud, tg_prov_chunk_new(&s->ctx, json_pack("{s:O}", "content", t), NULL));
        } else if (json_is_object(fc)) {
            /* Gemini sends a call whole: one delta with id, name and all arguments */
            char *args = args_json(fc);
            char id[192];
            json_t *fid = json_object_get(fc, "id");
            if (json_is_string(fid))
                snprintf(id, sizeof(id), "%s", json_string_value(fid));
            else
                snprintf(id, sizeof(id), "call_%s_%d", s->request_id, s->n_tools);
            json_t *delta = json_pack("{s:[{s:i, s:s, s:s, s:{s:O?, s:s}}]}", "tool_calls", "index",
                                      s->n_tools, "id", id, "type", "function", "function", "name",
                                      json_object_get(fc, "name"), "arguments", args ? args : "{}");
            free(args);
            s->n_tools++;
            rc = tg_prov_emit(emit, ud, tg_prov_chunk_new(&s->ctx, delta, NULL));
        }
    }
    json_t *um = json_object_get(root, "usageMetadata");
    if (json_is_object(um)) {
        read_usage(um, &s->usage);
        if (usage != NULL)
            *usage = s->usage;
    }
    const char *gfr = json_string_value(json_object_get(cand, "finishReason"));
    if (rc == 0 && cand == NULL &&
        json_object_get(json_object_get(root, "promptFeedback"), "blockReason") != NULL)
        gfr = "SAFETY"; /* the prompt was blocked: no candidate will come */
    if (rc == 0 && gfr != NULL) {
        const char *fr = s->n_tools > 0 ? "tool_calls" : finish_reason(gfr);
        rc = tg_prov_emit(emit, ud, tg_prov_chunk_new(&s->ctx, json_object(), fr));
        if (rc == 0)
            rc = tg_prov_emit_usage(&s->ctx, &s->usage, emit, ud);
        if (rc == 0)
            rc = 1;
    }
    json_decref(root);
    if (rc < 0)
        tg_error_set(err, rc, "cannot translate the stream event");
    return rc;
}

/* ---- errors ---- */

/* google.rpc.RetryInfo.retryDelay ("37s", "1.5s") from error.details, in ms; -1 if none. */
static int64_t retry_info_ms(const json_t *e)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(e, "details"), i, d)
    {
        const char *t = json_string_value(json_object_get(d, "@type"));
        const char *delay = json_string_value(json_object_get(d, "retryDelay"));
        if (t != NULL && strstr(t, "RetryInfo") != NULL && delay != NULL) {
            char *end;
            double secs = strtod(delay, &end);
            if (end != delay && *end == 's' && secs >= 0)
                return (int64_t)(secs * 1000.0 + 0.5);
        }
    }
    return -1;
}

static bool has_error_reason(const json_t *e, const char *reason)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(e, "details"), i, d)
    {
        const char *r = json_string_value(json_object_get(d, "reason"));
        if (r != NULL && strcmp(r, reason) == 0)
            return true;
    }
    return false;
}

static void gm_classify(int status, const char *retry_after, const char *body, size_t len,
                        tg_classified_t *out)
{
    tg_prov_classified_init(out, status, retry_after);
    json_error_t jerr;
    json_t *root = body != NULL ? unwrap(json_loadb(body, len, 0, &jerr)) : NULL;
    json_t *e = json_object_get(root, "error");
    const char *st = json_string_value(json_object_get(e, "status"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (msg != NULL)
        tg_prov_copy_public(out->message, sizeof(out->message), msg);
    if (st != NULL)
        snprintf(out->code, sizeof(out->code), "%s", st);
    if (out->retry_after_ms < 0)
        out->retry_after_ms = retry_info_ms(e);
    if (st == NULL) {
        /* no status word: the HTTP status decided it */
    } else if (strcmp(st, "RESOURCE_EXHAUSTED") == 0) {
        out->cls = TG_OUTCOME_RATE_LIMITED;
        snprintf(out->reason, sizeof(out->reason), "rate_limited");
        snprintf(out->type, sizeof(out->type), "rate_limit_error");
    } else if (strcmp(st, "UNAVAILABLE") == 0 || strcmp(st, "INTERNAL") == 0 || strcmp(st, "UNKNOWN") == 0 ||
               strcmp(st, "DEADLINE_EXCEEDED") == 0) {
        out->cls = TG_OUTCOME_SERVER;
        snprintf(out->type, sizeof(out->type), "server_error");
        if (strcmp(st, "DEADLINE_EXCEEDED") == 0)
            snprintf(out->reason, sizeof(out->reason), "deadline_exceeded");
    } else if (strcmp(st, "UNAUTHENTICATED") == 0 || strcmp(st, "PERMISSION_DENIED") == 0 ||
               has_error_reason(e, "API_KEY_INVALID")) {
        /* Gemini answers a bad key with 400 INVALID_ARGUMENT + reason API_KEY_INVALID */
        out->cls = TG_OUTCOME_MISCONFIGURED;
        snprintf(out->reason, sizeof(out->reason),
                 strcmp(st, "PERMISSION_DENIED") == 0 ? "forbidden" : "unauthorized");
        snprintf(out->type, sizeof(out->type), "authentication_error");
        tg_prov_credentials_rejected(out);
    } else if (strcmp(st, "NOT_FOUND") == 0) {
        out->cls = TG_OUTCOME_MISCONFIGURED;
        snprintf(out->reason, sizeof(out->reason), "not_found");
    } else if (strcmp(st, "FAILED_PRECONDITION") == 0) {
        /* e.g. the API is not available for this project or region: the target cannot work */
        out->cls = TG_OUTCOME_MISCONFIGURED;
        snprintf(out->reason, sizeof(out->reason), "failed_precondition");
    } else if (strcmp(st, "INVALID_ARGUMENT") == 0 && msg != NULL &&
               ((strstr(msg, "input token count") != NULL && strstr(msg, "exceeds the maximum") != NULL) ||
                strstr(msg, "exceeds the maximum number of tokens") != NULL)) {
        out->cls = TG_OUTCOME_CONTEXT_LENGTH;
        snprintf(out->reason, sizeof(out->reason), "context_length");
        snprintf(out->code, sizeof(out->code), "context_length_exceeded");
    } else if (strcmp(st, "INVALID_ARGUMENT") == 0) {
        out->cls = TG_OUTCOME_CALLER;
        snprintf(out->type, sizeof(out->type), "invalid_request_error");
    }
    if (status == 401 || status == 403)
        tg_prov_credentials_rejected(out);
    json_decref(root);
}

static int gm_build_probe(const tg_provider_cfg_t *p, const char *api_key, tg_upstream_req_t *out,
                          tg_error_t *err)
{
    int rc = tg_prov_set_url(out, p->base_url, "/v1beta/models", NULL, NULL);
    if (rc == 0 && api_key != NULL && api_key[0] != '\0')
        rc = tg_upstream_req_add_header(out, "x-goog-api-key", api_key);
    if (rc != 0)
        return tg_error_set(err, rc, "cannot build the probe");
    out->method = "GET";
    return 0;
}

const tg_adapter_t tg_adapter_gemini = {
    .name = "gemini",
    .kind = TG_KIND_GEMINI,
    .build_request = gm_build_request,
    .parse_response = gm_parse_response,
    .stream_create = gm_stream_create,
    .stream_event = gm_stream_event,
    .stream_destroy = gm_stream_destroy,
    .classify = gm_classify,
    .build_probe = gm_build_probe,
};
