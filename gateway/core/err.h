/*
 * err.h - tollgate's one error table.
 *
 * Every fallible function returns 0 (or a count) on success and a negative
 * TG_E* code on failure. The table gives each code a stable number, the HTTP
 * status a client sees, the OpenAI error "type" and "code", and a public
 * message that is safe to show a tenant. Details (provider names, upstream
 * bodies, SQL) go to the log only, never into the public message.
 */
#ifndef TG_ERR_H
#define TG_ERR_H

#include <stdbool.h>

/* One row per code, read as a table (clang-format leaves it alone: its backslash column stays put
 * when a row is added).
 *  X(num, NAME, OpenAI "code", http status, OpenAI "type", public message) */
/* clang-format off */
#define TG_ERR_MAP(X)                                                                                     \
    X(-1, NOMEM, "nomem", 503, "server_error", "server is temporarily out of resources")                  \
    X(-2, INVALID_JSON, "invalid_json", 400, "invalid_request_error", "request body is not valid JSON")   \
    X(-3, INVALID_REQUEST, "invalid_request", 400, "invalid_request_error", "request is not valid")       \
    X(-4, UNAUTHENTICATED, "unauthenticated", 401, "authentication_error", "missing or invalid API key")  \
    X(-5, FORBIDDEN, "forbidden", 403, "permission_error", "API key is not allowed to do this")           \
    X(-6, MODEL_NOT_FOUND, "model_not_found", 404, "invalid_request_error", "model not found")            \
    X(-7, NOT_FOUND, "not_found", 404, "invalid_request_error", "not found")                              \
    X(-8, METHOD_NOT_ALLOWED, "method_not_allowed", 405, "invalid_request_error", "method not allowed")   \
    X(-9, TOO_LARGE, "too_large", 413, "invalid_request_error", "request exceeds the size limit")         \
    X(-10, RATE_LIMITED, "rate_limited", 429, "rate_limit_error", "rate limit exceeded")                  \
    X(-11, UPSTREAM_UNREACHABLE, "upstream_unreachable", 502, "upstream_error",                           \
      "upstream provider is unreachable")                                                                 \
    X(-12, UPSTREAM_FAILED, "upstream_failed", 502, "upstream_error", "upstream provider failed")         \
    X(-13, UPSTREAM_PROTOCOL, "upstream_protocol", 502, "upstream_error",                                 \
      "upstream response could not be understood")                                                        \
    X(-14, UPSTREAM_TIMEOUT, "upstream_timeout", 504, "timeout_error", "upstream provider timed out")     \
    X(-15, NO_TARGET, "no_target_available", 503, "service_unavailable",                                  \
      "no provider is available for this model")                                                          \
    X(-16, DB_UNAVAILABLE, "db_unavailable", 503, "service_unavailable", "database is unavailable")       \
    X(-17, SHUTTING_DOWN, "shutting_down", 503, "service_unavailable", "server is shutting down")         \
    X(-18, INTERNAL, "internal", 500, "server_error", "internal error")                                   \
    X(-19, CONFIG, "config", 500, "server_error", "configuration is not valid")                           \
    X(-20, UNSUPPORTED_PARAM, "unsupported_param", 400, "invalid_request_error",                          \
      "parameter is not supported by this provider")                                                      \
    X(-21, CONTEXT_LENGTH, "context_length_exceeded", 400, "invalid_request_error",                       \
      "input exceeds the model's context length")                                                         \
    X(-22, STREAM_BROKEN, "stream_broken", 502, "upstream_error",                                         \
      "upstream stream ended before completion")                                                          \
    X(-23, CLIENT_CLOSED, "client_closed", 499, "invalid_request_error", "client closed the request")     \
    X(-24, BODY_TOO_COMPLEX, "request_too_complex", 413, "invalid_request_error",                         \
      "request body needs more memory than its size allows")                                              \
    X(-25, MODEL_NOT_ALLOWED, "model_not_allowed", 403, "permission_error",                               \
      "this API key may not use the requested model")                                                     \
    X(-26, TENANT_SUSPENDED, "tenant_suspended", 403, "permission_error", "the tenant is suspended")      \
    X(-27, KEY_EXPIRED, "key_expired", 401, "authentication_error", "API key has expired")                \
    X(-28, ZERO_RETENTION_UNAVAILABLE, "zero_retention_unavailable", 422, "invalid_request_error",        \
      "no target of this request can serve it under zero retention")                                      \
    X(-29, BYOK_REJECTED, "byok_key_rejected", 400, "invalid_request_error",                              \
      "the provider refused the tenant's own API key")                                                    \
    X(-30, BYOK_UNUSABLE, "byok_key_unusable", 422, "invalid_request_error",                              \
      "the tenant's stored API key for this provider cannot be used; set it again")                       \
    X(-31, CONFLICT, "conflict", 409, "invalid_request_error", "the resource already exists")             \
    X(-32, INSUFFICIENT_CREDITS, "insufficient_credits", 402, "insufficient_quota",                       \
      "the wallet does not hold enough credits for this request")                                         \
    X(-33, IDEMPOTENCY_MISMATCH, "idempotency_key_reused", 422, "invalid_request_error",                  \
      "the idempotency key was already used with a different request")                                    \
    X(-34, IDEMPOTENCY_IN_PROGRESS, "idempotency_key_in_progress", 409, "invalid_request_error",          \
      "a request with this idempotency key is still being processed; retry later")                        \
    X(-35, IDEMPOTENCY_NO_REPLAY, "idempotency_key_not_replayable", 409, "invalid_request_error",         \
      "the request with this idempotency key has finished, but its answer was not stored")                \
    X(-36, PRECONDITION_FAILED, "precondition_failed", 412, "invalid_request_error",                      \
      "the resource has changed since it was read (If-Match)")                                            \
    X(-37, BUSY, "server_busy", 503, "service_unavailable", "the admin API is busy; retry later")         \
    X(-38, MODEL_NOT_PRICED, "model_not_priced", 503, "service_unavailable",                              \
      "this model has no price in effect and cannot be billed")
/* clang-format on */

typedef enum {
    TG_OK = 0,
#define TG_X(num, name, code, http, type, msg) TG_E##name = (num),
    TG_ERR_MAP(TG_X)
#undef TG_X
} tg_err_t;

/* The number of rows: the codes are exactly -1 .. -TG_ERR_COUNT, with no gap (err.c finds a code by
 * its position, and test_err.c checks the numbering). */
#define TG_X(num, name, code, http, type, msg) +1
enum { TG_ERR_COUNT = 0 TG_ERR_MAP(TG_X) };
#undef TG_X

/** "INVALID_JSON": stable, for logs and metrics. Unknown codes give "UNKNOWN". */
const char *tg_err_name(int err);
/** "invalid_json": the OpenAI error "code" field. */
const char *tg_err_code(int err);
/** Safe to send to a tenant. */
const char *tg_err_public_msg(int err);
/** OpenAI error "type" field. */
const char *tg_err_type(int err);
int tg_err_http_status(int err);
/**
 * The whole OpenAI error body of a code, {"error":{"message","type","code","param":null}}, built at
 * compile time from the table: for answers that must not allocate (out of memory, a client that
 * left). Unknown codes give INTERNAL's body.
 */
const char *tg_err_json(int err);

/** A code plus a log-only (or, when marked public, client-visible) detail. */
typedef struct tg_error {
    int code;
    char detail[256];
} tg_error_t;

/** Sets err->code and err->detail (printf-style); returns code. err may be NULL. */
int tg_error_set(tg_error_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define TG_MUST_CHECK       __attribute__((warn_unused_result))
#define TG_IGNORE_RESULT(x) ((void)!(x))

#endif
