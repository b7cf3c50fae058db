/*
 * usage.h - a tenant's usage for the admin API and the CLI: records filtered and paged, their CSV
 * form, and the daily summary from the rollup. Blocking libpq on the caller's connection (an admin
 * thread, never a worker loop).
 *
 * Records are read oldest first with a keyset on (created_at, request_id), the order of the index
 * usage_records_tenant_time_idx (migration 0007): a page, or one batch of an export, costs one
 * index range scan whatever its depth, and nothing is held between batches. An export fixes its
 * upper time bound when it starts (tg_usage_filter_t.until_us), so records that land meanwhile do
 * not stretch it.
 */
#ifndef TG_BILLING_USAGE_H
#define TG_BILLING_USAGE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

#define TG_USAGE_LIMIT_MAX      1000 /* records per page */
#define TG_USAGE_BATCH_MAX      5000 /* records per export batch */
#define TG_USAGE_NAME_MAX       200  /* a model or provider filter (the schema's bound) */
#define TG_USAGE_REQUEST_ID_MAX 64
#define TG_USAGE_CURSOR_MAX     128  /* bytes of an encoded cursor, NUL included */
#define TG_USAGE_SUMMARY_MAX    1000 /* (day, model) rows per summary page */

/** Which records: every bound is optional (0 or "" = none). Times are unix microseconds, `since`
 *  inclusive and `until` exclusive; status is the HTTP status the client got. */
typedef struct tg_usage_filter {
    int64_t tenant_id;
    int64_t since_us, until_us;
    int64_t key_id;
    char model[TG_USAGE_NAME_MAX + 1];
    char provider[TG_USAGE_NAME_MAX + 1];
    int status;
} tg_usage_filter_t;

/** A position in the (created_at, request_id) order: records after it come next. */
typedef struct tg_usage_pos {
    bool set;
    int64_t at_us;
    char request_id[TG_USAGE_REQUEST_ID_MAX + 1];
} tg_usage_pos_t;

/* Columns of a records result, in order (tg_usage_records). */
enum {
    TG_USAGE_COL_AT = 0,  /* RFC 3339 UTC with microseconds */
    TG_USAGE_COL_AT_US,   /* unix microseconds (the cursor) */
    TG_USAGE_COL_REQUEST, /* request id */
    TG_USAGE_COL_KEY,     /* key id, "" when none */
    TG_USAGE_COL_MODEL,
    TG_USAGE_COL_PROVIDER,
    TG_USAGE_COL_BYOK, /* t / f */
    TG_USAGE_COL_STATUS,
    TG_USAGE_COL_ERROR, /* "" when none */
    TG_USAGE_COL_INPUT,
    TG_USAGE_COL_OUTPUT,
    TG_USAGE_COL_CACHED,
    TG_USAGE_COL_ESTIMATED, /* t / f */
    TG_USAGE_COL_COST,
    TG_USAGE_COL_CHARGED,
    TG_USAGE_COL_LATENCY,  /* "" when unknown */
    TG_USAGE_COL_ATTEMPTS, /* "" when unknown */
    TG_USAGE_COLS
};

/**
 * Reads at most `limit` (1 .. TG_USAGE_BATCH_MAX) records matching f after `after` (NULL or unset:
 * from the start). *res is the result (PQclear it): TG_USAGE_COLS columns as above. TG_EINVALID_REQUEST
 * for a bound out of range; TG_EDB_UNAVAILABLE; TG_EINTERNAL.
 */
TG_MUST_CHECK int tg_usage_records(PGconn *db, const tg_usage_filter_t *f, const tg_usage_pos_t *after,
                                   size_t limit, PGresult **res, tg_error_t *err);
/** The position of row `row` of a records result (for the next page or batch). */
void tg_usage_pos_of(const PGresult *res, int row, tg_usage_pos_t *pos);

/** The opaque cursor of a position: base64url of "<at µs>.<request id>". */
TG_MUST_CHECK int tg_usage_cursor_encode(const tg_usage_pos_t *pos, char *out, size_t cap);
/** Decodes a cursor; -1 when it is not one this module made. */
TG_MUST_CHECK int tg_usage_cursor_decode(const char *s, tg_usage_pos_t *pos);

/** The CSV header record of an export (the columns' names, CRLF). */
TG_MUST_CHECK int tg_usage_csv_header(tg_buf_t *b);
/** Appends every row of a records result as CSV records (csv.h: quoted, formula-guarded). */
TG_MUST_CHECK int tg_usage_csv_rows(const PGresult *res, tg_buf_t *b);

/** The summary's filter: UTC days "YYYY-MM-DD" inclusive ("" = open), and a model ("" = all). */
typedef struct tg_usage_summary_filter {
    int64_t tenant_id;
    char from_day[11], to_day[11];
    char model[TG_USAGE_NAME_MAX + 1];
} tg_usage_summary_filter_t;

/* Columns of a summary result: day, model, requests, errors, input, output, cached tokens, cost,
 * charged (usage_daily, migration 0007). */
enum { TG_SUMMARY_COLS = 9 };

/**
 * The rollup's rows matching f, by (day, model), after (after_day, after_model) when after_day is
 * not "", at most limit (1 .. TG_USAGE_SUMMARY_MAX). *res as above.
 */
TG_MUST_CHECK int tg_usage_summary(PGconn *db, const tg_usage_summary_filter_t *f, const char *after_day,
                                   const char *after_model, size_t limit, PGresult **res, tg_error_t *err);

/** Whether s is a UTC day "YYYY-MM-DD" that exists. Pure. */
bool tg_usage_valid_day(const char *s);

#endif
