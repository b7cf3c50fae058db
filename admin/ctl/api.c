/*
 * api.c - tollgatectl's HTTP client: one libcurl easy handle per request, the bearer token in a
 * header only, bounded bodies (or a stream to stdout for CSV), and API errors printed from the
 * OpenAI-shaped body ({"error":{"message","type","code","param"[,"fields"]}}).
 */
#include "ctl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

int ctl_init(ctl_t *c)
{
    memset(c, 0, sizeof(*c));
    const char *url = getenv("TOLLGATE_ADMIN_URL");
    const char *token = getenv("TOLLGATE_ADMIN_TOKEN");
    if (url == NULL || *url == '\0') {
        c->env_err = "TOLLGATE_ADMIN_URL is not set (the admin listener, e.g. http://127.0.0.1:8081)";
        return CTL_EXIT_TRANSPORT;
    }
    if (token == NULL || *token == '\0') {
        c->env_err = "TOLLGATE_ADMIN_TOKEN is not set (an admin JWT, e.g. from `tollgate token`)";
        return CTL_EXIT_TRANSPORT;
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof(c->url) ||
        (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
        c->env_err = "TOLLGATE_ADMIN_URL must be an http:// or https:// URL";
        return CTL_EXIT_TRANSPORT;
    }
    memcpy(c->url, url, n);
    c->url[n] = '\0';
    /* A header value cannot hold a line break: refuse it rather than send a broken request. */
    if (strpbrk(token, "\r\n") != NULL) {
        c->env_err = "TOLLGATE_ADMIN_TOKEN holds a line break";
        return CTL_EXIT_TRANSPORT;
    }
    c->token = token;
    return CTL_OK;
}

static int segment_append(char *out, size_t cap, size_t *at, const char *seg)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)seg; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '_' || *p == '~' || (*p == '.' && !(p == (const unsigned char *)seg));
        /* A segment that is "." or ".." would be folded by the server's path normalisation: a
         * leading dot is encoded, so it stays a name. */
        if (plain) {
            if (*at + 1 >= cap)
                return -1;
            out[(*at)++] = (char)*p;
        } else {
            if (*at + 3 >= cap)
                return -1;
            out[(*at)++] = '%';
            out[(*at)++] = hex[*p >> 4];
            out[(*at)++] = hex[*p & 15];
        }
    }
    out[*at] = '\0';
    return 0;
}

int ctl_path(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t at = 0;
    int rc = 0;
    for (const char *f = fmt; *f && rc == 0; f++) {
        if (f[0] == '%' && f[1] == 's') {
            rc = segment_append(out, cap, &at, va_arg(ap, const char *));
            f++;
        } else if (at + 1 < cap) {
            out[at++] = *f;
            out[at] = '\0';
        } else {
            rc = -1;
        }
    }
    va_end(ap);
    if (cap > 0)
        out[at < cap ? at : cap - 1] = '\0';
    return rc;
}

int ctl_query_add(char *path, size_t cap, const char *name, const char *value)
{
    if (value == NULL)
        return 0;
    size_t at = strlen(path);
    const char *sep = strchr(path, '?') ? "&" : "?";
    int n = snprintf(path + at, cap - at, "%s%s=", sep, name);
    if (n < 0 || (size_t)n >= cap - at)
        return -1;
    at += (size_t)n;
    /* A value is encoded like a segment (a leading dot is harmless there but encoded all the same). */
    return segment_append(path, cap, &at, value);
}

typedef struct sink {
    ctl_body_t *body;
    FILE *stream_to;
    CURL *curl;
} sink_t;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    sink_t *s = ud;
    size_t n = size * nmemb;
    if (s->stream_to != NULL) {
        long status = 0;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300)
            return fwrite(ptr, 1, n, s->stream_to) == n ? n : 0;
    }
    ctl_body_t *b = s->body;
    if (b->len + n + 1 > CTL_MAX_BODY) {
        b->too_large = true;
        return 0; /* aborts the transfer */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL)
            return 0;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

void ctl_res_free(ctl_res_t *res)
{
    free(res->body.data);
    json_decref(res->json);
    memset(res, 0, sizeof(*res));
}

/* Prints the API's error: "tollgatectl: 404 not_found: tenant not found (param: id)" and one line
 * per bad field when the body lists them. */
static void print_api_error(long status, const ctl_res_t *res)
{
    const json_t *err = res->json ? json_object_get(res->json, "error") : NULL;
    if (!json_is_object(err)) {
        fprintf(stderr, "tollgatectl: HTTP %ld from the server, not an API error body\n", status);
        return;
    }
    const char *msg = json_string_value(json_object_get(err, "message"));
    const char *code = json_string_value(json_object_get(err, "code"));
    const char *param = json_string_value(json_object_get(err, "param"));
    fprintf(stderr, "tollgatectl: %ld %s: %s", status, code ? code : "error", msg ? msg : "(no message)");
    if (param)
        fprintf(stderr, " (param: %s)", param);
    fputc('\n', stderr);
    const json_t *fields = json_object_get(err, "fields");
    size_t i;
    const json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "field"));
        if (name == NULL)
            name = json_string_value(json_object_get(f, "param"));
        const char *why = json_string_value(json_object_get(f, "message"));
        if (json_is_string(f))
            fprintf(stderr, "  - %s\n", json_string_value(f));
        else
            fprintf(stderr, "  - %s: %s\n", name ? name : "?", why ? why : "invalid");
    }
}

int ctl_call(const ctl_t *c, const ctl_req_t *rq, ctl_res_t *res)
{
    memset(res, 0, sizeof(*res));
    if (c->env_err != NULL) {
        fprintf(stderr, "tollgatectl: %s\n", c->env_err);
        return CTL_EXIT_TRANSPORT;
    }
    char url[4096];
    if (snprintf(url, sizeof(url), "%s%s", c->url, rq->path) >= (int)sizeof(url)) {
        fprintf(stderr, "tollgatectl: the request URL is too long\n");
        return CTL_EXIT_USAGE;
    }
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        fprintf(stderr, "tollgatectl: out of memory\n");
        return CTL_EXIT_TRANSPORT;
    }
    struct curl_slist *h = NULL;
    /* The bearer header is built in a buffer that is wiped after the request. */
    size_t auth_len = strlen(c->token) + sizeof("Authorization: Bearer ");
    char *auth = malloc(auth_len);
    int rc = CTL_EXIT_TRANSPORT;
    if (auth == NULL)
        goto out;
    snprintf(auth, auth_len, "Authorization: Bearer %s", c->token);
    char accept[128], idem[256];
    snprintf(accept, sizeof(accept), "Accept: %s", rq->accept ? rq->accept : "application/json");
    const char *hv[5];
    size_t nh = 0;
    hv[nh++] = auth;
    hv[nh++] = accept;
    if (rq->body)
        hv[nh++] = "Content-Type: application/json";
    if (rq->idempotency_key) {
        snprintf(idem, sizeof(idem), "Idempotency-Key: %s", rq->idempotency_key);
        hv[nh++] = idem;
    }
    hv[nh++] = "Expect:"; /* no 100-continue round trip */
    for (size_t i = 0; i < nh; i++) {
        struct curl_slist *next = curl_slist_append(h, hv[i]);
        if (next == NULL) {
            fprintf(stderr, "tollgatectl: out of memory\n");
            goto out;
        }
        h = next;
    }

    sink_t sink = {.body = &res->body, .stream_to = rq->stream_to, .curl = curl};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, rq->method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    if (rq->stream_to) {
        /* an export of any size: no total limit, but a stalled one ends */
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    } else {
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 60000L);
    }
    if (rq->body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, rq->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
    } else if (strcmp(rq->method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    }

    CURLcode cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res->status);
    if (res->body.too_large) {
        fprintf(stderr, "tollgatectl: the answer is larger than %u MiB\n", CTL_MAX_BODY >> 20);
        rc = CTL_EXIT_SERVER;
        goto out;
    }
    if (cc != CURLE_OK) {
        /* curl's message names the host and the failure, never a header */
        fprintf(stderr, "tollgatectl: %s %s: %s\n", rq->method, rq->path, curl_easy_strerror(cc));
        rc = CTL_EXIT_TRANSPORT;
        goto out;
    }
    if (res->body.len > 0) {
        json_error_t je;
        res->json = json_loadb(res->body.data, res->body.len, 0, &je);
    }
    if (res->status >= 200 && res->status < 300) {
        rc = CTL_OK;
    } else {
        print_api_error(res->status, res);
        rc = res->status >= 400 && res->status < 500 ? CTL_EXIT_API : CTL_EXIT_SERVER;
    }
out:
    curl_slist_free_all(h);
    if (auth) {
        explicit_bzero(auth, auth_len);
        free(auth);
    }
    curl_easy_cleanup(curl);
    return rc;
}
