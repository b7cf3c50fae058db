/*
 * chains.c - a tenant's named chains, see chains.h.
 */
#include "chains.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "manage_db.h"

/* The columns chain_of_row reads, of a tenant_chains row named c. */
#define CHAIN_COLS                                                                                         \
    "c.tenant_id, c.name, array_to_string(c.targets, E'\\n'), COALESCE(c.context_fallback, ''), "          \
    "COALESCE(c.request_first_byte_ms, 0), c.version, (extract(epoch FROM c.created_at) * 1000)::bigint, " \
    "(extract(epoch FROM c.updated_at) * 1000)::bigint"

bool tg_chain_name_ok(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > TG_CHAIN_NAME_MAX)
        return false;
    for (const char *p = name; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.'))
            return false;
    }
    return true;
}

/* A model name as the catalog could hold it: 1..128 bytes, printable ASCII without space (the
 * config's names are narrower still; this only bounds what is quoted back). */
static bool model_shape_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TG_CHAIN_MODEL_MAX)
        return false;
    for (const char *p = s; *p != '\0'; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    return true;
}

static bool check_model(const tg_config_t *catalog, const char *name, const char *field, tg_mgmt_err_t *err)
{
    if (name == NULL || !model_shape_ok(name)) {
        tg_mgmt_field(err, field, "must be a model name of 1 to %d printable characters", TG_CHAIN_MODEL_MAX);
        return false;
    }
    if (catalog != NULL && tg_config_find_model(catalog, name) == NULL) {
        tg_mgmt_field(err, field, "unknown model \"%.64s\" (GET /admin/v1/models lists the catalog)", name);
        return false;
    }
    return true;
}

bool tg_chain_check(const tg_config_t *catalog, const tg_chain_in_t *in, tg_mgmt_err_t *err)
{
    size_t before = err->n_fields;
    if (!tg_chain_name_ok(in->name))
        tg_mgmt_field(err, "name", "must be 1 to %d characters of letters, digits, '.', '_' or '-'",
                      TG_CHAIN_NAME_MAX);
    else if (catalog != NULL && tg_config_find_model(catalog, in->name) != NULL)
        tg_mgmt_field(err, "name", "\"%s\" is a model of the catalog: models and chains share one namespace",
                      in->name);
    if (in->n_targets == 0 || in->n_targets > TG_CHAIN_TARGETS_MAX) {
        tg_mgmt_field(err, "targets", "must list 1 to %d model names", TG_CHAIN_TARGETS_MAX);
    } else {
        for (size_t i = 0; i < in->n_targets; i++) {
            char field[32];
            snprintf(field, sizeof(field), "targets[%zu]", i);
            if (!check_model(catalog, in->targets[i], field, err))
                continue;
            for (size_t k = 0; k < i; k++)
                if (in->targets[k] != NULL && strcmp(in->targets[k], in->targets[i]) == 0) {
                    tg_mgmt_field(err, field, "model \"%.64s\" is listed twice", in->targets[i]);
                    break;
                }
        }
    }
    if (in->context_fallback != NULL)
        check_model(catalog, in->context_fallback, "context_fallback", err);
    if (in->request_first_byte_ms < 0 || in->request_first_byte_ms > TG_CHAIN_BUDGET_MAX)
        tg_mgmt_field(err, "request_first_byte_ms", "must be an integer from 1 to %d (milliseconds)",
                      TG_CHAIN_BUDGET_MAX);
    return err->n_fields == before && err->code == 0;
}

/* Row `row` of a CHAIN_COLS result into c. */
static void chain_of_row(const PGresult *r, int row, tg_chain_t *c)
{
    memset(c, 0, sizeof(*c));
    c->tenant_id = tg_mgmt_col_i64(r, row, 0);
    tg_mgmt_col_text(r, row, 1, c->name, sizeof(c->name));
    const char *t = PQgetvalue(r, row, 2);
    while (*t != '\0' && c->n_targets < TG_CHAIN_TARGETS_MAX) {
        const char *nl = strchr(t, '\n');
        size_t len = nl != NULL ? (size_t)(nl - t) : strlen(t);
        if (len > TG_CHAIN_MODEL_MAX)
            len = TG_CHAIN_MODEL_MAX; /* the schema bounds the whole list; a name this long is not a model */
        memcpy(c->targets[c->n_targets], t, len);
        c->targets[c->n_targets++][len] = '\0';
        if (nl == NULL)
            break;
        t = nl + 1;
    }
    tg_mgmt_col_text(r, row, 3, c->context_fallback, sizeof(c->context_fallback));
    c->request_first_byte_ms = tg_mgmt_col_i64(r, row, 4);
    c->version = tg_mgmt_col_i64(r, row, 5);
    c->created_ms = tg_mgmt_col_i64(r, row, 6);
    c->updated_ms = tg_mgmt_col_i64(r, row, 7);
}

int tg_chain_put(PGconn *db, const tg_config_t *catalog, int64_t tenant_id, const tg_chain_in_t *in,
                 tg_chain_t *out, bool *created, tg_mgmt_err_t *err)
{
    if (!tg_chain_check(catalog, in, err))
        return err->code;
    char lit[TG_CHAIN_TARGETS_MAX * (2 * TG_CHAIN_MODEL_MAX + 3) + 3];
    tg_models_arg_t m = {.set = true, .names = in->targets, .n = in->n_targets};
    if (!tg_mgmt_models_literal(&m, lit, sizeof(lit))) {
        tg_mgmt_field(err, "targets", "the names are too long together");
        return err->code;
    }
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    int64_t id = 0;
    rc = tg_mgmt_tenant_id(db, (tg_tenant_ref_t){.id = tenant_id}, true, &id, err);
    PGresult *r = NULL;
    if (rc == 0) {
        char t[TG_MGMT_I64_STR], budget[TG_MGMT_I64_STR], max[16];
        snprintf(t, sizeof(t), "%" PRId64, id);
        snprintf(budget, sizeof(budget), "%" PRId64, in->request_first_byte_ms);
        snprintf(max, sizeof(max), "%d", TG_CHAINS_PER_TENANT);
        const char *p[6] = {
            t, in->name, lit, in->context_fallback, in->request_first_byte_ms > 0 ? budget : NULL, max};
        /* a new name past the bound inserts nothing (the tenant row is locked: no race) */
        r = tg_mgmt_exec(
            db,
            "INSERT INTO tenant_chains AS c (tenant_id, name, targets, context_fallback, "
            "request_first_byte_ms) SELECT $1::bigint, $2, $3::text[], $4, $5::integer "
            "WHERE EXISTS (SELECT 1 FROM tenant_chains WHERE tenant_id = $1::bigint AND name = $2) "
            "OR (SELECT count(*) FROM tenant_chains WHERE tenant_id = $1::bigint) < $6::integer "
            "ON CONFLICT (tenant_id, name) DO UPDATE SET targets = EXCLUDED.targets, "
            "context_fallback = EXCLUDED.context_fallback, "
            "request_first_byte_ms = EXCLUDED.request_first_byte_ms, version = c.version + 1, "
            "updated_at = now() RETURNING " CHAIN_COLS ", xmax = 0",
            6, p, "store the chain", &rc, err);
    }
    if (rc == 0 && PQntuples(r) != 1)
        rc = tg_mgmt_fail(err, TG_ECONFLICT, "the tenant has %d chains already, the most it may have",
                          TG_CHAINS_PER_TENANT);
    if (rc == 0) {
        chain_of_row(r, 0, out);
        if (created != NULL)
            *created = tg_mgmt_col_bool(r, 0, 8);
    }
    PQclear(r);
    if (rc == 0)
        return tg_mgmt_commit(db, err);
    tg_mgmt_rollback(db);
    return rc;
}

int tg_chain_get(PGconn *db, int64_t tenant_id, const char *name, bool lock, tg_chain_t *out,
                 tg_mgmt_err_t *err)
{
    if (!tg_chain_name_ok(name))
        return tg_mgmt_fail(err, TG_ENOT_FOUND, "no such chain");
    char t[TG_MGMT_I64_STR];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    const char *p[2] = {t, name};
    int rc;
    PGresult *r =
        tg_mgmt_exec(db,
                     lock ? "SELECT " CHAIN_COLS " FROM tenant_chains c WHERE c.tenant_id = $1::bigint "
                            "AND c.name = $2 FOR UPDATE"
                          : "SELECT " CHAIN_COLS " FROM tenant_chains c WHERE c.tenant_id = $1::bigint "
                            "AND c.name = $2",
                     2, p, "read the chain", &rc, err);
    if (r == NULL)
        return rc;
    if (PQntuples(r) != 1)
        rc = tg_mgmt_fail(err, TG_ENOT_FOUND, "the tenant has no chain \"%s\"", name);
    else
        chain_of_row(r, 0, out);
    PQclear(r);
    return rc;
}

int tg_chain_delete(PGconn *db, int64_t tenant_id, const char *name, tg_chain_t *before, tg_mgmt_err_t *err)
{
    if (!tg_chain_name_ok(name))
        return tg_mgmt_fail(err, TG_ENOT_FOUND, "no such chain");
    char t[TG_MGMT_I64_STR];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    const char *p[2] = {t, name};
    int rc = tg_mgmt_begin(db, err);
    if (rc != 0)
        return rc;
    PGresult *r = tg_mgmt_exec(db,
                               "DELETE FROM tenant_chains c WHERE c.tenant_id = $1::bigint AND c.name = $2 "
                               "RETURNING " CHAIN_COLS,
                               2, p, "delete the chain", &rc, err);
    if (r != NULL && PQntuples(r) != 1)
        rc = tg_mgmt_fail(err, TG_ENOT_FOUND, "the tenant has no chain \"%s\"", name);
    else if (r != NULL && before != NULL)
        chain_of_row(r, 0, before);
    PQclear(r);
    if (rc == 0)
        return tg_mgmt_commit(db, err);
    tg_mgmt_rollback(db);
    return rc;
}

int tg_chain_list(PGconn *db, int64_t tenant_id, tg_chain_list_t *out, tg_mgmt_err_t *err)
{
    memset(out, 0, sizeof(*out));
    char t[TG_MGMT_I64_STR], max[16];
    snprintf(t, sizeof(t), "%" PRId64, tenant_id);
    snprintf(max, sizeof(max), "%d", TG_CHAINS_PER_TENANT);
    const char *p[2] = {t, max};
    int rc;
    /* the tenant's row joined in, so that "no such tenant" differs from "no chains" in one statement */
    PGresult *r =
        tg_mgmt_exec(db,
                     "SELECT " CHAIN_COLS " FROM tenants x LEFT JOIN LATERAL (SELECT * FROM tenant_chains "
                     "WHERE tenant_id = x.id ORDER BY name LIMIT $2::integer) c ON true "
                     "WHERE x.id = $1::bigint ORDER BY c.name",
                     2, p, "list the chains", &rc, err);
    if (r == NULL)
        return rc;
    int n = PQntuples(r);
    if (n == 0) {
        PQclear(r);
        return tg_mgmt_fail(err, TG_ENOT_FOUND, "no tenant with id %" PRId64, tenant_id);
    }
    if (n == 1 && PQgetisnull(r, 0, 1))
        n = 0;
    if (n > 0 && (out->rows = calloc((size_t)n, sizeof(*out->rows))) == NULL) {
        PQclear(r);
        return tg_mgmt_fail(err, TG_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++)
        chain_of_row(r, i, &out->rows[i]);
    out->n = (size_t)n;
    PQclear(r);
    return 0;
}

void tg_chain_list_free(tg_chain_list_t *l)
{
    free(l->rows);
    l->rows = NULL;
    l->n = 0;
}
