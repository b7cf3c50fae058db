/*
 * openapi.c - GET /admin/v1/openapi.json: the OpenAPI 3.1 document of the data plane and the admin
 * API, admin/openapi.json as it is in the repository. admin/CMakeLists.txt embeds the file's bytes at
 * build time (tg_admin_openapi_doc, generated), so the server reads no file at run time and serves
 * exactly what the repository holds. It is public (TG_ADM_PUBLIC): it holds nothing secret and a
 * client needs it before it has a token. tests/integration/openapi.test.mjs checks the running
 * server's answers against it, so the document cannot drift from the routes.
 */
#include "admin.h"

#include "api.h"
#include "http.h"

/* Generated from admin/openapi.json by admin/CMakeLists.txt. */
extern const unsigned char tg_admin_openapi_doc[];
extern const size_t tg_admin_openapi_doc_len;

static void openapi_get(tg_adm_ctx_t *c)
{
    /* The document changes only with the binary: clients and proxies may keep it a while. */
    tg_http_add_header(c->req, "cache-control", "public, max-age=300");
    tg_http_send_raw_json(c->req, 200, (const char *)tg_admin_openapi_doc, tg_admin_openapi_doc_len);
}

const tg_adm_route_t tg_adm_routes_openapi[] = {
    {"GET", "/admin/v1/openapi.json", TG_ADM_READ | TG_ADM_PUBLIC, openapi_get, "openapi.get"},
    {NULL, NULL, 0, NULL, NULL},
};
