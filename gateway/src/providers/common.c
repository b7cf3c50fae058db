/*
 * common.c - adapter-independent parts of provider.h: the upstream request
 * container, Retry-After, canonical request validation, small helpers the
 * three adapters share (chunk shaping, usage, error normalisation), and the
 * walk over canonical messages that both translating adapters build on, and the
 * memory budget around a translation (tg_prov_build_bounded).
 */
#define _GNU_SOURCE
#include "provider.h"

#include <ctype.h>
#include <limits.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonmem.h"

/* ---- upstream request ---- */

void tg_upstream_req_dispose(tg_upstream_req_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->n_headers; i++) {
        /* headers carry provider keys: wipe before the allocator can hand the bytes out again */
        sodium_memzero(r->headers[i], strlen(r->headers[i]));
        free(r->headers[i]);
        r->headers[i] = NULL;
    }
    r->n_headers = 0;
    free(r->url);
    r->url = NULL;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
    r->dropped[0] = '\0';
}

int tg_upstream_req_add_header(tg_upstream_req_t *r, const char *name, const char *value)
{
    if (r->n_headers >= TG_UPSTREAM_MAX_HEADERS)
        return TG_ETOO_LARGE;
    size_t nl = strlen(name), vl = strlen(value);
    char *h = malloc(nl + vl + 3);
    if (h == NULL)
        return TG_ENOMEM;
    memcpy(h, name, nl);
    h[nl] = ':';
    h[nl + 1] = ' ';
    memcpy(h + nl + 2, value, vl + 1);
    r->headers[r->n_headers++] = h;
    return 0;
}

const tg_adapter_t *tg_adapter_for(tg_provider_kind_t kind)
{
    switch (kind) {
    case TG_KIND_OPENAI:
        return &tg_adapter_openai;
    case TG_KIND_ANTHROPIC:
        return &tg_adapter_anthropic;
    case TG_KIND_GEMINI:
        return &tg_adapter_gemini;
    }
    return NULL;
}

int tg_prov_build_bounded(const tg_adapter_t *ad, const tg_build_in_t *in, const json_t *canon,
                          unsigned factor, tg_upstream_req_t *out, tg_error_t *err)
{
    size_t budget = tg_jsonmem_budget(in->raw_len, factor);
    tg_jsonmem_arm(budget > SIZE_MAX / TG_JSONMEM_BUILD_FACTOR ? SIZE_MAX : budget * TG_JSONMEM_BUILD_FACTOR);
    int rc = ad->build_request(in, canon, out, err);
    bool exceeded;
    tg_jsonmem_disarm(&exceeded);
    if (exceeded) {
        /* whatever the adapter made of a refused allocation, the request is not whole */
        tg_upstream_req_dispose(out);
        return tg_error_set(err, TG_EBODY_TOO_COMPLEX,
                            "request is too complex to translate for this provider within its memory limit");
    }
    return rc;
}

/* ---- Retry-After (RFC 9110 10.2.3): delta-seconds or an HTTP-date ---- */

int64_t tg_parse_retry_after_ms(const char *value, int64_t now_unix)
{
    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (*value == '\0')
        return -1;
    if (isdigit((unsigned char)*value)) {
        /* delta-seconds; a fraction is not in the RFC but some hosts send one: accept it */
        char *end;
        double secs = strtod(value, &end);
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end != '\0' || secs < 0)
            return -1;
        if (secs > 86400.0 * 365)
            secs = 86400.0 * 365;
        return (int64_t)(secs * 1000.0 + 0.5);
    }
    /* IMF-fixdate, then the two obsolete forms the RFC still asks recipients to accept */
    static const char *const fmts[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                       "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(value, fmts[i], &tm);
        if (end == NULL)
            continue;
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end != '\0')
            continue;
        int64_t t = (int64_t)timegm(&tm);
        int64_t d = t - now_unix;
        return d > 0 ? d * 1000 : 0;
    }
    return -1;
}

/* ---- canonical request validation ---- */

static int bad(tg_error_t *err, char *param, size_t param_len, const char *path, const char *what)
{
    if (param != NULL && param_len > 0)
        snprintf(param, param_len, "%s", path);
    return tg_error_set(err, TG_EINVALID_REQUEST, "%s %s", path, what);
}

static bool is_num(const json_t *v)
{
    return json_is_integer(v) || json_is_real(v);
}

static int validate_content(const json_t *content, const char *role, const char *base, char *param,
                            size_t param_len, tg_error_t *err)
{
    char path[96];
    if (json_is_string(content))
        return 0;
    if (json_is_null(content) || content == NULL) {
        if (strcmp(role, "assistant") == 0)
            return 0; /* an assistant turn may be tool calls only (OpenAI also accepts it absent) */
        snprintf(path, sizeof(path), "%s.content", base);
        return bad(err, param, param_len, path, "must be a string or an array of content parts");
    }
    if (!json_is_array(content)) {
        snprintf(path, sizeof(path), "%s.content", base);
        return bad(err, param, param_len, path, "must be a string or an array of content parts");
    }
    size_t j;
    json_t *part;
    json_array_foreach(content, j, part)
    {
        snprintf(path, sizeof(path), "%s.content[%zu]", base, j);
        if (!json_is_object(part))
            return bad(err, param, param_len, path, "must be an object");
        const char *type = json_string_value(json_object_get(part, "type"));
        if (type == NULL) {
            snprintf(path, sizeof(path), "%s.content[%zu].type", base, j);
            return bad(err, param, param_len, path, "must be a string");
        }
        if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            const char *k = type[0] == 't' ? "text" : "refusal";
            if (!json_is_string(json_object_get(part, k))) {
                snprintf(path, sizeof(path), "%s.content[%zu].%s", base, j, k);
                return bad(err, param, param_len, path, "must be a string");
            }
        } else if (strcmp(type, "image_url") == 0) {
            json_t *iu = json_object_get(part, "image_url");
            if (!json_is_object(iu) || !json_is_string(json_object_get(iu, "url"))) {
                snprintf(path, sizeof(path), "%s.content[%zu].image_url.url", base, j);
                return bad(err, param, param_len, path, "must be a string");
            }
        } else {
            snprintf(path, sizeof(path), "%s.content[%zu].type", base, j);
            return bad(err, param, param_len, path, "must be \"text\" or \"image_url\"");
        }
    }
    return 0;
}

static int validate_messages(const json_t *msgs, char *param, size_t param_len, tg_error_t *err)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(err, param, param_len, "messages", "must be a non-empty array");
    size_t i;
    json_t *m;
    char base[40], path[96];
    json_array_foreach(msgs, i, m)
    {
        snprintf(base, sizeof(base), "messages[%zu]", i);
        if (!json_is_object(m))
            return bad(err, param, param_len, base, "must be an object");
        json_t *jrole = json_object_get(m, "role");
        snprintf(path, sizeof(path), "%s.role", base);
        if (!json_is_string(jrole))
            return bad(err, param, param_len, path, "must be a string");
        const char *role = json_string_value(jrole);
        if (strcmp(role, "system") != 0 && strcmp(role, "developer") != 0 && strcmp(role, "user") != 0 &&
            strcmp(role, "assistant") != 0 && strcmp(role, "tool") != 0)
            return bad(err, param, param_len, path,
                       "must be one of \"system\", \"developer\", \"user\", \"assistant\", \"tool\"");
        json_t *tcs = json_object_get(m, "tool_calls");
        if (tcs != NULL && !json_is_null(tcs)) {
            snprintf(path, sizeof(path), "%s.tool_calls", base);
            if (strcmp(role, "assistant") != 0)
                return bad(err, param, param_len, path, "is only allowed on assistant messages");
            if (!json_is_array(tcs))
                return bad(err, param, param_len, path, "must be an array");
            size_t k;
            json_t *tc;
            json_array_foreach(tcs, k, tc)
            {
                json_t *fn = json_object_get(tc, "function");
                snprintf(path, sizeof(path), "%s.tool_calls[%zu].id", base, k);
                if (!json_is_object(tc) || !json_is_string(json_object_get(tc, "id")))
                    return bad(err, param, param_len, path, "must be a string");
                snprintf(path, sizeof(path), "%s.tool_calls[%zu].function.name", base, k);
                if (!json_is_object(fn) || !json_is_string(json_object_get(fn, "name")))
                    return bad(err, param, param_len, path, "must be a string");
                snprintf(path, sizeof(path), "%s.tool_calls[%zu].function.arguments", base, k);
                if (!json_is_string(json_object_get(fn, "arguments")))
                    return bad(err, param, param_len, path, "must be a string");
            }
        }
        if (strcmp(role, "tool") == 0 && !json_is_string(json_object_get(m, "tool_call_id"))) {
            snprintf(path, sizeof(path), "%s.tool_call_id", base);
            return bad(err, param, param_len, path, "must be a string");
        }
        json_t *name = json_object_get(m, "name");
        if (name != NULL && !json_is_string(name)) {
            snprintf(path, sizeof(path), "%s.name", base);
            return bad(err, param, param_len, path, "must be a string");
        }
        int rc = validate_content(json_object_get(m, "content"), role, base, param, param_len, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int validate_tools(const json_t *tools, char *param, size_t param_len, tg_error_t *err)
{
    if (!json_is_array(tools))
        return bad(err, param, param_len, "tools", "must be an array");
    size_t i;
    json_t *t;
    char path[64];
    json_array_foreach(tools, i, t)
    {
        snprintf(path, sizeof(path), "tools[%zu].type", i);
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!json_is_object(t) || type == NULL || strcmp(type, "function") != 0)
            return bad(err, param, param_len, path, "must be \"function\"");
        json_t *fn = json_object_get(t, "function");
        snprintf(path, sizeof(path), "tools[%zu].function.name", i);
        if (!json_is_object(fn) || !json_is_string(json_object_get(fn, "name")))
            return bad(err, param, param_len, path, "must be a string");
        json_t *params = json_object_get(fn, "parameters");
        snprintf(path, sizeof(path), "tools[%zu].function.parameters", i);
        if (params != NULL && !json_is_object(params))
            return bad(err, param, param_len, path, "must be an object");
    }
    return 0;
}

int tg_canon_validate(const json_t *req, char *param, size_t param_len, tg_error_t *err)
{
    if (param != NULL && param_len > 0)
        param[0] = '\0';
    if (!json_is_object(req))
        return bad(err, param, param_len, "body", "must be a JSON object");
    if (!json_is_string(json_object_get(req, "model")))
        return bad(err, param, param_len, "model", "must be a string");
    int rc = validate_messages(json_object_get(req, "messages"), param, param_len, err);
    if (rc != 0)
        return rc;

    /* optional fields: null means absent, as in OpenAI's API */
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)req, key, v)
    {
        if (json_is_null(v))
            continue;
        if (strcmp(key, "stream") == 0 || strcmp(key, "logprobs") == 0 ||
            strcmp(key, "parallel_tool_calls") == 0 || strcmp(key, "store") == 0) {
            if (!json_is_boolean(v))
                return bad(err, param, param_len, key, "must be a boolean");
        } else if (strcmp(key, "temperature") == 0 || strcmp(key, "top_p") == 0 ||
                   strcmp(key, "presence_penalty") == 0 || strcmp(key, "frequency_penalty") == 0) {
            if (!is_num(v))
                return bad(err, param, param_len, key, "must be a number");
        } else if (strcmp(key, "max_tokens") == 0 || strcmp(key, "max_completion_tokens") == 0 ||
                   strcmp(key, "n") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 1)
                return bad(err, param, param_len, key, "must be a positive integer");
        } else if (strcmp(key, "seed") == 0 || strcmp(key, "top_logprobs") == 0) {
            if (!json_is_integer(v))
                return bad(err, param, param_len, key, "must be an integer");
        } else if (strcmp(key, "stop") == 0) {
            if (json_is_array(v)) {
                size_t i;
                json_t *s;
                json_array_foreach(v, i, s)
                {
                    if (!json_is_string(s))
                        return bad(err, param, param_len, key, "must be a string or an array of strings");
                }
            } else if (!json_is_string(v)) {
                return bad(err, param, param_len, key, "must be a string or an array of strings");
            }
        } else if (strcmp(key, "tools") == 0) {
            rc = validate_tools(v, param, param_len, err);
            if (rc != 0)
                return rc;
        } else if (strcmp(key, "tool_choice") == 0) {
            if (json_is_string(v)) {
                const char *s = json_string_value(v);
                if (strcmp(s, "auto") != 0 && strcmp(s, "none") != 0 && strcmp(s, "required") != 0)
                    return bad(err, param, param_len, key,
                               "must be \"auto\", \"none\", \"required\" or an object");
            } else if (json_is_object(v)) {
                json_t *fn = json_object_get(v, "function");
                if (!json_is_object(fn) || !json_is_string(json_object_get(fn, "name")))
                    return bad(err, param, param_len, "tool_choice.function.name", "must be a string");
            } else {
                return bad(err, param, param_len, key, "must be a string or an object");
            }
        } else if (strcmp(key, "response_format") == 0) {
            if (!json_is_object(v) || !json_is_string(json_object_get(v, "type")))
                return bad(err, param, param_len, "response_format.type", "must be a string");
        } else if (strcmp(key, "stream_options") == 0 || strcmp(key, "logit_bias") == 0 ||
                   strcmp(key, "metadata") == 0) {
            if (!json_is_object(v))
                return bad(err, param, param_len, key, "must be an object");
        } else if (strcmp(key, "user") == 0) {
            if (!json_is_string(v))
                return bad(err, param, param_len, key, "must be a string");
        } else if (strcmp(key, "models") == 0) {
            if (!json_is_array(v) || json_array_size(v) == 0)
                return bad(err, param, param_len, key, "must be a non-empty array of strings");
            size_t i;
            json_t *s;
            char path[32];
            json_array_foreach(v, i, s)
            {
                if (!json_is_string(s)) {
                    snprintf(path, sizeof(path), "models[%zu]", i);
                    return bad(err, param, param_len, path, "must be a string");
                }
            }
        }
    }
    return 0;
}

/* ---- helpers shared by the adapters ---- */

int tg_prov_set_url(tg_upstream_req_t *out, const char *base, const char *p1, const char *p2, const char *p3)
{
    const char *parts[4] = {base, p1, p2, p3};
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        n += parts[i] != NULL ? strlen(parts[i]) : 0;
    char *u = malloc(n + 1);
    if (u == NULL)
        return TG_ENOMEM;
    char *w = u;
    for (int i = 0; i < 4; i++) {
        if (parts[i] == NULL)
            continue;
        size_t l = strlen(parts[i]);
        memcpy(w, parts[i], l);
        w += l;
    }
    *w = '\0';
    free(out->url);
    out->url = u;
    return 0;
}

int tg_prov_set_body(tg_upstream_req_t *out, const json_t *body, tg_error_t *err)
{
    char *s = json_dumps(body, JSON_COMPACT);
    if (s == NULL)
        return tg_error_set(err, TG_ENOMEM, "cannot serialise the upstream request");
    free(out->body);
    out->body = s;
    out->body_len = strlen(s);
    return 0;
}

void tg_prov_drop(tg_upstream_req_t *out, const char *param)
{
    size_t cur = strlen(out->dropped), add = strlen(param);
    if (cur + add + 2 > sizeof(out->dropped))
        return;
    if (cur > 0)
        out->dropped[cur++] = ',';
    memcpy(out->dropped + cur, param, add + 1);
}

void tg_prov_completion_id(const tg_resp_in_t *in, char *dst, size_t n)
{
    snprintf(dst, n, "chatcmpl-%s", in->request_id != NULL ? in->request_id : "0");
}

int tg_chunk_ctx_init(tg_chunk_ctx_t *c, const tg_resp_in_t *in)
{
    char id[160];
    tg_prov_completion_id(in, id, sizeof(id));
    c->id = strdup(id);
    c->model = strdup(in->model != NULL ? in->model : "");
    c->created = in->created;
    if (c->id == NULL || c->model == NULL) {
        tg_chunk_ctx_dispose(c);
        return TG_ENOMEM;
    }
    return 0;
}

void tg_chunk_ctx_dispose(tg_chunk_ctx_t *c)
{
    free(c->id);
    free(c->model);
    c->id = c->model = NULL;
}

static json_t *chunk_head(const tg_chunk_ctx_t *c, json_t *choices)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", c->id, "object", "chat.completion.chunk", "created",
                     (json_int_t)c->created, "model", c->model, "choices", choices);
}

json_t *tg_prov_chunk_new(const tg_chunk_ctx_t *c, json_t *delta, const char *finish)
{
    if (delta == NULL)
        return NULL;
    json_t *choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs",
                               "finish_reason", finish != NULL ? json_string(finish) : json_null());
    if (choice == NULL)
        return NULL;
    return chunk_head(c, json_pack("[o]", choice));
}

int tg_prov_emit(tg_chunk_cb emit, void *ud, json_t *chunk)
{
    if (chunk == NULL)
        return TG_ENOMEM;
    int rc = emit(ud, chunk);
    json_decref(chunk);
    return rc != 0 ? TG_EINTERNAL : 0;
}

json_t *tg_prov_usage_json(const tg_usage_t *u)
{
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                     "completion_tokens", (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)(u->prompt_tokens + u->completion_tokens), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)u->cached_tokens);
}

int tg_prov_emit_usage(const tg_chunk_ctx_t *c, const tg_usage_t *u, tg_chunk_cb emit, void *ud)
{
    json_t *chunk = chunk_head(c, json_array());
    if (chunk != NULL && json_object_set_new(chunk, "usage", tg_prov_usage_json(u)) != 0) {
        json_decref(chunk);
        chunk = NULL;
    }
    return tg_prov_emit(emit, ud, chunk);
}

int64_t tg_prov_int(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d >= 0 && d < 9.0e18)
            return (int64_t)d;
    }
    return 0;
}

void tg_prov_classified_init(tg_classified_t *out, int status, const char *retry_after)
{
    memset(out, 0, sizeof(*out));
    out->status = status;
    /* only an HTTP-date form needs the clock; providers send delta-seconds in practice */
    out->retry_after_ms = tg_parse_retry_after_ms(retry_after, (int64_t)time(NULL));
    snprintf(out->reason, sizeof(out->reason), "http_%d", status);
    snprintf(out->type, sizeof(out->type), "upstream_error");
    snprintf(out->message, sizeof(out->message), "upstream provider returned HTTP %d", status);
    tg_prov_classify_status(out);
}

void tg_prov_classify_status(tg_classified_t *out)
{
    int s = out->status;
    snprintf(out->reason, sizeof(out->reason), "http_%d", s);
    if (s == 429) {
        out->cls = TG_OUTCOME_RATE_LIMITED;
        snprintf(out->reason, sizeof(out->reason), "rate_limited");
        snprintf(out->type, sizeof(out->type), "rate_limit_error");
    } else if (s == 401 || s == 403) {
        out->cls = TG_OUTCOME_MISCONFIGURED;
        snprintf(out->reason, sizeof(out->reason), s == 401 ? "unauthorized" : "forbidden");
        snprintf(out->type, sizeof(out->type), s == 401 ? "authentication_error" : "permission_error");
    } else if (s == 404) {
        out->cls = TG_OUTCOME_MISCONFIGURED;
        snprintf(out->reason, sizeof(out->reason), "not_found");
        snprintf(out->type, sizeof(out->type), "invalid_request_error");
    } else if (s >= 400 && s < 500) {
        out->cls = TG_OUTCOME_CALLER;
        snprintf(out->type, sizeof(out->type), "invalid_request_error");
    } else if (s >= 500 && s < 600) {
        out->cls = TG_OUTCOME_SERVER;
        snprintf(out->type, sizeof(out->type), "server_error");
    } else {
        /* a redirect or an informational status from a chat endpoint: the base URL is wrong */
        out->cls = TG_OUTCOME_MISCONFIGURED;
    }
}

/* Looks like a credential: OpenAI/Anthropic "sk-..." keys, Google "AIza..." keys. */
static size_t secret_len(const char *s)
{
    if (!(strncmp(s, "sk-", 3) == 0 || strncmp(s, "AIza", 4) == 0))
        return 0;
    size_t n = 0;
    while (isalnum((unsigned char)s[n]) || s[n] == '-' || s[n] == '_' || s[n] == '*' || s[n] == '.')
        n++;
    return n >= 8 ? n : 0;
}

void tg_prov_credentials_rejected(tg_classified_t *out)
{
    snprintf(out->message, sizeof(out->message), "upstream provider rejected the credentials (HTTP %d)",
             out->status);
}

void tg_prov_copy_public(char *dst, size_t n, const char *src)
{
    if (n == 0)
        return;
    size_t w = 0;
    for (size_t i = 0; src != NULL && src[i] != '\0' && w + 1 < n;) {
        bool boundary = i == 0 || !isalnum((unsigned char)src[i - 1]);
        size_t sl = boundary ? secret_len(src + i) : 0;
        if (sl > 0) {
            static const char mask[] = "[redacted]";
            for (size_t k = 0; mask[k] != '\0' && w + 1 < n; k++)
                dst[w++] = mask[k];
            i += sl;
            continue;
        }
        dst[w++] = src[i++];
    }
    dst[w] = '\0';
}

int tg_prov_data_url(const char *url, const char **mime, size_t *mime_len, const char **payload)
{
    if (strncmp(url, "data:", 5) != 0)
        return -1;
    const char *m = url + 5;
    const char *semi = strchr(m, ';');
    const char *comma = strchr(m, ',');
    if (semi == NULL || comma == NULL || semi > comma || strncmp(semi, ";base64,", 8) != 0 || semi == m)
        return -1;
    *mime = m;
    *mime_len = (size_t)(semi - m);
    *payload = comma + 1;
    return 0;
}

const char *tg_prov_mime_from_url(const char *url)
{
    static const struct {
        const char *ext, *mime;
    } map[] = {{".png", "image/png"},   {".gif", "image/gif"},      {".webp", "image/webp"},
               {".jpg", "image/jpeg"},  {".jpeg", "image/jpeg"},    {".heic", "image/heic"},
               {".heif", "image/heif"}, {".pdf", "application/pdf"}};
    /* the extension is that of the path: stop at a query or fragment */
    size_t end = strcspn(url, "?#");
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        size_t el = strlen(map[i].ext);
        if (end >= el && strncasecmp(url + end - el, map[i].ext, el) == 0)
            return map[i].mime;
    }
    return "image/jpeg";
}

int tg_prov_content_text(const json_t *content, const char *sep, tg_buf_t *out)
{
    if (json_is_string(content)) {
        if (out->len > 0 && json_string_length(content) > 0) {
            int rc = tg_buf_append_str(out, sep);
            if (rc != 0)
                return rc;
        }
        return tg_buf_append(out, json_string_value(content), json_string_length(content));
    }
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *t = json_object_get(part, "text");
        if (!json_is_string(t))
            continue;
        int rc = tg_prov_content_text(t, sep, out);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int tg_prov_push_turn(json_t *turns, const char *role, const char *items_key, json_t *items)
{
    size_t n = json_array_size(turns);
    if (json_array_size(items) == 0) {
        json_decref(items);
        return 0;
    }
    json_t *last = n > 0 ? json_array_get(turns, n - 1) : NULL;
    const char *last_role = last != NULL ? json_string_value(json_object_get(last, "role")) : NULL;
    if (last_role != NULL && strcmp(last_role, role) == 0) {
        int rc = json_array_extend(json_object_get(last, items_key), items);
        json_decref(items);
        return rc == 0 ? 0 : TG_ENOMEM;
    }
    return json_array_append_new(turns, json_pack("{s:s, s:o}", "role", role, items_key, items)) == 0
               ? 0
               : TG_ENOMEM;
}

json_t *tg_prov_completion_new(const tg_resp_in_t *in, const tg_buf_t *text, json_t *calls,
                               const char *finish, const tg_usage_t *u)
{
    /* content is null only for an answer made of tool calls alone, as OpenAI sends it */
    json_t *msg = json_pack("{s:s, s:o}", "role", "assistant", "content",
                            text->len > 0 || json_array_size(calls) == 0
                                ? json_stringn(text->data ? text->data : "", text->len)
                                : json_null());
    if (msg != NULL && json_array_size(calls) > 0 && json_object_set(msg, "tool_calls", calls) != 0) {
        json_decref(msg);
        return NULL;
    }
    char id[160];
    tg_prov_completion_id(in, id, sizeof(id));
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:o}", "id", id, "object",
                     "chat.completion", "created", (json_int_t)in->created, "model",
                     in->model != NULL ? in->model : "", "choices", "index", 0, "message", msg, "logprobs",
                     "finish_reason", finish != NULL ? finish : "stop", "usage", tg_prov_usage_json(u));
}

/* ---- the walk over canonical messages (Anthropic, Gemini) ---- */

int tg_prov_walk_content(const tg_msg_walker_t *w, const json_t *content, size_t mi, json_t *items,
                         tg_error_t *err)
{
    /* an empty text is no item: Messages rejects empty text blocks, and a Gemini part needs data */
    if (json_is_string(content)) {
        if (json_string_length(content) == 0)
            return 0;
        return json_array_append_new(items, w->text(content)) == 0 ? 0 : TG_ENOMEM;
    }
    size_t j;
    json_t *part;
    json_array_foreach(content, j, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *item;
        if (type != NULL && strcmp(type, "text") == 0) {
            json_t *t = json_object_get(part, "text");
            if (json_string_length(t) == 0)
                continue;
            item = w->text(t);
        } else if (type != NULL && strcmp(type, "image_url") == 0) {
            char path[80];
            snprintf(path, sizeof(path), "messages[%zu].content[%zu].image_url.url", mi, j);
            const char *url = json_string_value(json_object_get(json_object_get(part, "image_url"), "url"));
            item = w->image(url != NULL ? url : "", path, err);
            if (item == NULL)
                return TG_EINVALID_REQUEST;
        } else {
            continue; /* a "refusal" part: neither provider takes one back */
        }
        if (item == NULL || json_array_append_new(items, item) != 0)
            return TG_ENOMEM;
    }
    return 0;
}

static int walk_tool_calls(const tg_msg_walker_t *w, const json_t *calls, json_t *items)
{
    size_t k;
    json_t *tc;
    json_array_foreach(calls, k, tc)
    {
        const char *args = json_string_value(json_object_get(json_object_get(tc, "function"), "arguments"));
        json_error_t jerr;
        /* under the translation's memory budget: jansson's lexer must not see a refused allocation */
        json_t *jargs = args != NULL ? tg_jsonmem_loadb(args, strlen(args), 0, &jerr) : NULL;
        if (!json_is_object(jargs)) {
            /* both providers take the arguments as an object; ones the model produced badly become {} */
            json_decref(jargs);
            jargs = json_object();
        }
        json_t *item = w->tool_call(tc, jargs);
        if (item == NULL || json_array_append_new(items, item) != 0)
            return TG_ENOMEM;
    }
    return 0;
}

/* Appends messages[mi] (user, assistant or tool) to `turns` as one turn of items. */
static int walk_turn(const tg_msg_walker_t *w, const json_t *msgs, size_t mi, json_t *turns, tg_error_t *err)
{
    json_t *m = json_array_get(msgs, mi);
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *content = json_object_get(m, "content");
    json_t *items = json_array();
    if (items == NULL)
        return TG_ENOMEM;
    int rc = 0;
    if (strcmp(role, "tool") == 0) {
        json_t *item = NULL;
        rc = w->tool_result(w, msgs, mi, &item, err);
        if (rc == 0 && json_array_append_new(items, item) != 0)
            rc = TG_ENOMEM;
        role = "user"; /* neither provider has a tool role: both carry results in a user turn */
    } else {
        if (content != NULL && !json_is_null(content))
            rc = tg_prov_walk_content(w, content, mi, items, err);
        if (rc == 0)
            rc = walk_tool_calls(w, json_object_get(m, "tool_calls"), items);
        role = strcmp(role, "assistant") == 0 ? w->assistant_role : "user";
    }
    if (rc != 0) {
        json_decref(items); /* not handed to turns: ours to free */
        return rc;
    }
    return tg_prov_push_turn(turns, role, w->items_key, items);
}

int tg_prov_walk_messages(const json_t *messages, const tg_msg_walker_t *w, json_t *body, tg_error_t *err)
{
    json_t *turns = json_array();
    tg_buf_t sys;
    tg_buf_init(&sys, 4u << 20);
    int rc = turns != NULL ? 0 : TG_ENOMEM;
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        if (rc != 0)
            break;
        const char *role = json_string_value(json_object_get(m, "role"));
        /* both providers take instructions apart from the turns, as one text */
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
            rc = tg_prov_content_text(json_object_get(m, "content"), "\n\n", &sys);
        else
            rc = walk_turn(w, messages, i, turns, err);
    }
    if (rc == 0 && sys.len > 0)
        rc = w->set_system(body, sys.data, sys.len);
    if (rc == 0 && json_object_set_new(body, w->turns_key, turns) != 0)
        rc = TG_ENOMEM;
    else if (rc != 0)
        json_decref(turns);
    tg_buf_dispose(&sys);
    return rc;
}
