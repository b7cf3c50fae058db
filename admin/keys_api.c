/*
 * keys_api.c - /admin/v1/tenants/{id}/keys: create (201 with the secret in `key`, the only time
 * it is shown), list and get (never the secret or its hash), revoke (DELETE), rotate (a new key;
 * the old one works for a grace period). Each job calls keys.c (manage.h), as `tollgate keys`
 * does, inside one transaction with its audit row. The audit's `after` of a new key is its
 * listing (id, prefix, label, expiry, models): never the key.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "query.h"
#include "repr.h"

static int64_t param_id(const tg_adm_call_t *call, const char *name)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, name) == 0)
            return call->params[i].id;
    return 0;
}

/* The key's listing row (revoked ones too): 0 or TG_ENOT_FOUND. */
static int key_row(PGconn *db, int64_t tenant, int64_t key_id, tg_key_row_t *out, tg_mgmt_err_t *err)
{
    tg_key_page_t page = {0};
    int rc = tg_key_list(db, (tg_tenant_ref_t){.id = tenant}, true, key_id - 1, 1, &page, err);
    if (rc == 0 && (page.n != 1 || page.rows[0].id != key_id))
        rc = tg_mgmt_fail(err, TG_ENOT_FOUND, "no such key");
    if (rc == 0)
        *out = page.rows[0];
    tg_key_page_free(&page);
    return rc;
}

/* A key's ETag leaves out last_used_at: the data plane moves it with every use (in batches,
 * lastused.c), and a use is no change that should make an If-Match of the key fail. */
static void key_etag(const json_t *repr, char out[TG_ADM_ETAG_LEN])
{
    json_t *c = json_copy((json_t *)repr);
    json_object_del(c, "last_used_at");
    tg_adm_etag(c, out);
    json_decref(c);
}

/* The body of a new key: its listing plus the secret, built here and never audited. */
static json_t *secret_body(const tg_key_row_t *row, const tg_key_secret_t *s)
{
    json_t *o = tg_repr_key(row);
    json_object_set_new(o, "key", json_string(s->key));
    if (s->rotated_from > 0)
        json_object_set_new(o, "old_expires_at", tg_repr_time(s->old_expires_ms));
    return o;
}

/* ---------------------------------------------------------------- create */

typedef struct create_arg {
    char label[TG_MGMT_LABEL_MAX + 1];
    bool has_label;
    int64_t expires_ms;
    bool models_set;
    size_t n_models;
    char models[TG_MGMT_MODELS_MAX][TG_MGMT_MODEL_NAME_MAX + 1];
} create_arg_t;

/* The API says allowed_models where manage.c says models. */
static void rename_models_fields(tg_mgmt_err_t *err)
{
    for (size_t i = 0; i < err->n_fields; i++)
        if (strncmp(err->fields[i].field, "models", 6) == 0) {
            char f[32];
            snprintf(f, sizeof(f), "allowed_%.20s", err->fields[i].field);
            snprintf(err->fields[i].field, sizeof(err->fields[i].field), "%s", f);
        }
}

static void create_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const create_arg_t *a = call->arg;
    int64_t tenant = param_id(call, "id");
    const char *names[TG_MGMT_MODELS_MAX];
    for (size_t i = 0; i < a->n_models; i++)
        names[i] = a->models[i];
    tg_key_new_t in = {.tenant = {.id = tenant},
                       .label = a->has_label ? a->label : NULL,
                       .expires_unix_ms = a->expires_ms,
                       .models = {.set = a->models_set, .names = names, .n = a->n_models}};
    tg_key_secret_t s;
    tg_key_row_t row;
    tg_mgmt_err_t *err = &out->err;
    if (tg_adm_tx_begin(db, err) != 0)
        return;
    if (tg_adm_lock_tenant(db, tenant, err) != 0 ||
        tg_key_create(db, call->cfg->key_pepper, call->cfg, &in, &s, err) != 0 ||
        key_row(db, tenant, s.id, &row, err) != 0)
        goto fail;
    json_t *after = tg_repr_key(&row);
    char rid[24];
    snprintf(rid, sizeof(rid), "%" PRId64, s.id);
    int rc = tg_adm_audit(db, call, "keys.create", "api_key", rid, tenant, NULL, after, err);
    json_decref(after);
    if (rc != 0 || tg_adm_tx_commit(db, err) != 0)
        goto fail;
    out->status = 201;
    out->body = secret_body(&row, &s);
    tg_key_secret_wipe(&s);
    return;
fail:
    tg_key_secret_wipe(&s);
    tg_adm_tx_rollback(db);
    rename_models_fields(err);
}

static const tg_adm_field_t create_fields[] = {
    {"label", TG_ADM_STR, false, true, 1, TG_MGMT_LABEL_MAX},
    {"expires_at", TG_ADM_STR, false, true, 1, 40},
    {"allowed_models", TG_ADM_STR_LIST, false, true, 0, TG_MGMT_MODELS_MAX},
};

static void keys_create(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    json_t *body;
    create_arg_t *a = tg_adm_job_arg(c, true, sizeof(*a), &body, &err);
    if (a == NULL)
        return;
    bool ok = tg_adm_check(body, create_fields, 3, &err);
    /* its own checks run whatever the others found: one answer lists every bad field */
    const char *exp = json_string_value(json_object_get(body, "expires_at"));
    if (exp != NULL && tg_admin_parse_since(exp, &a->expires_ms) != 0)
        tg_mgmt_field(&err, "expires_at", "expires_at must be an RFC 3339 time (2027-01-31T12:00:00Z)");
    if (ok) {
        const char *label = json_string_value(json_object_get(body, "label"));
        if (label != NULL) {
            a->has_label = true;
            snprintf(a->label, sizeof(a->label), "%s", label);
        }
        json_t *m = json_object_get(body, "allowed_models");
        if (json_is_array(m)) {
            a->models_set = true;
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
    tg_adm_run(c, create_work, a, free);
}

/* ---------------------------------------------------------------- list, get */

typedef struct list_arg {
    tg_adm_page_t page;
    bool include_revoked;
} list_arg_t;

static void list_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const list_arg_t *a = call->arg;
    tg_key_page_t page = {0};
    if (tg_key_list(db, (tg_tenant_ref_t){.id = param_id(call, "id")}, a->include_revoked, a->page.after_id,
                    a->page.limit, &page, &out->err) != 0)
        return;
    json_t *data = json_array();
    for (size_t i = 0; i < page.n; i++)
        json_array_append_new(data, tg_repr_key(&page.rows[i]));
    out->body = tg_adm_page_body(data, page.next_after);
    out->status = 200;
    tg_key_page_free(&page);
}

static void keys_list(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    list_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    tg_adm_page_parse(c->req, &a->page, &err);
    char v[8];
    int h = tg_admin_query_param(c->req, "include_revoked", v, sizeof(v));
    if (h < 0 || (h > 0 && strcmp(v, "true") != 0 && strcmp(v, "false") != 0))
        tg_mgmt_field(&err, "include_revoked", "include_revoked must be true or false");
    a->include_revoked = h > 0 && strcmp(v, "true") == 0;
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, list_work, a, free);
}

static void get_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    tg_key_row_t row;
    if (key_row(db, param_id(call, "id"), param_id(call, "key_id"), &row, &out->err) != 0)
        return;
    out->body = tg_repr_key(&row);
    key_etag(out->body, out->etag);
    out->status = 200;
}

static void keys_get(tg_adm_ctx_t *c)
{
    tg_adm_run(c, get_work, NULL, NULL);
}

/* ---------------------------------------------------------------- revoke, rotate */

typedef struct write_arg {
    bool rotate;
    int64_t grace_ms; /* rotate: < 0 the default */
} write_arg_t;

static void write_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const write_arg_t *a = call->arg;
    int64_t tenant = param_id(call, "id"), key_id = param_id(call, "key_id");
    tg_tenant_ref_t ref = {.id = tenant};
    tg_mgmt_err_t *err = &out->err;
    tg_key_row_t before, after, fresh;
    tg_key_secret_t s;
    memset(&s, 0, sizeof(s));
    json_t *jb = NULL, *ja = NULL;
    if (tg_adm_tx_begin(db, err) != 0)
        return;
    if (tg_adm_lock_tenant(db, tenant, err) != 0 || key_row(db, tenant, key_id, &before, err) != 0)
        goto fail;
    jb = tg_repr_key(&before);
    char etag[TG_ADM_ETAG_LEN];
    key_etag(jb, etag);
    if (!tg_adm_if_match(call->has_if_match ? call->if_match : NULL, etag)) {
        tg_mgmt_fail(err, TG_EPRECONDITION_FAILED, "the key has changed since it was read (If-Match)");
        goto fail;
    }
    char rid[24];
    snprintf(rid, sizeof(rid), "%" PRId64, key_id);
    if (!a->rotate) {
        if (tg_key_revoke(db, ref, key_id, &after, err) != 0 || key_row(db, tenant, key_id, &after, err) != 0)
            goto fail;
        ja = tg_repr_key(&after);
        if (tg_adm_audit(db, call, "keys.revoke", "api_key", rid, tenant, jb, ja, err) != 0 ||
            tg_adm_tx_commit(db, err) != 0)
            goto fail;
        json_decref(jb);
        key_etag(ja, out->etag);
        out->status = 200;
        out->body = ja;
        return;
    }
    if (tg_key_rotate(db, call->cfg->key_pepper, ref, key_id, a->grace_ms, &s, err) != 0 ||
        key_row(db, tenant, key_id, &after, err) != 0 || key_row(db, tenant, s.id, &fresh, err) != 0)
        goto fail;
    /* the audit: the old key before and after (its new expiry), and the successor's listing */
    ja = json_pack("{s:o,s:o}", "old", tg_repr_key(&after), "new", tg_repr_key(&fresh));
    if (tg_adm_audit(db, call, "keys.rotate", "api_key", rid, tenant, jb, ja, err) != 0 ||
        tg_adm_tx_commit(db, err) != 0)
        goto fail;
    json_decref(jb);
    json_decref(ja);
    out->status = 201;
    out->body = secret_body(&fresh, &s);
    tg_key_secret_wipe(&s);
    return;
fail:
    tg_key_secret_wipe(&s);
    tg_adm_tx_rollback(db);
    json_decref(jb);
    json_decref(ja);
}

static void keys_revoke(tg_adm_ctx_t *c)
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
    tg_adm_run(c, write_work, a, free);
}

static const tg_adm_field_t rotate_fields[] = {
    {"grace_s", TG_ADM_INT, false, false, 0, TG_MGMT_GRACE_MAX_MS / 1000},
};

static void keys_rotate(tg_adm_ctx_t *c)
{
    json_t *body = tg_adm_body(c, true);
    if (body == NULL)
        return;
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    bool ok = tg_adm_check(body, rotate_fields, 1, &err);
    json_t *g = json_object_get(body, "grace_s");
    int64_t grace = ok && g != NULL ? json_integer_value(g) * 1000 : -1;
    json_decref(body);
    if (!ok) {
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    write_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    a->rotate = true;
    a->grace_ms = grace;
    tg_adm_run(c, write_work, a, free);
}

const tg_adm_route_t tg_adm_routes_keys[] = {
    {"POST", "/admin/v1/tenants/{id}/keys", TG_ADM_WRITE | TG_ADM_TENANT, keys_create, "keys.create"},
    {"GET", "/admin/v1/tenants/{id}/keys", TG_ADM_READ | TG_ADM_TENANT, keys_list, "keys.list"},
    {"GET", "/admin/v1/tenants/{id}/keys/{key_id}", TG_ADM_READ | TG_ADM_TENANT, keys_get, "keys.get"},
    {"DELETE", "/admin/v1/tenants/{id}/keys/{key_id}", TG_ADM_WRITE | TG_ADM_TENANT, keys_revoke,
     "keys.revoke"},
    {"POST", "/admin/v1/tenants/{id}/keys/{key_id}/rotate", TG_ADM_WRITE | TG_ADM_TENANT, keys_rotate,
     "keys.rotate"},
    {NULL, NULL, 0, NULL, NULL},
};
