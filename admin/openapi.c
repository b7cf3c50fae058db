/*
 * openapi.c - GET /admin/v1/openapi.json: the OpenAPI 3.1 document of the data plane and the admin
 * API, admin/openapi.json as it is in the repository. admin/CMakeLists.txt embeds the file's bytes at
 * build time (tg_admin_openapi_doc, generated), so the server needs no file at run time and serves
 * exactly what the repository holds; tests/integration/openapi.test.mjs checks the running server's
 * answers against it, so the document cannot drift from the routes.
 */
#include "admin.h"

#include "http.h"

/* Generated from admin/openapi.json by admin/CMakeLists.txt. */
extern const unsigned char tg_admin_openapi_doc[];
extern const size_t tg_admin_openapi_doc_len;

void tg_admin_openapi(h2o_req_t *req)
{
    /* The document changes only with the binary: let clients and proxies keep it. */
    tg_http_add_header(req, "cache-control", "public, max-age=300");
    tg_http_send_raw_json(req, 200, (const char *)tg_admin_openapi_doc, tg_admin_openapi_doc_len);
}
