/*
 * manage_db.h - the database helpers tenants.c, keys.c and policies.c share (manage_db.c):
 * transactions, database errors worded without the database's own text, tenant resolution and
 * column readers. Not a public header: the admin API and the CLI include manage.h only.
 */
#ifndef TG_MANAGE_DB_H
#define TG_MANAGE_DB_H

#include <libpq-fe.h>

#include "manage.h"

/** BEGIN; 0 or a TG_E* code with err set. */
int tg_mgmt_begin(PGconn *db, tg_mgmt_err_t *err);
/** COMMIT; 0 or a TG_E* code (the transaction is then gone). */
int tg_mgmt_commit(PGconn *db, tg_mgmt_err_t *err);
/** ROLLBACK, its failure ignored (the connection may be gone: the server rolls back then). */
void tg_mgmt_rollback(PGconn *db);
/**
 * Runs one parameterised statement (text parameters). Returns its result (PQclear it) when it
 * succeeded, else NULL with *rc a TG_E* code and err set: "what" names the statement in err->msg,
 * never its parameters or the server's message (which may quote them).
 */
PGresult *tg_mgmt_exec(PGconn *db, const char *sql, int n, const char *const *params, const char *what,
                       int *rc, tg_mgmt_err_t *err);
/** The tenant's id (inside the caller's transaction, the row locked FOR UPDATE when lock):
 *  0, TG_ENOT_FOUND or a database error. */
int tg_mgmt_tenant_id(PGconn *db, tg_tenant_ref_t t, bool lock, int64_t *id, tg_mgmt_err_t *err);

/** Opens a new tenant's wallet with its trial credits (billing/wallet.h), inside the caller's
 *  transaction: 0 or a TG_E* code with err set. */
int tg_mgmt_wallet_open(PGconn *db, int64_t tenant_id, int64_t trial_credits, tg_mgmt_err_t *err);

int64_t tg_mgmt_col_i64(const PGresult *r, int row, int col); /* NULL -> 0 */
bool tg_mgmt_col_bool(const PGresult *r, int row, int col);
/** Copies a text column, cut on a UTF-8 boundary to fit cap. */
void tg_mgmt_col_text(const PGresult *r, int row, int col, char *dst, size_t cap);
/** A text[] column as a '\n'-terminated list (auth.h's form); *has false for NULL. */
void tg_mgmt_col_list(const PGresult *r, int row, int col, bool *has, char *dst, size_t cap);

#define TG_MGMT_I64_STR 24 /* "-9223372036854775808" and a NUL */

/* A keyset page (tenants, keys): rows with id > after, at most limit of them. */
typedef struct tg_mgmt_page {
    size_t limit;                /* the effective limit (0 asked: TG_MGMT_LIST_DEFAULT) */
    char after[TG_MGMT_I64_STR]; /* the SQL parameters: after_id as text */
    char fetch[TG_MGMT_I64_STR]; /* and limit + 1: one more row says whether a next page exists */
} tg_mgmt_page_t;

/** Checks after_id (>= 0; `what` says what it is, e.g. "a key id") and limit (<= TG_MGMT_LIST_MAX)
 *  as field errors in err, and fills pg. */
void tg_mgmt_page_init(tg_mgmt_page_t *pg, int64_t after_id, size_t limit, const char *what,
                       tg_mgmt_err_t *err);
/** The rows of a page's result: an array of *shown elements of `size` bytes (at least one
 *  allocated), *shown at most pg->limit, *more when the result had one row past it. NULL: out of
 *  memory. */
void *tg_mgmt_page_rows(const tg_mgmt_page_t *pg, const PGresult *r, size_t size, size_t *shown, bool *more);

#endif
