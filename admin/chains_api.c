/*
 * chains_api.c - /admin/v1/tenants/{id}/chains: a tenant's named chains (chains.h), validated
 * against the model catalog of the config snapshot the job runs with.
 *
 *   GET    .../chains          every chain of the tenant (at most 100: one page)
 *   GET    .../chains/{name}   one, with its ETag
 *   PUT    .../chains/{name}   {targets: [model...], context_fallback?, request_first_byte_ms?}:
 *                              201 created or 200 replaced; If-Match against the current ETag
 *   DELETE .../chains/{name}   204; If-Match likewise
 *
 * An unknown model is a 400 naming the field ("targets[1]", "context_fallback"). Each write and
 * its audit row (before and after) commit together; the table's trigger NOTIFYs tollgate_tenants,
 * so every gateway uses the change within a second (gateway/src/tchains.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "chains.h"
#include "repr.h"

static int64_t tenant_of(const tg_adm_call_t *call)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, "id") == 0)
            return call->params[i].id;
    return 0;
}

static const char *name_of(const tg_adm_call_t *call)
{
    for (size_t i = 0; i < call->n_params; i++)
        if (strcmp(call->params[i].name, "name") == 0)
            return call->params[i].value;
    return "";
}

/* Keeps the first error of each field (the generic check and the catalog's may both name one). */
void tg_adm_dedupe_fields(tg_mgmt_err_t *err)
{
    size_t k = 0;
    for (size_t i = 0; i < err->n_fields; i++) {
        bool seen = false;
        for (size_t j = 0; j < k && !seen; j++)
            seen = strcmp(err->fields[j].field, err->fields[i].field) == 0;
        if (!seen)
            err->fields[k++] = err->fields[i];
    }
    err->n_fields = k;
}

static json_t *chain_repr(const tg_chain_t *ch)
{
    json_t *targets = json_array();
    for (size_t i = 0; i < ch->n_targets; i++)
        json_array_append_new(targets, json_string(ch->targets[i]));
    json_t *o =
        json_pack("{ss sI so}", "name", ch->name, "tenant_id", (json_int_t)ch->tenant_id, "targets", targets);
    json_object_set_new(o, "context_fallback",
                        ch->context_fallback[0] != '\0' ? json_string(ch->context_fallback) : json_null());
    json_object_set_new(o, "request_first_byte_ms",
                        ch->request_first_byte_ms > 0 ? json_integer(ch->request_first_byte_ms)
                                                      : json_null());
    json_object_set_new(o, "version", json_integer(ch->version));
    json_object_set_new(o, "created_at", tg_repr_time(ch->created_ms));
    json_object_set_new(o, "updated_at", tg_repr_time(ch->updated_ms));
    return o;
}

/* ---------------------------------------------------------------- reads */

static void list_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    tg_chain_list_t l;
    if (tg_chain_list(db, tenant_of(call), &l, &out->err) != 0)
        return;
    json_t *data = json_array();
    for (size_t i = 0; i < l.n; i++)
        json_array_append_new(data, chain_repr(&l.rows[i]));
    tg_chain_list_free(&l);
    out->status = 200;
    out->body = tg_adm_page_body(data, 0);
}

static void chains_list(tg_adm_ctx_t *c)
{
    tg_adm_run(c, list_work, NULL, NULL);
}

static void get_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    tg_chain_t ch;
    tg_tenant_t t;
    if (tg_tenant_get(db, (tg_tenant_ref_t){.id = tenant_of(call)}, &t, &out->err) != 0 ||
        tg_chain_get(db, tenant_of(call), name_of(call), false, &ch, &out->err) != 0)
        return;
    out->body = chain_repr(&ch);
    tg_adm_etag(out->body, out->etag);
    out->status = 200;
}

static void chains_get(tg_adm_ctx_t *c)
{
    tg_adm_run(c, get_work, NULL, NULL);
}

/* ---------------------------------------------------------------- writes */

typedef struct put_arg {
    size_t n_targets;
    char targets[TG_CHAIN_TARGETS_MAX][TG_CHAIN_MODEL_MAX + 1];
    char fallback[TG_CHAIN_MODEL_MAX + 1];
    bool has_fallback;
    int64_t budget_ms;
    bool delete;
} put_arg_t;

/* The chain as it is now, locked, checked against If-Match: 0 (found), 1 (absent), or an error. */
static int current(PGconn *db, const tg_adm_call_t *call, tg_chain_t *ch, json_t **repr, tg_adm_result_t *out)
{
    *repr = NULL;
    int rc = tg_adm_lock_tenant(db, tenant_of(call), &out->err);
    if (rc != 0)
        return rc;
    rc = tg_chain_get(db, tenant_of(call), name_of(call), true, ch, &out->err);
    if (rc == TG_ENOT_FOUND) {
        tg_mgmt_err_reset(&out->err);
        /* If-Match names a version that cannot exist; "*" asks for an existing one */
        if (call->has_if_match)
            return tg_mgmt_fail(&out->err, TG_EPRECONDITION_FAILED, "the chain does not exist (If-Match)");
        return 1;
    }
    if (rc != 0)
        return rc;
    *repr = chain_repr(ch);
    char etag[TG_ADM_ETAG_LEN];
    tg_adm_etag(*repr, etag);
    if (!tg_adm_if_match(call->has_if_match ? call->if_match : NULL, etag)) {
        json_decref(*repr);
        *repr = NULL;
        return tg_mgmt_fail(&out->err, TG_EPRECONDITION_FAILED,
                            "the chain has changed since it was read (If-Match)");
    }
    return 0;
}

static void write_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    const put_arg_t *a = call->arg;
    int64_t tenant = tenant_of(call);
    const char *name = name_of(call);
    tg_chain_t before, after;
    json_t *jb = NULL, *ja = NULL;
    if (tg_adm_tx_begin(db, &out->err) != 0)
        return;
    int rc = current(db, call, &before, &jb, out);
    if (rc < 0)
        goto fail;
    bool existed = rc == 0;
    if (a->delete) {
        if (!existed) {
            tg_mgmt_fail(&out->err, TG_ENOT_FOUND, "the tenant has no chain \"%s\"", name);
            goto fail;
        }
        if (tg_chain_delete(db, tenant, name, NULL, &out->err) != 0)
            goto fail;
    } else {
        const char *targets[TG_CHAIN_TARGETS_MAX];
        for (size_t i = 0; i < a->n_targets; i++)
            targets[i] = a->targets[i];
        tg_chain_in_t in = {.name = name,
                            .targets = targets,
                            .n_targets = a->n_targets,
                            .context_fallback = a->has_fallback ? a->fallback : NULL,
                            .request_first_byte_ms = a->budget_ms};
        bool created = false;
        if (tg_chain_put(db, call->cfg, tenant, &in, &after, &created, &out->err) != 0)
            goto fail;
        ja = chain_repr(&after);
    }
    if (tg_adm_audit(db, call,
                     a->delete ? "chains.delete"
                     : existed ? "chains.replace"
                               : "chains.create",
                     "chain", name, tenant, jb, ja, &out->err) != 0)
        goto fail;
    if (tg_adm_tx_commit(db, &out->err) != 0)
        goto done;
    if (a->delete) {
        out->status = 204;
    } else {
        out->status = existed ? 200 : 201;
        out->body = ja;
        ja = NULL;
        tg_adm_etag(out->body, out->etag);
    }
    goto done;
fail:
    tg_adm_tx_rollback(db);
done:
    json_decref(jb);
    json_decref(ja);
}

static const tg_adm_field_t put_fields[] = {
    {"targets", TG_ADM_STR_LIST, true, false, 1, TG_CHAIN_TARGETS_MAX},
    {"context_fallback", TG_ADM_STR, false, true, 1, TG_CHAIN_MODEL_MAX},
    {"request_first_byte_ms", TG_ADM_INT, false, true, 1, TG_CHAIN_BUDGET_MAX},
};

static void chains_put(tg_adm_ctx_t *c)
{
    tg_mgmt_err_t err;
    json_t *body;
    put_arg_t *a = tg_adm_job_arg(c, false, sizeof(*a), &body, &err);
    if (a == NULL)
        return;
    /* the shapes first, then the catalog on every value of the right type: one 400 lists all */
    bool shaped = tg_adm_check(body, put_fields, sizeof(put_fields) / sizeof(put_fields[0]), &err);
    const json_t *t = json_object_get(body, "targets");
    const char *names[TG_CHAIN_TARGETS_MAX];
    bool list_ok = json_is_array(t) && json_array_size(t) <= TG_CHAIN_TARGETS_MAX;
    for (size_t i = 0; list_ok && i < json_array_size(t); i++) {
        const char *s = json_string_value(json_array_get(t, i));
        names[a->n_targets] = s != NULL ? s : "";
        if (s != NULL && strlen(s) <= TG_CHAIN_MODEL_MAX)
            snprintf(a->targets[a->n_targets], sizeof(a->targets[0]), "%s", s);
        a->n_targets++;
    }
    const char *fb = json_string_value(json_object_get(body, "context_fallback"));
    if (fb != NULL && strlen(fb) <= TG_CHAIN_MODEL_MAX) {
        a->has_fallback = true;
        snprintf(a->fallback, sizeof(a->fallback), "%s", fb);
    }
    const json_t *bj = json_object_get(body, "request_first_byte_ms");
    if (json_is_integer(bj) && json_integer_value(bj) > 0 && json_integer_value(bj) <= TG_CHAIN_BUDGET_MAX)
        a->budget_ms = json_integer_value(bj);
    /* the catalog of now: the job checks again with its own snapshot */
    tg_config_t *cfg = tg_config_acquire();
    tg_chain_in_t in = {.name = tg_adm_param(c, "name"),
                        .targets = names,
                        .n_targets = a->n_targets,
                        .context_fallback = a->has_fallback ? fb : NULL,
                        .request_first_byte_ms = a->budget_ms};
    if (list_ok && (shaped || a->n_targets > 0))
        tg_chain_check(cfg, &in, &err);
    else if (!tg_chain_name_ok(in.name) || (cfg != NULL && tg_config_find_model(cfg, in.name) != NULL))
        tg_mgmt_field(&err, "name",
                      "must be a chain name of letters, digits, '.', '_' or '-' that is no model's");
    tg_config_unref(cfg);
    tg_adm_dedupe_fields(&err);
    json_decref(body);
    if (err.code != 0) {
        free(a);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    tg_adm_run(c, write_work, a, free);
}

static void chains_delete(tg_adm_ctx_t *c)
{
    put_arg_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    a->delete = true;
    tg_adm_run(c, write_work, a, free);
}

const tg_adm_route_t tg_adm_routes_chains[] = {
    {"GET", "/admin/v1/tenants/{id}/chains", TG_ADM_READ | TG_ADM_TENANT, chains_list, "chains.list"},
    {"GET", "/admin/v1/tenants/{id}/chains/{name}", TG_ADM_READ | TG_ADM_TENANT, chains_get, "chains.get"},
    {"PUT", "/admin/v1/tenants/{id}/chains/{name}", TG_ADM_WRITE | TG_ADM_TENANT, chains_put, "chains.put"},
    {"DELETE", "/admin/v1/tenants/{id}/chains/{name}", TG_ADM_WRITE | TG_ADM_TENANT, chains_delete,
     "chains.delete"},
    {NULL, NULL, 0, NULL, NULL},
};
