/*
 * wallet_api.c - /admin/v1/tenants/{id}/wallet: the balance (GET), top-ups (POST .../top-ups,
 * operator only: credits are money) and the ledger's entries (GET .../ledger, keyset pages on the
 * wallet's gapless seq). Each job calls billing/wallet.h, as the CLI can.
 *
 * A top-up needs an Idempotency-Key header (1 to 200 printable ASCII bytes, no space): the same
 * key and amount again answer the first entry (200, "replayed": true) and write nothing, so
 * nothing is audited either; the same key with another amount is 422 idempotency_key_reused.
 * A created entry and its audit row commit in one transaction.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "http.h"
#include "repr.h"
#include "wallet.h"

static int64_t tenant_of(const tg_adm_call_t *call)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, "id") == 0)
            return call->params[i].id;
    return 0;
}

/* A billing error into the job's answer: a missing wallet is the tenant's 404. */
static void fail_billing(tg_adm_result_t *out, const tg_error_t *e)
{
    tg_adm_fail_error(out, e, e->code == TG_EINVALID_REQUEST);
    if (e->code == TG_ENOT_FOUND)
        snprintf(out->err.msg, sizeof(out->err.msg), "no such tenant");
}

/* ---------------------------------------------------------------- GET wallet */

static json_t *wallet_repr(const tg_wallet_t *w)
{
    return json_pack("{sI sI sI sI sI}", "tenant_id", (json_int_t)w->tenant_id, "balance",
                     (json_int_t)w->balance, "reserved", (json_int_t)w->reserved, "available",
                     (json_int_t)tg_wallet_available(w), "spent", (json_int_t)w->spent);
}

static void wallet_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    tg_wallet_t w;
    tg_error_t e = {0};
    if (tg_wallet_read(db, tenant_of(call), &w, &e) != 0) {
        fail_billing(out, &e);
        return;
    }
    out->status = 200;
    out->body = wallet_repr(&w);
}

static void wallet_get(tg_adm_ctx_t *c)
{
    tg_adm_run(c, wallet_work, NULL, NULL);
}

/* ---------------------------------------------------------------- POST top-ups */

typedef struct topup_arg {
    int64_t amount;
    char key[TG_WALLET_KEY_MAX + 1];
    char note[501];
    bool has_note;
} topup_arg_t;

static json_t *entry_repr(const tg_ledger_entry_t *e, int64_t tenant_id, const char *key, bool replayed)
{
    return json_pack("{sI sI ss sI sI ss ss sb}", "id", (json_int_t)e->id, "tenant_id", (json_int_t)tenant_id,
                     "kind", "top_up", "amount", (json_int_t)e->amount, "balance_after",
                     (json_int_t)e->balance_after, "created_at", e->created_at, "idempotency_key", key,
                     "replayed", replayed);
}

static void topup_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const topup_arg_t *a = call->arg;
    int64_t tenant = tenant_of(call);
    tg_ledger_entry_t e = {0};
    tg_error_t werr = {0};
    if (tg_adm_tx_begin(db, &out->err) != 0)
        return;
    int rc = tg_wallet_top_up(db, tenant, a->amount, a->key, a->has_note ? a->note : NULL, &e, &werr);
    if (rc < 0) {
        tg_adm_tx_rollback(db);
        fail_billing(out, &werr);
        if (rc == TG_EIDEMPOTENCY_MISMATCH)
            snprintf(out->err.msg, sizeof(out->err.msg),
                     "Idempotency-Key was already used for a top-up of %" PRId64 " (entry %" PRId64 ")",
                     e.amount, e.id);
        return;
    }
    json_t *repr = entry_repr(&e, tenant, a->key, rc == 1);
    if (rc == 0) { /* a replay wrote nothing: nothing to audit */
        json_t *after = json_deep_copy(repr);
        json_object_del(after, "replayed");
        if (a->has_note)
            json_object_set_new(after, "note", json_string(a->note));
        char id[24];
        snprintf(id, sizeof(id), "%" PRId64, e.id);
        int arc = tg_adm_audit(db, call, "wallet.top_up", "ledger_entry", id, tenant, NULL, after, &out->err);
        json_decref(after);
        if (arc != 0) {
            json_decref(repr);
            tg_adm_tx_rollback(db);
            return;
        }
    }
    if (tg_adm_tx_commit(db, &out->err) != 0) {
        json_decref(repr);
        return;
    }
    out->status = rc == 0 ? 201 : 200;
    out->body = repr;
}

static const tg_adm_field_t topup_fields[] = {
    {"amount", TG_ADM_INT, true, false, 1, TG_WALLET_MAX_AMOUNT},
    {"note", TG_ADM_STR, false, false, 1, 500},
};

/* The Idempotency-Key header: 1..200 printable ASCII bytes without space (CONVENTIONS, "Money"). */
static bool idempotency_key(h2o_req_t *req, char *out, size_t cap, tg_mgmt_err_t *err)
{
    const h2o_iovec_t *v = tg_http_header(req, "idempotency-key");
    if (v == NULL || v->len == 0) {
        tg_mgmt_field(err, "Idempotency-Key",
                      "the header is required: a key of your own per top-up, so that a "
                      "retry cannot add the credits twice");
        return false;
    }
    bool ok = v->len <= TG_WALLET_KEY_MAX && v->len < cap;
    for (size_t i = 0; ok && i < v->len; i++)
        ok = (unsigned char)v->base[i] > 0x20 && (unsigned char)v->base[i] < 0x7f;
    if (!ok) {
        tg_mgmt_field(err, "Idempotency-Key", "must be 1 to %d printable ASCII characters without spaces",
                      TG_WALLET_KEY_MAX);
        return false;
    }
    memcpy(out, v->base, v->len);
    out[v->len] = '\0';
    return true;
}

static void topup_post(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    topup_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    idempotency_key(c->req, a->key, sizeof(a->key), &err);
    json_t *body = tg_adm_body(c, false);
    if (body == NULL) {
        free(a);
        return;
    }
    if (tg_adm_check(body, topup_fields, 2, &err)) {
        a->amount = json_integer_value(json_object_get(body, "amount"));
        const char *note = json_string_value(json_object_get(body, "note"));
        if (note != NULL) {
            a->has_note = true;
            snprintf(a->note, sizeof(a->note), "%s", note);
        }
    }
    json_decref(body);
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, topup_work, a, free);
}

/* ---------------------------------------------------------------- GET ledger */

static json_t *ledger_repr(const PGresult *r, int i)
{
    json_t *o = json_object();
    static const char *const ints[] = {
        "id", "seq", NULL, "amount", "hold", "balance_after", "reserved_after", "lease_id", "requests"};
    for (int col = 0; col < 9; col++) {
        if (ints[col] == NULL)
            continue;
        json_object_set_new(o, ints[col],
                            PQgetisnull(r, i, col) ? json_null()
                                                   : json_integer(strtoll(PQgetvalue(r, i, col), NULL, 10)));
    }
    json_object_set_new(o, "kind", json_string(PQgetvalue(r, i, 2)));
    const char *note = PQgetvalue(r, i, 9);
    json_object_set_new(o, "note", note[0] != '\0' ? json_string(note) : json_null());
    json_object_set_new(o, "created_at", json_string(PQgetvalue(r, i, 10)));
    return o;
}

static void ledger_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const tg_adm_page_t *pg = call->arg;
    PGresult *r = NULL;
    tg_error_t e = {0};
    if (tg_wallet_ledger(db, tenant_of(call), pg->after_id, pg->limit, &r, &e) != 0) {
        fail_billing(out, &e);
        return;
    }
    int n = tg_wallet_ledger_count(r);
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, ledger_repr(r, i));
    /* a full page may have a next one: its cursor is the last seq (an empty page ends it) */
    int64_t next = n > 0 && (size_t)n == pg->limit ? strtoll(PQgetvalue(r, n - 1, 1), NULL, 10) : 0;
    PQclear(r);
    out->status = 200;
    out->body = tg_adm_page_body(data, next);
}

static void ledger_get(tg_adm_ctx_t *c)
{
    tg_adm_run_page(c, ledger_work);
}

const tg_adm_route_t tg_adm_routes_wallet[] = {
    {"GET", "/admin/v1/tenants/{id}/wallet", TG_ADM_READ | TG_ADM_TENANT, wallet_get, "wallet.get"},
    {"POST", "/admin/v1/tenants/{id}/wallet/top-ups", TG_ADM_WRITE | TG_ADM_OPERATOR | TG_ADM_TENANT,
     topup_post, "wallet.top_up"},
    {"GET", "/admin/v1/tenants/{id}/wallet/ledger", TG_ADM_READ | TG_ADM_TENANT, ledger_get, "wallet.ledger"},
    {NULL, NULL, 0, NULL, NULL},
};
