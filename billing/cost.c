/*
 * cost.c - tokens x prices in integers (cost.h has the rule).
 *
 * price = q * 10^6 + r with 0 <= r < 10^6, so tokens * price / 10^6 = tokens * q + tokens * r / 10^6.
 * The whole parts (tokens * q <= 10^9 * 10^6) are exact integers; only the three remainders'
 * products (each < 10^9 * 10^6) are summed and divided, rounding up once. The result equals
 * ceil(sum(tokens * price) / 10^6) exactly, which is what the SQL computes in numeric.
 */
#include "cost.h"

static bool in_range(int64_t v, int64_t max)
{
    return v >= 0 && v <= max;
}

bool tg_cost_prices_valid(const tg_unit_prices_t *p)
{
    return in_range(p->input, TG_COST_MAX_PRICE) && in_range(p->output, TG_COST_MAX_PRICE) &&
           in_range(p->cached_input, TG_COST_MAX_PRICE) && in_range(p->byok_fee, TG_COST_MAX_PRICE);
}

int tg_cost_compute(const tg_unit_prices_t *p, const tg_tokens_t *t, bool byok, int64_t *out)
{
    if (!tg_cost_prices_valid(p) || !in_range(t->input, TG_COST_MAX_TOKENS) ||
        !in_range(t->output, TG_COST_MAX_TOKENS) || !in_range(t->cached, t->input))
        return TG_EINVALID_REQUEST;
    if (byok) {
        *out = p->byok_fee;
        return 0;
    }
    const int64_t counts[3] = {t->input - t->cached, t->cached, t->output};
    const int64_t prices[3] = {p->input, p->cached_input, p->output};
    int64_t whole = 0, rest = 0;
    for (int i = 0; i < 3; i++) {
        whole += counts[i] * (prices[i] / TG_COST_PER); /* <= 10^15 each */
        rest += counts[i] * (prices[i] % TG_COST_PER);  /* < 10^15 each */
    }
    *out = whole + rest / TG_COST_PER + (rest % TG_COST_PER != 0);
    return 0;
}

int64_t tg_cost_add(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}
