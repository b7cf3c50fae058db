/*
 * provider_keys_api.c - /admin/v1/tenants/{id}/provider-keys[/{provider}]: a tenant's own keys
 * for providers (BYOK). PUT {"api_key": "..."} seals and stores it (credentials.h, as `tollgate
 * byok set` does), DELETE removes it, GET answers metadata only: provider, master key id, last
 * four characters at most, created and updated. The key never comes back, is never audited (the
 * audit rows hold the provider and the times, not even the last four), and the job's copy of it
 * is wiped when the job ends.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "byok.h"
#include "credentials.h"
#include "repr.h"

static int64_t param_id(const tg_adm_call_t *call)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, "id") == 0)
            return call->params[i].id;
    return 0;
}

static const char *param_provider(const tg_adm_call_t *call)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, "provider") == 0)
            return call->params[i].value;
    return NULL;
}

/* The metadata of the tenant's stored keys (one provider, or all with NULL), as listed by
 * tg_cred_list, without the tenant's name: [{provider, master_key_id, last4, created_at, updated_at}]. */
static int metadata(PGconn *db, const char *tenant_name, const char *provider, json_t **out,
                    tg_adm_result_t *res)
{
    json_t *all = NULL;
    tg_error_t e = {0};
    if (tg_cred_list(db, tenant_name, &all, &e) != 0) {
        tg_adm_fail_error(res, &e, false);
        return res->err.code;
    }
    json_t *data = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(all, i, row)
    {
        const char *p = json_string_value(json_object_get(row, "provider"));
        if (provider != NULL && (p == NULL || strcmp(p, provider) != 0))
            continue;
        json_array_append_new(
            data, json_pack("{s:O,s:O,s:O,s:O,s:O}", "provider", json_object_get(row, "provider"),
                            "master_key_id", json_object_get(row, "master_key_id"), "last4",
                            json_object_get(row, "last4"), "created_at", json_object_get(row, "created_at"),
                            "updated_at", json_object_get(row, "updated_at")));
    }
    json_decref(all);
    *out = data;
    return 0;
}

/* The audited form: no last four characters, no master key id. */
static json_t *audited(const json_t *meta)
{
    if (meta == NULL)
        return NULL;
    return json_pack("{s:O,s:O,s:O}", "provider", json_object_get(meta, "provider"), "created_at",
                     json_object_get(meta, "created_at"), "updated_at", json_object_get(meta, "updated_at"));
}

/* ---------------------------------------------------------------- GET (one or all) */

static void get_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    tg_tenant_t t;
    if (tg_tenant_get(db, (tg_tenant_ref_t){.id = param_id(call)}, &t, &out->err) != 0)
        return;
    const char *provider = param_provider(call);
    json_t *data = NULL;
    if (metadata(db, t.name, provider, &data, out) != 0)
        return;
    if (provider == NULL) {
        out->body = tg_adm_page_body(data, 0); /* at most one row per configured provider */
    } else if (json_array_size(data) == 0) {
        json_decref(data);
        tg_adm_fail(out, TG_ENOT_FOUND, "no key is stored for this provider");
        return;
    } else {
        out->body = json_incref(json_array_get(data, 0));
        json_decref(data);
        tg_adm_etag(out->body, out->etag);
    }
    out->status = 200;
}

static void pk_get(tg_adm_ctx_t *c)
{
    tg_adm_run(c, get_work, NULL, NULL);
}

/* ---------------------------------------------------------------- PUT, DELETE */

typedef struct write_arg {
    bool del;
    size_t len;
    char key[TG_BYOK_KEY_MAX + 1];
} write_arg_t;

static void wipe_free(void *p)
{
    sodium_memzero(p, sizeof(write_arg_t));
    free(p);
}

static void write_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const write_arg_t *a = call->arg;
    const char *provider = param_provider(call);
    int64_t tenant = param_id(call);
    tg_mgmt_err_t *err = &out->err;
    tg_tenant_t t;
    json_t *before = NULL, *after = NULL, *jb = NULL, *ja = NULL;
    if (tg_adm_tx_begin(db, err) != 0)
        return;
    if (tg_adm_lock_tenant(db, tenant, err) != 0 ||
        tg_tenant_get(db, (tg_tenant_ref_t){.id = tenant}, &t, err) != 0)
        goto fail;
    if (metadata(db, t.name, provider, &before, out) != 0)
        goto fail;
    json_t *b0 = json_array_get(before, 0); /* NULL: none stored */
    if (call->has_if_match) {
        char etag[TG_ADM_ETAG_LEN] = "";
        if (b0 != NULL)
            tg_adm_etag(b0, etag);
        if (b0 == NULL || !tg_adm_if_match(call->if_match, etag)) {
            tg_adm_fail(out, TG_EPRECONDITION_FAILED,
                        "the provider key has changed since it was read (If-Match)");
            goto fail;
        }
    }
    tg_error_t e = {0};
    int rc = a->del ? tg_cred_delete(db, t.name, provider, &e)
                    : tg_cred_set(db, call->cfg->keyring, t.name, provider, a->key, a->len, &e);
    if (rc != 0) {
        tg_adm_fail_error(out, &e, e.code == TG_EINVALID_REQUEST || e.code == TG_ENOT_FOUND);
        if (e.code == TG_ENOT_FOUND)
            snprintf(out->err.msg, sizeof(out->err.msg), "no key is stored for this provider");
        goto fail;
    }
    if (metadata(db, t.name, provider, &after, out) != 0)
        goto fail;
    json_t *a0 = json_array_get(after, 0);
    jb = audited(b0);
    ja = audited(a0);
    if (tg_adm_audit(db, call, a->del ? "provider_keys.delete" : "provider_keys.put", "provider_key",
                     provider, tenant, jb, ja, err) != 0 ||
        tg_adm_tx_commit(db, err) != 0)
        goto fail;
    if (a->del) {
        out->status = 204;
    } else {
        out->status = b0 == NULL ? 201 : 200;
        out->body = json_incref(a0);
        tg_adm_etag(a0, out->etag);
    }
    json_decref(before);
    json_decref(after);
    json_decref(jb);
    json_decref(ja);
    return;
fail:
    tg_adm_tx_rollback(db);
    json_decref(before);
    json_decref(after);
    json_decref(jb);
    json_decref(ja);
}

static bool provider_configured(tg_adm_ctx_t *c)
{
    tg_config_t *cfg = tg_config_acquire();
    bool ok = cfg != NULL && tg_config_find_provider(cfg, tg_adm_param(c, "provider")) != NULL;
    tg_config_unref(cfg);
    return ok;
}

static const tg_adm_field_t put_fields[] = {
    {"api_key", TG_ADM_STR, true, false, 1, TG_BYOK_KEY_MAX},
};

static void pk_put(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    json_t *body;
    write_arg_t *a = tg_adm_job_arg(c, false, sizeof(*a), &body, &err);
    if (a == NULL)
        return;
    if (!provider_configured(c))
        tg_mgmt_field(&err, "provider", "provider is not a provider of the configuration");
    if (tg_adm_check(body, put_fields, 1, &err)) {
        json_t *k = json_object_get(body, "api_key");
        a->len = json_string_length(k);
        memcpy(a->key, json_string_value(k), a->len);
        /* the parsed copy is jansson's: wipe it before it is freed */
        sodium_memzero((void *)json_string_value(k), a->len);
    }
    json_decref(body);
    if (err.code != 0) {
        wipe_free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, write_work, a, wipe_free);
}

static void pk_delete(tg_adm_ctx_t *c)
{
    if (c->req->entity.len > 0) {
        tg_adm_reply_error(c->req, TG_EINVALID_REQUEST, "DELETE takes no body", NULL);
        return;
    }
    write_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    a->del = true;
    tg_adm_run(c, write_work, a, wipe_free);
}

const tg_adm_route_t tg_adm_routes_provider_keys[] = {
    {"GET", "/admin/v1/tenants/{id}/provider-keys", TG_ADM_READ | TG_ADM_TENANT, pk_get,
     "provider_keys.list"},
    {"GET", "/admin/v1/tenants/{id}/provider-keys/{provider}", TG_ADM_READ | TG_ADM_TENANT, pk_get,
     "provider_keys.get"},
    {"PUT", "/admin/v1/tenants/{id}/provider-keys/{provider}", TG_ADM_WRITE | TG_ADM_TENANT, pk_put,
     "provider_keys.put"},
    {"DELETE", "/admin/v1/tenants/{id}/provider-keys/{provider}", TG_ADM_WRITE | TG_ADM_TENANT, pk_delete,
     "provider_keys.delete"},
    {NULL, NULL, 0, NULL, NULL},
};
