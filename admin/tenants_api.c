/*
 * tenants_api.c - /admin/v1/tenants: create (operator; optional initial credits), list, get,
 * patch (zero_retention), suspend and resume (operator). Each job calls the functions the CLI
 * calls (manage.h, billing/wallet.h) inside one transaction with its audit row (audit.c).
 *
 * A tenant admin lists and reads its own tenant only (the router turns another tenant's id into
 * 404); it may patch its own zero retention (it only concerns its own data), not suspend or resume.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "repr.h"
#include "wallet.h"

/* ---------------------------------------------------------------- create */

typedef struct create_arg {
    char name[TG_MGMT_NAME_MAX + 1];
    bool zero_retention;
    int64_t initial_credits;
} create_arg_t;

static void create_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const create_arg_t *a = call->arg;
    tg_tenant_t t;
    tg_mgmt_err_t *err = &out->err;
    if (tg_adm_tx_begin(db, err) != 0)
        return;
    if (tg_tenant_create(db, a->name, a->zero_retention, call->cfg->billing.trial_credits, &t, err) != 0)
        goto fail;
    json_t *repr = tg_repr_tenant(&t);
    if (a->initial_credits > 0) {
        /* the tenant is new: its id makes the top-up's idempotency key unique */
        char key[48];
        snprintf(key, sizeof(key), "admin-create:%" PRId64, t.id);
        tg_ledger_entry_t e;
        tg_error_t werr = {0};
        int rc = tg_wallet_top_up(db, t.id, a->initial_credits, key, "initial credits", &e, &werr);
        if (rc < 0) {
            json_decref(repr);
            tg_adm_fail_error(out, &werr, werr.code == TG_EINVALID_REQUEST);
            goto fail;
        }
    }
    tg_wallet_t w;
    tg_error_t werr = {0};
    json_t *audited = json_deep_copy(repr);
    if (tg_wallet_read(db, t.id, &w, &werr) == 0)
        json_object_set_new(audited, "initial_balance", json_integer(w.balance));
    char rid[24];
    snprintf(rid, sizeof(rid), "%" PRId64, t.id);
    if (tg_adm_audit(db, call, "tenants.create", "tenant", rid, t.id, NULL, audited, err) != 0) {
        json_decref(repr);
        json_decref(audited);
        goto fail;
    }
    json_decref(audited);
    if (tg_adm_tx_commit(db, err) != 0) {
        json_decref(repr);
        return;
    }
    tg_adm_etag(repr, out->etag);
    json_object_set_new(repr, "balance", json_integer(w.balance));
    out->status = 201;
    out->body = repr;
    return;
fail:
    tg_adm_tx_rollback(db);
}

static const tg_adm_field_t create_fields[] = {
    {"name", TG_ADM_STR, true, false, 1, TG_MGMT_NAME_MAX},
    {"zero_retention", TG_ADM_BOOL, false, false, 0, 0},
    {"initial_credits", TG_ADM_INT, false, false, 0, TG_WALLET_MAX_AMOUNT},
};

static void tenants_create(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    json_t *body;
    create_arg_t *a = tg_adm_job_arg(c, false, sizeof(*a), &body, &err);
    if (a == NULL)
        return;
    if (tg_adm_check(body, create_fields, 3, &err)) {
        const char *name = json_string_value(json_object_get(body, "name"));
        tg_mgmt_check_name(name, "name", &err);
        snprintf(a->name, sizeof(a->name), "%s", name);
        a->zero_retention = json_is_true(json_object_get(body, "zero_retention"));
        a->initial_credits = json_integer_value(json_object_get(body, "initial_credits"));
    }
    json_decref(body);
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, create_work, a, free);
}

/* ---------------------------------------------------------------- list, get */

static void list_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const tg_adm_page_t *pg = call->arg;
    json_t *data = json_array();
    int64_t next = 0;
    if (call->who.role == TG_ROLE_TENANT_ADMIN) {
        /* its own tenant, as a page of one */
        tg_tenant_t t;
        if (pg->after_id < call->who.tenant_id &&
            tg_tenant_get(db, (tg_tenant_ref_t){.id = call->who.tenant_id}, &t, &out->err) == 0)
            json_array_append_new(data, tg_repr_tenant(&t));
        tg_mgmt_err_reset(&out->err);
    } else {
        tg_tenant_page_t page = {0};
        if (tg_tenant_list(db, pg->after_id, pg->limit, &page, &out->err) != 0) {
            json_decref(data);
            return;
        }
        for (size_t i = 0; i < page.n; i++)
            json_array_append_new(data, tg_repr_tenant(&page.rows[i]));
        next = page.next_after;
        tg_tenant_page_free(&page);
    }
    out->status = 200;
    out->body = tg_adm_page_body(data, next);
}

static void tenants_list(tg_adm_ctx_t *c)
{
    tg_adm_run_page(c, list_work);
}

static int64_t tenant_of(const tg_adm_call_t *call)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, "id") == 0)
            return call->params[i].id;
    return 0;
}

static void get_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    tg_tenant_t t;
    if (tg_tenant_get(db, (tg_tenant_ref_t){.id = tenant_of(call)}, &t, &out->err) != 0)
        return;
    out->body = tg_repr_tenant(&t);
    tg_adm_etag(out->body, out->etag);
    out->status = 200;
}

static void tenants_get(tg_adm_ctx_t *c)
{
    tg_adm_run(c, get_work, NULL, NULL);
}

/* ---------------------------------------------------------------- writes on one tenant */

typedef enum { OP_PATCH, OP_SUSPEND, OP_RESUME } tenant_op_t;

typedef struct write_arg {
    tenant_op_t op;
    bool set_zr, zr;
} write_arg_t;

static void write_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const write_arg_t *a = call->arg;
    tg_mgmt_err_t *err = &out->err;
    int64_t id = tenant_of(call);
    tg_tenant_ref_t ref = {.id = id};
    tg_tenant_t before, after;
    json_t *jb = NULL, *ja = NULL;
    if (tg_adm_tx_begin(db, err) != 0)
        return;
    if (tg_adm_lock_tenant(db, id, err) != 0 || tg_tenant_get(db, ref, &before, err) != 0)
        goto fail;
    jb = tg_repr_tenant(&before);
    char etag[TG_ADM_ETAG_LEN];
    tg_adm_etag(jb, etag);
    if (!tg_adm_if_match(call->has_if_match ? call->if_match : NULL, etag)) {
        tg_mgmt_fail(err, TG_EPRECONDITION_FAILED, "the tenant has changed since it was read (If-Match)");
        goto fail;
    }
    int rc = 0;
    const char *action = "tenants.patch";
    if (a->op == OP_SUSPEND || a->op == OP_RESUME) {
        action = a->op == OP_SUSPEND ? "tenants.suspend" : "tenants.resume";
        rc = tg_tenant_set_suspended(db, ref, a->op == OP_SUSPEND, &after, err);
    } else if (a->set_zr) {
        tg_policy_update_t u = {.tenant = ref};
        u.zero_retention.op = TG_FIELD_SET;
        u.zero_retention.value = a->zr;
        tg_policy_row_t row;
        rc = tg_policy_set(db, call->cfg, &u, &row, err);
        if (rc == 0)
            rc = tg_tenant_get(db, ref, &after, err);
    } else {
        after = before;
    }
    if (rc != 0)
        goto fail;
    ja = tg_repr_tenant(&after);
    char rid[24];
    snprintf(rid, sizeof(rid), "%" PRId64, id);
    if (tg_adm_audit(db, call, action, "tenant", rid, id, jb, ja, err) != 0 || tg_adm_tx_commit(db, err) != 0)
        goto fail;
    json_decref(jb);
    tg_adm_etag(ja, out->etag);
    out->status = 200;
    out->body = ja;
    return;
fail:
    tg_adm_tx_rollback(db);
    json_decref(jb);
    json_decref(ja);
}

static const tg_adm_field_t patch_fields[] = {
    {"zero_retention", TG_ADM_BOOL, false, false, 0, 0},
};

static void tenants_patch(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    json_t *body;
    write_arg_t *a = tg_adm_job_arg(c, false, sizeof(*a), &body, &err);
    if (a == NULL)
        return;
    a->op = OP_PATCH;
    if (tg_adm_check(body, patch_fields, 1, &err)) {
        json_t *zr = json_object_get(body, "zero_retention");
        a->set_zr = zr != NULL;
        a->zr = json_is_true(zr);
    }
    json_decref(body);
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, write_work, a, free);
}

static void suspend_or_resume(tg_adm_ctx_t *c, tenant_op_t op)
{
    if (!tg_adm_body_none(c))
        return;
    write_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    a->op = op;
    tg_adm_run(c, write_work, a, free);
}

static void tenants_suspend(tg_adm_ctx_t *c)
{
    suspend_or_resume(c, OP_SUSPEND);
}

static void tenants_resume(tg_adm_ctx_t *c)
{
    suspend_or_resume(c, OP_RESUME);
}

const tg_adm_route_t tg_adm_routes_tenants[] = {
    {"POST", "/admin/v1/tenants", TG_ADM_WRITE | TG_ADM_OPERATOR, tenants_create, "tenants.create"},
    {"GET", "/admin/v1/tenants", TG_ADM_READ, tenants_list, "tenants.list"},
    {"GET", "/admin/v1/tenants/{id}", TG_ADM_READ | TG_ADM_TENANT, tenants_get, "tenants.get"},
    {"PATCH", "/admin/v1/tenants/{id}", TG_ADM_WRITE | TG_ADM_TENANT, tenants_patch, "tenants.patch"},
    {"POST", "/admin/v1/tenants/{id}/suspend", TG_ADM_WRITE | TG_ADM_OPERATOR | TG_ADM_TENANT,
     tenants_suspend, "tenants.suspend"},
    {"POST", "/admin/v1/tenants/{id}/resume", TG_ADM_WRITE | TG_ADM_OPERATOR | TG_ADM_TENANT, tenants_resume,
     "tenants.resume"},
    {NULL, NULL, 0, NULL, NULL},
};
