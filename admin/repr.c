/*
 * repr.c - see repr.h.
 */
#include "repr.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

json_t *tg_repr_time(int64_t ms)
{
    if (ms == 0)
        return json_null();
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[96];
    snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return json_string(buf);
}

json_t *tg_repr_tenant(const tg_tenant_t *t)
{
    json_t *o = json_pack("{s:I,s:s,s:s,s:b}", "id", (json_int_t)t->id, "name", t->name, "status",
                          t->suspended ? "suspended" : "active", "zero_retention", t->zero_retention);
    json_object_set_new(o, "created_at", tg_repr_time(t->created_ms));
    json_object_set_new(o, "updated_at", tg_repr_time(t->updated_ms));
    return o;
}

json_t *tg_repr_models(const char *list)
{
    json_t *a = json_array();
    const char *p = list;
    while (p != NULL && *p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        json_array_append_new(a, json_stringn(p, n));
        p += n + (nl != NULL ? 1 : 0);
    }
    return a;
}

json_t *tg_repr_key(const tg_key_row_t *k)
{
    json_t *o = json_pack("{s:I,s:I,s:s}", "id", (json_int_t)k->id, "tenant_id", (json_int_t)k->tenant_id,
                          "prefix", k->prefix);
    json_object_set_new(o, "label", k->label[0] != '\0' ? json_string(k->label) : json_null());
    json_object_set_new(o, "created_at", tg_repr_time(k->created_ms));
    json_object_set_new(o, "expires_at", tg_repr_time(k->expires_ms));
    json_object_set_new(o, "revoked_at", tg_repr_time(k->revoked_ms));
    json_object_set_new(o, "last_used_at", tg_repr_time(k->last_used_ms));
    json_object_set_new(o, "rotated_from", k->rotated_from > 0 ? json_integer(k->rotated_from) : json_null());
    json_object_set_new(o, "allowed_models", k->has_models ? tg_repr_models(k->models) : json_null());
    return o;
}

int tg_adm_lock_tenant(PGconn *db, int64_t tenant_id, tg_mgmt_err_t *err)
{
    char id[24];
    snprintf(id, sizeof(id), "%" PRId64, tenant_id);
    const char *p[1] = {id};
    PGresult *r =
        PQexecParams(db, "SELECT 1 FROM tenants WHERE id = $1::bigint FOR UPDATE", 1, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = tg_mgmt_fail(err, PQstatus(db) == CONNECTION_OK ? TG_EINTERNAL : TG_EDB_UNAVAILABLE,
                          "the tenant could not be read");
    else if (PQntuples(r) != 1)
        rc = tg_mgmt_fail(err, TG_ENOT_FOUND, "no such tenant");
    PQclear(r);
    return rc;
}
