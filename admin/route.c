/*
 * route.c - matching a path against a route pattern (pure; api.h, "routes"). A segment is
 * compared literally or captured by a `{name}` parameter whose shape is checked here, so a handler
 * never sees an id that is not a positive integer or a name with a character outside
 * [A-Za-z0-9._-]: such a path simply matches no route (404).
 */
#include <string.h>

#include "api.h"

static bool is_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
           ch == '_' || ch == '-';
}

/* A positive decimal integer of 1..18 digits, no leading zero (so one id has one spelling). */
static bool parse_id(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 18 || s[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool name_is_id(const char *name, size_t n)
{
    return n >= 2 && name[n - 2] == 'i' && name[n - 1] == 'd';
}

bool tg_adm_match(const char *pattern, const char *path, size_t len, tg_adm_param_t *params, size_t *n_params)
{
    const char *p = pattern, *s = path, *end = path + len;
    size_t np = 0;
    while (*p != '\0') {
        if (*p != '/' || s >= end || *s != '/')
            return false;
        p++;
        s++;
        const char *pe = strchr(p, '/');
        size_t plen = pe != NULL ? (size_t)(pe - p) : strlen(p);
        const char *se = memchr(s, '/', (size_t)(end - s));
        size_t slen = se != NULL ? (size_t)(se - s) : (size_t)(end - s);
        if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
            const char *name = p + 1;
            size_t nlen = plen - 2;
            if (slen == 0 || np >= TG_ADM_PARAMS_MAX || nlen >= sizeof(params[0].name))
                return false;
            tg_adm_param_t *pa = &params[np];
            memcpy(pa->name, name, nlen);
            pa->name[nlen] = '\0';
            pa->id = 0;
            if (name_is_id(name, nlen)) {
                if (!parse_id(s, slen, &pa->id))
                    return false;
            } else {
                if (slen > TG_ADM_PARAM_MAX)
                    return false;
                for (size_t i = 0; i < slen; i++)
                    if (!is_name_char(s[i]))
                        return false;
            }
            if (slen > TG_ADM_PARAM_MAX)
                return false;
            memcpy(pa->value, s, slen);
            pa->value[slen] = '\0';
            np++;
        } else if (plen != slen || memcmp(p, s, plen) != 0) {
            return false;
        }
        p += plen;
        s += slen;
    }
    if (s != end)
        return false;
    *n_params = np;
    return true;
}

const char *tg_adm_param(const tg_adm_ctx_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_params; i++)
        if (strcmp(c->params[i].name, name) == 0)
            return c->params[i].value;
    return NULL;
}

int64_t tg_adm_param_id(const tg_adm_ctx_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_params; i++)
        if (strcmp(c->params[i].name, name) == 0)
            return c->params[i].id;
    return 0;
}
