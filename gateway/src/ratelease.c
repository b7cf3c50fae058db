/*
 * ratelease.c - the rate limits' windows in PostgreSQL, see ratelease.h.
 *
 * The lease grants each dimension in one expression evaluated against the row as it was (an
 * UPDATE's SET sees the old row), so the grant column says what this statement added:
 *
 *   grant = leased + need <= max ? LEAST(leased + want, max) - leased : 0
 *
 * A dimension the caller does not ask for has need = want = 0 and is granted nothing. A limit
 * lowered below what is already leased grants nothing until the next window.
 */
#include "ratelease.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

#define GRANT(col, want, need, max)                                                                \
    "CASE WHEN w." col " + " need " <= " max " THEN LEAST(w." col " + " want ", " max ") - w." col \
    " ELSE 0 END"

/* $1 scope, $2 id, $3 window start, $4 window ms, $5/$6/$7 requests want/need/max, $8/$9/$10
 * tokens want/need/max. */
static const char LEASE_SQL[] =
    "INSERT INTO rate_windows AS w (scope, scope_id, window_start, window_ms, window_end, requests, tokens, "
    "requests_granted, tokens_granted) "
    "SELECT $1::text, $2::bigint, $3::bigint, $4::integer, $3::bigint + $4::integer, g.r, g.t, g.r, g.t FROM "
    "(SELECT CASE WHEN $6::bigint <= $7::bigint THEN LEAST($5::bigint, $7::bigint) ELSE 0 END AS r, "
    "CASE WHEN $9::bigint <= $10::bigint THEN LEAST($8::bigint, $10::bigint) ELSE 0 END AS t) g "
    "ON CONFLICT (scope, scope_id, window_start, window_ms) DO UPDATE SET "
    "requests_granted = " GRANT("requests", "$5", "$6",
                                "$7") ", "
                                      "requests = w.requests + " GRANT(
                                          "requests", "$5", "$6",
                                          "$7") ", "
                                                "tokens_granted = " GRANT(
                                                    "tokens", "$8", "$9",
                                                    "$10") ", "
                                                           "tokens = w.tokens + " GRANT(
                                                               "tokens", "$8", "$9",
                                                               "$10") ", seq = w.seq + 1 "
                                                                      "RETURNING seq, requests_granted, "
                                                                      "requests, tokens_granted, tokens";

static const char GIVE_BACK_SQL[] =
    "UPDATE rate_windows SET tokens = GREATEST(tokens - $5::bigint, 0), seq = seq + 1 WHERE scope = $1::text "
    "AND scope_id = $2::bigint AND window_start = $3::bigint AND window_ms = $4::integer "
    "RETURNING seq, 0, requests, 0, tokens";

static const char SWEEP_SQL[] = "DELETE FROM rate_windows WHERE window_end < $1::bigint";

static const char *scope_name(tg_rl_kind_t k)
{
    return k == TG_RL_KEY ? "key" : "tenant";
}

typedef char num_t[24];

static const char *num(num_t out, uint64_t v)
{
    snprintf(out, sizeof(num_t), "%" PRIu64, v);
    return out;
}

/* The scope, id, window start and window length: the row's key. */
static void key_params(const tg_rl_charge_t *ch, num_t id, num_t start, num_t ms, const char *p[4])
{
    snprintf(id, sizeof(num_t), "%" PRId64, ch->id);
    p[0] = scope_name(ch->kind);
    p[1] = id;
    p[2] = num(start, ch->window * ch->window_ms);
    p[3] = num(ms, ch->window_ms);
}

int tg_ratelease_send(tg_pgpool_t *pg, const tg_rl_charge_t *ch, const tg_rl_lease_t *lease, tg_pg_cb cb,
                      void *arg)
{
    if (pg == NULL)
        return TG_EDB_UNAVAILABLE;
    num_t id, start, ms, v[6];
    const char *p[10];
    key_params(ch, id, start, ms, p);
    for (int d = 0; d < TG_RL_DIMS; d++) {
        uint64_t max =
            ch->lim.max[d] != 0 && ch->lim.max[d] < TG_RL_LIMIT_MAX ? ch->lim.max[d] : TG_RL_LIMIT_MAX;
        p[4 + 3 * d] = num(v[3 * d], lease->want[d]);
        p[5 + 3 * d] = num(v[3 * d + 1], lease->need[d]);
        p[6 + 3 * d] = num(v[3 * d + 2], max);
    }
    return tg_pgpool_query(pg, LEASE_SQL, 10, p, cb, arg);
}

static uint64_t col_u64(const PGresult *res, int col)
{
    long long v = strtoll(PQgetvalue(res, 0, col), NULL, 10);
    return v > 0 ? (uint64_t)v : 0;
}

int tg_ratelease_parse(const PGresult *res, tg_rl_answer_t *a)
{
    if (res == NULL || PQntuples(res) != 1 || PQnfields(res) != 5)
        return TG_EINTERNAL;
    a->seq = col_u64(res, 0);
    a->granted[TG_RL_REQUESTS] = col_u64(res, 1);
    a->total[TG_RL_REQUESTS] = col_u64(res, 2);
    a->granted[TG_RL_TOKENS] = col_u64(res, 3);
    a->total[TG_RL_TOKENS] = col_u64(res, 4);
    return 0;
}

static void on_swept(void *arg, const PGresult *res, const char *errmsg)
{
    (void)arg;
    if (res == NULL)
        TG_LOG(TG_LOG_DEBUG, "rate_window_sweep_failed", TG_KV_STR("error", errmsg != NULL ? errmsg : "-"));
}

int tg_ratelease_give_back(tg_pgpool_t *pg, const tg_rl_charge_t *ch, uint64_t tokens, tg_pg_cb cb, void *arg)
{
    if (pg == NULL)
        return TG_EDB_UNAVAILABLE;
    num_t id, start, ms, n;
    const char *p[5];
    key_params(ch, id, start, ms, p);
    p[4] = num(n, tokens);
    return tg_pgpool_query(pg, GIVE_BACK_SQL, 5, p, cb, arg);
}

void tg_ratelease_sweep(tg_pgpool_t *pg, uint64_t now_ms)
{
    if (pg == NULL || now_ms < TG_RATELEASE_KEEP_MS)
        return;
    num_t cut;
    const char *p[1] = {num(cut, now_ms - TG_RATELEASE_KEEP_MS)};
    TG_IGNORE_RESULT(tg_pgpool_query(pg, SWEEP_SQL, 1, p, on_swept, NULL));
}
