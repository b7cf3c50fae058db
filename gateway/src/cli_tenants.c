/*
 * cli_tenants.c - `tollgate tenants create|suspend|resume|list` over admin/tenants.c.
 *
 * stdout: the new tenant's id (create), the table or JSON of `list`; nothing else. Messages on
 * stderr.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_args.h"
#include "manage.h"

#define N_OPTS(a) (sizeof(a) / sizeof((a)[0]))

static const char usage_text[] =
    "usage: tollgate tenants create -c FILE --name NAME [--zero-retention]\n"
    "       tollgate tenants suspend -c FILE (--tenant NAME | --tenant-id ID)\n"
    "       tollgate tenants resume -c FILE (--tenant NAME | --tenant-id ID)\n"
    "       tollgate tenants list -c FILE [--after ID] [--limit N] [--json]\n"
    "\n"
    "  create   a tenant; prints its id on stdout\n"
    "  suspend  every key of the tenant answers 403 tenant_suspended (on every gateway within 1 s)\n"
    "  resume   the keys work again\n"
    "  list     the tenants with id > --after (default 0), at most --limit (1..1000, default 100),\n"
    "           as a table or, with --json, {\"data\":[...],\"next_after\":ID|null}\n";

static int cmd_create(int argc, char **argv)
{
    tg_cli_opt_t o[] = {{"--name", "NAME", NULL}, {"--zero-retention", NULL, NULL}};
    const char *config;
    int prc = tg_cli_parse("tenants create", argc, argv, 3, o, N_OPTS(o), &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (prc == 0 && o[0].value == NULL) {
        fputs("tollgate: tenants create: --name NAME is required\n", stderr);
        prc = 2;
    }
    if (prc != 0)
        return prc;
    tg_config_t *cfg;
    PGconn *db;
    if (!tg_cli_open(config, false, &cfg, &db))
        return 1;
    tg_tenant_t t;
    tg_mgmt_err_t err;
    int rc = tg_tenant_create(db, o[0].value, o[1].value != NULL, cfg->billing.trial_credits, &t, &err);
    tg_cli_close(cfg, db);
    if (rc != 0)
        return tg_cli_report("tenants create", &err);
    fprintf(stderr, "tollgate: created tenant \"%s\" (id %lld)%s\n", t.name, (long long)t.id,
            t.zero_retention ? " with zero retention" : "");
    printf("%lld\n", (long long)t.id);
    return 0;
}

static int cmd_status(int argc, char **argv, bool suspend)
{
    const char *cmd = suspend ? "tenants suspend" : "tenants resume";
    tg_cli_opt_t o[] = {{"--tenant", "NAME", NULL}, {"--tenant-id", "ID", NULL}};
    const char *config;
    int prc = tg_cli_parse(cmd, argc, argv, 3, o, N_OPTS(o), &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    tg_tenant_ref_t ref;
    if (prc != 0 || !tg_cli_tenant_ref(cmd, o, N_OPTS(o), &ref, true))
        return 2;
    tg_config_t *cfg;
    PGconn *db;
    if (!tg_cli_open(config, false, &cfg, &db))
        return 1;
    tg_tenant_t t;
    tg_mgmt_err_t err;
    int rc = tg_tenant_set_suspended(db, ref, suspend, &t, &err);
    tg_cli_close(cfg, db);
    if (rc != 0)
        return tg_cli_report(cmd, &err);
    fprintf(stderr, "tollgate: tenant \"%s\" (id %lld) is %s\n", t.name, (long long)t.id,
            t.suspended ? "suspended" : "active");
    return 0;
}

static int cmd_list(int argc, char **argv)
{
    tg_cli_opt_t o[] = {{"--after", "ID", NULL}, {"--limit", "N", NULL}, {"--json", NULL, NULL}};
    const char *config;
    int prc = tg_cli_parse("tenants list", argc, argv, 3, o, N_OPTS(o), &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    int64_t after = 0, limit = 0;
    if (o[0].value != NULL && !tg_cli_parse_id(o[0].value, &after)) {
        fputs("tollgate: tenants list: --after must be a tenant id\n", stderr);
        prc = 2;
    }
    if (o[1].value != NULL && (!tg_cli_parse_count(o[1].value, &limit) || limit > TG_MGMT_LIST_MAX)) {
        fprintf(stderr, "tollgate: tenants list: --limit must be 1 to %d\n", TG_MGMT_LIST_MAX);
        prc = 2;
    }
    if (prc != 0)
        return prc;
    tg_config_t *cfg;
    PGconn *db;
    if (!tg_cli_open(config, false, &cfg, &db))
        return 1;
    tg_tenant_page_t page;
    tg_mgmt_err_t err;
    int rc = tg_tenant_list(db, after, (size_t)limit, &page, &err);
    tg_cli_close(cfg, db);
    if (rc != 0)
        return tg_cli_report("tenants list", &err);
    char c1[32], c2[32];
    if (o[2].value != NULL) {
        json_t *data = json_array();
        for (size_t i = 0; i < page.n; i++) {
            const tg_tenant_t *t = &page.rows[i];
            json_array_append_new(
                data, json_pack("{s:I,s:s,s:s,s:b,s:s,s:s}", "id", (json_int_t)t->id, "name", t->name,
                                "status", t->suspended ? "suspended" : "active", "zero_retention",
                                t->zero_retention, "created_at", tg_cli_time(t->created_ms, c1), "updated_at",
                                tg_cli_time(t->updated_ms, c2)));
        }
        json_t *root = json_pack("{s:o,s:o}", "data", data, "next_after",
                                 page.next_after != 0 ? json_integer(page.next_after) : json_null());
        json_dumpf(root, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(root);
    } else {
        printf("%-8s %-10s %-5s %-20s %s\n", "ID", "STATUS", "ZR", "CREATED", "NAME");
        for (size_t i = 0; i < page.n; i++) {
            const tg_tenant_t *t = &page.rows[i];
            printf("%-8lld %-10s %-5s %-20s %s\n", (long long)t->id, t->suspended ? "suspended" : "active",
                   t->zero_retention ? "yes" : "no", tg_cli_time(t->created_ms, c1), t->name);
        }
        if (page.next_after != 0)
            fprintf(stderr, "tollgate: more tenants: --after %lld\n", (long long)page.next_after);
    }
    tg_tenant_page_free(&page);
    return 0;
}

static int cmd_suspend(int argc, char **argv)
{
    return cmd_status(argc, argv, true);
}

static int cmd_resume(int argc, char **argv)
{
    return cmd_status(argc, argv, false);
}

int tg_cli_tenants(int argc, char **argv)
{
    static const tg_cli_sub_t subs[] = {
        {"create", cmd_create}, {"suspend", cmd_suspend}, {"resume", cmd_resume}, {"list", cmd_list}};
    return tg_cli_dispatch("tenants", argc, argv, subs, sizeof(subs) / sizeof(subs[0]), usage_text);
}
