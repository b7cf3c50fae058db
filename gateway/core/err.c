/*
 * err.c - lookups into the error table of err.h.
 */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct {
    int num;
    const char *name, *code, *type, *msg, *json;
    int http;
} entry_t;

/* The JSON body is pasted together from the row's literals: the table's texts hold no character
 * that JSON would escape (test_err.c parses every body back). */
#define BODY(code, type, msg) \
    "{\"error\":{\"message\":\"" msg "\",\"type\":\"" type "\",\"code\":\"" code "\",\"param\":null}}"

static const entry_t table[] = {
#define TG_X(num, name, code, http, type, msg) {num, #name, code, type, msg, BODY(code, type, msg), http},
    TG_ERR_MAP(TG_X)
#undef TG_X
};

static const entry_t *find(int err)
{
    int i = -err - 1;
    if (i < 0 || (size_t)i >= sizeof(table) / sizeof(table[0]))
        return NULL;
    return &table[i];
}

const char *tg_err_name(int err)
{
    const entry_t *e = find(err);
    return e ? e->name : "UNKNOWN";
}

const char *tg_err_code(int err)
{
    const entry_t *e = find(err);
    return e ? e->code : "unknown";
}

const char *tg_err_public_msg(int err)
{
    const entry_t *e = find(err);
    return e ? e->msg : "internal error";
}

const char *tg_err_type(int err)
{
    const entry_t *e = find(err);
    return e ? e->type : "server_error";
}

int tg_err_http_status(int err)
{
    const entry_t *e = find(err);
    return e ? e->http : 500;
}

const char *tg_err_json(int err)
{
    const entry_t *e = find(err);
    return e != NULL ? e->json : find(TG_EINTERNAL)->json;
}

int tg_error_set(tg_error_t *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
        va_end(ap);
    }
    return code;
}
