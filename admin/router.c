/*
 * router.c - dispatches /admin/ requests by method and path, and the small URL helpers the
 * handlers share. Paths are matched on h2o's normalised path, except the breaker reset route:
 * a target key contains "/" ("<provider>/<upstream>"), so it is cut from the raw path and
 * percent-decoded here (h2o's normalisation must not split it).
 */
#include "admin.h"

#include <string.h>

#include "http.h"

#define BREAKERS_PREFIX "/admin/v1/breakers/"
#define RESET_SUFFIX    "/reset"

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tg_admin_url_decode(const char *src, size_t len, char *dst, size_t cap)
{
    size_t o = 0;
    if (cap == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1; /* needs two more characters */
            int hi = hexval(src[i + 1]), lo = hexval(src[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= cap)
            return -1;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return (int)o;
}

int tg_admin_query_param(h2o_req_t *req, const char *name, char *dst, size_t cap)
{
    if (req->query_at == SIZE_MAX)
        return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    size_t nlen = strlen(name);
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq != NULL ? eq : pe;
        if ((size_t)(ke - q) == nlen && memcmp(q, name, nlen) == 0) {
            const char *v = eq != NULL ? eq + 1 : pe;
            return tg_admin_url_decode(v, (size_t)(pe - v), dst, cap) < 0 ? -1 : 1;
        }
        q = pe + 1;
    }
    return 0;
}

static int is(const h2o_iovec_t *v, const char *s)
{
    return h2o_memis(v->base, v->len, s, strlen(s));
}

static void method_not_allowed(h2o_req_t *req, const char *allow)
{
    tg_http_add_header(req, "allow", allow);
    tg_http_send_error(req, TG_EMETHOD_NOT_ALLOWED, NULL, NULL, 0);
}

int tg_admin_route(h2o_req_t *req)
{
    const h2o_iovec_t *path = &req->path_normalized;
    int get = is(&req->method, "GET") || is(&req->method, "HEAD");
    int post = is(&req->method, "POST");

    if (is(path, "/admin/v1/breakers")) {
        if (!get) {
            method_not_allowed(req, "GET");
            return 0;
        }
        tg_admin_breakers_list(req);
        return 0;
    }
    if (is(path, "/admin/v1/failover-events")) {
        if (!get) {
            method_not_allowed(req, "GET");
            return 0;
        }
        tg_admin_events_list(req);
        return 0;
    }

    /* POST /admin/v1/breakers/{target}/reset, from the raw path (without the query). */
    size_t raw_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *raw = req->path.base;
    size_t plen = sizeof(BREAKERS_PREFIX) - 1, slen = sizeof(RESET_SUFFIX) - 1;
    if (raw_len > plen + slen && memcmp(raw, BREAKERS_PREFIX, plen) == 0 &&
        memcmp(raw + raw_len - slen, RESET_SUFFIX, slen) == 0) {
        if (!post) {
            method_not_allowed(req, "POST");
            return 0;
        }
        char target[256];
        if (tg_admin_url_decode(raw + plen, raw_len - plen - slen, target, sizeof(target)) <= 0) {
            tg_http_send_error(req, TG_EINVALID_REQUEST, "target is not a valid URL-encoded breaker key",
                               "target", 0);
            return 0;
        }
        tg_admin_breaker_reset(req, target);
        return 0;
    }
    return -1;
}
