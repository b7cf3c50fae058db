/*
 * cost.h - what a request costs, in integer micro-credits.
 *
 * The one rounding rule (the SQL function tollgate_cost of migration 0007 computes the same, in
 * numeric): the exact sum of the three products tokens x price-per-million, divided by one million
 * and rounded up once, to a whole micro-credit. Input tokens include the cached ones (OpenAI's
 * prompt_tokens); the cached part is priced at the cached rate, the rest at the input rate. A BYOK
 * request (served on the tenant's own provider key) costs the platform fee and nothing per token.
 *
 * Bounds keep every intermediate inside int64 (so no 128-bit arithmetic and no overflow): at most
 * TG_COST_MAX_TOKENS tokens per count, prices and fees at most TG_COST_MAX_PRICE. The database has
 * the same bounds as CHECKs, so a value the C code accepts is one the database accepts.
 *
 * Pure functions; thread: any.
 */
#ifndef TG_BILLING_COST_H
#define TG_BILLING_COST_H

#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define TG_COST_MAX_TOKENS INT64_C(1000000000)    /* per count, per request */
#define TG_COST_MAX_PRICE  INT64_C(1000000000000) /* micro-credits per million tokens, or per request */
#define TG_COST_PER        INT64_C(1000000)       /* prices are per million tokens */

/* Unit prices, as a row of `prices` holds them (micro-credits per million tokens; the fee per
 * BYOK request). */
typedef struct tg_unit_prices {
    int64_t input;
    int64_t output;
    int64_t cached_input;
    int64_t byok_fee;
} tg_unit_prices_t;

/* Token counts of one request. cached <= input. */
typedef struct tg_tokens {
    int64_t input; /* all prompt tokens, cached ones included */
    int64_t cached;
    int64_t output;
} tg_tokens_t;

/**
 * *out = the cost of `t` at `p` (the platform fee when byok). TG_EINVALID_REQUEST, *out untouched,
 * when a count or price is negative or past its bound, or cached > input.
 */
TG_MUST_CHECK int tg_cost_compute(const tg_unit_prices_t *p, const tg_tokens_t *t, bool byok, int64_t *out);

/** Whether every price is within bounds (a snapshot refuses a row that is not). */
bool tg_cost_prices_valid(const tg_unit_prices_t *p);

/**
 * a + b, saturated at INT64_MAX (both >= 0): sums of costs (a reservation for many requests)
 * never wrap.
 */
int64_t tg_cost_add(int64_t a, int64_t b);

#endif
