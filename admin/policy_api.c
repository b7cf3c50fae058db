/*
 * policy_api.c - /admin/v1/tenants/{id}/policy: GET the tenant's policy (what is set; null is
 * "inherit": no limit), PUT fields of it through tg_policy_set (policies.c, as `tollgate policy
 * set` does): zero_retention, allowed_models, max_tokens, rpm, tpm, key_rpm, key_tpm,
 * byok_fallback. A field given is set, a field given as null is cleared back to "inherit", a field
 * not given is kept (so a PUT of one limit never turns zero retention off by omission). The change
 * reaches every gateway within a second (migration 0003's NOTIFY).
 *
 * /admin/v1/tenants/{id}/keys/{key_id}/policy is one key's override row, the same way: it takes
 * allowed_models, max_tokens, key_rpm and key_tpm only (the rest are the tenant's).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "repr.h"

static int64_t param_of(const tg_adm_call_t *call, const char *name)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, name) == 0)
            return call->params[i].id;
    return 0;
}

static int64_t param_id(const tg_adm_call_t *call)
{
    return param_of(call, "id");
}

static json_t *num_or_null(const PGresult *r, int c)
{
    return PQgetisnull(r, 0, c) ? json_null() : json_integer(strtoll(PQgetvalue(r, 0, c), NULL, 10));
}

/* The tenant's policy (key_id 0) or one key's override as the API shows it; TG_ENOT_FOUND when
 * there is no such tenant, or no such key of the tenant. */
static int read_policy(PGconn *db, int64_t tenant, int64_t key_id, json_t **out, tg_mgmt_err_t *err)
{
    char id[24], kid[24];
    snprintf(id, sizeof(id), "%" PRId64, tenant);
    snprintf(kid, sizeof(kid), "%" PRId64, key_id);
    const char *p[2] = {id, kid};
    PGresult *r =
        key_id == 0
            ? PQexecParams(
                  db,
                  "SELECT t.id, array_to_string(p.allowed_models, E'\\n'), p.allowed_models IS NOT NULL, "
                  "p.max_tokens, p.rpm, p.tpm, p.key_rpm, p.key_tpm, p.byok_fallback, t.zero_retention "
                  "FROM tenants t LEFT JOIN policies p ON p.tenant_id = t.id AND p.key_id IS NULL "
                  "WHERE t.id = $1::bigint",
                  1, NULL, p, NULL, NULL, 0)
            : PQexecParams(
                  db,
                  "SELECT k.id, array_to_string(p.allowed_models, E'\\n'), p.allowed_models IS NOT NULL, "
                  "p.max_tokens, NULL, NULL, p.key_rpm, p.key_tpm, NULL, false "
                  "FROM api_keys k LEFT JOIN policies p ON p.tenant_id = k.tenant_id AND p.key_id = k.id "
                  "WHERE k.tenant_id = $1::bigint AND k.id = $2::bigint",
                  2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return tg_mgmt_fail(err, PQstatus(db) == CONNECTION_OK ? TG_EINTERNAL : TG_EDB_UNAVAILABLE,
                            "the policy could not be read");
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        return tg_mgmt_fail(err, TG_ENOT_FOUND, key_id == 0 ? "no such tenant" : "no such key");
    }
    json_t *o = json_object();
    json_object_set_new(o, "tenant_id", json_integer(tenant));
    if (key_id != 0)
        json_object_set_new(o, "key_id", json_integer(key_id));
    json_object_set_new(o, "allowed_models",
                        PQgetvalue(r, 0, 2)[0] == 't' ? tg_repr_models(PQgetvalue(r, 0, 1)) : json_null());
    static const char *const nums[] = {"max_tokens", "rpm", "tpm", "key_rpm", "key_tpm"};
    for (int i = 0; i < 5; i++)
        if (key_id == 0 || (i != 1 && i != 2))
            json_object_set_new(o, nums[i], num_or_null(r, 3 + i));
    if (key_id == 0) {
        json_object_set_new(o, "byok_fallback",
                            PQgetisnull(r, 0, 8) ? json_null() : json_boolean(PQgetvalue(r, 0, 8)[0] == 't'));
        json_object_set_new(o, "zero_retention", json_boolean(PQgetvalue(r, 0, 9)[0] == 't'));
    }
    PQclear(r);
    *out = o;
    return 0;
}

static void get_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    if (read_policy(db, param_id(call), param_of(call, "key_id"), &out->body, &out->err) != 0)
        return;
    tg_adm_etag(out->body, out->etag);
    out->status = 200;
}

static void policy_get(tg_adm_ctx_t *c)
{
    tg_adm_run(c, get_work, NULL, NULL);
}

typedef struct put_arg {
    tg_policy_update_t u; /* tenant and models.names are set on the thread */
    size_t n_models;
    char models[TG_MGMT_MODELS_MAX][TG_MGMT_MODEL_NAME_MAX + 1];
} put_arg_t;

static void put_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const put_arg_t *a = call->arg;
    int64_t tenant = param_id(call), key_id = param_of(call, "key_id");
    tg_policy_update_t u = a->u;
    const char *names[TG_MGMT_MODELS_MAX];
    for (size_t i = 0; i < a->n_models; i++)
        names[i] = a->models[i];
    u.tenant = (tg_tenant_ref_t){.id = tenant};
    u.key_id = key_id;
    u.models.names = names;
    u.models.n = a->n_models;
    tg_mgmt_err_t *err = &out->err;
    json_t *before = NULL, *after = NULL;
    if (tg_adm_tx_begin(db, err) != 0)
        return;
    if (tg_adm_lock_tenant(db, tenant, err) != 0 || read_policy(db, tenant, key_id, &before, err) != 0)
        goto fail;
    char etag[TG_ADM_ETAG_LEN];
    tg_adm_etag(before, etag);
    if (!tg_adm_if_match(call->has_if_match ? call->if_match : NULL, etag)) {
        tg_mgmt_fail(err, TG_EPRECONDITION_FAILED, "the policy has changed since it was read (If-Match)");
        goto fail;
    }
    tg_policy_row_t row;
    if (tg_policy_set(db, call->cfg, &u, &row, err) != 0 || read_policy(db, tenant, key_id, &after, err) != 0)
        goto fail;
    char rid[24];
    snprintf(rid, sizeof(rid), "%" PRId64, key_id);
    if (tg_adm_audit(db, call, key_id != 0 ? "key_policy.put" : "policy.put", "policy",
                     key_id != 0 ? rid : NULL, tenant, before, after, err) != 0 ||
        tg_adm_tx_commit(db, err) != 0)
        goto fail;
    json_decref(before);
    tg_adm_etag(after, out->etag);
    out->body = after;
    out->status = 200;
    return;
fail:
    tg_adm_tx_rollback(db);
    json_decref(before);
    json_decref(after);
    /* the API says allowed_models where manage.c says models */
    for (size_t i = 0; i < err->n_fields; i++)
        if (strncmp(err->fields[i].field, "models", 6) == 0) {
            char f[32];
            snprintf(f, sizeof(f), "allowed_%.20s", err->fields[i].field);
            snprintf(err->fields[i].field, sizeof(err->fields[i].field), "%s", f);
        }
}

#define LIMIT_MAX INT64_C(1000000000000) /* the schema takes any positive bigint; a trillion is plenty */

static const tg_adm_field_t put_fields[] = {
    {"zero_retention", TG_ADM_BOOL, false, true, 0, 0},
    {"allowed_models", TG_ADM_STR_LIST, false, true, 0, TG_MGMT_MODELS_MAX},
    {"max_tokens", TG_ADM_INT, false, true, 1, LIMIT_MAX},
    {"rpm", TG_ADM_INT, false, true, 1, LIMIT_MAX},
    {"tpm", TG_ADM_INT, false, true, 1, LIMIT_MAX},
    {"key_rpm", TG_ADM_INT, false, true, 1, LIMIT_MAX},
    {"key_tpm", TG_ADM_INT, false, true, 1, LIMIT_MAX},
    {"byok_fallback", TG_ADM_BOOL, false, true, 0, 0},
};

static const tg_adm_field_t key_put_fields[] = {
    {"allowed_models", TG_ADM_STR_LIST, false, true, 0, TG_MGMT_MODELS_MAX},
    {"max_tokens", TG_ADM_INT, false, true, 1, LIMIT_MAX},
    {"key_rpm", TG_ADM_INT, false, true, 1, LIMIT_MAX},
    {"key_tpm", TG_ADM_INT, false, true, 1, LIMIT_MAX},
};

static void num_field(const json_t *body, const char *name, tg_num_field_t *f)
{
    json_t *v = json_object_get(body, name);
    if (v == NULL)
        return;
    f->op = json_is_null(v) ? TG_FIELD_CLEAR : TG_FIELD_SET;
    f->value = json_integer_value(v);
}

static void bool_field(const json_t *body, const char *name, tg_bool_field_t *f)
{
    json_t *v = json_object_get(body, name);
    if (v == NULL)
        return;
    f->op = json_is_null(v) ? TG_FIELD_CLEAR : TG_FIELD_SET;
    f->value = json_is_true(v);
}

static void put_with(tg_adm_ctx_t *c, const tg_adm_field_t *fields, size_t n_fields)
{
    tg_mgmt_err_t err;
    json_t *body;
    put_arg_t *a = tg_adm_job_arg(c, false, sizeof(*a), &body, &err);
    if (a == NULL)
        return;
    if (tg_adm_check(body, fields, n_fields, &err)) {
        if (json_object_size(body) == 0)
            tg_mgmt_field(&err, "policy", "the body names no field to set or clear");
        num_field(body, "max_tokens", &a->u.max_tokens);
        num_field(body, "rpm", &a->u.rpm);
        num_field(body, "tpm", &a->u.tpm);
        num_field(body, "key_rpm", &a->u.key_rpm);
        num_field(body, "key_tpm", &a->u.key_tpm);
        bool_field(body, "byok_fallback", &a->u.byok_fallback);
        bool_field(body, "zero_retention", &a->u.zero_retention);
        json_t *m = json_object_get(body, "allowed_models");
        if (m != NULL) {
            a->u.models_op = json_is_null(m) ? TG_FIELD_CLEAR : TG_FIELD_SET;
            a->u.models.set = !json_is_null(m);
            size_t i;
            json_t *e;
            json_array_foreach(m, i, e)
                snprintf(a->models[a->n_models++], TG_MGMT_MODEL_NAME_MAX + 1, "%s", json_string_value(e));
        }
    }
    json_decref(body);
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, put_work, a, free);
}

static void policy_put(tg_adm_ctx_t *c)
{
    put_with(c, put_fields, sizeof(put_fields) / sizeof(put_fields[0]));
}

static void key_policy_put(tg_adm_ctx_t *c)
{
    put_with(c, key_put_fields, sizeof(key_put_fields) / sizeof(key_put_fields[0]));
}

const tg_adm_route_t tg_adm_routes_policy[] = {
    {"GET", "/admin/v1/tenants/{id}/policy", TG_ADM_READ | TG_ADM_TENANT, policy_get, "policy.get"},
    {"PUT", "/admin/v1/tenants/{id}/policy", TG_ADM_WRITE | TG_ADM_TENANT, policy_put, "policy.put"},
    {"GET", "/admin/v1/tenants/{id}/keys/{key_id}/policy", TG_ADM_READ | TG_ADM_TENANT, policy_get,
     "key_policy.get"},
    {"PUT", "/admin/v1/tenants/{id}/keys/{key_id}/policy", TG_ADM_WRITE | TG_ADM_TENANT, key_policy_put,
     "key_policy.put"},
    {NULL, NULL, 0, NULL, NULL},
};
