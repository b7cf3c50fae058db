/*
 * http.h - response helpers shared by every handler: JSON bodies, OpenAI-shaped
 * errors, request ids, header lookup.
 */
#ifndef TG_HTTP_H
#define TG_HTTP_H

#include <jansson.h>
#include <stddef.h>

#include "h2o.h"
#include "buf.h"
#include "err.h"

#define TG_REQUEST_ID_LEN 26 /* "req_" + 22 base32 chars */
/* Retry-After of a 503 db_unavailable whose caller named none: a database job fails within
 * database.job_timeout_ms and a lost connection is retried within seconds. */
#define TG_HTTP_DB_RETRY_AFTER_S 1u

/** A fresh random request id ("req_..."). */
void tg_request_id(char out[TG_REQUEST_ID_LEN + 1]);

/** Sends `body` (len bytes, copied) with status and content-type application/json. */
void tg_http_send_raw_json(h2o_req_t *req, int status, const char *body, size_t len);
/** Sends a jansson value (borrowed). */
void tg_http_send_json(h2o_req_t *req, int status, const json_t *v);
/**
 * Sends {"error":{"message","type","code","param"}} for a TG_E* code. `message` NULL uses the
 * table's public message; `param` may be NULL. 429 and 503 carry Retry-After when retry_after_s > 0;
 * TG_EDB_UNAVAILABLE always does (TG_HTTP_DB_RETRY_AFTER_S when retry_after_s is 0).
 */
void tg_http_send_error(h2o_req_t *req, int tg_err, const char *message, const char *param,
                        unsigned retry_after_s);
/** Builds the same error object as text into out. */
TG_MUST_CHECK int tg_http_error_json(tg_buf_t *out, const char *message, const char *type, const char *code,
                                     const char *param);
/** Case-insensitive request header lookup; returns NULL when absent. */
const h2o_iovec_t *tg_http_header(h2o_req_t *req, const char *name);
/** Adds a response header (name and value copied into req->pool). */
void tg_http_add_header(h2o_req_t *req, const char *name, const char *value);

#endif
