/*
 * page.c - cursor pages and ETags of the admin API (api.h, "pages", "ETags"). A list is keyset
 * paginated on an id: the cursor is the last id of the page, base64url so that clients treat it
 * as opaque. An ETag is a hash of the resource's JSON representation with sorted keys, so the same
 * state always has the same tag, whichever worker or instance computes it.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "query.h"

void tg_adm_cursor_of(int64_t id, char *out, size_t cap)
{
    char raw[32];
    int n = snprintf(raw, sizeof(raw), "i%" PRId64, id);
    sodium_bin2base64(out, cap, (const unsigned char *)raw, (size_t)n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int tg_adm_cursor_id(const char *s, int64_t *id)
{
    unsigned char raw[32];
    size_t n = 0;
    if (s == NULL || strlen(s) > 40 ||
        sodium_base642bin(raw, sizeof(raw) - 1, s, strlen(s), NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n < 2 || n > 19 || raw[0] != 'i')
        return -1;
    int64_t v = 0;
    for (size_t i = 1; i < n; i++) {
        if (raw[i] < '0' || raw[i] > '9')
            return -1;
        v = v * 10 + (raw[i] - '0');
    }
    if (v <= 0)
        return -1;
    *id = v;
    return 0;
}

bool tg_adm_page_parse(h2o_req_t *req, tg_adm_page_t *page, tg_mgmt_err_t *err)
{
    char lim[16], cur[64];
    bool ok = true;
    page->limit = TG_ADM_LIMIT_DEFAULT;
    page->after_id = 0;
    int hl = tg_admin_query_param(req, "limit", lim, sizeof(lim));
    if (hl != 0) {
        char *end = NULL;
        long long v = hl > 0 && lim[0] >= '0' && lim[0] <= '9' ? strtoll(lim, &end, 10) : -1;
        if (hl < 0 || end == NULL || *end != '\0' || v < 1 || v > TG_ADM_LIMIT_MAX) {
            tg_mgmt_field(err, "limit", "limit must be an integer from 1 to %d", TG_ADM_LIMIT_MAX);
            ok = false;
        } else {
            page->limit = (size_t)v;
        }
    }
    int hc = tg_admin_query_param(req, "cursor", cur, sizeof(cur));
    if (hc < 0 || (hc > 0 && tg_adm_cursor_id(cur, &page->after_id) != 0)) {
        tg_mgmt_field(err, "cursor", "cursor is not valid");
        ok = false;
    }
    return ok;
}

json_t *tg_adm_page_body(json_t *data, int64_t next_after)
{
    json_t *next = json_null();
    if (next_after > 0) {
        char c[48];
        tg_adm_cursor_of(next_after, c, sizeof(c));
        next = json_string(c);
    }
    return json_pack("{s:o,s:o}", "data", data, "next_cursor", next);
}

void tg_adm_etag(const json_t *repr, char out[TG_ADM_ETAG_LEN])
{
    unsigned char h[16];
    char *text = json_dumps(repr, JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY);
    crypto_generichash(h, sizeof(h), (const unsigned char *)(text != NULL ? text : ""),
                       text != NULL ? strlen(text) : 0, NULL, 0);
    free(text);
    out[0] = '"';
    sodium_bin2hex(out + 1, 33, h, sizeof(h));
    out[33] = '"';
    out[34] = '\0';
}

bool tg_adm_if_match(const char *if_match, const char *etag)
{
    if (if_match == NULL)
        return true;
    size_t el = strlen(etag);
    const char *p = if_match;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            break;
        const char *e = p;
        while (*e != '\0' && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        size_t n = (size_t)(t - p);
        if (n == 1 && *p == '*')
            return true;
        if (n == el && memcmp(p, etag, n) == 0)
            return true;
        p = e;
    }
    return false;
}

void tg_adm_run_page(tg_adm_ctx_t *c, tg_adm_work_fn work)
{
    tg_mgmt_err_t err;
    tg_mgmt_err_reset(&err);
    tg_adm_page_t *pg = calloc(1, sizeof(*pg));
    if (pg == NULL) {
        tg_adm_reply_error(c->req, TG_ENOMEM, NULL, NULL);
        return;
    }
    if (!tg_adm_page_parse(c->req, pg, &err)) {
        free(pg);
        tg_adm_reply_mgmt_err(c->req, &err);
        return;
    }
    TG_IGNORE_RESULT(tg_adm_run(c, work, pg, free)); /* not queued: it has answered */
}
