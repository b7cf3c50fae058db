/*
 * manage.h - tenant, key and policy management: the functions the admin API will call and the
 * CLI (`tollgate tenants|keys|policy ...`, gateway/src/cli_*.c) calls now.
 *
 * Every function:
 *   - runs blocking libpq on the connection the caller gives (the CLI before any worker exists;
 *     the admin API on a thread off the loop), inside one transaction of its own: it commits
 *     or changes nothing;
 *   - validates its whole input first and reports every bad field, not only the first
 *     (tg_mgmt_err_t.fields: what an admin API turns into one 400 listing them);
 *   - returns 0 or a negative TG_E* code (err.h): TG_EINVALID_REQUEST (fields listed),
 *     TG_ENOT_FOUND (no such tenant or key), TG_ECONFLICT (a tenant name taken),
 *     TG_EDB_UNAVAILABLE (the connection is gone), TG_EINTERNAL (any other database error);
 *     err->msg says it in a sentence without a secret or a database message;
 *   - returns structured rows and never prints or logs anything, a secret least of all: a new
 *     key comes back once in tg_key_secret_t, which the caller wipes (tg_key_secret_wipe).
 *
 * The triggers of migrations/0003_tenants.sql NOTIFY every gateway of each committed change, so
 * it reaches every worker of every instance within a second (gateway/src/keywatch.c).
 *
 * Model names: a function given a catalog (the caller's config snapshot) refuses names that are
 * not models of it (a chain's name too: a chain is allowed when every model it can reach is,
 * docs/CONVENTIONS.md, "Tenants and keys"); with catalog NULL only their shape is checked. The
 * CLI passes the config it loaded; the admin API will pass its snapshot.
 */
#ifndef TG_MANAGE_H
#define TG_MANAGE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "config.h"

#define TG_MGMT_FIELDS_MAX     16
#define TG_MGMT_LIST_DEFAULT   100
#define TG_MGMT_LIST_MAX       1000
#define TG_MGMT_NAME_MAX       63  /* a tenant name: what a principal keeps (auth.h) */
#define TG_MGMT_LABEL_MAX      200 /* a key's label */
#define TG_MGMT_MODEL_NAME_MAX 64
#define TG_MGMT_MODELS_MAX     32  /* names per allowed list (the schema's bound) */
#define TG_MGMT_MODELS_BYTES   480 /* their bytes joined by spaces (the schema's bound) */
/* Rotation: the old key keeps working this long unless told otherwise; at most 30 days. */
#define TG_MGMT_GRACE_DEFAULT_MS (24 * 3600 * 1000LL)
#define TG_MGMT_GRACE_MAX_MS     (30 * 24 * 3600 * 1000LL)

typedef struct tg_mgmt_field_err {
    char field[32]; /* "name", "models[2]", "max_tokens" */
    char msg[160];
} tg_mgmt_field_err_t;

typedef struct tg_mgmt_err {
    int code;      /* what the function returned */
    char msg[256]; /* one sentence, safe to show to the caller */
    size_t n_fields;
    tg_mgmt_field_err_t fields[TG_MGMT_FIELDS_MAX];
} tg_mgmt_err_t;

/** Starts err afresh (code 0, no fields). */
void tg_mgmt_err_reset(tg_mgmt_err_t *err);
/** Sets err->code and err->msg (printf-style); returns code. */
int tg_mgmt_fail(tg_mgmt_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/** Adds a field error (kept up to TG_MGMT_FIELDS_MAX) and sets code TG_EINVALID_REQUEST. */
void tg_mgmt_field(tg_mgmt_err_t *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** A tenant named by id (wins when > 0) or by name. */
typedef struct tg_tenant_ref {
    int64_t id;
    const char *name;
} tg_tenant_ref_t;

/** Timestamps are unix milliseconds; 0 = none. */
typedef struct tg_tenant {
    int64_t id;
    char name[TG_MGMT_NAME_MAX + 1];
    bool zero_retention;
    bool suspended;
    int64_t created_ms, updated_ms;
} tg_tenant_t;

typedef struct tg_tenant_page {
    tg_tenant_t *rows; /* n of them, ordered by id; tg_tenant_page_free */
    size_t n;
    int64_t next_after; /* the cursor of the next page (after_id), 0 when this was the last */
} tg_tenant_page_t;

/* ---- tenants.c ---- */

/** Creates the tenant with its wallet and `trial_credits` (the config's billing.trial_credits), in one
 *  transaction. */
int tg_tenant_create(PGconn *db, const char *name, bool zero_retention, int64_t trial_credits,
                     tg_tenant_t *out, tg_mgmt_err_t *err);
/** Suspends (every key answers 403) or resumes a tenant. Idempotent. */
int tg_tenant_set_suspended(PGconn *db, tg_tenant_ref_t t, bool suspended, tg_tenant_t *out,
                            tg_mgmt_err_t *err);
int tg_tenant_get(PGconn *db, tg_tenant_ref_t t, tg_tenant_t *out, tg_mgmt_err_t *err);
/** Tenants with id > after_id, oldest first; limit 0 = TG_MGMT_LIST_DEFAULT, at most TG_MGMT_LIST_MAX. */
int tg_tenant_list(PGconn *db, int64_t after_id, size_t limit, tg_tenant_page_t *out, tg_mgmt_err_t *err);
void tg_tenant_page_free(tg_tenant_page_t *p);

/* ---- keys.c ---- */

/** A list of model names as given (NULL names with set true: an empty list, which allows nothing). */
typedef struct tg_models_arg {
    bool set;
    const char *const *names;
    size_t n;
} tg_models_arg_t;

typedef struct tg_key_new {
    tg_tenant_ref_t tenant;
    bool create_tenant;      /* create the tenant (by name) when missing: `keys create`'s old contract */
    int64_t trial_credits;   /* create_tenant: the new tenant's trial credits (billing.trial_credits) */
    const char *label;       /* NULL: none */
    int64_t expires_unix_ms; /* 0: never; else in the future */
    tg_models_arg_t models;  /* api_keys.allowed_models; unset: whatever the policy allows */
} tg_key_new_t;

/** A new key, shown once. */
typedef struct tg_key_secret {
    int64_t id, tenant_id;
    char prefix[11];
    char key[TG_API_KEY_LEN + 1];
    int64_t expires_ms;
    int64_t rotated_from;   /* rotate: the old key's id */
    int64_t old_expires_ms; /* rotate: when the old key stops working */
} tg_key_secret_t;

void tg_key_secret_wipe(tg_key_secret_t *s);

/** A key as listed: never its secret or hash. Timestamps unix ms, 0 = none. */
typedef struct tg_key_row {
    int64_t id, tenant_id;
    char prefix[11];
    char label[TG_MGMT_LABEL_MAX + 1];
    int64_t created_ms, expires_ms, revoked_ms, last_used_ms, rotated_from;
    bool has_models;
    char models[TG_POLICY_MODELS_MAX]; /* '\n'-terminated names (auth.h) */
} tg_key_row_t;

typedef struct tg_key_page {
    tg_key_row_t *rows;
    size_t n;
    int64_t next_after;
} tg_key_page_t;

int tg_key_create(PGconn *db, const uint8_t pepper[32], const tg_config_t *catalog, const tg_key_new_t *in,
                  tg_key_secret_t *out, tg_mgmt_err_t *err);
/** Revokes key_id (of tenant t when t names one). Idempotent: an already revoked key keeps its time. */
int tg_key_revoke(PGconn *db, tg_tenant_ref_t t, int64_t key_id, tg_key_row_t *out, tg_mgmt_err_t *err);
/**
 * A new key for the same tenant, label, expiry, allowed models and per-key policy; the old one
 * (rotated_from of the new) stops grace_ms from now (grace_ms < 0: TG_MGMT_GRACE_DEFAULT_MS; an
 * earlier expiry it had stays). A revoked or expired key cannot be rotated.
 */
int tg_key_rotate(PGconn *db, const uint8_t pepper[32], tg_tenant_ref_t t, int64_t key_id, int64_t grace_ms,
                  tg_key_secret_t *out, tg_mgmt_err_t *err);
/** The tenant's keys with id > after_id (revoked ones only when asked), oldest first. */
int tg_key_list(PGconn *db, tg_tenant_ref_t t, bool include_revoked, int64_t after_id, size_t limit,
                tg_key_page_t *out, tg_mgmt_err_t *err);
void tg_key_page_free(tg_key_page_t *p);

/* ---- policies.c ---- */

/** What to do with one field of a policy row: leave it, set it, or clear it back to "inherit". */
typedef enum { TG_FIELD_KEEP = 0, TG_FIELD_SET, TG_FIELD_CLEAR } tg_field_op_t;

typedef struct tg_num_field {
    tg_field_op_t op;
    int64_t value; /* > 0 */
} tg_num_field_t;

typedef struct tg_bool_field {
    tg_field_op_t op;
    bool value;
} tg_bool_field_t;

/**
 * A change to the tenant's policy row (key_id 0) or to one key's override row. A key's row takes
 * allowed models, max_tokens, key_rpm and key_tpm only (rpm, tpm, byok_fallback and zero_retention
 * are the tenant's). zero_retention is tenants.zero_retention (clear = false).
 */
typedef struct tg_policy_update {
    tg_tenant_ref_t tenant;
    int64_t key_id;
    tg_field_op_t models_op;
    tg_models_arg_t models;
    tg_num_field_t max_tokens, rpm, tpm, key_rpm, key_tpm;
    tg_bool_field_t byok_fallback, zero_retention;
} tg_policy_update_t;

/** A policy row after the change: 0 / has_models false / byok_fallback -1 = inherit (NULL). */
typedef struct tg_policy_row {
    int64_t tenant_id, key_id;
    bool has_models;
    char models[TG_POLICY_MODELS_MAX];
    int64_t max_tokens, rpm, tpm, key_rpm, key_tpm;
    int byok_fallback;
    bool zero_retention; /* the tenant's */
} tg_policy_row_t;

int tg_policy_set(PGconn *db, const tg_config_t *catalog, const tg_policy_update_t *u, tg_policy_row_t *out,
                  tg_mgmt_err_t *err);

/* ---- errors and validation (pure; manage.c), exposed for the admin API and tests ---- */

/** A tenant reference names something (field "tenant"): an id, or a valid name. */
bool tg_mgmt_check_ref(tg_tenant_ref_t t, tg_mgmt_err_t *err);
/** A tenant name: 1..TG_MGMT_NAME_MAX bytes of valid UTF-8, no control character. */
bool tg_mgmt_check_name(const char *name, const char *field, tg_mgmt_err_t *err);
/** A label: 1..TG_MGMT_LABEL_MAX bytes, no control character. */
bool tg_mgmt_check_label(const char *label, const char *field, tg_mgmt_err_t *err);
/** Every name of an allowed list: shape, no repeat, the schema's bounds, and (catalog given) a
 *  configured model. One field error per bad entry ("models[2]"). */
bool tg_mgmt_check_models(const tg_config_t *catalog, const tg_models_arg_t *m, const char *field,
                          tg_mgmt_err_t *err);
/** The whole input of tg_key_create at time now_ms. */
bool tg_mgmt_check_key_new(const tg_config_t *catalog, const tg_key_new_t *in, int64_t now_ms,
                           tg_mgmt_err_t *err);
/** The whole input of tg_policy_set. */
bool tg_mgmt_check_policy(const tg_config_t *catalog, const tg_policy_update_t *u, tg_mgmt_err_t *err);
/** A PostgreSQL text[] literal of the names ({"a","b"}); false when it does not fit cap. */
bool tg_mgmt_models_literal(const tg_models_arg_t *m, char *out, size_t cap);

#endif
