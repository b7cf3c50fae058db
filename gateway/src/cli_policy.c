/*
 * cli_policy.c - `tollgate policy set` over admin/policies.c: a tenant's policy row, or one key's
 * override with --key. Every bad value is reported (exit 2) before anything is sent. stdout: the
 * row after the change with --json; otherwise nothing (a summary on stderr).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_args.h"
#include "manage.h"

#define N_OPTS(a) (sizeof(a) / sizeof((a)[0]))

static const char usage_text[] =
    "usage: tollgate policy set -c FILE (--tenant NAME | --tenant-id ID) [--key KEY_ID]\n"
    "                           [--models M1,M2,...] [--max-tokens N] [--rpm N] [--tpm N]\n"
    "                           [--key-rpm N] [--key-tpm N] [--byok-fallback true|false]\n"
    "                           [--zero-retention true|false] [--clear FIELD,...] [--json]\n"
    "\n"
    "  Sets fields of the tenant's policy, or with --key of that key's override (which takes\n"
    "  --models, --max-tokens, --key-rpm and --key-tpm only). A field not given is kept; --clear\n"
    "  sets fields back to \"inherit\" (a key's from its tenant, the tenant's to no limit):\n"
    "  models, max_tokens, rpm, tpm, key_rpm, key_tpm, byok_fallback, zero_retention.\n"
    "  The effective allowed models of a key are the intersection of every list that is set\n"
    "  (tenant, key override, the key's own --models of keys create); each name must be a model\n"
    "  of the config. rpm/tpm bound the tenant, key_rpm/key_tpm each of its keys, per minute.\n"
    "  The change reaches every gateway within 1 s.\n";

static const char *const clearable[] = {"models",  "max_tokens", "rpm",           "tpm",
                                        "key_rpm", "key_tpm",    "byok_fallback", "zero_retention"};

/* The field ops of the update, by the names of `clearable`. */
static tg_field_op_t *op_of(tg_policy_update_t *u, const char *name)
{
    tg_field_op_t *ops[] = {&u->models_op,  &u->max_tokens.op, &u->rpm.op,           &u->tpm.op,
                            &u->key_rpm.op, &u->key_tpm.op,    &u->byok_fallback.op, &u->zero_retention.op};
    for (size_t i = 0; i < N_OPTS(clearable); i++)
        if (strcmp(clearable[i], name) == 0)
            return ops[i];
    return NULL;
}

static bool num_opt(const char *value, const char *opt, tg_num_field_t *f)
{
    if (value == NULL)
        return true;
    if (!tg_cli_parse_count(value, &f->value)) {
        fprintf(stderr, "tollgate: policy set: %s must be a positive integer\n", opt);
        return false;
    }
    f->op = TG_FIELD_SET;
    return true;
}

static bool bool_opt(const char *value, const char *opt, tg_bool_field_t *f)
{
    if (value == NULL)
        return true;
    if (!tg_cli_parse_bool(value, &f->value)) {
        fprintf(stderr, "tollgate: policy set: %s must be true or false\n", opt);
        return false;
    }
    f->op = TG_FIELD_SET;
    return true;
}

static json_t *num_json(int64_t v)
{
    return v != 0 ? json_integer(v) : json_null();
}

static int print_row(const tg_policy_row_t *p, bool json)
{
    if (!json) {
        fprintf(stderr, "tollgate: policy of tenant %lld%s set\n", (long long)p->tenant_id,
                p->key_id != 0 ? " (key override)" : "");
        return 0;
    }
    json_t *models = json_null();
    if (p->has_models) {
        models = json_array();
        for (const char *s = p->models; *s != '\0';) {
            const char *nl = strchr(s, '\n');
            if (nl == NULL)
                break;
            json_array_append_new(models, json_stringn(s, (size_t)(nl - s)));
            s = nl + 1;
        }
    }
    json_t *o = json_pack("{s:I,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b}", "tenant_id", (json_int_t)p->tenant_id,
                          "key_id", num_json(p->key_id), "models", models, "max_tokens",
                          num_json(p->max_tokens), "rpm", num_json(p->rpm), "tpm", num_json(p->tpm),
                          "key_rpm", num_json(p->key_rpm), "key_tpm", num_json(p->key_tpm), "byok_fallback",
                          p->byok_fallback < 0 ? json_null() : json_boolean(p->byok_fallback),
                          "zero_retention", p->zero_retention);
    json_dumpf(o, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    json_decref(o);
    return 0;
}

static int cmd_set(int argc, char **argv)
{
    tg_cli_opt_t o[] = {{"--tenant", "NAME", NULL},
                        {"--tenant-id", "ID", NULL},
                        {"--key", "KEY_ID", NULL},
                        {"--models", "LIST", NULL},
                        {"--max-tokens", "N", NULL},
                        {"--rpm", "N", NULL},
                        {"--tpm", "N", NULL},
                        {"--key-rpm", "N", NULL},
                        {"--key-tpm", "N", NULL},
                        {"--byok-fallback", "BOOL", NULL},
                        {"--zero-retention", "BOOL", NULL},
                        {"--clear", "FIELDS", NULL},
                        {"--json", NULL, NULL}};
    const char *config, *cmd = "policy set";
    int prc = tg_cli_parse(cmd, argc, argv, 3, o, N_OPTS(o), &config);
    if (prc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    tg_policy_update_t u = {0};
    bool ok = prc == 0;
    if (ok && !tg_cli_tenant_ref(cmd, o, N_OPTS(o), &u.tenant, true))
        ok = false;
    if (o[2].value != NULL && !tg_cli_parse_id(o[2].value, &u.key_id)) {
        fputs("tollgate: policy set: --key must be a key id\n", stderr);
        ok = false;
    }
    tg_cli_names_t names = {0};
    if (o[3].value != NULL) {
        if (!tg_cli_split_names(o[3].value, &names))
            return 1;
        u.models_op = TG_FIELD_SET;
        u.models = (tg_models_arg_t){.set = true, .names = names.names, .n = names.n};
    }
    ok &= num_opt(o[4].value, "--max-tokens", &u.max_tokens);
    ok &= num_opt(o[5].value, "--rpm", &u.rpm);
    ok &= num_opt(o[6].value, "--tpm", &u.tpm);
    ok &= num_opt(o[7].value, "--key-rpm", &u.key_rpm);
    ok &= num_opt(o[8].value, "--key-tpm", &u.key_tpm);
    ok &= bool_opt(o[9].value, "--byok-fallback", &u.byok_fallback);
    ok &= bool_opt(o[10].value, "--zero-retention", &u.zero_retention);
    tg_cli_names_t cleared = {0};
    if (o[11].value != NULL && tg_cli_split_names(o[11].value, &cleared)) {
        for (size_t i = 0; i < cleared.n; i++) {
            tg_field_op_t *op = op_of(&u, cleared.names[i]);
            if (op == NULL) {
                fprintf(stderr, "tollgate: policy set: --clear: unknown field \"%s\"\n", cleared.names[i]);
                ok = false;
            } else if (*op == TG_FIELD_SET) {
                fprintf(stderr, "tollgate: policy set: \"%s\" is both set and cleared\n", cleared.names[i]);
                ok = false;
            } else {
                *op = TG_FIELD_CLEAR;
            }
        }
        if (cleared.n == 0) {
            fputs("tollgate: policy set: --clear needs field names\n", stderr);
            ok = false;
        }
    }
    tg_cli_names_free(&cleared);
    tg_config_t *cfg = NULL;
    PGconn *db = NULL;
    int rc = 2;
    if (ok && tg_cli_open(config, false, &cfg, &db)) {
        tg_policy_row_t row;
        tg_mgmt_err_t err;
        rc = tg_policy_set(db, cfg, &u, &row, &err);
        rc = rc != 0 ? tg_cli_report(cmd, &err) : print_row(&row, o[12].value != NULL);
        tg_cli_close(cfg, db);
    } else if (ok) {
        rc = 1;
    }
    tg_cli_names_free(&names);
    return rc;
}

int tg_cli_policy(int argc, char **argv)
{
    static const tg_cli_sub_t subs[] = {{"set", cmd_set}};
    return tg_cli_dispatch("policy", argc, argv, subs, sizeof(subs) / sizeof(subs[0]), usage_text);
}
