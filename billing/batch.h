/*
 * batch.h - a settlement batch of fresh usage records, made ready for tollgate_settle_direct
 * (migration 0013): the per-lease sums of their charges, the per-(tenant, day, model) rollup rows
 * (migration 0014), and the records as COPY rows of usage_records with their charge keys.
 *
 * A record is a stage row (row.h): 24 tab-separated COPY text fields and a newline. This module
 * reads what the charge entries and the rollup need (tenant, created_at, model, tokens, cost,
 * charge, lease, status), each row once. It is pure (no I/O): the settlement writer
 * (gateway/src/ledger.c) calls it and sends the result.
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

/* One rollup row (usage_daily): what a batch adds for a tenant, a UTC day and a model. */
typedef struct tg_batch_day {
    int64_t tenant_id;
    char day[11];      /* YYYY-MM-DD, the first ten characters of the records' created_at */
    const char *model; /* as the rows have it (COPY text), model_len bytes: points into a row */
    size_t model_len;
    int64_t requests, errors; /* errors: records with a status of 400 or more */
    int64_t input, output, cached, cost, charged;
} tg_batch_day_t;

/* A fresh batch made ready: what tollgate_settle_direct and the rollup stage are sent. */
typedef struct tg_batch {
    tg_batch_lease_t *leases; /* the leases the records charge, in (tenant, lease) order (the order
                               * in which their entries lock wallets); a record with no charge
                               * names no lease */
    size_t n_leases;
    tg_batch_day_t *days; /* the rollup rows, in the order first seen */
    size_t n_days;
} tg_batch_t;

/*
 * Reads every row once and fills *b (tg_batch_dispose frees it); reorders the rows in place so
 * that each tenant's are side by side (tenants in the order first seen, a tenant's rows in their
 * order): the COPY then inserts a tenant's records into usage_records' indexes one after the
 * other, on the same leaf pages, not scattered across them. The days point into the rows.
 * TG_EINVALID_REQUEST: a row that is not a whole stage row as this process writes it (a field
 * missing or not a number, a charge with no lease, a created_at not in UTC "YYYY-MM-DDTHH:MM:SS...Z"
 * form), or sums that overflow; TG_ENOMEM. On failure *b is empty and the rows' order unspecified
 * (the writer then sends the batch through the stage, which reads none of this).
 */
TG_MUST_CHECK int tg_batch_prepare(tg_batch_t *b, char **rows, size_t n);
void tg_batch_dispose(tg_batch_t *b);

/* The COPY that takes tg_batch_day_row's rows: the session's rollup stage (migration 0014), folded
 * into usage_daily by tollgate_settle_direct. */
#define TG_BATCH_ROLLUP_COPY_SQL "COPY pg_temp.tollgate_rollup_stage FROM STDIN"

/* A fresh batch's transaction starts by saying that it keeps usage_daily itself (migration 0014:
 * usage_records' guard refuses an insert otherwise). */
#define TG_BATCH_BEGIN_SQL "BEGIN; SET LOCAL tollgate.usage_rollup = 'caller'"

/* Appends one rollup row as a COPY text row of the rollup stage. 0 or TG_ETOO_LARGE (out as it
 * was). */
TG_MUST_CHECK int tg_batch_day_row(tg_buf_t *out, const tg_batch_day_t *d);

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
