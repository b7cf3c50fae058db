/*
 * authn.c - see authn.h. The reason a token was refused goes to the log (never the token); the
 * client always gets the same 401, so it cannot probe which check failed.
 */
#include "authn.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#include "http.h"
#include "token.h"
#include "log.h"

static void unauthenticated(h2o_req_t *req)
{
    tg_http_add_header(req, "www-authenticate", "Bearer");
    tg_adm_reply_error(req, TG_EUNAUTHENTICATED, "missing or invalid admin token", NULL);
}

int tg_adm_authenticate(h2o_req_t *req, tg_adm_principal_t *who)
{
    const h2o_iovec_t *h = tg_http_header(req, "authorization");
    if (h == NULL || h->len < 8 || strncasecmp(h->base, "Bearer ", 7) != 0) {
        unauthenticated(req);
        return -1;
    }
    const char *tok = h->base + 7;
    size_t len = h->len - 7;
    while (len > 0 && *tok == ' ') {
        tok++;
        len--;
    }
    tg_config_t *cfg = tg_config_acquire();
    const char *why = "config";
    int rc = cfg != NULL ? tg_jwt_verify(cfg, tok, len, (int64_t)time(NULL), who, &why) : TG_EUNAUTHENTICATED;
    tg_config_unref(cfg);
    if (rc != 0) {
        TG_LOG(TG_LOG_INFO, "admin_token_refused", TG_KV_STR("why", why));
        unauthenticated(req);
        return -1;
    }
    return 0;
}

static bool on_loopback(const tg_config_t *cfg)
{
    return cfg->admin_host != NULL &&
           (strncmp(cfg->admin_host, "127.", 4) == 0 || strcmp(cfg->admin_host, "::1") == 0);
}

int tg_admin_metrics_guard(h2o_req_t *req)
{
    tg_config_t *cfg = tg_config_acquire();
    bool open = cfg == NULL || on_loopback(cfg);
    tg_config_unref(cfg);
    if (open)
        return 0;
    tg_adm_principal_t who;
    if (tg_adm_authenticate(req, &who) != 0)
        return -1;
    if (who.role == TG_ROLE_TENANT_ADMIN) {
        tg_adm_reply_error(req, TG_EFORBIDDEN, "metrics are for operators and auditors", NULL);
        return -1;
    }
    return 0;
}
