/*
 * router.c - dispatches /admin/ requests by method and path. Paths are matched on h2o's
 * normalised path, except the breaker reset route: a target key contains "/"
 * ("<provider>/<upstream>"), so it is cut from the raw path and percent-decoded (query.c) here
 * (h2o's normalisation must not split it).
 */
#include "admin.h"

#include <string.h>

#include "http.h"
#include "query.h"

#define BREAKERS_PREFIX "/admin/v1/breakers/"
#define RESET_SUFFIX    "/reset"

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
