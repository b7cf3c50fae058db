/*
 * batch.h - a settlement batch of fresh usage records, made ready for tollgate_settle_direct
 * (migration 0013): the per-lease sums of their charges, and the records as COPY rows of
 * usage_records with their charge keys.
 *
 * A record is a stage row (row.h): 24 tab-separated COPY text fields and a newline. This module
 * reads four of them: the tenant, created_at, the charge and the lease. It is pure (no I/O): the settlement
 * writer (gateway/src/ledger.c) calls it and sends the result.
 */
#ifndef TG_BILLING_BATCH_H
#define TG_BILLING_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/* The COPY that takes a fresh batch's rows (tg_batch_copy_row) into usage_records: the stage's
 * columns in its order (charged for the stage's charge), then charge_key. */
#define TG_BATCH_COPY_SQL                                                                                \
    "COPY usage_records (tenant_id, request_id, created_at, key_id, model, provider, byok, "             \
    "input_tokens, output_tokens, cached_tokens, estimated, price_id, price_input, price_output, "       \
    "price_cached, platform_fee, billed, cost, charged, lease_id, latency_ms, attempts, status, error, " \
    "charge_key) FROM STDIN"

/* Then, in the same transaction: the per-lease sums (tg_batch_array), the record count, the
 * leases to close. */
#define TG_BATCH_SETTLE_SQL                                                                               \
    "SELECT recorded, charged FROM tollgate_settle_direct($1, $2::bigint[], $3::bigint[], $4::bigint[], " \
    "$5::int[], $6::timestamptz[], $7::int, $8::bigint[])"

#define TG_BATCH_AT_MAX 40 /* a created_at field (gateway/src/ledger.c writes 27 characters) */

/* What a batch charges one lease: one charge entry of tollgate_settle_direct. */
typedef struct tg_batch_lease {
    int64_t tenant_id, lease_id;
    int64_t sum;                    /* the charges of its records, > 0 */
    int32_t paying;                 /* records with a charge */
    char first_at[TG_BATCH_AT_MAX]; /* the earliest paying record's created_at, as the row has it */
} tg_batch_lease_t;

/*
 * The leases the rows charge, in (tenant, lease) order (the order in which the entries lock their
 * wallets), in *out (malloc'd, the caller frees; NULL when none) and *n_out. A row with no charge
 * names no lease. TG_EINVALID_REQUEST: a row that is not a stage row (a field missing or not a
 * number, a charge with no lease); TG_ENOMEM.
 */
TG_MUST_CHECK int tg_batch_leases(char *const *rows, size_t n, tg_batch_lease_t **out, size_t *n_out);

/*
 * Orders the rows by tenant, then created_at, in place: a batch of many tenants then inserts each
 * tenant's records into usage_records' indexes one after the other, on the same leaf pages, not
 * scattered across them (rows that are not stage rows go last, in their order). 0 or TG_ENOMEM
 * (the rows as they were).
 */
TG_MUST_CHECK int tg_batch_sort(char **rows, size_t n);

/*
 * Appends one row as a COPY text row of usage_records' 25 columns (the stage's 24, then
 * charge_key): `usage_charge/<batch>/<lease>` when the row has a charge, \N when not. 0, or
 * TG_ETOO_LARGE / TG_EINVALID_REQUEST (not a stage row) with `out` as it was.
 */
TG_MUST_CHECK int tg_batch_copy_row(tg_buf_t *out, const char *row, const char *batch);

/* tollgate_settle_direct's array parameters, in their order ($2 to $6). */
typedef enum tg_batch_col {
    TG_BATCH_TENANT,
    TG_BATCH_LEASE,
    TG_BATCH_SUM,
    TG_BATCH_PAYING,
    TG_BATCH_FIRST_AT,
    TG_BATCH_COLS
} tg_batch_col_t;

/* The array literal of one of them, appended to `out`. 0 or TG_ETOO_LARGE (out as it was). */
TG_MUST_CHECK int tg_batch_array(tg_buf_t *out, const tg_batch_lease_t *l, size_t n, tg_batch_col_t col);

#endif
