/*
 * cli_keys.c - `tollgate keys create|revoke|rotate|list` over admin/keys.c.
 *
 * `keys create -c FILE --tenant NAME [--name LABEL]` works as it always has: it creates the tenant
 * when missing and prints the key alone on stdout. A new key (create, rotate) is printed once,
 * then wiped from memory; `list` never has it (prefix, label, times, allowed models). Messages
 * on stderr.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_args.h"
#include "clock.h"
#include "manage.h"

#define N_OPTS(a) (sizeof(a) / sizeof((a)[0]))

static const char usage_text[] =
    "usage: tollgate keys create -c FILE (--tenant NAME | --tenant-id ID) [--name LABEL] [--expires WHEN]\n"
    "                            [--models M1,M2,...] [--json]\n"
    "       tollgate keys revoke -c FILE --id KEY_ID [--tenant NAME | --tenant-id ID]\n"
    "       tollgate keys rotate -c FILE --id KEY_ID [--grace DURATION] [--tenant NAME | --tenant-id ID] "
    "[--json]\n"
    "       tollgate keys list -c FILE (--tenant NAME | --tenant-id ID) [--all] [--after ID] [--limit N] "
    "[--json]\n"
    "\n"
    "  create  a key; --tenant NAME creates the tenant when missing. Prints the key (only) on stdout,\n"
    "          once; with --json {\"id\",\"tenant_id\",\"prefix\",\"key\",\"expires_at\"}.\n"
    "          --expires: +DURATION (+90s, +30m, +24h, +7d) or RFC 3339 UTC (2027-01-31T00:00:00Z).\n"
    "          --models: the only models this key may use (also limited by the tenant's policy);\n"
    "          each must be a model of the config.\n"
    "  revoke  the key answers 401 on every gateway within 1 s\n"
    "  rotate  a new key (same tenant, label, expiry, models and per-key policy), printed like create;\n"
    "          the old one keeps working for --grace (default 24h, at most 30d; 0 = stops now)\n"
    "  list    the tenant's keys (revoked ones with --all): id, prefix, label, times, models; never\n"
    "          the key itself\n";

static void print_secret(const tg_key_secret_t *s, bool json)
{
    char c1[32], c2[32];
    if (json) {
        /* written by hand, not through jansson: no heap copy of the key is left behind (every
         * value here is base64url, digits or a timestamp: nothing to escape) */
        printf("{\"id\":%lld,\"tenant_id\":%lld,\"prefix\":\"%s\",\"key\":\"%s\",\"expires_at\":",
               (long long)s->id, (long long)s->tenant_id, s->prefix, s->key);
        if (s->expires_ms != 0)
            printf("\"%s\"", tg_cli_time(s->expires_ms, c1));
        else
            fputs("null", stdout);
        if (s->rotated_from != 0)
            printf(",\"rotated_from\":%lld,\"old_expires_at\":\"%s\"", (long long)s->rotated_from,
                   tg_cli_time(s->old_expires_ms, c2));
        fputs("}\n", stdout);
    } else {
        printf("%s\n", s->key);
    }
    fflush(stdout);
}

static int cmd_create(int argc, char **argv)
{
    tg_cli_opt_t o[] = {{"--tenant", "NAME", NULL},  {"--tenant-id", "ID", NULL}, {"--name", "LABEL", NULL},
                        {"--expires", "WHEN", NULL}, {"--models", "LIST", NULL},  {"--json", NULL, NULL}};
    const char *config, *cmd = "keys create";
    int prc = tg_cli_parse(cmd, argc, argv, 3, o, N_OPTS(o), &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    tg_key_new_t in = {0};
    if (prc == 0 && !tg_cli_tenant_ref(cmd, o, N_OPTS(o), &in.tenant, true))
        prc = 2;
    in.create_tenant = in.tenant.id == 0;
    in.label = o[2].value;
    if (o[3].value != NULL && !tg_cli_parse_time(o[3].value, tg_unix_now_ms(), &in.expires_unix_ms)) {
        fprintf(stderr, "tollgate: %s: --expires must be +DURATION (+24h) or RFC 3339 UTC\n", cmd);
        prc = 2;
    }
    tg_cli_names_t names = {0};
    if (o[4].value != NULL) {
        if (!tg_cli_split_names(o[4].value, &names))
            return 1;
        in.models = (tg_models_arg_t){.set = true, .names = names.names, .n = names.n};
    }
    if (prc != 0) {
        tg_cli_names_free(&names);
        return prc;
    }
    tg_config_t *cfg;
    PGconn *db;
    if (!tg_cli_open(config, true, &cfg, &db)) {
        tg_cli_names_free(&names);
        return 1;
    }
    tg_key_secret_t s;
    tg_mgmt_err_t err;
    in.trial_credits = cfg->billing.trial_credits;
    int rc = tg_key_create(db, cfg->key_pepper, cfg, &in, &s, &err);
    tg_cli_close(cfg, db);
    tg_cli_names_free(&names);
    if (rc != 0)
        return tg_cli_report(cmd, &err);
    fprintf(stderr, "tollgate: created key %s (id %lld) for tenant %s%s%s (id %lld)\n", s.prefix,
            (long long)s.id, in.tenant.name != NULL ? "\"" : "", in.tenant.name != NULL ? in.tenant.name : "",
            in.tenant.name != NULL ? "\"" : "", (long long)s.tenant_id);
    print_secret(&s, o[5].value != NULL);
    tg_key_secret_wipe(&s);
    return 0;
}

static int cmd_revoke_rotate(int argc, char **argv, bool rotate)
{
    const char *cmd = rotate ? "keys rotate" : "keys revoke";
    /* revoke takes the first three */
    tg_cli_opt_t o[] = {{"--id", "KEY_ID", NULL},
                        {"--tenant", "NAME", NULL},
                        {"--tenant-id", "ID", NULL},
                        {"--grace", "DURATION", NULL},
                        {"--json", NULL, NULL}};
    size_t n_opts = rotate ? N_OPTS(o) : 3;
    const char *config;
    int prc = tg_cli_parse(cmd, argc, argv, 3, o, n_opts, &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    int64_t key_id = 0, grace = -1;
    tg_tenant_ref_t ref;
    if (prc == 0 && !tg_cli_tenant_ref(cmd, o, n_opts, &ref, false))
        prc = 2;
    if (prc == 0 && (o[0].value == NULL || !tg_cli_parse_id(o[0].value, &key_id))) {
        fprintf(stderr, "tollgate: %s: --id KEY_ID is required (a key id, see keys list)\n", cmd);
        prc = 2;
    }
    if (o[3].value != NULL && !tg_cli_parse_duration(o[3].value, &grace)) {
        fprintf(stderr, "tollgate: %s: --grace must be a duration (0, 90s, 30m, 24h, 7d)\n", cmd);
        prc = 2;
    }
    if (prc != 0)
        return prc;
    tg_config_t *cfg;
    PGconn *db;
    if (!tg_cli_open(config, rotate, &cfg, &db))
        return 1;
    tg_mgmt_err_t err;
    int rc;
    if (rotate) {
        tg_key_secret_t s;
        rc = tg_key_rotate(db, cfg->key_pepper, ref, key_id, grace, &s, &err);
        if (rc == 0) {
            char c1[32];
            fprintf(stderr, "tollgate: key %lld rotated: new key %s (id %lld); the old one stops at %s\n",
                    (long long)key_id, s.prefix, (long long)s.id, tg_cli_time(s.old_expires_ms, c1));
            print_secret(&s, o[4].value != NULL);
            tg_key_secret_wipe(&s);
        }
    } else {
        tg_key_row_t k;
        rc = tg_key_revoke(db, ref, key_id, &k, &err);
        if (rc == 0)
            fprintf(stderr, "tollgate: key %s (id %lld) is revoked\n", k.prefix, (long long)k.id);
    }
    tg_cli_close(cfg, db);
    return rc != 0 ? tg_cli_report(cmd, &err) : 0;
}

/* A '\n'-terminated list as "a,b" ("*" when there is no list). */
static const char *models_text(bool has, const char *list, char *buf, size_t cap)
{
    if (!has)
        return "*";
    size_t o = 0;
    for (const char *p = list; *p != '\0' && o + 1 < cap; p++)
        buf[o++] = *p == '\n' ? ',' : *p;
    if (o > 0 && buf[o - 1] == ',')
        o--;
    buf[o] = '\0';
    return buf;
}

static int cmd_list(int argc, char **argv)
{
    tg_cli_opt_t o[] = {{"--tenant", "NAME", NULL}, {"--tenant-id", "ID", NULL}, {"--all", NULL, NULL},
                        {"--after", "ID", NULL},    {"--limit", "N", NULL},      {"--json", NULL, NULL}};
    const char *config, *cmd = "keys list";
    int prc = tg_cli_parse(cmd, argc, argv, 3, o, N_OPTS(o), &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    tg_tenant_ref_t ref;
    int64_t after = 0, limit = 0;
    if (prc == 0 && !tg_cli_tenant_ref(cmd, o, N_OPTS(o), &ref, true))
        prc = 2;
    if (o[3].value != NULL && !tg_cli_parse_id(o[3].value, &after)) {
        fprintf(stderr, "tollgate: %s: --after must be a key id\n", cmd);
        prc = 2;
    }
    if (o[4].value != NULL && (!tg_cli_parse_count(o[4].value, &limit) || limit > TG_MGMT_LIST_MAX)) {
        fprintf(stderr, "tollgate: %s: --limit must be 1 to %d\n", cmd, TG_MGMT_LIST_MAX);
        prc = 2;
    }
    if (prc != 0)
        return prc;
    tg_config_t *cfg;
    PGconn *db;
    if (!tg_cli_open(config, false, &cfg, &db))
        return 1;
    tg_key_page_t page;
    tg_mgmt_err_t err;
    int rc = tg_key_list(db, ref, o[2].value != NULL, after, (size_t)limit, &page, &err);
    tg_cli_close(cfg, db);
    if (rc != 0)
        return tg_cli_report(cmd, &err);
    char c1[32], c2[32], c3[32], c4[32], models[TG_POLICY_MODELS_MAX];
    if (o[5].value != NULL) {
        json_t *data = json_array();
        for (size_t i = 0; i < page.n; i++) {
            const tg_key_row_t *k = &page.rows[i];
            json_t *row = json_pack("{s:I,s:I,s:s,s:s,s:s}", "id", (json_int_t)k->id, "tenant_id",
                                    (json_int_t)k->tenant_id, "prefix", k->prefix, "label", k->label,
                                    "created_at", tg_cli_time(k->created_ms, c1));
            json_object_set_new(row, "expires_at",
                                k->expires_ms ? json_string(tg_cli_time(k->expires_ms, c2)) : json_null());
            json_object_set_new(row, "revoked_at",
                                k->revoked_ms ? json_string(tg_cli_time(k->revoked_ms, c3)) : json_null());
            json_object_set_new(row, "last_used_at",
                                k->last_used_ms ? json_string(tg_cli_time(k->last_used_ms, c4))
                                                : json_null());
            json_object_set_new(row, "rotated_from",
                                k->rotated_from ? json_integer(k->rotated_from) : json_null());
            json_t *ml = json_null();
            if (k->has_models) {
                ml = json_array();
                for (const char *p = k->models; *p != '\0';) {
                    const char *nl = strchr(p, '\n');
                    if (nl == NULL)
                        break;
                    json_array_append_new(ml, json_stringn(p, (size_t)(nl - p)));
                    p = nl + 1;
                }
            }
            json_object_set_new(row, "models", ml);
            json_array_append_new(data, row);
        }
        json_t *root = json_pack("{s:o,s:o}", "data", data, "next_after",
                                 page.next_after != 0 ? json_integer(page.next_after) : json_null());
        json_dumpf(root, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(root);
    } else {
        printf("%-8s %-11s %-20s %-20s %-20s %-20s %-16s %s\n", "ID", "PREFIX", "CREATED", "EXPIRES",
               "REVOKED", "LAST_USED", "MODELS", "LABEL");
        for (size_t i = 0; i < page.n; i++) {
            const tg_key_row_t *k = &page.rows[i];
            printf("%-8lld %-11s %-20s %-20s %-20s %-20s %-16s %s\n", (long long)k->id, k->prefix,
                   tg_cli_time(k->created_ms, c1), tg_cli_time(k->expires_ms, c2),
                   tg_cli_time(k->revoked_ms, c3), tg_cli_time(k->last_used_ms, c4),
                   models_text(k->has_models, k->models, models, sizeof(models)), k->label);
        }
        if (page.next_after != 0)
            fprintf(stderr, "tollgate: more keys: --after %lld\n", (long long)page.next_after);
    }
    tg_key_page_free(&page);
    return 0;
}

static int cmd_revoke(int argc, char **argv)
{
    return cmd_revoke_rotate(argc, argv, false);
}

static int cmd_rotate(int argc, char **argv)
{
    return cmd_revoke_rotate(argc, argv, true);
}

int tg_cli_keys(int argc, char **argv)
{
    static const tg_cli_sub_t subs[] = {
        {"create", cmd_create}, {"revoke", cmd_revoke}, {"rotate", cmd_rotate}, {"list", cmd_list}};
    return tg_cli_dispatch("keys", argc, argv, subs, sizeof(subs) / sizeof(subs[0]), usage_text);
}
