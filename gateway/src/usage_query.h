/*
 * usage_query.h - the query string of GET /v1/usage, and its page cursor (pure; unit.usage_query).
 *
 *   from, to   a time: RFC 3339 (2026-12-04T10:00:00Z, 2026-12-04T10:00:00.5+01:00) or unix
 *              seconds; `from` inclusive, `to` exclusive, from < to
 *   model      the model that served (1 to 200 bytes)
 *   cursor     the `next_cursor` of the previous page, as given
 *   limit      records per page, 1 to TG_USAGE_LIMIT_MAX (TG_USAGE_LIMIT_DEFAULT)
 * Values are percent-decoded; '+' is taken as itself (so an offset written plainly works). An
 * unknown, repeated, empty or malformed parameter is refused, naming it.
 *
 * The cursor is opaque to the client: base64url of "<created_at in unix microseconds>:<request
 * id>" of the last record of a page; the next page holds the records strictly before it in the
 * order (created_at, request_id) descending, so records landing meanwhile never shift a page.
 */
#ifndef TG_USAGE_QUERY_H
#define TG_USAGE_QUERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TG_USAGE_LIMIT_DEFAULT 20
#define TG_USAGE_LIMIT_MAX     100
#define TG_USAGE_RID_MAX       64
#define TG_USAGE_MODEL_MAX     200
#define TG_USAGE_CURSOR_MAX    128

typedef struct tg_usage_query {
    bool has_from, has_to, has_model, has_cursor;
    int64_t from_us, to_us;
    char model[TG_USAGE_MODEL_MAX + 1];
    int64_t cursor_us;
    char cursor_rid[TG_USAGE_RID_MAX + 1];
    uint32_t limit;
} tg_usage_query_t;

/** Parses the query string (without '?'; NULL or empty: every default). 0, or TG_EINVALID_REQUEST
 *  with param naming the parameter and msg saying what is wrong. */
int tg_usage_query_parse(const char *qs, size_t len, tg_usage_query_t *out, char *param, size_t param_cap,
                         char *msg, size_t msg_cap);

/** A time as RFC 3339 or unix seconds, into unix microseconds. 0, or -1. */
int tg_usage_time_parse(const char *s, size_t len, int64_t *us);

/** The cursor after the record (us, request_id): written into out (TG_USAGE_CURSOR_MAX + 1). */
void tg_usage_cursor_make(int64_t us, const char *request_id, char *out);
/** 0, or -1 for anything that tg_usage_cursor_make did not make. */
int tg_usage_cursor_parse(const char *s, size_t len, int64_t *us, char rid[TG_USAGE_RID_MAX + 1]);

#endif
