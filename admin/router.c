/*
 * router.c - dispatches /admin/ requests: the route tables of every resource file, then
 * authentication (auth.c) and the route's access rules against the principal's role, then the
 * handler (api.h, "flow of a request").
 *
 * A path that matches no route is 404; a path that matches with another method is 405 with
 * Allow. Both come after authentication, so an anonymous client learns nothing of which routes
 * exist. The breaker reset route is cut from the raw path and percent-decoded (query.c): a
 * target key contains "/" ("<provider>/<upstream>") that h2o's normalisation must not split.
 *
 * Adding a resource: a file with a `const tg_adm_route_t tg_adm_routes_<x>[]` table (ended by an
 * entry whose method is NULL), declared in admin.h, and one line in `tables` below.
 */
#include "admin.h"

#include <string.h>

#include "authn.h"
#include "http.h"
#include "log.h"
#include "pathguard.h"
#include "query.h"

#define BREAKERS_PREFIX "/admin/v1/breakers/"
#define RESET_SUFFIX    "/reset"

/* one table a line, so that resources merge without touching each other's lines */
/* clang-format off */
static const tg_adm_route_t *const tables[] = {
    tg_adm_routes_breakers,
    tg_adm_routes_events,
    tg_adm_routes_tenants,
    tg_adm_routes_keys,
    tg_adm_routes_provider_keys,
    tg_adm_routes_policy,
    tg_adm_routes_audit,
    tg_adm_routes_wallet,
    tg_adm_routes_usage,
    tg_adm_routes_catalog,
    tg_adm_routes_chains,
    tg_adm_routes_openapi,
};
/* clang-format on */

static bool method_is(const h2o_req_t *req, const char *m)
{
    return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static bool method_matches(const h2o_req_t *req, const char *m)
{
    return method_is(req, m) || (strcmp(m, "GET") == 0 && method_is(req, "HEAD"));
}

/* The access rules of api.h: 0 when the principal may call the route, else the answer was sent. */
static int authorize(tg_adm_ctx_t *c)
{
    unsigned a = c->route->access;
    tg_role_t role = c->who.role;
    if ((a & TG_ADM_WRITE) && role == TG_ROLE_AUDITOR) {
        tg_adm_reply_error(c->req, TG_EFORBIDDEN, "the auditor role may only read", NULL);
        return -1;
    }
    if ((a & TG_ADM_OPERATOR) && role == TG_ROLE_TENANT_ADMIN) {
        tg_adm_reply_error(c->req, TG_EFORBIDDEN, "this route is for operators", NULL);
        return -1;
    }
    if ((a & TG_ADM_TENANT) && role == TG_ROLE_TENANT_ADMIN && tg_adm_param_id(c, "id") != c->who.tenant_id) {
        /* exactly what a tenant that does not exist answers: nothing is revealed */
        tg_adm_reply_error(c->req, TG_ENOT_FOUND, NULL, NULL);
        return -1;
    }
    return 0;
}

static int route_breaker_reset(h2o_req_t *req)
{
    size_t raw_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *raw = req->path.base;
    size_t plen = sizeof(BREAKERS_PREFIX) - 1, slen = sizeof(RESET_SUFFIX) - 1;
    if (!(raw_len > plen + slen && memcmp(raw, BREAKERS_PREFIX, plen) == 0 &&
          memcmp(raw + raw_len - slen, RESET_SUFFIX, slen) == 0))
        return -1;
    tg_adm_ctx_t c = {.req = req};
    if (tg_adm_authenticate(req, &c.who) != 0)
        return 0;
    if (!method_is(req, "POST")) {
        tg_http_add_header(req, "allow", "POST");
        tg_adm_reply_error(req, TG_EMETHOD_NOT_ALLOWED, NULL, NULL);
        return 0;
    }
    static const tg_adm_route_t reset = {"POST", "/admin/v1/breakers/{target}/reset",
                                         TG_ADM_WRITE | TG_ADM_OPERATOR, NULL, "breakers.reset"};
    c.route = &reset;
    if (authorize(&c) != 0)
        return 0;
    char target[256];
    if (tg_admin_url_decode(raw + plen, raw_len - plen - slen, target, sizeof(target)) <= 0) {
        tg_adm_reply_error(req, TG_EINVALID_REQUEST, "target is not a valid URL-encoded breaker key",
                           "target");
        return 0;
    }
    tg_admin_breaker_reset(&c, target);
    return 0;
}

int tg_admin_route(h2o_req_t *req)
{
    const char *path = req->path_normalized.base;
    size_t len = req->path_normalized.len;
    if (route_breaker_reset(req) == 0)
        return 0;
    if (tg_adm_path_has_dot_segment(req->path.base, req->path.len))
        len = 0; /* pathguard.h: a dot segment matches no route (404 after the token) */

    tg_adm_ctx_t c = {.req = req};
    const tg_adm_route_t *found = NULL;
    char allow[64] = "";
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]) && found == NULL; t++) {
        for (const tg_adm_route_t *r = tables[t]; r->method != NULL; r++) {
            tg_adm_param_t params[TG_ADM_PARAMS_MAX];
            size_t np = 0;
            if (!tg_adm_match(r->pattern, path, len, params, &np))
                continue;
            if (!method_matches(req, r->method)) {
                if (strstr(allow, r->method) == NULL &&
                    strlen(allow) + strlen(r->method) + 3 < sizeof(allow)) {
                    if (allow[0] != '\0')
                        strcat(allow, ", ");
                    strcat(allow, r->method);
                }
                continue;
            }
            found = r;
            c.n_params = np;
            memcpy(c.params, params, sizeof(params));
            break;
        }
    }
    if (found == NULL || !(found->access & TG_ADM_PUBLIC)) {
        if (tg_adm_authenticate(req, &c.who) != 0)
            return 0;
    }
    if (found == NULL) {
        if (allow[0] != '\0') {
            tg_http_add_header(req, "allow", allow);
            tg_adm_reply_error(req, TG_EMETHOD_NOT_ALLOWED, NULL, NULL);
            return 0;
        }
        tg_adm_reply_error(req, TG_ENOT_FOUND, NULL, NULL);
        return 0;
    }
    c.route = found;
    if (!(found->access & TG_ADM_PUBLIC) && authorize(&c) != 0)
        return 0;
    found->fn(&c);
    return 0;
}
