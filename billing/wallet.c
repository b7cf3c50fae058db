/*
 * wallet.c - wallet calls for the admin API and the CLI (wallet.h), over migration 0007's functions.
 */
#include "wallet.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
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

/* A failed statement: a missing tenant or wallet is TG_ENOT_FOUND (the foreign key, or the ledger
 * trigger's "no wallet", both foreign_key_violation); a lost connection TG_EDB_UNAVAILABLE; anything
 * else TG_EINTERNAL. The SQL error goes to the detail (log only), never to a client. */
static int db_error(PGconn *db, const PGresult *res, const char *what, tg_error_t *err)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int code = TG_EINTERNAL;
    if (state != NULL && strcmp(state, "23503") == 0)
        code = TG_ENOT_FOUND;
    else if (PQstatus(db) != CONNECTION_OK || (state != NULL && strncmp(state, "08", 2) == 0))
        code = TG_EDB_UNAVAILABLE;
    return tg_error_set(err, code, "%s: %s", what, PQresultErrorMessage(res));
}

static bool valid_key(const char *k)
{
    size_t n = k != NULL ? strlen(k) : 0;
    if (n == 0 || n > TG_WALLET_KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e)
            return false;
    return true;
}

int tg_wallet_open(PGconn *db, int64_t tenant_id, int64_t trial_credits, int64_t *balance, tg_error_t *err)
{
    if (trial_credits < 0 || trial_credits > TG_WALLET_MAX_AMOUNT)
        return tg_error_set(err, TG_EINVALID_REQUEST, "wallet open: trial credits out of bounds");
    char t[24], c[24];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    snprintf(c, sizeof(c), "%" PRId64, trial_credits);
    const char *params[2] = {t, c};
    PGresult *res = PQexecParams(db, "SELECT tollgate_wallet_open($1::bigint, $2::bigint)", 2, NULL, params,
                                 NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = db_error(db, res, "wallet open", err);
    else if (balance != NULL && !parse_i64(PQgetvalue(res, 0, 0), balance))
        rc = tg_error_set(err, TG_EINTERNAL, "wallet open: unreadable balance");
    PQclear(res);
    return rc;
}

int tg_wallet_top_up(PGconn *db, int64_t tenant_id, int64_t amount, const char *key, const char *note,
                     tg_ledger_entry_t *out, tg_error_t *err)
{
    if (amount <= 0 || amount > TG_WALLET_MAX_AMOUNT)
        return tg_error_set(err, TG_EINVALID_REQUEST, "top-up: amount must be 1 to %" PRId64,
                            TG_WALLET_MAX_AMOUNT);
    if (!valid_key(key))
        return tg_error_set(err, TG_EINVALID_REQUEST, "top-up: the key must be 1 to %d printable bytes",
                            TG_WALLET_KEY_MAX);
    if (note != NULL && strlen(note) > 500)
        return tg_error_set(err, TG_EINVALID_REQUEST, "top-up: the note is longer than 500 bytes");
    char t[24], a[24];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    snprintf(a, sizeof(a), "%" PRId64, amount);
    const char *params[4] = {t, a, key, note};
    PGresult *res =
        PQexecParams(db,
                     "SELECT outcome, entry_id, amount, balance_after, "
                     "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
                     "FROM tollgate_top_up($1::bigint, $2::bigint, $3, $4)",
                     4, NULL, params, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = db_error(db, res, "top-up", err);
    } else if (PQntuples(res) != 1) {
        rc = tg_error_set(err, TG_EINTERNAL, "top-up: %d rows", PQntuples(res));
    } else {
        tg_ledger_entry_t e = {0};
        const char *outcome = PQgetvalue(res, 0, 0);
        bool ok = parse_i64(PQgetvalue(res, 0, 1), &e.id) && parse_i64(PQgetvalue(res, 0, 2), &e.amount) &&
                  parse_i64(PQgetvalue(res, 0, 3), &e.balance_after);
        snprintf(e.created_at, sizeof(e.created_at), "%s", PQgetvalue(res, 0, 4));
        if (!ok)
            rc = tg_error_set(err, TG_EINTERNAL, "top-up: unreadable entry");
        else if (strcmp(outcome, "created") == 0)
            rc = 0;
        else if (strcmp(outcome, "replayed") == 0)
            rc = 1;
        else
            rc = tg_error_set(err, TG_EIDEMPOTENCY_MISMATCH,
                              "top-up: key already used for %" PRId64 " (entry %" PRId64 "), not %" PRId64,
                              e.amount, e.id, amount);
        if (ok && out != NULL)
            *out = e;
    }
    PQclear(res);
    return rc;
}

int tg_wallet_read(PGconn *db, int64_t tenant_id, tg_wallet_t *out, tg_error_t *err)
{
    char t[24];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    const char *params[1] = {t};
    PGresult *res =
        PQexecParams(db, "SELECT balance, reserved, spent FROM wallets WHERE tenant_id = $1::bigint", 1, NULL,
                     params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = db_error(db, res, "wallet read", err);
    } else if (PQntuples(res) == 0) {
        rc = tg_error_set(err, TG_ENOT_FOUND, "tenant %" PRId64 " has no wallet", tenant_id);
    } else {
        tg_wallet_t w = {.tenant_id = tenant_id};
        if (!parse_i64(PQgetvalue(res, 0, 0), &w.balance) || !parse_i64(PQgetvalue(res, 0, 1), &w.reserved) ||
            !parse_i64(PQgetvalue(res, 0, 2), &w.spent))
            rc = tg_error_set(err, TG_EINTERNAL, "wallet read: unreadable row");
        else
            *out = w;
    }
    PQclear(res);
    return rc;
}

int tg_wallet_ledger(PGconn *db, int64_t tenant_id, int64_t after_seq, size_t limit, PGresult **res,
                     tg_error_t *err)
{
    *res = NULL;
    if (limit == 0 || limit > TG_LEDGER_PAGE_MAX || after_seq < 0)
        return tg_error_set(err, TG_EINVALID_REQUEST, "ledger: limit or cursor out of range");
    char t[24], a[24], l[16];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    snprintf(a, sizeof(a), "%" PRId64, after_seq);
    snprintf(l, sizeof(l), "%zu", limit);
    const char *params[3] = {t, a, l};
    /* the wallet row first (a missing wallet is a 404), then the page: one statement */
    PGresult *r = PQexecParams(
        db,
        "SELECT e.id, e.seq, e.kind, e.amount, e.hold, e.balance_after, e.reserved_after, e.lease_id, "
        "e.requests, COALESCE(e.note, ''), "
        "to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), w.tenant_id "
        "FROM wallets w LEFT JOIN LATERAL (SELECT * FROM ledger_entries x WHERE x.tenant_id = w.tenant_id "
        "AND x.seq > $2::bigint ORDER BY x.seq LIMIT $3::int) e ON true WHERE w.tenant_id = $1::bigint "
        "ORDER BY e.seq",
        3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = db_error(db, r, "ledger", err);
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        return tg_error_set(err, TG_ENOT_FOUND, "tenant %" PRId64 " has no wallet", tenant_id);
    }
    *res = r;
    return 0;
}

int tg_wallet_ledger_count(const PGresult *res)
{
    int n = PQntuples(res);
    return n == 1 && PQgetisnull(res, 0, 0) ? 0 : n;
}
