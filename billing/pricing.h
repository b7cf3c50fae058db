/*
 * pricing.h - price changes for the admin API and the CLI: create one with its effective time, list
 * the history, read the prices in effect. Blocking libpq on the caller's connection.
 *
 * `prices` (migration 0007) is append-only: a change is a new row with a later effective_from, never
 * an UPDATE, so the price of any past time stays known. Every insert NOTIFYs tollgate_prices and the
 * gateways reload their snapshot (prices.h). A change may take effect now or later, never earlier
 * (that would rewrite what past requests were charged: each usage record carries its own prices
 * anyway, but the history would then lie about them).
 */
#ifndef TG_BILLING_PRICING_H
#define TG_BILLING_PRICING_H

#include <libpq-fe.h>
#include <stdint.h>

#include "config.h"
#include "cost.h"
#include "err.h"

#define TG_PRICE_MAX       INT64_C(1000000000000) /* per million tokens, or a BYOK fee (the schema's bound) */
#define TG_PRICE_PAGE_MAX  1000
#define TG_PRICE_PAST_SKEW 60 /* seconds: an effective time this far in the past still counts as "now" */

typedef struct tg_price_change {
    const char *model;
    int64_t input_per_mtok, output_per_mtok, cached_input_per_mtok, byok_fee;
    int64_t effective_from_us; /* unix microseconds; 0 = now */
} tg_price_change_t;

/* Columns of a price result, in order: id, model, input_per_mtok, output_per_mtok,
 * cached_input_per_mtok, byok_fee, effective_from, created_at (RFC 3339 UTC, microseconds),
 * in_effect (t / f: the row in effect for its model now). */
enum { TG_PRICE_COLS = 9 };

/** Which field of a change is wrong, for one 400 listing them all (tg_price_check). */
typedef void (*tg_price_field_fn)(void *arg, const char *field, const char *msg);

/**
 * Checks a change against the bounds and the catalog (a model of it; NULL: shape only), calling
 * bad(arg, field, message) for each bad field. Returns how many were bad. Pure.
 */
int tg_price_check(const tg_config_t *catalog, const tg_price_change_t *in, tg_price_field_fn bad, void *arg);

/**
 * Appends the change: *res is the new row (TG_PRICE_COLS columns; PQclear it). TG_EINVALID_REQUEST
 * when the effective time is past (err->detail names effective_from) or a field is out of bounds;
 * TG_ECONFLICT when the model has a price at that very time; TG_EDB_UNAVAILABLE; TG_EINTERNAL.
 */
TG_MUST_CHECK int tg_price_create(PGconn *db, const tg_price_change_t *in, PGresult **res, tg_error_t *err);

/** The history: rows with id > after_id (model "" or NULL: every model), by id, at most limit
 *  (1 .. TG_PRICE_PAGE_MAX). */
TG_MUST_CHECK int tg_price_list(PGconn *db, const char *model, int64_t after_id, size_t limit, PGresult **res,
                                tg_error_t *err);

/** The row in effect now for each model that has one, by model. */
TG_MUST_CHECK int tg_price_current(PGconn *db, PGresult **res, tg_error_t *err);

#endif
