/*
 * anthropic.c - the Anthropic Messages API adapter (POST /v1/messages).
 *
 * Translation both ways between OpenAI chat completions and Messages:
 * system/developer turns become the top-level "system"; tool results become
 * user tool_result blocks and assistant tool_calls become tool_use blocks;
 * consecutive turns of one role are merged because Messages wants them to
 * alternate. Streams are rebuilt from message_start / content_block_* /
 * message_delta / message_stop into OpenAI chunks, with usage from
 * message_start (input) and message_delta (output, cumulative).
 */
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANTHROPIC_DEFAULT_MAX_TOKENS 4096
#define ANTHROPIC_DEFAULT_VERSION    "2023-06-01"
#define ANTHROPIC_MAX_BLOCKS         256 /* content blocks tracked per stream (tool-call index map) */

/* ---- request ---- */

/* How Messages writes each piece of a canonical message; the walk itself is common.c's. */

static int set_system(json_t *body, const char *text, size_t len)
{
    return json_object_set_new(body, "system", json_stringn(text, len)) == 0 ? 0 : TG_ENOMEM;
}

static json_t *text_block(const json_t *text)
{
    return json_pack("{s:s, s:O}", "type", "text", "text", text);
}

static json_t *image_block(const char *url, const char *path, tg_error_t *err)
{
    const char *mime, *payload;
    size_t mime_len;
    if (tg_prov_data_url(url, &mime, &mime_len, &payload) == 0)
        return json_pack("{s:s, s:{s:s, s:s%, s:s}}", "type", "image", "source", "type", "base64",
                         "media_type", mime, mime_len, "data", payload);
    if (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0)
        return json_pack("{s:s, s:{s:s, s:s}}", "type", "image", "source", "type", "url", "url", url);
    tg_error_set(err, TG_EINVALID_REQUEST, "%s must be an http(s) URL or a base64 data URL", path);
    return NULL;
}

static json_t *tool_use_block(const json_t *call, json_t *input)
{
    return json_pack("{s:s, s:O, s:O, s:o}", "type", "tool_use", "id", json_object_get(call, "id"), "name",
                     json_object_get(json_object_get(call, "function"), "name"), "input", input);
}

/* A tool_result block holds the tool's content as blocks of its own, so images in a result go along. */
static int tool_result_block(const tg_msg_walker_t *w, const json_t *msgs, size_t mi, json_t **item,
                             tg_error_t *err)
{
    json_t *m = json_array_get(msgs, mi);
    json_t *inner = json_array();
    json_t *tr = json_pack("{s:s, s:O, s:o}", "type", "tool_result", "tool_use_id",
                           json_object_get(m, "tool_call_id"), "content", inner);
    if (tr == NULL)
        return TG_ENOMEM;
    int rc = tg_prov_walk_content(w, json_object_get(m, "content"), mi, inner, err);
    if (rc != 0) {
        json_decref(tr); /* not handed to the turn: ours to free, with the blocks made so far */
        return rc;
    }
    *item = tr;
    return 0;
}

static const tg_msg_walker_t an_walker = {
    .turns_key = "messages",
    .items_key = "content",
    .assistant_role = "assistant",
    .set_system = set_system,
    .text = text_block,
    .image = image_block,
    .tool_call = tool_use_block,
    .tool_result = tool_result_block,
};

static int translate_tools(const json_t *canon, json_t *body, tg_upstream_req_t *out)
{
    json_t *tools = json_object_get(canon, "tools");
    json_t *choice = json_object_get(canon, "tool_choice");
    json_t *ptc = json_object_get(canon, "parallel_tool_calls");
    if (json_is_array(tools) && json_array_size(tools) > 0) {
        json_t *at = json_array();
        if (at == NULL)
            return TG_ENOMEM;
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            json_t *fn = json_object_get(t, "function");
            json_t *params = json_object_get(fn, "parameters");
            json_t *tool =
                json_pack("{s:O, s:o}", "name", json_object_get(fn, "name"), "input_schema",
                          json_is_object(params) ? json_incref(params)
                                                 : json_pack("{s:s, s:{}}", "type", "object", "properties"));
            json_t *desc = json_object_get(fn, "description");
            if (tool != NULL && json_is_string(desc))
                json_object_set(tool, "description", desc);
            if (tool == NULL || json_array_append_new(at, tool) != 0) {
                json_decref(at);
                return TG_ENOMEM;
            }
        }
        json_object_set_new(body, "tools", at);
    }
    json_t *tc = NULL;
    if (json_is_string(choice)) {
        const char *c = json_string_value(choice);
        tc = json_pack("{s:s}", "type",
                       strcmp(c, "required") == 0 ? "any"
                       : strcmp(c, "none") == 0   ? "none"
                                                  : "auto");
    } else if (json_is_object(choice)) {
        tc = json_pack("{s:s, s:O}", "type", "tool", "name",
                       json_object_get(json_object_get(choice, "function"), "name"));
    }
    if (json_is_false(ptc)) {
        if (json_object_get(body, "tools") == NULL) {
            /* nothing to parallelise without tools: honoured trivially */
        } else {
            if (tc == NULL)
                tc = json_pack("{s:s}", "type", "auto");
            if (tc != NULL && strcmp(json_string_value(json_object_get(tc, "type")), "none") != 0)
                json_object_set_new(tc, "disable_parallel_tool_use", json_true());
        }
    }
    (void)out;
    if (tc != NULL && json_object_set_new(body, "tool_choice", tc) != 0)
        return TG_ENOMEM;
    return 0;
}

static int an_add_auth(tg_upstream_req_t *out, const tg_provider_cfg_t *p, const char *api_key)
{
    int rc = 0;
    if (api_key != NULL && api_key[0] != '\0')
        rc = tg_upstream_req_add_header(out, "x-api-key", api_key);
    if (rc == 0)
        rc = tg_upstream_req_add_header(out, "anthropic-version",
                                        p->anthropic_version != NULL ? p->anthropic_version
                                                                     : ANTHROPIC_DEFAULT_VERSION);
    return rc;
}

static int an_build_request(const tg_build_in_t *in, const json_t *canon, tg_upstream_req_t *out,
                            tg_error_t *err)
{
    json_t *body = json_object();
    if (body == NULL)
        return tg_error_set(err, TG_ENOMEM, "out of memory");
    tg_error_t local = {0};
    int rc = json_object_set_new(body, "model", json_string(in->upstream_model)) == 0 ? 0 : TG_ENOMEM;
    if (rc == 0)
        rc = tg_prov_walk_messages(json_object_get(canon, "messages"), &an_walker, body, &local);
    if (rc == 0)
        rc = translate_tools(canon, body, out);

    json_t *mt = json_object_get(canon, "max_completion_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(canon, "max_tokens");
    json_object_set_new(
        body, "max_tokens",
        json_integer(json_is_integer(mt) ? json_integer_value(mt) : ANTHROPIC_DEFAULT_MAX_TOKENS));
    if (in->stream)
        json_object_set_new(body, "stream", json_true());

    /* every other canonical parameter: translated, honoured as a no-op, or dropped and named */
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)canon, key, v)
    {
        if (rc != 0)
            break;
        if (json_is_null(v) || strcmp(key, "model") == 0 || strcmp(key, "models") == 0 ||
            strcmp(key, "messages") == 0 || strcmp(key, "stream") == 0 ||
            strcmp(key, "stream_options") == 0 || strcmp(key, "max_tokens") == 0 ||
            strcmp(key, "max_completion_tokens") == 0 || strcmp(key, "tools") == 0 ||
            strcmp(key, "tool_choice") == 0 || strcmp(key, "parallel_tool_calls") == 0)
            continue;
        if (strcmp(key, "temperature") == 0) {
            /* Messages takes 0..1; OpenAI's 1..2 has no equivalent */
            if (json_number_value(v) <= 1.0)
                json_object_set(body, "temperature", v);
            else
                tg_prov_drop(out, key);
        } else if (strcmp(key, "top_p") == 0) {
            json_object_set(body, "top_p", v);
        } else if (strcmp(key, "stop") == 0) {
            json_object_set_new(body, "stop_sequences",
                                json_is_string(v) ? json_pack("[O]", v) : json_incref(v));
        } else if (strcmp(key, "user") == 0) {
            json_object_set_new(body, "metadata", json_pack("{s:O}", "user_id", v));
        } else if ((strcmp(key, "n") == 0 && json_integer_value(v) == 1) ||
                   (strcmp(key, "logprobs") == 0 && json_is_false(v)) ||
                   (strcmp(key, "response_format") == 0 &&
                    strcmp(json_string_value(json_object_get(v, "type")) ?: "", "text") == 0)) {
            continue; /* the default: honoured */
        } else {
            tg_prov_drop(out, key);
        }
    }
    if (rc == 0)
        rc = tg_prov_set_body(out, body, err);
    json_decref(body);
    if (rc == 0)
        rc = tg_prov_set_url(out, in->provider->base_url, "/v1/messages", NULL, NULL);
    if (rc == 0)
        rc = tg_upstream_req_add_header(out, "Content-Type", "application/json");
    if (rc == 0)
        rc = an_add_auth(out, in->provider, in->api_key);
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

static const char *finish_reason(const char *stop)
{
    if (stop == NULL)
        return NULL;
    if (strcmp(stop, "end_turn") == 0 || strcmp(stop, "stop_sequence") == 0 ||
        strcmp(stop, "pause_turn") == 0)
        return "stop";
    if (strcmp(stop, "max_tokens") == 0 || strcmp(stop, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop, "refusal") == 0)
        return "content_filter";
    return "stop";
}

/* Usage fields of a Messages "usage" object; absent fields keep their previous value. */
static void read_usage(const json_t *u, int64_t *in, int64_t *cache_read, int64_t *cache_write, int64_t *out)
{
    if (json_object_get(u, "input_tokens") != NULL)
        *in = tg_prov_int(u, "input_tokens");
    if (json_object_get(u, "cache_read_input_tokens") != NULL)
        *cache_read = tg_prov_int(u, "cache_read_input_tokens");
    if (json_object_get(u, "cache_creation_input_tokens") != NULL)
        *cache_write = tg_prov_int(u, "cache_creation_input_tokens");
    if (json_object_get(u, "output_tokens") != NULL)
        *out = tg_prov_int(u, "output_tokens");
}

static void set_usage(tg_usage_t *usage, int64_t in, int64_t cache_read, int64_t cache_write, int64_t out)
{
    usage->present = true;
    /* Anthropic's input_tokens excludes cached tokens; OpenAI's prompt_tokens includes them */
    usage->prompt_tokens = in + cache_read + cache_write;
    usage->cached_tokens = cache_read;
    usage->completion_tokens = out;
}

static int error_in_body(const json_t *root, tg_error_t *err)
{
    char msg[200];
    json_t *e = json_object_get(root, "error");
    tg_prov_copy_public(msg, sizeof(msg), json_string_value(json_object_get(e, "message")));
    return tg_error_set(err, TG_EUPSTREAM_FAILED, "%s", msg[0] ? msg : "upstream error");
}

static int an_parse_response(const tg_resp_in_t *in, const char *body, size_t len, json_t **out,
                             tg_usage_t *usage, tg_error_t *err)
{
    *out = NULL;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    int rc = 0;
    tg_buf_t text;
    tg_buf_init(&text, len + 1);
    json_t *calls = json_array();
    json_t *content = json_object_get(root, "content");
    const char *type = json_string_value(json_object_get(root, "type"));
    if (!json_is_object(root) || calls == NULL) {
        rc = tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream body is not a JSON object");
        goto out;
    }
    if (type != NULL && strcmp(type, "error") == 0) {
        rc = error_in_body(root, err);
        goto out;
    }
    if (!json_is_array(content)) {
        rc = tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "upstream message has no content");
        goto out;
    }
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *bt = json_string_value(json_object_get(b, "type"));
        if (bt == NULL)
            continue;
        if (strcmp(bt, "text") == 0) {
            json_t *t = json_object_get(b, "text");
            if (json_is_string(t) && tg_buf_append(&text, json_string_value(t), json_string_length(t)) != 0) {
                rc = tg_error_set(err, TG_ENOMEM, "out of memory");
                goto out;
            }
        } else if (strcmp(bt, "tool_use") == 0) {
            char *args = json_dumps(json_object_get(b, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
            json_t *call = json_pack("{s:O?, s:s, s:{s:O?, s:s}}", "id", json_object_get(b, "id"), "type",
                                     "function", "function", "name", json_object_get(b, "name"), "arguments",
                                     args != NULL ? args : "{}");
            free(args);
            if (call == NULL || json_array_append_new(calls, call) != 0) {
                rc = tg_error_set(err, TG_ENOMEM, "out of memory");
                goto out;
            }
        }
    }
    int64_t uin = 0, ucr = 0, ucw = 0, uout = 0;
    json_t *u = json_object_get(root, "usage");
    if (json_is_object(u) && usage != NULL) {
        read_usage(u, &uin, &ucr, &ucw, &uout);
        set_usage(usage, uin, ucr, ucw, uout);
    }
    tg_usage_t tmp = {0};
    set_usage(&tmp, uin, ucr, ucw, uout);
    const char *fr = finish_reason(json_string_value(json_object_get(root, "stop_reason")));
    *out = tg_prov_completion_new(in, &text, calls, fr, &tmp);
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
    bool started;
    bool finished;
    int n_tools;
    int16_t tool_index[ANTHROPIC_MAX_BLOCKS]; /* content block index -> OpenAI tool_calls index, -1 if not a
                                                 tool */
    int64_t in, cache_read, cache_write, out;
};

static tg_stream_t *an_stream_create(const tg_resp_in_t *in)
{
    tg_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (tg_chunk_ctx_init(&s->ctx, in) != 0) {
        free(s);
        return NULL;
    }
    for (int i = 0; i < ANTHROPIC_MAX_BLOCKS; i++)
        s->tool_index[i] = -1;
    return s;
}

static void an_stream_destroy(tg_stream_t *s)
{
    if (s == NULL)
        return;
    tg_chunk_ctx_dispose(&s->ctx);
    free(s);
}

static int emit_delta(tg_stream_t *s, json_t *delta, const char *finish, tg_chunk_cb emit, void *ud)
{
    return tg_prov_emit(emit, ud, tg_prov_chunk_new(&s->ctx, delta, finish));
}

static int block_index(const json_t *ev, int *out)
{
    json_t *ji = json_object_get(ev, "index");
    if (!json_is_integer(ji) || json_integer_value(ji) < 0 || json_integer_value(ji) >= ANTHROPIC_MAX_BLOCKS)
        return -1;
    *out = (int)json_integer_value(ji);
    return 0;
}

static int an_stream_event(tg_stream_t *s, const tg_sse_event_t *ev, tg_chunk_cb emit, void *ud,
                           tg_usage_t *usage, tg_error_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(ev->data, ev->data_len, 0, &jerr);
    const char *type = json_string_value(json_object_get(root, "type"));
    int rc = 0, idx;
    if (!json_is_object(root) || type == NULL) {
        json_decref(root);
        return tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "stream event is not a JSON object with a type");
    }
    if (strcmp(type, "message_start") == 0) {
        json_t *u = json_object_get(json_object_get(root, "message"), "usage");
        read_usage(u, &s->in, &s->cache_read, &s->cache_write, &s->out);
        if (usage != NULL)
            set_usage(usage, s->in, s->cache_read, s->cache_write, s->out);
        if (!s->started) {
            s->started = true;
            rc = emit_delta(s, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL, emit, ud);
        }
    } else if (strcmp(type, "content_block_start") == 0) {
        json_t *cb = json_object_get(root, "content_block");
        const char *bt = json_string_value(json_object_get(cb, "type"));
        if (block_index(root, &idx) != 0) {
            rc = tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "content block index out of range");
        } else if (bt != NULL && strcmp(bt, "tool_use") == 0 && s->n_tools >= ANTHROPIC_MAX_BLOCKS) {
            rc = tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "too many tool calls in one stream");
        } else if (bt != NULL && strcmp(bt, "tool_use") == 0) {
            s->tool_index[idx] = (int16_t)s->n_tools++;
            rc = emit_delta(s,
                            json_pack("{s:[{s:i, s:O?, s:s, s:{s:O?, s:s}}]}", "tool_calls", "index",
                                      s->tool_index[idx], "id", json_object_get(cb, "id"), "type", "function",
                                      "function", "name", json_object_get(cb, "name"), "arguments", ""),
                            NULL, emit, ud);
        } else if (bt != NULL && strcmp(bt, "text") == 0 &&
                   json_string_length(json_object_get(cb, "text")) > 0) {
            rc = emit_delta(s, json_pack("{s:O}", "content", json_object_get(cb, "text")), NULL, emit, ud);
        }
    } else if (strcmp(type, "content_block_delta") == 0) {
        json_t *d = json_object_get(root, "delta");
        const char *dt = json_string_value(json_object_get(d, "type"));
        if (block_index(root, &idx) != 0) {
            rc = tg_error_set(err, TG_EUPSTREAM_PROTOCOL, "content block index out of range");
        } else if (dt != NULL && strcmp(dt, "text_delta") == 0 &&
                   json_is_string(json_object_get(d, "text"))) {
            rc = emit_delta(s, json_pack("{s:O}", "content", json_object_get(d, "text")), NULL, emit, ud);
        } else if (dt != NULL && strcmp(dt, "input_json_delta") == 0 && s->tool_index[idx] >= 0 &&
                   json_is_string(json_object_get(d, "partial_json"))) {
            rc = emit_delta(s,
                            json_pack("{s:[{s:i, s:{s:O}}]}", "tool_calls", "index", s->tool_index[idx],
                                      "function", "arguments", json_object_get(d, "partial_json")),
                            NULL, emit, ud);
        }
        /* thinking_delta, signature_delta, citations_delta: no OpenAI equivalent, not relayed */
    } else if (strcmp(type, "message_delta") == 0) {
        read_usage(json_object_get(root, "usage"), &s->in, &s->cache_read, &s->cache_write, &s->out);
        if (usage != NULL)
            set_usage(usage, s->in, s->cache_read, s->cache_write, s->out);
        const char *fr =
            finish_reason(json_string_value(json_object_get(json_object_get(root, "delta"), "stop_reason")));
        if (fr != NULL && !s->finished) {
            s->finished = true;
            rc = emit_delta(s, json_object(), fr, emit, ud);
        }
    } else if (strcmp(type, "message_stop") == 0) {
        tg_usage_t u = {0};
        set_usage(&u, s->in, s->cache_read, s->cache_write, s->out);
        if (!s->finished) {
            s->finished = true;
            rc = emit_delta(s, json_object(), "stop", emit, ud);
        }
        if (rc == 0)
            rc = tg_prov_emit_usage(&s->ctx, &u, emit, ud);
        if (rc == 0)
            rc = 1;
    } else if (strcmp(type, "error") == 0) {
        rc = error_in_body(root, err);
    }
    /* ping, content_block_stop and unknown future events carry nothing to relay */
    json_decref(root);
    if (rc < 0 && rc != TG_EUPSTREAM_FAILED && rc != TG_EUPSTREAM_PROTOCOL)
        tg_error_set(err, rc, "cannot translate the stream event");
    return rc;
}

/* ---- errors ---- */

static void an_classify(int status, const char *retry_after, const char *body, size_t len,
                        tg_classified_t *out)
{
    tg_prov_classified_init(out, status, retry_after);
    json_error_t jerr;
    json_t *root = body != NULL ? json_loadb(body, len, 0, &jerr) : NULL;
    json_t *e = json_object_get(root, "error");
    const char *type = json_string_value(json_object_get(e, "type"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (msg != NULL)
        tg_prov_copy_public(out->message, sizeof(out->message), msg);
    if (type != NULL)
        snprintf(out->code, sizeof(out->code), "%s", type);

    if (status == 529 || (type != NULL && strcmp(type, "overloaded_error") == 0)) {
        out->cls = TG_OUTCOME_SERVER;
        snprintf(out->reason, sizeof(out->reason), "overloaded");
        snprintf(out->type, sizeof(out->type), "server_error");
    } else if (type != NULL && strcmp(type, "rate_limit_error") == 0) {
        out->cls = TG_OUTCOME_RATE_LIMITED;
        snprintf(out->reason, sizeof(out->reason), "rate_limited");
        snprintf(out->type, sizeof(out->type), "rate_limit_error");
    } else if (status == 400 && msg != NULL &&
               (strstr(msg, "prompt is too long") != NULL || strstr(msg, "exceed context limit") != NULL)) {
        out->cls = TG_OUTCOME_CONTEXT_LENGTH;
        snprintf(out->reason, sizeof(out->reason), "context_length");
        snprintf(out->code, sizeof(out->code), "context_length_exceeded");
    } else if (type != NULL && strcmp(type, "invalid_request_error") == 0) {
        snprintf(out->type, sizeof(out->type), "invalid_request_error");
    } else if (type != NULL && strcmp(type, "api_error") == 0) {
        snprintf(out->type, sizeof(out->type), "server_error");
    }
    if (status == 401 || status == 403)
        tg_prov_credentials_rejected(out);
    json_decref(root);
}

static int an_build_probe(const tg_provider_cfg_t *p, const char *api_key, tg_upstream_req_t *out,
                          tg_error_t *err)
{
    int rc = tg_prov_set_url(out, p->base_url, "/v1/models", NULL, NULL);
    if (rc == 0)
        rc = an_add_auth(out, p, api_key);
    if (rc != 0)
        return tg_error_set(err, rc, "cannot build the probe");
    out->method = "GET";
    return 0;
}

const tg_adapter_t tg_adapter_anthropic = {
    .name = "anthropic",
    .kind = TG_KIND_ANTHROPIC,
    .build_request = an_build_request,
    .parse_response = an_parse_response,
    .stream_create = an_stream_create,
    .stream_event = an_stream_event,
    .stream_destroy = an_stream_destroy,
    .classify = an_classify,
    .build_probe = an_build_probe,
};
