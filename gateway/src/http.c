/*
 * http.c - response helpers shared by every handler.
 *
 * Every JSON answer sets content-length, so HTTP/1.1 clients get a plain body rather than a
 * chunked one (h2o_send_inline does not set it). Error bodies are OpenAI-shaped and built with
 * jansson so that any message text is escaped correctly.
 */
#include "http.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *status_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 529:
        return "Overloaded";
    default:
        return status >= 500 ? "Error" : status >= 400 ? "Client Error" : "OK";
    }
}

void tg_request_id(char out[TG_REQUEST_ID_LEN + 1])
{
    /* 22 base32 characters carry 110 random bits: collisions are not a practical concern. */
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    /* randombytes_buf is one getrandom(2) per call: a per-thread pool of CSPRNG output turns
     * that into one syscall per ~90 requests. Bytes are used once and wiped as they are taken. */
    enum { POOL = 2048, N = TG_REQUEST_ID_LEN - 4 };
    static _Thread_local unsigned char pool[POOL];
    static _Thread_local size_t used = POOL;
    if (POOL - used < N) {
        randombytes_buf(pool, sizeof(pool));
        used = 0;
    }
    memcpy(out, "req_", 4);
    for (size_t i = 0; i < N; i++)
        out[4 + i] = alphabet[pool[used + i] & 31];
    sodium_memzero(pool + used, N);
    used += N;
    out[TG_REQUEST_ID_LEN] = '\0';
}

void tg_http_send_raw_json(h2o_req_t *req, int status, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = status_reason(status);
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_send_inline(req, body, len); /* copies into req->pool */
}

void tg_http_send_json(h2o_req_t *req, int status, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    if (s == NULL) {
        const char *fallback = tg_err_json(TG_ENOMEM);
        tg_http_send_raw_json(req, tg_err_http_status(TG_ENOMEM), fallback, strlen(fallback));
        return;
    }
    tg_http_send_raw_json(req, status, s, strlen(s));
    free(s);
}

int tg_http_error_json(tg_buf_t *out, const char *message, const char *type, const char *code,
                       const char *param)
{
    json_t *err = json_object();
    json_t *root = json_object();
    if (err == NULL || root == NULL) {
        json_decref(err);
        json_decref(root);
        return TG_ENOMEM;
    }
    int rc = 0;
    rc |= json_object_set_new(err, "message", json_string(message ? message : ""));
    rc |= json_object_set_new(err, "type", json_string(type ? type : "server_error"));
    rc |= json_object_set_new(err, "code", code ? json_string(code) : json_null());
    rc |= json_object_set_new(err, "param", param ? json_string(param) : json_null());
    rc |= json_object_set_new(root, "error", err);
    if (rc != 0) {
        json_decref(root);
        return TG_ENOMEM;
    }
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (s == NULL)
        return TG_ENOMEM; /* e.g. message not valid UTF-8 makes json_string fail -> NULL member */
    int ret = tg_buf_append_str(out, s);
    free(s);
    return ret;
}

void tg_http_send_error(h2o_req_t *req, int tg_err, const char *message, const char *param,
                        unsigned retry_after_s)
{
    int status = tg_err_http_status(tg_err);
    tg_buf_t b;
    tg_buf_init(&b, 4096 + (message ? strlen(message) * 6 : 0));
    if (message == NULL)
        message = tg_err_public_msg(tg_err);
    if (tg_http_error_json(&b, message, tg_err_type(tg_err), tg_err_code(tg_err), param) != 0) {
        /* A message that jansson refuses (invalid UTF-8) falls back to the table's public text. */
        tg_buf_reset(&b);
        if (tg_http_error_json(&b, tg_err_public_msg(tg_err), tg_err_type(tg_err), tg_err_code(tg_err),
                               NULL) != 0) {
            tg_buf_dispose(&b);
            /* out of memory: the table's own body for the code, which needs no allocation */
            const char *fallback = tg_err_json(tg_err);
            tg_http_send_raw_json(req, status, fallback, strlen(fallback));
            return;
        }
    }
    /* The database path fails only transiently (a job past its deadline, a full queue, a lost
     * connection that reconnects by itself): its 503 always says when to come back. */
    if (tg_err == TG_EDB_UNAVAILABLE && retry_after_s == 0)
        retry_after_s = TG_HTTP_DB_RETRY_AFTER_S;
    if ((status == 429 || status == 503) && retry_after_s > 0) {
        char v[16];
        int n = snprintf(v, sizeof(v), "%u", retry_after_s);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
                       h2o_strdup(&req->pool, v, (size_t)n).base, (size_t)n);
    }
    tg_http_send_raw_json(req, status, b.data, b.len);
    tg_buf_dispose(&b);
}

const h2o_iovec_t *tg_http_header(h2o_req_t *req, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        if (h->name->len == nlen && strncasecmp(h->name->base, name, nlen) == 0)
            return &h->value;
    }
    return NULL;
}

void tg_http_add_header(h2o_req_t *req, const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value);
    /* HTTP/2 requires lower-case names; h2o stores a non-token name by pointer, so copy it into the pool. */
    h2o_iovec_t n = h2o_strdup(&req->pool, name, nlen);
    for (size_t i = 0; i < nlen; i++)
        n.base[i] = (char)tolower((unsigned char)n.base[i]);
    h2o_iovec_t v = h2o_strdup(&req->pool, value, vlen);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n.base, nlen, 1, NULL, v.base, vlen);
}
