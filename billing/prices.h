/*
 * prices.h - the price table snapshot: which price was in effect for a model at a time.
 *
 * Loaded whole from `prices` (migration 0007) into one immutable, refcounted snapshot; a change
 * (every insert NOTIFYs `tollgate_prices`) builds a new snapshot and swaps the process-wide pointer,
 * as the config does. A request looks its price up once, at RESERVE, in the snapshot it holds, and
 * carries that price (its id and values) to its usage record, so a price change mid-request never
 * changes what the request is charged.
 *
 * Rows are never updated in place (a change is a new row with a later effective_from), so a
 * snapshot answers for any past time too.
 */
#ifndef TG_BILLING_PRICES_H
#define TG_BILLING_PRICES_H

#include <libpq-fe.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cost.h"
#include "err.h"

#define TG_PRICES_MAX 100000 /* rows a snapshot takes; more is refused (the table is small) */

/* The query a snapshot is built from (blocking or through the async pool alike): columns id,
 * model, input, output, cached input, byok fee, effective_from as Unix microseconds. */
#define TG_PRICES_SQL                                                                      \
    "SELECT id, model, input_per_mtok, output_per_mtok, cached_input_per_mtok, byok_fee, " \
    "(extract(epoch FROM effective_from) * 1000000)::bigint FROM prices ORDER BY model, effective_from"

typedef struct tg_price {
    int64_t id;
    const char *model;
    int64_t effective_from_us; /* Unix microseconds */
    tg_unit_prices_t unit;
} tg_price_t;

typedef struct tg_prices {
    _Atomic long refcnt;
    size_t n;
    tg_price_t *rows; /* sorted by (model, effective_from) */
    char *names;      /* the model names the rows point into */
} tg_prices_t;

/**
 * Builds a snapshot from the result of TG_PRICES_SQL. *out has refcnt 1. TG_EINTERNAL with the reason
 * in `err` for a result of another shape, or a row out of bounds; TG_ENOMEM.
 */
TG_MUST_CHECK int tg_prices_from_result(const PGresult *res, tg_prices_t **out, tg_error_t *err);
/** Blocking: runs TG_PRICES_SQL on `db` (a CLI or loader thread, never a worker loop). */
TG_MUST_CHECK int tg_prices_load(PGconn *db, tg_prices_t **out, tg_error_t *err);

/** The price in effect for `model` at `at_us` (Unix microseconds), or NULL when there is none. */
const tg_price_t *tg_prices_at(const tg_prices_t *t, const char *model, int64_t at_us);

tg_prices_t *tg_prices_ref(tg_prices_t *t);
/** Drops a reference; the last one frees. NULL-safe. */
void tg_prices_unref(tg_prices_t *t);

/* The process-wide current snapshot (NULL until the first load). Thread: any. */
tg_prices_t *tg_prices_acquire(void);   /* a new reference, or NULL */
void tg_prices_publish(tg_prices_t *t); /* takes over the caller's reference */

#endif
