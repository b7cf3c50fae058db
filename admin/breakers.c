/*
 * breakers.c - GET /admin/v1/breakers and POST /admin/v1/breakers/{target}/reset.
 *
 * Breakers live in breaker.c's process-wide registry (one per target, shared by every worker), so
 * any worker can answer; nothing here blocks beyond each breaker's tiny lock.
 *
 * Operators and auditors see every breaker. A tenant admin sees only the breakers of its own
 * keys (BYOK: "<target>#byok:<its tenant id>", credential.h): the platform's shared breakers say
 * how the platform's providers are doing, which is not a tenant's business. Reset is operator only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "breaker.h"
#include "clock.h"
#include "http.h"

#define LIST_MAX_BYTES (8u << 20)

typedef struct {
    tg_buf_t *out;
    uint64_t now_ms;
    size_t n;
    int rc;
    const char *only_suffix; /* tenant admin: "#byok:<id>" */
} list_ctx_t;

static void append_one(void *ud, tg_breaker_t *b)
{
    list_ctx_t *c = ud;
    if (c->rc != 0)
        return;
    if (c->only_suffix != NULL) {
        const char *k = tg_breaker_key(b);
        size_t kl = strlen(k), sl = strlen(c->only_suffix);
        if (kl < sl || strcmp(k + kl - sl, c->only_suffix) != 0)
            return;
    }
    if (c->n > 0)
        c->rc = tg_buf_append(c->out, ",", 1);
    if (c->rc == 0)
        c->rc = tg_breaker_to_json(b, c->now_ms, c->out);
    c->n++;
}

static void breakers_list(tg_adm_ctx_t *ctx)
{
    h2o_req_t *req = ctx->req;
    tg_buf_t b;
    tg_buf_init(&b, LIST_MAX_BYTES);
    list_ctx_t c = {.out = &b, .now_ms = tg_now_ms()};
    char suffix[40];
    if (ctx->who.role == TG_ROLE_TENANT_ADMIN) {
        snprintf(suffix, sizeof(suffix), "#byok:%lld", (long long)ctx->who.tenant_id);
        c.only_suffix = suffix;
    }
    c.rc = tg_buf_append_str(&b, "{\"data\":[");
    if (c.rc == 0)
        tg_breaker_foreach(append_one, &c);
    if (c.rc == 0)
        c.rc = tg_buf_append_str(&b, "]}");
    if (c.rc != 0)
        tg_http_send_error(req, c.rc == TG_ETOO_LARGE ? TG_EINTERNAL : c.rc, NULL, NULL, 0);
    else
        tg_http_send_raw_json(req, 200, b.data, b.len);
    tg_buf_dispose(&b);
}

/* The tenant a breaker belongs to: "<target>#byok:<id>" is that tenant's own key; 0 the platform's. */
static int64_t breaker_tenant(const char *key)
{
    const char *m = strstr(key, "#byok:");
    return m != NULL ? strtoll(m + 6, NULL, 10) : 0;
}

/* On an admin thread. The audit row is committed first and the breaker reset after it: the
 * breaker's state is the process's, which no transaction can hold, so a reset that could not be
 * audited (the database away) is not made, and one that was audited cannot fail. */
static void reset_work(PGconn *db, const tg_adm_call_t *call, tg_adm_result_t *out)
{
    tg_breaker_t *br = call->arg; /* registry breakers live as long as the process */
    const char *before_state = tg_breaker_state_name(tg_breaker_state(br, tg_now_ms()));
    json_t *before = json_pack("{s:s}", "state", before_state);
    json_t *after = json_pack("{s:s}", "state", "closed");
    int rc = before != NULL && after != NULL ? tg_adm_tx_begin(db, &out->err) : TG_ENOMEM;
    if (rc == 0)
        rc = tg_adm_audit(db, call, "breakers.reset", "breaker", tg_breaker_key(br),
                          breaker_tenant(tg_breaker_key(br)), before, after, &out->err);
    if (rc == 0)
        rc = tg_adm_tx_commit(db, &out->err);
    else
        tg_adm_tx_rollback(db);
    json_decref(before);
    json_decref(after);
    if (rc != 0) {
        if (out->err.code == 0)
            tg_adm_fail(out, rc, "the reset could not be audited");
        return;
    }
    tg_breaker_reset(br);
    out->status = 200;
    out->body = json_pack("{s:s,s:s}", "target", tg_breaker_key(br), "state",
                          tg_breaker_state_name(tg_breaker_state(br, tg_now_ms())));
}

void tg_admin_breaker_reset(tg_adm_ctx_t *c, const char *target)
{
    if (!tg_adm_body_none(c)) /* a body with anything in it is refused before the reset's audit */
        return;
    tg_breaker_t *br = tg_breaker_find(target);
    if (br == NULL) {
        tg_adm_reply_error(c->req, TG_ENOT_FOUND, "no breaker for this target", "target");
        return;
    }
    TG_IGNORE_RESULT(tg_adm_run(c, reset_work, br, NULL)); /* not queued: it has answered */
}

const tg_adm_route_t tg_adm_routes_breakers[] = {
    {"GET", "/admin/v1/breakers", TG_ADM_READ, breakers_list, "breakers.list"},
    {NULL, NULL, 0, NULL, NULL},
};
