/*
 * pricing.c - price changes, see pricing.h.
 */
#include "pricing.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define TS(p)        "(timestamptz 'epoch' + " p "::bigint * interval '1 microsecond')"
#define RFC3339(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The columns of pricing.h, from a row `p` of prices. */
#define PRICE_COLS                                                                                          \
    "p.id, p.model, p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok, p.byok_fee, " RFC3339(    \
        "p.effective_from") ", " RFC3339("p.created_at") ", p.id = (SELECT q.id FROM prices q "             \
                                                         "WHERE q.model = p.model AND q.effective_from <= " \
                                                         "now() ORDER BY q.effective_from DESC LIMIT 1)"

static int db_error(PGconn *db, const PGresult *res, const char *what, tg_error_t *err)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int code = TG_EINTERNAL;
    if (state != NULL && strcmp(state, "23505") == 0)
        return tg_error_set(err, TG_ECONFLICT, "the model already has a price from that time");
    if (state != NULL && strcmp(state, "23514") == 0)
        return tg_error_set(err, TG_EINVALID_REQUEST, "a price is out of bounds");
    if (PQstatus(db) != CONNECTION_OK || (state != NULL && strncmp(state, "08", 2) == 0))
        code = TG_EDB_UNAVAILABLE;
    return tg_error_set(err, code, "%s: %s", what, PQresultErrorMessage(res));
}

static bool in_bounds(int64_t v)
{
    return v >= 0 && v <= TG_PRICE_MAX;
}

int tg_price_check(const tg_config_t *catalog, const tg_price_change_t *in, tg_price_field_fn bad, void *arg)
{
    int n = 0;
    size_t ml = in->model != NULL ? strlen(in->model) : 0;
    if (ml == 0 || ml > 200) {
        bad(arg, "model", "model must name a model of the catalog");
        n++;
    } else if (catalog != NULL && tg_config_find_model(catalog, in->model) == NULL) {
        bad(arg, "model", "model is not a model of the catalog (GET /admin/v1/models)");
        n++;
    }
    static const char *const names[] = {"input_per_mtok", "output_per_mtok", "cached_input_per_mtok",
                                        "byok_fee"};
    const int64_t values[] = {in->input_per_mtok, in->output_per_mtok, in->cached_input_per_mtok,
                              in->byok_fee};
    for (size_t i = 0; i < 4; i++)
        if (!in_bounds(values[i])) {
            bad(arg, names[i], "must be an integer from 0 to 1000000000000 (micro-credits)");
            n++;
        }
    if (in->effective_from_us < 0) {
        bad(arg, "effective_from", "must be a time (RFC 3339)");
        n++;
    }
    return n;
}

int tg_price_create(PGconn *db, const tg_price_change_t *in, PGresult **res, tg_error_t *err)
{
    *res = NULL;
    size_t ml = in->model != NULL ? strlen(in->model) : 0;
    if (ml == 0 || ml > 200 || !in_bounds(in->input_per_mtok) || !in_bounds(in->output_per_mtok) ||
        !in_bounds(in->cached_input_per_mtok) || !in_bounds(in->byok_fee) || in->effective_from_us < 0)
        return tg_error_set(err, TG_EINVALID_REQUEST, "a field of the price is out of bounds");
    char v[5][24];
    snprintf(v[0], sizeof(v[0]), "%" PRId64, in->input_per_mtok);
    snprintf(v[1], sizeof(v[1]), "%" PRId64, in->output_per_mtok);
    snprintf(v[2], sizeof(v[2]), "%" PRId64, in->cached_input_per_mtok);
    snprintf(v[3], sizeof(v[3]), "%" PRId64, in->byok_fee);
    snprintf(v[4], sizeof(v[4]), "%" PRId64, in->effective_from_us);
    const char *params[6] = {in->model, v[0], v[1], v[2], v[3], in->effective_from_us > 0 ? v[4] : NULL};
    /* now() is the transaction's start: a change "from now" is in effect for the next request */
    PGresult *r = PQexecParams(
        db,
        "WITH t AS (SELECT COALESCE(" TS(
            "$6") ", now()) AS at), "
                  "p AS (INSERT INTO prices (model, input_per_mtok, output_per_mtok, "
                  "cached_input_per_mtok, byok_fee, effective_from) SELECT $1, $2::bigint, "
                  "$3::bigint, $4::bigint, $5::bigint, t.at FROM t "
                  "WHERE t.at >= now() - interval '60 seconds' RETURNING *) "
                  "SELECT p.id, p.model, p.input_per_mtok, p.output_per_mtok, "
                  "p.cached_input_per_mtok, p.byok_fee, " RFC3339("p.effective_from") ", " RFC3339(
                      "p.created_at") ", p.effective_from <= now() FROM p",
        6, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = db_error(db, r, "price create", err);
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return tg_error_set(err, TG_EINVALID_REQUEST,
                            "effective_from is in the past: a price change takes effect now or later");
    }
    *res = r;
    return 0;
}

int tg_price_list(PGconn *db, const char *model, int64_t after_id, size_t limit, PGresult **res,
                  tg_error_t *err)
{
    *res = NULL;
    if (limit == 0 || limit > TG_PRICE_PAGE_MAX || after_id < 0)
        return tg_error_set(err, TG_EINVALID_REQUEST, "prices: limit or cursor out of range");
    char a[24], l[16];
    snprintf(a, sizeof(a), "%" PRId64, after_id);
    snprintf(l, sizeof(l), "%zu", limit);
    const char *params[3] = {model != NULL && model[0] != '\0' ? model : NULL, a, l};
    PGresult *r = PQexecParams(db,
                               "SELECT " PRICE_COLS " FROM prices p WHERE ($1::text IS NULL OR p.model = $1) "
                               "AND p.id > $2::bigint ORDER BY p.id LIMIT $3::int",
                               3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = db_error(db, r, "price list", err);
        PQclear(r);
        return rc;
    }
    *res = r;
    return 0;
}

int tg_price_current(PGconn *db, PGresult **res, tg_error_t *err)
{
    *res = NULL;
    PGresult *r = PQexec(db, "SELECT DISTINCT ON (p.model) " PRICE_COLS " FROM prices p "
                             "WHERE p.effective_from <= now() ORDER BY p.model, p.effective_from DESC");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = db_error(db, r, "current prices", err);
        PQclear(r);
        return rc;
    }
    *res = r;
    return 0;
}
