/*
 * row.h - a usage record as one COPY text row: the settlement stage's columns (migration 0012,
 * tollgate_settle_stage_open), in its order, tab-separated, ended by a newline. The row is at
 * once the journal line (a line with all its fields and its newline was written whole), what the
 * stage's COPY reads, and, with a charge key appended (batch.h), what usage_records' COPY reads.
 *
 * Formatting runs on the call's thread for every request before its last byte leaves, so it is
 * written out by hand (no printf, no strftime per call) into the caller's buffer (no allocation).
 */
#ifndef TG_BILLING_ROW_H
#define TG_BILLING_ROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The fields, by index, in the stage's column order. */
enum {
    TG_ROW_TENANT = 0,
    TG_ROW_REQUEST_ID,
    TG_ROW_CREATED_AT,
    TG_ROW_KEY,
    TG_ROW_MODEL,
    TG_ROW_PROVIDER,
    TG_ROW_BYOK,
    TG_ROW_INPUT,
    TG_ROW_OUTPUT,
    TG_ROW_CACHED,
    TG_ROW_ESTIMATED,
    TG_ROW_PRICE_ID,
    TG_ROW_PRICE_INPUT,
    TG_ROW_PRICE_OUTPUT,
    TG_ROW_PRICE_CACHED,
    TG_ROW_PLATFORM_FEE,
    TG_ROW_BILLED,
    TG_ROW_COST,
    TG_ROW_CHARGE,
    TG_ROW_LEASE,
    TG_ROW_LATENCY_MS,
    TG_ROW_ATTEMPTS,
    TG_ROW_STATUS,
    TG_ROW_ERROR,
    TG_ROW_FIELDS /* 24 */
};

#define TG_ROW_MAX 2048 /* a row's bytes at most, newline and NUL included (names: 200 bytes each) */

typedef struct tg_usage_row {
    int64_t tenant_id;
    const char *request_id; /* [A-Za-z0-9_-]: written as is */
    int64_t created_us;     /* unix time in microseconds, written as UTC with 6 decimals */
    int64_t key_id;
    const char *model, *provider; /* escaped as COPY text, at most 200 bytes each */
    bool byok, estimated, billed;
    int64_t input, output, cached;
    int64_t price_id, price_input, price_output, price_cached, platform_fee;
    int64_t cost, charge;
    int64_t lease_id; /* 0: none (\N) */
    int64_t latency_ms, attempts, status;
    const char *error; /* an error table code ([a-z_]), NULL: none (\N) */
} tg_usage_row_t;

/* Writes the row, its newline and a NUL into out (cap bytes, TG_ROW_MAX is enough for any row);
 * returns its length without the NUL, 0 when it does not fit. */
size_t tg_usage_row_format(const tg_usage_row_t *r, char *out, size_t cap);

#endif
