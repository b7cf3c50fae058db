/*
 * manage.c - what the management files share that touches no database: structured errors and
 * the validation of names, labels, model lists, new keys and policy changes (manage.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "manage.h"

void tg_mgmt_err_reset(tg_mgmt_err_t *err)
{
    memset(err, 0, sizeof(*err));
}

int tg_mgmt_fail(tg_mgmt_err_t *err, int code, const char *fmt, ...)
{
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

void tg_mgmt_field(tg_mgmt_err_t *err, const char *field, const char *fmt, ...)
{
    err->code = TG_EINVALID_REQUEST;
    if (err->msg[0] == '\0')
        snprintf(err->msg, sizeof(err->msg), "invalid input");
    if (err->n_fields >= TG_MGMT_FIELDS_MAX)
        return;
    tg_mgmt_field_err_t *f = &err->fields[err->n_fields++];
    snprintf(f->field, sizeof(f->field), "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof(f->msg), fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------ validation */

/* Valid UTF-8 without control characters (C0, DEL); n bytes. */
static bool printable_utf8(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return false;
            p++;
            continue;
        }
        size_t len = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (len == 0 || c == 0xc0 || c == 0xc1 || c > 0xf4 || (size_t)(end - p) < len)
            return false;
        for (size_t i = 1; i < len; i++)
            if ((p[i] & 0xc0) != 0x80)
                return false;
        p += len;
    }
    return true;
}

bool tg_mgmt_check_name(const char *name, const char *field, tg_mgmt_err_t *err)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > TG_MGMT_NAME_MAX || !printable_utf8(name, n)) {
        tg_mgmt_field(err, field, "must be 1 to %d bytes of UTF-8 without control characters",
                      TG_MGMT_NAME_MAX);
        return false;
    }
    return true;
}

bool tg_mgmt_check_label(const char *label, const char *field, tg_mgmt_err_t *err)
{
    size_t n = label != NULL ? strlen(label) : 0;
    if (n == 0 || n > TG_MGMT_LABEL_MAX || !printable_utf8(label, n)) {
        tg_mgmt_field(err, field, "must be 1 to %d bytes of UTF-8 without control characters",
                      TG_MGMT_LABEL_MAX);
        return false;
    }
    return true;
}

/* A model name's shape: what a config name can be and a '\n'-separated list can carry. */
static bool model_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > TG_MGMT_MODEL_NAME_MAX || !printable_utf8(s, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ')
            return false;
    return true;
}

bool tg_mgmt_check_models(const tg_config_t *catalog, const tg_models_arg_t *m, const char *field,
                          tg_mgmt_err_t *err)
{
    if (!m->set)
        return true;
    bool ok = true;
    char f[32];
    if (m->n > TG_MGMT_MODELS_MAX) {
        tg_mgmt_field(err, field, "names at most %d models", TG_MGMT_MODELS_MAX);
        return false;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < m->n; i++) {
        const char *name = m->names[i];
        snprintf(f, sizeof(f), "%s[%zu]", field, i);
        if (name == NULL || !model_name_ok(name)) {
            tg_mgmt_field(err, f, "a model name is 1 to %d bytes without spaces or control characters",
                          TG_MGMT_MODEL_NAME_MAX);
            ok = false;
            continue;
        }
        bytes += strlen(name) + (i > 0);
        bool repeated = false;
        for (size_t j = 0; j < i && !repeated; j++)
            repeated = m->names[j] != NULL && strcmp(m->names[j], name) == 0;
        if (repeated) {
            tg_mgmt_field(err, f, "\"%s\" is listed twice", name);
            ok = false;
        } else if (catalog != NULL && tg_config_find_model(catalog, name) == NULL) {
            if (tg_config_find_chain(catalog, name) != NULL)
                tg_mgmt_field(err, f,
                              "\"%s\" is a chain: list its models instead (a chain is allowed when all its "
                              "models are)",
                              name);
            else
                tg_mgmt_field(err, f, "\"%s\" is not a configured model", name);
            ok = false;
        }
    }
    if (ok && bytes > TG_MGMT_MODELS_BYTES) {
        tg_mgmt_field(err, field, "the names take %zu bytes, more than %d", bytes, TG_MGMT_MODELS_BYTES);
        ok = false;
    }
    return ok;
}

bool tg_mgmt_check_ref(tg_tenant_ref_t t, tg_mgmt_err_t *err)
{
    if (t.id > 0)
        return true;
    if (t.name == NULL) {
        tg_mgmt_field(err, "tenant", "is required (a tenant id or name)");
        return false;
    }
    return tg_mgmt_check_name(t.name, "tenant", err);
}

bool tg_mgmt_check_key_new(const tg_config_t *catalog, const tg_key_new_t *in, int64_t now_ms,
                           tg_mgmt_err_t *err)
{
    bool ok = tg_mgmt_check_ref(in->tenant, err);
    if (in->create_tenant && in->tenant.id <= 0 && in->tenant.name == NULL)
        ok = false; /* already reported */
    if (in->label != NULL)
        ok &= tg_mgmt_check_label(in->label, "label", err);
    if (in->expires_unix_ms != 0 && in->expires_unix_ms <= now_ms) {
        tg_mgmt_field(err, "expires_at", "must be in the future");
        ok = false;
    }
    ok &= tg_mgmt_check_models(catalog, &in->models, "models", err);
    return ok;
}

static bool check_num(const tg_num_field_t *f, const char *field, int64_t max, tg_mgmt_err_t *err)
{
    if (f->op != TG_FIELD_SET)
        return true;
    if (f->value <= 0 || f->value > max) {
        tg_mgmt_field(err, field, "must be between 1 and %lld", (long long)max);
        return false;
    }
    return true;
}

bool tg_mgmt_check_policy(const tg_config_t *catalog, const tg_policy_update_t *u, tg_mgmt_err_t *err)
{
    bool ok = tg_mgmt_check_ref(u->tenant, err);
    if (u->key_id < 0) {
        tg_mgmt_field(err, "key_id", "must be a key id");
        ok = false;
    }
    if (u->models_op == TG_FIELD_SET)
        ok &= tg_mgmt_check_models(catalog, &u->models, "models", err);
    /* the columns are integer (rpm, key_rpm, max_tokens) or bigint (tpm, key_tpm) */
    ok &= check_num(&u->max_tokens, "max_tokens", INT32_MAX, err);
    ok &= check_num(&u->rpm, "rpm", INT32_MAX, err);
    ok &= check_num(&u->key_rpm, "key_rpm", INT32_MAX, err);
    ok &= check_num(&u->tpm, "tpm", INT64_MAX, err);
    ok &= check_num(&u->key_tpm, "key_tpm", INT64_MAX, err);
    if (u->key_id > 0) {
        /* what a key's override row cannot hold: the tenant's own settings */
        const struct {
            const char *name;
            tg_field_op_t op;
        } tenant_only[] = {{"rpm", u->rpm.op},
                           {"tpm", u->tpm.op},
                           {"byok_fallback", u->byok_fallback.op},
                           {"zero_retention", u->zero_retention.op}};
        for (size_t i = 0; i < sizeof(tenant_only) / sizeof(tenant_only[0]); i++)
            if (tenant_only[i].op != TG_FIELD_KEEP) {
                tg_mgmt_field(err, tenant_only[i].name, "is a tenant setting: not in a key's policy");
                ok = false;
            }
    }
    return ok;
}

bool tg_mgmt_models_literal(const tg_models_arg_t *m, char *out, size_t cap)
{
    size_t o = 0;
#define PUT(ch)                \
    do {                       \
        if (o + 1 >= cap)      \
            return false;      \
        out[o++] = (char)(ch); \
    } while (0)
    PUT('{');
    for (size_t i = 0; i < m->n; i++) {
        if (i > 0)
            PUT(',');
        PUT('"');
        for (const char *p = m->names[i]; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                PUT('\\');
            PUT(*p);
        }
        PUT('"');
    }
    PUT('}');
#undef PUT
    out[o] = '\0';
    return true;
}
