/*
 * reply.c - the admin API's answers: JSON bodies with an ETag, and OpenAI-shaped errors from the
 * one error table (err.h) that list every bad field (api.h, "replies").
 */
#include <string.h>

#include "api.h"
#include "http.h"

void tg_adm_reply_json(h2o_req_t *req, int status, const json_t *body, const char *etag)
{
    if (etag != NULL && etag[0] != '\0')
        tg_http_add_header(req, "etag", etag);
    if (body == NULL) {
        req->res.status = status;
        req->res.reason = status == 204 ? "No Content" : "OK";
        h2o_send_inline(req, "", 0);
        return;
    }
    tg_http_send_json(req, status, body);
}

void tg_adm_reply_error(h2o_req_t *req, int code, const char *message, const char *param)
{
    /* a 503 of the admin API always says when to come back */
    unsigned retry = tg_err_http_status(code) == 503 ? 1u : 0u;
    tg_http_send_error(req, code, message, param, retry);
}

void tg_adm_reply_mgmt_err(h2o_req_t *req, const tg_mgmt_err_t *err)
{
    int code = err->code < 0 ? err->code : TG_EINTERNAL;
    /* 5xx: the table's words only (a database failure's text stays in the log) */
    bool server = tg_err_http_status(code) >= 500;
    const char *msg = !server && err->msg[0] != '\0' ? err->msg : tg_err_public_msg(code);
    if (err->n_fields == 0 || server) {
        tg_adm_reply_error(req, code, msg, NULL);
        return;
    }
    json_t *fields = json_array();
    for (size_t i = 0; i < err->n_fields; i++)
        json_array_append_new(
            fields, json_pack("{s:s,s:s}", "field", err->fields[i].field, "message", err->fields[i].msg));
    json_t *body = json_pack("{s:{s:s,s:s,s:s,s:s,s:o}}", "error", "message", msg, "type", tg_err_type(code),
                             "code", tg_err_code(code), "param", err->fields[0].field, "fields", fields);
    if (body == NULL) { /* a field text jansson refused: the table's words */
        tg_adm_reply_error(req, code, NULL, NULL);
        return;
    }
    tg_http_send_json(req, tg_err_http_status(code), body);
    json_decref(body);
}
