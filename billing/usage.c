/*
 * usage.c - usage records, their CSV form and the daily summary, see usage.h.
 *
 * Every optional filter is a parameter that is NULL when unused ("$n IS NULL OR ..."): PostgreSQL
 * plans an unnamed statement with its actual parameters, so an unused filter folds away and the
 * keyset stays an index range on (tenant_id, created_at, request_id). Times cross as unix
 * microseconds and are turned into timestamptz by interval arithmetic, exact to the microsecond
 * (to_timestamp takes a double).
 */
#include "usage.h"

#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"

#define TS(p) "(timestamptz 'epoch' + " p "::bigint * interval '1 microsecond')"

#define RECORDS_SQL                                                                                       \
    "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "                \
    "(extract(epoch FROM created_at) * 1000000)::bigint, request_id, key_id, model, provider, byok, "     \
    "status, COALESCE(error, ''), input_tokens, output_tokens, cached_tokens, estimated, cost, charged, " \
    "latency_ms, attempts FROM usage_records WHERE tenant_id = $1::bigint "                               \
    "AND ($2::bigint IS NULL OR created_at >= " TS(                                                       \
        "$2") ") "                                                                                        \
              "AND ($3::bigint IS NULL OR created_at < " TS(                                              \
                  "$3") ") "                                                                              \
                        "AND ($4::bigint IS NULL OR key_id = $4::bigint) "                                \
                        "AND ($5::text IS NULL OR model = $5::text) "                                     \
                        "AND ($6::text IS NULL OR provider = $6::text) "                                  \
                        "AND ($7::smallint IS NULL OR status = $7::smallint) "                            \
                        "AND ($8::bigint IS NULL OR (created_at, request_id) > (" TS(                     \
                            "$8") ", $9::text)) "                                                         \
                                  "ORDER BY created_at, request_id LIMIT $10::int"

#define SUMMARY_SQL                                                                                 \
    "SELECT day::text, model, requests, errors, input_tokens, output_tokens, cached_tokens, cost, " \
    "charged FROM usage_daily WHERE tenant_id = $1::bigint "                                        \
    "AND ($2::date IS NULL OR day >= $2::date) AND ($3::date IS NULL OR day <= $3::date) "          \
    "AND ($4::text IS NULL OR model = $4::text) "                                                   \
    "AND ($5::date IS NULL OR (day, model) > ($5::date, $6::text)) "                                \
    "ORDER BY day, model LIMIT $7::int"

/* A failed statement: a lost connection is TG_EDB_UNAVAILABLE, anything else TG_EINTERNAL; the
 * server's text goes to the detail (logs only: it may quote a parameter). */
static int db_error(PGconn *db, const PGresult *res, const char *what, tg_error_t *err)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int code = TG_EINTERNAL;
    if (PQstatus(db) != CONNECTION_OK || (state != NULL && strncmp(state, "08", 2) == 0))
        code = TG_EDB_UNAVAILABLE;
    else if (state != NULL && strcmp(state, "57014") == 0) /* statement_timeout */
        code = TG_EDB_UNAVAILABLE;
    return tg_error_set(err, code, "%s: %s", what, PQresultErrorMessage(res));
}

int tg_usage_records(PGconn *db, const tg_usage_filter_t *f, const tg_usage_pos_t *after, size_t limit,
                     PGresult **res, tg_error_t *err)
{
    *res = NULL;
    if (limit == 0 || limit > TG_USAGE_BATCH_MAX || f->tenant_id <= 0 || f->since_us < 0 || f->until_us < 0 ||
        f->key_id < 0 || f->status < 0 || f->status > 999)
        return tg_error_set(err, TG_EINVALID_REQUEST, "usage: a filter is out of range");
    char t[24], since[24], until[24], key[24], status[8], at[24], lim[16];
    snprintf(t, sizeof(t), "%" PRId64, f->tenant_id);
    snprintf(since, sizeof(since), "%" PRId64, f->since_us);
    snprintf(until, sizeof(until), "%" PRId64, f->until_us);
    snprintf(key, sizeof(key), "%" PRId64, f->key_id);
    snprintf(status, sizeof(status), "%d", f->status);
    snprintf(lim, sizeof(lim), "%zu", limit);
    bool pos = after != NULL && after->set;
    if (pos)
        snprintf(at, sizeof(at), "%" PRId64, after->at_us);
    const char *params[10] = {t,
                              f->since_us > 0 ? since : NULL,
                              f->until_us > 0 ? until : NULL,
                              f->key_id > 0 ? key : NULL,
                              f->model[0] != '\0' ? f->model : NULL,
                              f->provider[0] != '\0' ? f->provider : NULL,
                              f->status > 0 ? status : NULL,
                              pos ? at : NULL,
                              pos ? after->request_id : NULL,
                              lim};
    PGresult *r = PQexecParams(db, RECORDS_SQL, 10, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != TG_USAGE_COLS) {
        int rc = db_error(db, r, "usage records", err);
        PQclear(r);
        return rc;
    }
    *res = r;
    return 0;
}

void tg_usage_pos_of(const PGresult *res, int row, tg_usage_pos_t *pos)
{
    pos->set = true;
    pos->at_us = strtoll(PQgetvalue(res, row, TG_USAGE_COL_AT_US), NULL, 10);
    snprintf(pos->request_id, sizeof(pos->request_id), "%s", PQgetvalue(res, row, TG_USAGE_COL_REQUEST));
}

int tg_usage_cursor_encode(const tg_usage_pos_t *pos, char *out, size_t cap)
{
    char raw[24 + 1 + TG_USAGE_REQUEST_ID_MAX + 1];
    int n = snprintf(raw, sizeof(raw), "%" PRId64 ".%s", pos->at_us, pos->request_id);
    if (n <= 0 || (size_t)n >= sizeof(raw) ||
        sodium_base64_ENCODED_LEN((size_t)n, sodium_base64_VARIANT_URLSAFE_NO_PADDING) > cap)
        return -1;
    sodium_bin2base64(out, cap, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return 0;
}

int tg_usage_cursor_decode(const char *s, tg_usage_pos_t *pos)
{
    unsigned char raw[24 + 1 + TG_USAGE_REQUEST_ID_MAX + 1];
    size_t n = 0;
    if (s == NULL || strlen(s) >= TG_USAGE_CURSOR_MAX ||
        sodium_base642bin(raw, sizeof(raw) - 1, s, strlen(s), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return -1;
    raw[n] = '\0';
    char *dot = memchr(raw, '.', n);
    if (dot == NULL || dot == (char *)raw)
        return -1;
    *dot = '\0';
    char *end;
    errno = 0;
    long long at = strtoll((char *)raw, &end, 10);
    const char *id = dot + 1;
    size_t idn = strlen(id);
    if (errno != 0 || *end != '\0' || at < 0 || idn == 0 || idn > TG_USAGE_REQUEST_ID_MAX ||
        idn != n - (size_t)(dot + 1 - (char *)raw))
        return -1;
    for (size_t i = 0; i < idn; i++)
        if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e)
            return -1;
    pos->set = true;
    pos->at_us = (int64_t)at;
    memcpy(pos->request_id, id, idn + 1);
    return 0;
}

static const char *const CSV_COLUMNS[TG_USAGE_COLS] = {
    "created_at", NULL,     "request_id", "key_id",       "model",         "provider",
    "byok",       "status", "error",      "input_tokens", "output_tokens", "cached_tokens",
    "estimated",  "cost",   "charged",    "latency_ms",   "attempts",
};

int tg_usage_csv_header(tg_buf_t *b)
{
    int rc = 0;
    bool first = true;
    for (int i = 0; i < TG_USAGE_COLS; i++) {
        if (CSV_COLUMNS[i] == NULL)
            continue;
        if (!first)
            rc |= tg_csv_sep(b);
        first = false;
        rc |= tg_buf_append_str(b, CSV_COLUMNS[i]);
    }
    rc |= tg_csv_end(b);
    return rc != 0 ? TG_ETOO_LARGE : 0;
}

/* Which columns are text (escaped and guarded); the others are numbers or booleans the database
 * printed, written as they are. */
static bool text_column(int col)
{
    return col == TG_USAGE_COL_AT || col == TG_USAGE_COL_REQUEST || col == TG_USAGE_COL_MODEL ||
           col == TG_USAGE_COL_PROVIDER || col == TG_USAGE_COL_ERROR;
}

int tg_usage_csv_rows(const PGresult *res, tg_buf_t *b)
{
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        size_t start = b->len;
        int rc = 0;
        bool first = true;
        for (int col = 0; col < TG_USAGE_COLS && rc == 0; col++) {
            if (CSV_COLUMNS[col] == NULL)
                continue;
            if (!first)
                rc |= tg_csv_sep(b);
            first = false;
            const char *v = PQgetvalue(res, r, col);
            size_t n = (size_t)PQgetlength(res, r, col);
            if (col == TG_USAGE_COL_BYOK || col == TG_USAGE_COL_ESTIMATED)
                rc |= tg_buf_append_str(b, v[0] == 't' ? "true" : "false");
            else if (text_column(col))
                rc |= tg_csv_text(b, v, n);
            else
                rc |= tg_buf_append(b, v, n); /* digits, or "" for NULL */
        }
        rc |= tg_csv_end(b);
        if (rc != 0) { /* whole records only */
            b->len = start;
            if (b->data != NULL)
                b->data[start] = '\0';
            return TG_ETOO_LARGE;
        }
    }
    return 0;
}

bool tg_usage_valid_day(const char *s)
{
    if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > days[m - 1])
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return !(m == 2 && d == 29 && !leap);
}

int tg_usage_summary(PGconn *db, const tg_usage_summary_filter_t *f, const char *after_day,
                     const char *after_model, size_t limit, PGresult **res, tg_error_t *err)
{
    *res = NULL;
    bool after = after_day != NULL && after_day[0] != '\0';
    if (limit == 0 || limit > TG_USAGE_SUMMARY_MAX || f->tenant_id <= 0 ||
        (f->from_day[0] != '\0' && !tg_usage_valid_day(f->from_day)) ||
        (f->to_day[0] != '\0' && !tg_usage_valid_day(f->to_day)) || (after && !tg_usage_valid_day(after_day)))
        return tg_error_set(err, TG_EINVALID_REQUEST, "usage summary: a filter is out of range");
    char t[24], lim[16];
    snprintf(t, sizeof(t), "%" PRId64, f->tenant_id);
    snprintf(lim, sizeof(lim), "%zu", limit);
    const char *params[7] = {t,
                             f->from_day[0] != '\0' ? f->from_day : NULL,
                             f->to_day[0] != '\0' ? f->to_day : NULL,
                             f->model[0] != '\0' ? f->model : NULL,
                             after ? after_day : NULL,
                             after ? (after_model != NULL ? after_model : "") : NULL,
                             lim};
    PGresult *r = PQexecParams(db, SUMMARY_SQL, 7, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != TG_SUMMARY_COLS) {
        int rc = db_error(db, r, "usage summary", err);
        PQclear(r);
        return rc;
    }
    *res = r;
    return 0;
}
