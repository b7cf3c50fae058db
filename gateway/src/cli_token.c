/*
 * cli_token.c - `tollgate token`: mints an admin API token (HS256, signed with the config's
 * admin_auth.hs256_secret_file) for bootstrap and development. stdout: the token alone.
 * Tokens for people and systems in production come from the issuer the config names (ES256
 * tokens are verified with its public key and cannot be minted here).
 */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "cli.h"
#include "cli_args.h"
#include "token.h"

#define N_OPTS(a) (sizeof(a) / sizeof((a)[0]))

static const char usage_text[] =
    "usage: tollgate token -c FILE --role operator|tenant_admin|auditor [--tenant ID] [--ttl D]\n"
    "                      [--sub NAME]\n"
    "\n"
    "  Prints an admin API token signed with admin_auth.hs256_secret_file of the config: role\n"
    "  `operator` (everything), `tenant_admin` (its own tenant only: --tenant ID is required) or\n"
    "  `auditor` (read only). --ttl is its life (90s, 15m, 12h, 7d; default 12h, at most 30d);\n"
    "  --sub names the actor of the audit log (default \"tollgate-cli\").\n";

int tg_cli_token(int argc, char **argv)
{
    tg_cli_opt_t opts[] = {
        {"--role", "ROLE", NULL}, {"--tenant", "ID", NULL}, {"--ttl", "D", NULL}, {"--sub", "NAME", NULL}};
    const char *config = NULL;
    int prc = tg_cli_parse("token", argc, argv, 2, opts, N_OPTS(opts), &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (prc != 0) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *role_s = tg_cli_get(opts, N_OPTS(opts), "--role");
    const char *tenant_s = tg_cli_get(opts, N_OPTS(opts), "--tenant");
    const char *ttl_s = tg_cli_get(opts, N_OPTS(opts), "--ttl");
    const char *sub = tg_cli_get(opts, N_OPTS(opts), "--sub");
    tg_role_t role = tg_role_parse(role_s);
    int64_t tenant = 0, ttl_ms = 12 * 3600 * 1000LL;
    int bad = 0;
    if (role == TG_ROLE_NONE) {
        fputs("tollgate: token: --role must be operator, tenant_admin or auditor\n", stderr);
        bad = 1;
    }
    if (role == TG_ROLE_TENANT_ADMIN && (tenant_s == NULL || !tg_cli_parse_id(tenant_s, &tenant))) {
        fputs("tollgate: token: a tenant_admin token needs --tenant ID (a tenant id)\n", stderr);
        bad = 1;
    }
    if (role != TG_ROLE_TENANT_ADMIN && tenant_s != NULL) {
        fputs("tollgate: token: --tenant is for tenant_admin tokens only\n", stderr);
        bad = 1;
    }
    if (ttl_s != NULL &&
        (!tg_cli_parse_duration(ttl_s, &ttl_ms) || ttl_ms < 1000 || ttl_ms > 30 * 24 * 3600 * 1000LL)) {
        fputs("tollgate: token: --ttl must be a duration from 1s to 30d\n", stderr);
        bad = 1;
    }
    if (bad)
        return 2;
    tg_config_t *cfg = tg_cli_load_config(config);
    if (cfg == NULL)
        return 1;
    char *tok = NULL;
    int rc = tg_jwt_mint(cfg, sub != NULL ? sub : "tollgate-cli", role, tenant, ttl_ms / 1000,
                         (int64_t)time(NULL), &tok);
    tg_config_unref(cfg);
    if (rc == TG_ECONFIG) {
        fputs("tollgate: token: the config has no admin_auth.hs256_secret_file to sign with\n", stderr);
        return 1;
    }
    if (rc != 0) {
        fputs("tollgate: token: --sub must be 1 to 128 printable bytes\n", stderr);
        return 2;
    }
    puts(tok);
    free(tok);
    return 0;
}
