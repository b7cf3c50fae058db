/*
 * api.h - the admin API framework: routes, principals, JSON bodies and their validation, replies
 * from the one error table, cursor pages, ETags, and jobs that run blocking libpq on an admin
 * thread and answer on the request's loop. Every resource file (tenants_api.c, keys_api.c, ...)
 * is written against this header only; admin/README.md walks through it with an example.
 *
 * Flow of a request: router.c matches the method and path against every resource's route table
 * (404 for an unknown path or a segment of the wrong shape, 405 with Allow for a known path),
 * authenticates the bearer token (authn.c: 401), checks the route's access against the principal's
 * role (403 for a write by an auditor or an operator-only route; 404 for another tenant's
 * resource), then calls the route's handler on the worker's loop with a tg_adm_ctx_t. A handler
 * parses and validates its input (tg_adm_body, tg_adm_check), then either answers at once or
 * hands a work function to tg_adm_run, which runs it on an admin thread with that thread's own
 * blocking PGconn and sends its tg_adm_result_t back on the loop.
 */
#ifndef TG_ADMIN_API_H
#define TG_ADMIN_API_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "h2o.h"
#include "manage.h"

/* ---------------------------------------------------------------- principals (authn.c, token.c) */

typedef enum {
    TG_ROLE_NONE = 0,
    TG_ROLE_OPERATOR,     /* everything */
    TG_ROLE_TENANT_ADMIN, /* its own tenant's resources only (the `tenant` claim) */
    TG_ROLE_AUDITOR,      /* reads only: 403 on writes */
} tg_role_t;

#define TG_ADM_ACTOR_MAX 128

typedef struct tg_adm_principal {
    tg_role_t role;
    int64_t tenant_id;                /* TG_ROLE_TENANT_ADMIN: its tenant; else 0 */
    char actor[TG_ADM_ACTOR_MAX + 1]; /* the token's `sub`: the audit log's actor */
} tg_adm_principal_t;

const char *tg_role_name(tg_role_t r);
/** "operator", "tenant_admin", "auditor" -> the role; TG_ROLE_NONE for anything else. */
tg_role_t tg_role_parse(const char *s);

/* ---------------------------------------------------------------- routes (route.c, router.c) */

/* Access flags of a route. */
#define TG_ADM_READ     0x01u /* a read: every role may call it (within its tenant) */
#define TG_ADM_WRITE    0x02u /* a write: operator and tenant_admin; an auditor gets 403 */
#define TG_ADM_OPERATOR 0x04u /* operator only (auditor too when TG_ADM_READ): tenant_admin 403 */
#define TG_ADM_TENANT                                                                           \
    0x08u                   /* the path's {id} is a tenant id: a tenant_admin of another tenant \
                               gets 404 not_found, exactly as for a tenant that does not exist */
#define TG_ADM_PUBLIC 0x10u /* no token needed (the OpenAPI document) */

#define TG_ADM_PARAMS_MAX   4
#define TG_ADM_PARAM_MAX    64 /* bytes of a non-id path segment */
#define TG_ADM_SEGMENTS_MAX 12

typedef struct tg_adm_ctx tg_adm_ctx_t;
typedef void (*tg_adm_handler_fn)(tg_adm_ctx_t *c);

/*
 * One route. `pattern` is a path whose `{name}` segments are parameters: a name ending in "id"
 * (`{id}`, `{key_id}`) takes a positive decimal integer of at most 18 digits; any other name
 * (`{provider}`) takes 1..64 bytes of [A-Za-z0-9._-]. A segment of another shape does not match:
 * 404, never a 5xx. Tables end with an entry whose method is NULL.
 */
typedef struct tg_adm_route {
    const char *method; /* "GET" (HEAD too), "POST", "PUT", "PATCH", "DELETE" */
    const char *pattern;
    unsigned access;
    tg_adm_handler_fn fn;
    const char *name; /* "tenants.create": logs, the route list of the tests */
} tg_adm_route_t;

typedef struct tg_adm_param {
    char name[24];
    char value[TG_ADM_PARAM_MAX + 1];
    int64_t id; /* the value as an integer for `...id` parameters, else 0 */
} tg_adm_param_t;

/** Matches a path (no query) against a pattern: true and params filled when it matches. Pure. */
bool tg_adm_match(const char *pattern, const char *path, size_t len, tg_adm_param_t *params,
                  size_t *n_params);

/* ---------------------------------------------------------------- the request */

struct tg_adm_ctx {
    h2o_req_t *req;
    const tg_adm_route_t *route;
    tg_adm_principal_t who;
    size_t n_params;
    tg_adm_param_t params[TG_ADM_PARAMS_MAX];
};

/** A path parameter's text; NULL when the route has none of that name. */
const char *tg_adm_param(const tg_adm_ctx_t *c, const char *name);
/** A `...id` path parameter's value (0 when absent). */
int64_t tg_adm_param_id(const tg_adm_ctx_t *c, const char *name);

/* ---------------------------------------------------------------- bodies and validation (body.c) */

#define TG_ADM_BODY_MAX  (64u * 1024u) /* bytes of a request body */
#define TG_ADM_DEPTH_MAX 8             /* nesting of a request body */

/** The kinds of a field spec. */
typedef enum {
    TG_ADM_STR = 1, /* a string of min..max bytes, valid UTF-8, no control character */
    TG_ADM_INT,     /* an integer in min..max */
    TG_ADM_BOOL,
    TG_ADM_STR_LIST, /* an array of at most max strings (each 1..64 bytes, no control character) */
} tg_adm_kind_t;

typedef struct tg_adm_field {
    const char *name;
    tg_adm_kind_t kind;
    bool required;
    bool nullable; /* null is allowed (it means "clear" to the handler) */
    int64_t min, max;
} tg_adm_field_t;

/**
 * Parses the request body as one JSON object: 413 too_large over TG_ADM_BODY_MAX, 400 invalid_json
 * for malformed JSON, invalid UTF-8, a NUL (\u0000), duplicate keys or nesting over
 * TG_ADM_DEPTH_MAX, 400 invalid_request when it is not an object. An empty body is {} when
 * `empty_ok`. On failure it has answered the request and returns NULL; else the caller owns the
 * object.
 */
json_t *tg_adm_body(tg_adm_ctx_t *c, bool empty_ok);

/** The prelude of a write route that runs a job: its body parsed (tg_adm_body), a zeroed job
 *  argument of `size` bytes, err reset. NULL when it has answered (the body's error, or 500 out of
 *  memory), with nothing left to free; else the argument, and *body the caller's to decref. */
void *tg_adm_job_arg(tg_adm_ctx_t *c, bool empty_ok, size_t size, json_t **body, tg_mgmt_err_t *err);

/** For a write route that takes no fields: true when the body is empty or {}; else it has answered
 *  (tg_adm_body's errors, or 400 naming each member as unknown) and nothing may be done. */
bool tg_adm_body_none(tg_adm_ctx_t *c);

/**
 * Checks `obj` against fields[0..n): every unknown member, every missing required one and every
 * value of the wrong type or out of bounds is one field error in err (all of them, not the first).
 * Returns true when none was added. Handlers add their own checks to the same err, then answer
 * them all at once with tg_adm_reply_mgmt_err.
 */
bool tg_adm_check(const json_t *obj, const tg_adm_field_t *fields, size_t n, tg_mgmt_err_t *err);

/* ---------------------------------------------------------------- replies (reply.c) */

/**
 * An OpenAI-shaped error from the one table: {"error":{"message","type","code","param",
 * "fields":[{"field","message"}]}}; `fields` only when err has some (param is then the first).
 */
void tg_adm_reply_mgmt_err(h2o_req_t *req, const tg_mgmt_err_t *err);
/** Same for a tg_error_t (billing/wallet.h, credentials.h): the table's message unless public. */
void tg_adm_reply_error(h2o_req_t *req, int code, const char *message, const char *param);
/** Sends a JSON value (borrowed) with status and, when etag is non-empty, an ETag header. */
void tg_adm_reply_json(h2o_req_t *req, int status, const json_t *body, const char *etag);

/* ---------------------------------------------------------------- pages (page.c) */

#define TG_ADM_LIMIT_DEFAULT 100
#define TG_ADM_LIMIT_MAX     1000

typedef struct tg_adm_page {
    size_t limit;     /* 1..TG_ADM_LIMIT_MAX (default TG_ADM_LIMIT_DEFAULT) */
    int64_t after_id; /* from `cursor`: keyset pagination on an id; 0 = first page */
} tg_adm_page_t;

/**
 * Reads `limit` and `cursor` from the query string; a bad one is one field error each in err
 * ("limit must be an integer from 1 to 1000", "cursor is not valid"). Returns true when both are
 * fine. The cursor is opaque to clients (base64url of the last id of the previous page).
 */
bool tg_adm_page_parse(h2o_req_t *req, tg_adm_page_t *page, tg_mgmt_err_t *err);
/** {"data": data, "next_cursor": <cursor of next_after> | null (next_after 0)}; takes data. */
json_t *tg_adm_page_body(json_t *data, int64_t next_after);
/** The opaque cursor of an id (base64url); out holds at least 40 bytes. */
void tg_adm_cursor_of(int64_t id, char *out, size_t cap);
/** Decodes a cursor of tg_adm_cursor_of; 0 or -1. */
int tg_adm_cursor_id(const char *s, int64_t *id);

/* ---------------------------------------------------------------- ETags (page.c) */

#define TG_ADM_ETAG_LEN 36 /* "\"" + 32 hex + "\"" + NUL, rounded */

/** A strong ETag of a resource's JSON representation (sorted keys): "\"<32 hex>\"". */
void tg_adm_etag(const json_t *repr, char out[TG_ADM_ETAG_LEN]);
/** True when the If-Match value (NULL: header absent) allows a resource whose ETag is etag:
 *  absent, "*", or a list naming it. A mismatch is 412 precondition_failed. */
bool tg_adm_if_match(const char *if_match, const char *etag);

/* ---------------------------------------------------------------- jobs (jobs.c) */

/** What a work function gets: a copy of the request's context (the request itself may be gone). */
typedef struct tg_adm_call {
    tg_adm_principal_t who;
    size_t n_params;
    tg_adm_param_t params[TG_ADM_PARAMS_MAX];
    const char *route;  /* the route's name */
    char if_match[256]; /* the If-Match header ("" absent) */
    bool has_if_match;
    tg_config_t *cfg; /* the config snapshot of the submission (catalog, pepper, keyring) */
    void *arg;        /* the handler's argument */
} tg_adm_call_t;

/** What a work function answers: a JSON body and status, or an error (err.code != 0). */
typedef struct tg_adm_result {
    int status;   /* 200, 201, 204 */
    json_t *body; /* owned; NULL for 204 */
    char etag[TG_ADM_ETAG_LEN];
    tg_mgmt_err_t err;      /* err.code < 0: the answer is this error (fields listed) */
    unsigned retry_after_s; /* with a 503 */
} tg_adm_result_t;

/** Runs on an admin thread with its own blocking connection (never NULL: a job whose connection
 *  cannot be made is answered 503 db_unavailable without calling it). */
typedef void (*tg_adm_work_fn)(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out);

/**
 * Queues work(arg) for an admin thread and answers the request with its result on the request's
 * loop. Returns 0 when queued (arg is then the job's: free_arg(arg) runs after the answer, or when
 * the client left); otherwise it has answered the request (503 server_busy with Retry-After when
 * the queue is full, 503 db_unavailable without a database) and freed arg.
 * A job not started within admin_auth.job_timeout_ms is answered 503 server_busy unrun; a
 * running job's statements are bounded by the time left (statement_timeout). If the client has
 * gone when the result comes back, the result is dropped (the work was done: a write commits).
 */
int tg_adm_run(tg_adm_ctx_t *c, tg_adm_work_fn work, void *arg, void (*free_arg)(void *));

/** A list route: its `limit` and `cursor` (tg_adm_page_parse) into a tg_adm_page_t that becomes
 *  the job's argument of work; a bad one is answered 400 naming it, no memory 500. */
void tg_adm_run_page(tg_adm_ctx_t *c, tg_adm_work_fn work);

/** Stops the admin threads after the jobs in flight (the server calls it once its workers stopped). */
void tg_adm_jobs_stop(void);

/** Helpers for work functions: a field error or an error with a message, into out->err. */
void tg_adm_fail(tg_adm_result_t *out, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** Copies a tg_error_t (billing, credentials) into out->err, the detail shown only when public. */
void tg_adm_fail_error(tg_adm_result_t *out, const tg_error_t *e, bool detail_public);

/* ---------------------------------------------------------------- transactions and audit (audit.c) */

/** BEGIN / COMMIT / ROLLBACK on a job's connection. A management function called in between runs
 *  under a savepoint (manage_db.c): the change and its audit row commit together or not at all. */
int tg_adm_tx_begin(PGconn *db, tg_mgmt_err_t *err);
int tg_adm_tx_commit(PGconn *db, tg_mgmt_err_t *err);
void tg_adm_tx_rollback(PGconn *db);

/**
 * Appends one row to admin_audit in the caller's transaction: the actor and role from the call,
 * `action` ("tenants.create"), the resource ("tenant", its id as text, its tenant), before and
 * after (may be NULL; borrowed) as JSON. The caller must have left every secret out of them
 * (keys, api_key values, hashes): the audit is read by auditors.
 */
int tg_adm_audit(PGconn *db, const tg_adm_call_t *call, const char *action, const char *resource,
                 const char *resource_id, int64_t tenant_id, const json_t *before, const json_t *after,
                 tg_mgmt_err_t *err);

#endif
