/*
 * body.c - request bodies of the admin API: one bounded JSON object, and a validation against a
 * field spec that reports every bad field at once (api.h, "bodies and validation").
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http.h"

static size_t depth_of(const json_t *v)
{
    size_t d = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m)
        {
            size_t x = depth_of(m);
            if (x > d)
                d = x;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
        {
            size_t x = depth_of(m);
            if (x > d)
                d = x;
        }
        return d + 1;
    }
    return 0;
}

json_t *tg_adm_body(tg_adm_ctx_t *c, bool empty_ok)
{
    h2o_req_t *req = c->req;
    if (req->entity.len > TG_ADM_BODY_MAX) {
        tg_adm_reply_error(req, TG_ETOO_LARGE, "the request body is larger than 64 KiB", NULL);
        return NULL;
    }
    if (req->entity.base == NULL || req->entity.len == 0) {
        if (empty_ok)
            return json_object();
        tg_adm_reply_error(req, TG_EINVALID_JSON, "the request body is empty; a JSON object is expected",
                           NULL);
        return NULL;
    }
    json_error_t jerr;
    /* jansson refuses invalid UTF-8 and, without JSON_ALLOW_NUL, any \u0000 */
    json_t *v = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (v == NULL) {
        tg_adm_reply_error(req, TG_EINVALID_JSON, NULL, NULL);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        tg_adm_reply_error(req, TG_EINVALID_REQUEST, "the request body must be a JSON object", NULL);
        return NULL;
    }
    if (depth_of(v) > TG_ADM_DEPTH_MAX) {
        json_decref(v);
        tg_adm_reply_error(req, TG_EINVALID_JSON, "the request body is nested too deeply", NULL);
        return NULL;
    }
    return v;
}

void *tg_adm_job_arg(tg_adm_ctx_t *c, bool empty_ok, size_t size, json_t **body, tg_mgmt_err_t *err)
{
    tg_mgmt_err_reset(err);
    *body = tg_adm_body(c, empty_ok);
    if (*body == NULL)
        return NULL;
    void *arg = calloc(1, size);
    if (arg == NULL) {
        json_decref(*body);
        *body = NULL;
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
    }
    return arg;
}

bool tg_adm_body_none(tg_adm_ctx_t *c)
{
    json_t *body = tg_adm_body(c, true);
    if (body == NULL)
        return false;
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    bool ok = tg_adm_check(body, NULL, 0, &err);
    json_decref(body);
    if (!ok)
        tg_adm_reply_mgmt_err(c->req, &err);
    return ok;
}

/* Valid UTF-8 (jansson guarantees it for parsed strings) without control characters. */
static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

static void check_one(const tg_adm_field_t *f, const json_t *v, tg_mgmt_err_t *err)
{
    if (json_is_null(v)) {
        if (!f->nullable)
            tg_mgmt_field(err, f->name, "%s must not be null", f->name);
        return;
    }
    switch (f->kind) {
    case TG_ADM_STR: {
        if (!json_is_string(v)) {
            tg_mgmt_field(err, f->name, "%s must be a string", f->name);
            return;
        }
        size_t n = json_string_length(v);
        if ((int64_t)n < f->min || (int64_t)n > f->max)
            tg_mgmt_field(err, f->name, "%s must be %" PRId64 " to %" PRId64 " bytes long", f->name, f->min,
                          f->max);
        else if (!printable(json_string_value(v), n))
            tg_mgmt_field(err, f->name, "%s must not contain control characters", f->name);
        return;
    }
    case TG_ADM_INT:
        if (!json_is_integer(v) || json_integer_value(v) < f->min || json_integer_value(v) > f->max)
            tg_mgmt_field(err, f->name, "%s must be an integer from %" PRId64 " to %" PRId64, f->name, f->min,
                          f->max);
        return;
    case TG_ADM_BOOL:
        if (!json_is_boolean(v))
            tg_mgmt_field(err, f->name, "%s must be true or false", f->name);
        return;
    case TG_ADM_STR_LIST: {
        if (!json_is_array(v) || (int64_t)json_array_size(v) > f->max) {
            tg_mgmt_field(err, f->name, "%s must be an array of at most %" PRId64 " strings", f->name,
                          f->max);
            return;
        }
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            char name[48];
            snprintf(name, sizeof(name), "%.20s[%u]", f->name, (unsigned)(i % 100000u));
            if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > 64 ||
                !printable(json_string_value(e), json_string_length(e)))
                tg_mgmt_field(err, name, "%s must be a string of 1 to 64 printable bytes", name);
        }
        return;
    }
    }
}

bool tg_adm_check(const json_t *obj, const tg_adm_field_t *fields, size_t n, tg_mgmt_err_t *err)
{
    size_t before = err->n_fields;
    int code_before = err->code;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        const tg_adm_field_t *f = NULL;
        for (size_t i = 0; i < n && f == NULL; i++)
            if (strcmp(fields[i].name, key) == 0)
                f = &fields[i];
        if (f == NULL) {
            char name[32];
            /* the key is the client's text: shown cut, and only when printable */
            if (strlen(key) < sizeof(name) && printable(key, strlen(key)))
                snprintf(name, sizeof(name), "%s", key);
            else
                snprintf(name, sizeof(name), "(unknown)");
            tg_mgmt_field(err, name, "unknown field %s", name);
            continue;
        }
        check_one(f, v, err);
    }
    for (size_t i = 0; i < n; i++)
        if (fields[i].required && json_object_get(obj, fields[i].name) == NULL)
            tg_mgmt_field(err, fields[i].name, "%s is required", fields[i].name);
    bool ok = err->n_fields == before && err->code == code_before;
    if (!ok && err->msg[0] == '\0')
        snprintf(err->msg, sizeof(err->msg), "the request has invalid fields");
    return ok;
}
