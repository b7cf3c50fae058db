/*
 * wallet.h - a tenant's wallet for the admin API and the CLI: open it (with the trial credits),
 * top it up, read it. Blocking libpq calls on a connection the caller owns: never on a worker loop.
 *
 * Each function is one SQL statement calling a function of migration 0007, so each is one
 * transaction, and every change is a ledger entry (the wallet row moves only with its entries).
 * Amounts are integer micro-credits. Credits never expire.
 */
#ifndef TG_BILLING_WALLET_H
#define TG_BILLING_WALLET_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "err.h"

#define TG_WALLET_MAX_AMOUNT INT64_C(1000000000000000) /* one top-up: a billion credits */
#define TG_WALLET_KEY_MAX    200                       /* bytes of a caller's idempotency key */

typedef struct tg_wallet {
    int64_t tenant_id;
    int64_t balance;  /* owned and not spent; `reserved` is part of it */
    int64_t reserved; /* held by leases and requests in flight */
    int64_t spent;    /* charged for usage, minus refunds */
} tg_wallet_t;

/* available = balance - reserved: what a new lease or reservation may take. */
static inline int64_t tg_wallet_available(const tg_wallet_t *w)
{
    return w->balance - w->reserved;
}

typedef struct tg_ledger_entry {
    int64_t id;
    int64_t amount;
    int64_t balance_after;
    char created_at[40]; /* RFC 3339, UTC, with microseconds */
} tg_ledger_entry_t;

/**
 * Opens the tenant's wallet if it has none, and grants `trial_credits` (the config's
 * billing.trial_credits) once per tenant, whatever the number of calls: call it whenever a tenant
 * is created. *balance (may be NULL) is the balance after. TG_ENOT_FOUND: no such tenant.
 */
TG_MUST_CHECK int tg_wallet_open(PGconn *db, int64_t tenant_id, int64_t trial_credits, int64_t *balance,
                                 tg_error_t *err);

/**
 * Adds `amount` (1 .. TG_WALLET_MAX_AMOUNT) to the wallet, idempotent on `key` (1 .. 200 printable
 * bytes, scoped to the tenant): returns 0 when this call created the entry, 1 when the same key and
 * amount had already created it (*out is that entry, nothing new is written), and
 * TG_EIDEMPOTENCY_MISMATCH when the key was used with another amount (*out is the first entry).
 * TG_EINVALID_REQUEST for an amount or key out of bounds; TG_ENOT_FOUND when the tenant has no wallet.
 */
TG_MUST_CHECK int tg_wallet_top_up(PGconn *db, int64_t tenant_id, int64_t amount, const char *key,
                                   const char *note, tg_ledger_entry_t *out, tg_error_t *err);

/** Reads the wallet. TG_ENOT_FOUND when the tenant has none. */
TG_MUST_CHECK int tg_wallet_read(PGconn *db, int64_t tenant_id, tg_wallet_t *out, tg_error_t *err);

/* ---- the wallet's ledger, for the admin API's statement ---- */

#define TG_LEDGER_PAGE_MAX 1000

/* Columns of a ledger page, in order: id, seq, kind, amount, hold, balance_after, reserved_after,
 * lease_id ("" none), requests, note ("" none), created_at (RFC 3339 UTC with microseconds). An
 * entry's idempotency key is not among them: it may carry a caller's key or an instance's name. */
enum { TG_LEDGER_COLS = 11 };

/**
 * The tenant's entries with seq > after_seq, oldest first, at most limit (1 .. TG_LEDGER_PAGE_MAX):
 * a keyset on the unique (tenant_id, seq). *res is the result (PQclear it). TG_ENOT_FOUND when the
 * tenant has no wallet (so that an empty page means "no entries", not "no tenant"). Read the
 * entries with tg_wallet_ledger_count: rows 0 .. count-1 (the result of a page past the end holds
 * one row of NULLs, the wallet's).
 */
TG_MUST_CHECK int tg_wallet_ledger(PGconn *db, int64_t tenant_id, int64_t after_seq, size_t limit,
                                   PGresult **res, tg_error_t *err);
/** How many entries a tg_wallet_ledger result holds. */
int tg_wallet_ledger_count(const PGresult *res);

#endif
