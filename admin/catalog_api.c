/*
 * catalog_api.c - /admin/v1/models (the model catalog of the config, each with the price in effect
 * now) and /admin/v1/prices (the price history; a change with its effective time, operator only).
 * The queries are billing/pricing.h's; prices are append-only (migration 0007): a change is a new
 * row, which every gateway loads on NOTIFY tollgate_prices.
 *
 * GET /admin/v1/prices?model=&limit=&cursor=: rows by id, each with in_effect (the row in effect
 * for its model now). POST /admin/v1/prices {model, input_per_mtok, output_per_mtok,
 * cached_input_per_mtok?, byok_fee?, effective_from?}: prices in micro-credits per million tokens
 * (the BYOK fee per request); cached input defaults to the input price, the fee to 0, the time to
 * now; a time in the past is refused (it would rewrite history). 201 with the row.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "pricing.h"
#include "query.h"

/* ---------------------------------------------------------------- price rows */

static json_t *price_repr(const PGresult *r, int i)
{
    static const char *const ints[] = {
        "id", NULL, "input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "byok_fee"};
    json_t *o = json_object();
    for (int col = 0; col < 6; col++)
        if (ints[col] != NULL)
            json_object_set_new(o, ints[col], json_integer(strtoll(PQgetvalue(r, i, col), NULL, 10)));
    json_object_set_new(o, "model", json_string(PQgetvalue(r, i, 1)));
    json_object_set_new(o, "effective_from", json_string(PQgetvalue(r, i, 6)));
    json_object_set_new(o, "created_at", json_string(PQgetvalue(r, i, 7)));
    json_object_set_new(o, "in_effect", json_boolean(PQgetvalue(r, i, 8)[0] == 't'));
    return o;
}

/* ---------------------------------------------------------------- GET models */

static void models_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    PGresult *r = NULL;
    tg_error_t e = {0};
    if (tg_price_current(db, &r, &e) != 0) {
        tg_adm_fail_error(out, &e, false);
        return;
    }
    const tg_config_t *cfg = call->cfg;
    json_t *data = json_array();
    for (size_t i = 0; i < cfg->n_models; i++) {
        const tg_model_cfg_t *m = &cfg->models[i];
        json_t *price = json_null();
        for (int k = 0; k < PQntuples(r); k++)
            if (strcmp(PQgetvalue(r, k, 1), m->name) == 0) {
                json_decref(price);
                price = price_repr(r, k);
                json_object_del(price, "model");
                json_object_del(price, "in_effect");
                break;
            }
        json_t *o = json_pack("{ss ss ss ss so}", "id", m->name, "object", "model", "provider",
                              m->provider->name, "upstream", m->upstream, "price", price);
        json_object_set_new(o, "context_window",
                            m->context_window > 0 ? json_integer(m->context_window) : json_null());
        json_object_set_new(o, "max_output_tokens",
                            m->max_output_tokens > 0 ? json_integer(m->max_output_tokens) : json_null());
        json_array_append_new(data, o);
    }
    PQclear(r);
    out->status = 200;
    out->body = json_pack("{so so}", "data", data, "next_cursor", json_null());
}

static void models_get(tg_adm_ctx_t *c)
{
    tg_adm_run(c, models_work, NULL, NULL);
}

/* ---------------------------------------------------------------- GET prices */

typedef struct list_arg {
    tg_adm_page_t page;
    char model[201];
} list_arg_t;

static void prices_list_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const list_arg_t *a = call->arg;
    PGresult *r = NULL;
    tg_error_t e = {0};
    if (tg_price_list(db, a->model, a->page.after_id, a->page.limit, &r, &e) != 0) {
        tg_adm_fail_error(out, &e, false);
        return;
    }
    int n = PQntuples(r);
    json_t *data = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(data, price_repr(r, i));
    int64_t next = n > 0 && (size_t)n == a->page.limit ? strtoll(PQgetvalue(r, n - 1, 0), NULL, 10) : 0;
    PQclear(r);
    out->status = 200;
    out->body = tg_adm_page_body(data, next);
}

static void prices_list(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    list_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    tg_adm_page_parse(c->req, &a->page, &err);
    int rc = tg_admin_query_param(c->req, "model", a->model, sizeof(a->model));
    bool ok = rc == 0 || (rc == 1 && a->model[0] != '\0');
    for (const char *p = a->model; ok && rc == 1 && *p != '\0'; p++)
        ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f; /* as the config's names are */
    if (!ok)
        tg_mgmt_field(&err, "model", "must be a model name of 1 to 200 printable ASCII characters");
    if (rc != 1 || !ok)
        a->model[0] = '\0';
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, prices_list_work, a, free);
}

/* ---------------------------------------------------------------- POST prices */

typedef struct create_arg {
    char model[201];
    tg_price_change_t in;
} create_arg_t;

static void create_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    create_arg_t *a = call->arg;
    a->in.model = a->model;
    PGresult *r = NULL;
    tg_error_t e = {0};
    if (tg_adm_tx_begin(db, &out->err) != 0)
        return;
    if (tg_price_create(db, &a->in, &r, &e) != 0) {
        tg_adm_tx_rollback(db);
        tg_adm_fail_error(out, &e, e.code == TG_EINVALID_REQUEST || e.code == TG_ECONFLICT);
        if (e.code == TG_EINVALID_REQUEST)
            tg_mgmt_field(&out->err, "effective_from", "%s", e.detail);
        return;
    }
    json_t *repr = price_repr(r, 0);
    PQclear(r);
    json_t *after = json_deep_copy(repr);
    json_object_del(after, "in_effect");
    char id[24];
    snprintf(id, sizeof(id), "%" PRId64, (int64_t)json_integer_value(json_object_get(repr, "id")));
    int rc = tg_adm_audit(db, call, "prices.create", "price", id, 0, NULL, after, &out->err);
    json_decref(after);
    if (rc != 0 || tg_adm_tx_commit(db, &out->err) != 0) {
        if (rc != 0)
            tg_adm_tx_rollback(db);
        json_decref(repr);
        return;
    }
    out->status = 201;
    out->body = repr;
}

static const tg_adm_field_t create_fields[] = {
    {"model", TG_ADM_STR, true, false, 1, 200},
    {"input_per_mtok", TG_ADM_INT, true, false, 0, TG_PRICE_MAX},
    {"output_per_mtok", TG_ADM_INT, true, false, 0, TG_PRICE_MAX},
    {"cached_input_per_mtok", TG_ADM_INT, false, false, 0, TG_PRICE_MAX},
    {"byok_fee", TG_ADM_INT, false, false, 0, TG_PRICE_MAX},
    {"effective_from", TG_ADM_STR, false, false, 1, 64},
};

static void field_err(void *arg, const char *field, const char *msg)
{
    tg_mgmt_field(arg, field, "%s", msg);
}

static void prices_create(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    json_t *body;
    create_arg_t *a = tg_adm_job_arg(c, false, sizeof(*a), &body, &err);
    if (a == NULL)
        return;
    /* the shapes first, then the catalog and the time on every value of the right type */
    TG_IGNORE_RESULT(
        tg_adm_check(body, create_fields, sizeof(create_fields) / sizeof(create_fields[0]), &err));
    const char *model = json_string_value(json_object_get(body, "model"));
    snprintf(a->model, sizeof(a->model), "%s", model != NULL ? model : "");
    a->in.model = a->model;
    a->in.input_per_mtok = json_integer_value(json_object_get(body, "input_per_mtok"));
    a->in.output_per_mtok = json_integer_value(json_object_get(body, "output_per_mtok"));
    const json_t *cached = json_object_get(body, "cached_input_per_mtok");
    a->in.cached_input_per_mtok = cached != NULL ? json_integer_value(cached) : a->in.input_per_mtok;
    a->in.byok_fee = json_integer_value(json_object_get(body, "byok_fee"));
    const char *at = json_string_value(json_object_get(body, "effective_from"));
    int64_t ms = 0;
    if (at != NULL && (tg_admin_parse_since(at, &ms) != 0 || ms <= 0 || ms > INT64_C(253402300799999)))
        tg_mgmt_field(&err, "effective_from", "must be an RFC 3339 time (2024-05-01T12:00:00Z)");
    a->in.effective_from_us = ms > 0 && ms <= INT64_C(253402300799999) ? ms * 1000 : 0;
    tg_config_t *cfg = tg_config_acquire();
    tg_price_check(cfg, &a->in, field_err, &err);
    tg_config_unref(cfg);
    tg_adm_dedupe_fields(&err);
    json_decref(body);
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, create_work, a, free);
}

const tg_adm_route_t tg_adm_routes_catalog[] = {
    {"GET", "/admin/v1/models", TG_ADM_READ, models_get, "models.list"},
    {"GET", "/admin/v1/prices", TG_ADM_READ | TG_ADM_OPERATOR, prices_list, "prices.list"},
    {"POST", "/admin/v1/prices", TG_ADM_WRITE | TG_ADM_OPERATOR, prices_create, "prices.create"},
    {NULL, NULL, 0, NULL, NULL},
};
