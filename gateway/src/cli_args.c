/*
 * cli_args.c - the shared plumbing of the management subcommands, see cli_args.h.
 */
#define _GNU_SOURCE /* strptime */
#include "cli_args.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "err.h"

int tg_cli_parse(const char *cmd, int argc, char **argv, int first, tg_cli_opt_t *opts, size_t n,
                 const char **config)
{
    int bad = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return 1;
    }
    *config = NULL;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tollgate: %s: %s needs a value\n", cmd, a);
                return 2;
            }
            *config = argv[++i];
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0) {
            *config = a + 9;
            continue;
        }
        tg_cli_opt_t *o = NULL;
        const char *inline_value = NULL;
        for (size_t k = 0; k < n && o == NULL; k++) {
            size_t len = strlen(opts[k].name);
            if (strcmp(a, opts[k].name) == 0)
                o = &opts[k];
            else if (opts[k].metavar != NULL && strncmp(a, opts[k].name, len) == 0 && a[len] == '=') {
                o = &opts[k];
                inline_value = a + len + 1;
            }
        }
        if (o == NULL) {
            fprintf(stderr, "tollgate: %s: unknown argument \"%s\"\n", cmd, a);
            bad = 2;
            continue;
        }
        if (o->value != NULL) {
            fprintf(stderr, "tollgate: %s: %s is given twice\n", cmd, o->name);
            bad = 2;
        }
        if (o->metavar == NULL) {
            o->value = "1";
        } else if (inline_value != NULL) {
            o->value = inline_value;
        } else if (i + 1 < argc) {
            o->value = argv[++i];
        } else {
            fprintf(stderr, "tollgate: %s: %s needs a value (%s)\n", cmd, o->name, o->metavar);
            bad = 2;
        }
    }
    if (*config == NULL && bad == 0) {
        fprintf(stderr, "tollgate: %s: -c FILE is required\n", cmd);
        bad = 2;
    }
    return bad;
}

const char *tg_cli_get(const tg_cli_opt_t *opts, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].name, name) == 0)
            return opts[i].value;
    return NULL;
}

static bool parse_i64(const char *s, int64_t min, int64_t *out)
{
    if (s == NULL || *s == '\0' || *s == '+' || *s == ' ')
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min)
        return false;
    *out = v;
    return true;
}

bool tg_cli_parse_id(const char *s, int64_t *out)
{
    return parse_i64(s, 1, out);
}

bool tg_cli_parse_count(const char *s, int64_t *out)
{
    return parse_i64(s, 1, out);
}

bool tg_cli_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

bool tg_cli_parse_duration(const char *s, int64_t *ms)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || v < 0)
        return false;
    long long unit;
    if (strcmp(end, "ms") == 0)
        unit = 1;
    else if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        unit = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        unit = 24LL * 3600 * 1000;
    else if (*end == '\0' && v == 0)
        unit = 1;
    else
        return false;
    if (v > INT64_MAX / unit / 2)
        return false;
    *ms = v * unit;
    return true;
}

bool tg_cli_parse_time(const char *s, int64_t now_ms, int64_t *unix_ms)
{
    if (s == NULL)
        return false;
    if (*s == '+') {
        int64_t d;
        if (!tg_cli_parse_duration(s + 1, &d))
            return false;
        *unix_ms = now_ms + d;
        return true;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL)
        return false;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int64_t scale = 100;
        for (p++; *p >= '0' && *p <= '9'; p++) {
            frac_ms += (*p - '0') * scale;
            scale /= 10;
        }
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return false;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *unix_ms = (int64_t)t * 1000 + frac_ms;
    return true;
}

bool tg_cli_split_names(const char *s, tg_cli_names_t *out)
{
    memset(out, 0, sizeof(*out));
    out->copy = strdup(s);
    if (out->copy == NULL)
        return false;
    if (*out->copy == '\0')
        return true; /* an empty list: allows nothing */
    for (char *save = NULL, *tok = strtok_r(out->copy, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (out->n >= TG_MGMT_MODELS_MAX + 1) {
            out->too_many = true;
            break;
        }
        out->names[out->n++] = tok;
    }
    return true;
}

void tg_cli_names_free(tg_cli_names_t *l)
{
    free(l->copy);
    memset(l, 0, sizeof(*l));
}

bool tg_cli_tenant_ref(const char *cmd, const tg_cli_opt_t *opts, size_t n, tg_tenant_ref_t *out,
                       bool required)
{
    const char *name = tg_cli_get(opts, n, "--tenant"), *id = tg_cli_get(opts, n, "--tenant-id");
    memset(out, 0, sizeof(*out));
    if (name != NULL && id != NULL) {
        fprintf(stderr, "tollgate: %s: give --tenant NAME or --tenant-id ID, not both\n", cmd);
        return false;
    }
    if (id != NULL && !tg_cli_parse_id(id, &out->id)) {
        fprintf(stderr, "tollgate: %s: --tenant-id must be a tenant id (a positive integer)\n", cmd);
        return false;
    }
    out->name = name;
    if (required && name == NULL && id == NULL) {
        fprintf(stderr, "tollgate: %s: --tenant NAME or --tenant-id ID is required\n", cmd);
        return false;
    }
    return true;
}

bool tg_cli_open(const char *config, bool need_pepper, tg_config_t **cfg, PGconn **db)
{
    *db = NULL;
    *cfg = tg_cli_load_config(config);
    if (*cfg == NULL)
        return false;
    if (need_pepper && !(*cfg)->has_pepper) {
        fputs("tollgate: the config has no key pepper (secrets.key_pepper_env or secrets.key_pepper_file)\n",
              stderr);
    } else if (sodium_init() >= 0 && (*db = tg_cli_db_connect(*cfg)) != NULL) {
        return true;
    }
    tg_config_unref(*cfg);
    *cfg = NULL;
    return false;
}

void tg_cli_close(tg_config_t *cfg, PGconn *db)
{
    if (db != NULL)
        PQfinish(db);
    tg_config_unref(cfg);
}

int tg_cli_report(const char *cmd, const tg_mgmt_err_t *err)
{
    fprintf(stderr, "tollgate: %s: %s\n", cmd, err->msg[0] != '\0' ? err->msg : tg_err_public_msg(err->code));
    for (size_t i = 0; i < err->n_fields; i++)
        fprintf(stderr, "  %s: %s\n", err->fields[i].field, err->fields[i].msg);
    return err->code == TG_EINVALID_REQUEST ? 2 : 1;
}

const char *tg_cli_time(int64_t unix_ms, char buf[32])
{
    if (unix_ms == 0)
        return strcpy(buf, "-");
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

int tg_cli_dispatch(const char *cmd, int argc, char **argv, const tg_cli_sub_t *subs, size_t n,
                    const char *usage)
{
    const char *sub = argc > 2 ? argv[2] : "";
    if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(sub, subs[i].name) == 0)
            return subs[i].run(argc, argv);
    fprintf(stderr, "tollgate: %s: unknown subcommand \"%s\"\n", cmd, sub);
    fputs(usage, stderr);
    return 2;
}
