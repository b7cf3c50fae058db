/*
 * prices.c - the price snapshot (prices.h): one sorted array, binary search by model then time.
 */
#include "prices.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static bool parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

static int cmp_row(const tg_price_t *a, const char *model, int64_t at)
{
    int c = strcmp(a->model, model);
    if (c != 0)
        return c;
    return a->effective_from_us < at ? -1 : a->effective_from_us > at ? 1 : 0;
}

int tg_prices_from_result(const PGresult *res, tg_prices_t **out, tg_error_t *err)
{
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 7)
        return tg_error_set(err, TG_EINTERNAL, "prices: the result is not the snapshot query's");
    size_t n = (size_t)PQntuples(res);
    if (n > TG_PRICES_MAX)
        return tg_error_set(err, TG_EINTERNAL, "prices: %zu rows, more than %d", n, TG_PRICES_MAX);
    size_t names = 0;
    for (size_t i = 0; i < n; i++)
        names += (size_t)PQgetlength(res, (int)i, 1) + 1;
    tg_prices_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return TG_ENOMEM;
    t->rows = calloc(n > 0 ? n : 1, sizeof(*t->rows));
    t->names = malloc(names > 0 ? names : 1);
    if (t->rows == NULL || t->names == NULL) {
        free(t->rows);
        free(t->names);
        free(t);
        return TG_ENOMEM;
    }
    char *w = t->names;
    for (size_t i = 0; i < n; i++) {
        int r = (int)i;
        tg_price_t *p = &t->rows[i];
        size_t len = (size_t)PQgetlength(res, r, 1);
        memcpy(w, PQgetvalue(res, r, 1), len + 1);
        p->model = w;
        w += len + 1;
        bool ok = parse_i64(PQgetvalue(res, r, 0), &p->id) &&
                  parse_i64(PQgetvalue(res, r, 2), &p->unit.input) &&
                  parse_i64(PQgetvalue(res, r, 3), &p->unit.output) &&
                  parse_i64(PQgetvalue(res, r, 4), &p->unit.cached_input) &&
                  parse_i64(PQgetvalue(res, r, 5), &p->unit.byok_fee) &&
                  parse_i64(PQgetvalue(res, r, 6), &p->effective_from_us) && tg_cost_prices_valid(&p->unit);
        /* the query sorts; a snapshot relies on it, so a row out of order is refused, not resorted */
        if (ok && i > 0 && cmp_row(&t->rows[i - 1], p->model, p->effective_from_us) >= 0)
            ok = false;
        if (!ok) {
            int64_t id = p->id;
            t->n = i + 1;
            atomic_init(&t->refcnt, 1);
            tg_prices_unref(t);
            return tg_error_set(err, TG_EINTERNAL, "prices: row %zu (id %lld) is malformed or out of order",
                                i, (long long)id);
        }
    }
    t->n = n;
    atomic_init(&t->refcnt, 1);
    *out = t;
    return 0;
}

int tg_prices_load(PGconn *db, tg_prices_t **out, tg_error_t *err)
{
    PGresult *res = PQexec(db, TG_PRICES_SQL);
    int rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = tg_error_set(err, TG_EDB_UNAVAILABLE, "prices: %s", PQresultErrorMessage(res));
    else
        rc = tg_prices_from_result(res, out, err);
    PQclear(res);
    return rc;
}

const tg_price_t *tg_prices_at(const tg_prices_t *t, const char *model, int64_t at_us)
{
    if (t == NULL || model == NULL)
        return NULL;
    /* the last row <= (model, at): the first row > (model, at), minus one */
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_row(&t->rows[mid], model, at_us) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    const tg_price_t *p = &t->rows[lo - 1];
    return strcmp(p->model, model) == 0 ? p : NULL;
}

tg_prices_t *tg_prices_ref(tg_prices_t *t)
{
    if (t != NULL)
        atomic_fetch_add(&t->refcnt, 1);
    return t;
}

void tg_prices_unref(tg_prices_t *t)
{
    if (t == NULL || atomic_fetch_sub(&t->refcnt, 1) != 1)
        return;
    free(t->rows);
    free(t->names);
    free(t);
}

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static tg_prices_t *g_current;

tg_prices_t *tg_prices_acquire(void)
{
    pthread_mutex_lock(&g_mu);
    tg_prices_t *t = tg_prices_ref(g_current);
    pthread_mutex_unlock(&g_mu);
    return t;
}

void tg_prices_publish(tg_prices_t *t)
{
    pthread_mutex_lock(&g_mu);
    tg_prices_t *old = g_current;
    g_current = t;
    pthread_mutex_unlock(&g_mu);
    tg_prices_unref(old);
}
