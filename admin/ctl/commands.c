/*
 * commands.c - tollgatectl's commands: each parses its arguments (args.h), makes its request(s)
 * (api.c) and prints the answer (output.c). A tenant is named by its id, as the API takes it;
 * every path segment is percent-encoded. A BYOK key is read from stdin or a file, never from the
 * command line (argv is visible to every user of the host), and wiped after use.
 */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "args.h"

#define PATH_CAP 2048

/* Parses the command's arguments; on a usage error returns CTL_EXIT_USAGE from the caller. */
#define PARSE(opts, min, max)                                                   \
    ctl_args_t a;                                                               \
    if (ctl_args_parse(&a, argc, argv, (opts), (min), (max), self->usage) != 0) \
        return CTL_EXIT_USAGE;

static int get_and_print(const ctl_t *c, const char *path, const char *const *columns)
{
    ctl_req_t rq = {.method = "GET", .path = path};
    ctl_res_t res;
    int rc = ctl_call(c, &rq, &res);
    if (rc == CTL_OK)
        ctl_print(c, res.json, columns);
    ctl_res_free(&res);
    return rc;
}

static int send_and_print(const ctl_t *c, const char *method, const char *path, const char *body,
                          const char *const *columns)
{
    ctl_req_t rq = {.method = method, .path = path, .body = body, .body_len = body ? strlen(body) : 0};
    ctl_res_t res;
    int rc = ctl_call(c, &rq, &res);
    if (rc == CTL_OK) {
        if (res.json)
            ctl_print(c, res.json, columns);
        else if (!c->json)
            printf("ok (%ld)\n", res.status);
    }
    ctl_res_free(&res);
    return rc;
}

/* A strict integer: digits only (with an optional '-'), within int64. */
static int parse_i64(const char *s, int64_t *out)
{
    if (s == NULL || *s == '\0')
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s)
        return -1;
    *out = v;
    return 0;
}

static char *dump(json_t *body)
{
    char *s = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    return s;
}

static int bad_option(const ctl_cmd_t *self, const char *name, const char *why)
{
    fprintf(stderr, "tollgatectl: --%s %s\nusage: %s\n", name, why, self->usage);
    return CTL_EXIT_USAGE;
}

/* Adds "limit" and "cursor" of a list command to its path. */
static int page_query(char *path, const ctl_args_t *a)
{
    if (ctl_query_add(path, PATH_CAP, "limit", ctl_arg(a, "limit")) != 0 ||
        ctl_query_add(path, PATH_CAP, "cursor", ctl_arg(a, "cursor")) != 0)
        return -1;
    return 0;
}

static int too_long(void)
{
    fprintf(stderr, "tollgatectl: an argument is too long\n");
    return CTL_EXIT_USAGE;
}

/* ---- tenants ---- */

static const char *const TENANT_COLS[] = {"id", "name", "status", "zero_retention", "created_at", NULL};

static int tenants_create(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"credits", NULL};
    PARSE(opts, 1, 1);
    json_t *body = json_pack("{s:s}", "name", a.pos[0]);
    const char *credits = ctl_arg(&a, "credits");
    if (credits) {
        int64_t v;
        if (parse_i64(credits, &v) != 0) {
            json_decref(body);
            return bad_option(self, "credits", "must be an integer number of micro-credits");
        }
        json_object_set_new(body, "initial_credits", json_integer(v));
    }
    char *s = dump(body);
    int rc = send_and_print(c, "POST", "/admin/v1/tenants", s, NULL);
    free(s);
    return rc;
}

static int tenants_list(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"limit", "cursor", NULL};
    PARSE(opts, 0, 0);
    char path[PATH_CAP] = "/admin/v1/tenants";
    if (page_query(path, &a) != 0)
        return too_long();
    return get_and_print(c, path, TENANT_COLS);
}

static int tenants_get(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    PARSE(NULL, 1, 1);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s", a.pos[0]) != 0)
        return too_long();
    return get_and_print(c, path, NULL);
}

static int tenants_action(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv, const char *action)
{
    PARSE(NULL, 1, 1);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/", a.pos[0]) != 0 ||
        strlen(path) + strlen(action) >= sizeof(path))
        return too_long();
    strcat(path, action);
    return send_and_print(c, "POST", path, NULL, NULL);
}

static int tenants_suspend(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    return tenants_action(c, self, argc, argv, "suspend");
}

static int tenants_resume(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    return tenants_action(c, self, argc, argv, "resume");
}

/* ---- keys ---- */

static const char *const KEY_COLS[] = {"id",         "prefix",     "label", "created_at",
                                       "expires_at", "revoked_at", NULL};

static int keys_create(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"label", "expires-at", NULL};
    PARSE(opts, 1, 1);
    json_t *body = json_object();
    if (ctl_arg(&a, "label"))
        json_object_set_new(body, "label", json_string(ctl_arg(&a, "label")));
    if (ctl_arg(&a, "expires-at"))
        json_object_set_new(body, "expires_at", json_string(ctl_arg(&a, "expires-at")));
    char *s = dump(body);
    char path[PATH_CAP];
    int rc = ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/keys", a.pos[0]) != 0
                 ? too_long()
                 : send_and_print(c, "POST", path, s, NULL);
    free(s);
    return rc;
}

static int keys_list(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"limit", "cursor", NULL};
    PARSE(opts, 1, 1);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/keys", a.pos[0]) != 0 || page_query(path, &a) != 0)
        return too_long();
    return get_and_print(c, path, KEY_COLS);
}

static int keys_revoke(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    PARSE(NULL, 2, 2);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/keys/%s", a.pos[0], a.pos[1]) != 0)
        return too_long();
    return send_and_print(c, "DELETE", path, NULL, NULL);
}

/* ---- byok ---- */

/* Reads a provider key from a file or stdin into `buf` (wiped by the caller): one line, trailing
 * line break dropped, no control characters. */
static int read_secret(const char *file, char *buf, size_t cap, size_t *len)
{
    FILE *f = file && strcmp(file, "-") != 0 ? fopen(file, "r") : stdin;
    if (f == NULL) {
        fprintf(stderr, "tollgatectl: cannot open %s: %s\n", file, strerror(errno));
        return CTL_EXIT_USAGE;
    }
    setvbuf(f, NULL, _IONBF, 0); /* no stdio copy of the key */
    size_t n = fread(buf, 1, cap, f);
    int eof = feof(f);
    if (f != stdin)
        fclose(f);
    if (n == cap && !eof) {
        fprintf(stderr, "tollgatectl: the provider key is longer than %zu bytes\n", cap - 1);
        return CTL_EXIT_USAGE;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f) {
            fprintf(stderr, "tollgatectl: the provider key holds a control character or a line break\n");
            return CTL_EXIT_USAGE;
        }
    if (n == 0) {
        fprintf(stderr, "tollgatectl: the provider key is empty (give it on stdin or with --file)\n");
        return CTL_EXIT_USAGE;
    }
    *len = n;
    return CTL_OK;
}

static int byok_set(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"file", NULL};
    PARSE(opts, 2, 2);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/provider-keys/%s", a.pos[0], a.pos[1]) != 0)
        return too_long();
    char key[4097];
    char body[2 * sizeof(key) + 32];
    size_t n = 0;
    int rc = read_secret(ctl_arg(&a, "file"), key, sizeof(key), &n);
    if (rc == CTL_OK) {
        /* The body is built by hand in a buffer wiped afterwards (jansson would keep copies). */
        size_t at = (size_t)snprintf(body, sizeof(body), "{\"api_key\":\"");
        for (size_t i = 0; i < n; i++) {
            if (key[i] == '"' || key[i] == '\\')
                body[at++] = '\\';
            body[at++] = key[i];
        }
        memcpy(body + at, "\"}", 3);
        ctl_req_t rq = {.method = "PUT", .path = path, .body = body, .body_len = at + 2};
        ctl_res_t res;
        rc = ctl_call(c, &rq, &res);
        if (rc == CTL_OK)
            ctl_print(c, res.json, NULL);
        ctl_res_free(&res);
    }
    explicit_bzero(key, sizeof(key));
    explicit_bzero(body, sizeof(body));
    return rc;
}

static int byok_show(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    PARSE(NULL, 2, 2);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/provider-keys/%s", a.pos[0], a.pos[1]) != 0)
        return too_long();
    return get_and_print(c, path, NULL);
}

static int byok_delete(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    PARSE(NULL, 2, 2);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/provider-keys/%s", a.pos[0], a.pos[1]) != 0)
        return too_long();
    return send_and_print(c, "DELETE", path, NULL, NULL);
}

/* ---- policy ---- */

/* Each option is the body field of the same name ('-' for '_'); "inherit" clears a field. */
static const char *const POLICY_OPTS[] = {
    "zero-retention", "allowed-models", "max-tokens", "rpm", "tpm", "byok-fallback", NULL};

static int policy_set(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    PARSE(POLICY_OPTS, 1, 1);
    json_t *body = json_object();
    int given = 0;
    for (int i = 0; POLICY_OPTS[i]; i++) {
        const char *v = ctl_arg(&a, POLICY_OPTS[i]);
        if (v == NULL)
            continue;
        given++;
        char field[32];
        snprintf(field, sizeof(field), "%s", POLICY_OPTS[i]);
        for (char *p = field; *p; p++)
            if (*p == '-')
                *p = '_';
        json_t *jv = NULL;
        int64_t n;
        if (strcmp(v, "inherit") == 0) {
            jv = json_null();
        } else if (strcmp(field, "zero_retention") == 0 || strcmp(field, "byok_fallback") == 0) {
            if (strcmp(v, "true") == 0 || strcmp(v, "on") == 0)
                jv = json_true();
            else if (strcmp(v, "false") == 0 || strcmp(v, "off") == 0)
                jv = json_false();
        } else if (strcmp(field, "allowed_models") == 0) {
            jv = json_array();
            for (const char *p = v; *p;) {
                const char *comma = strchr(p, ',');
                size_t len = comma ? (size_t)(comma - p) : strlen(p);
                if (len > 0)
                    json_array_append_new(jv, json_stringn(p, len));
                p += len + (comma != NULL);
            }
        } else if (parse_i64(v, &n) == 0) {
            jv = json_integer(n);
        }
        if (jv == NULL) {
            json_decref(body);
            return bad_option(self, POLICY_OPTS[i], "has a value of the wrong kind (see --help)");
        }
        json_object_set_new(body, field, jv);
    }
    if (given == 0) {
        json_decref(body);
        fprintf(stderr, "tollgatectl: nothing to set\nusage: %s\n", self->usage);
        return CTL_EXIT_USAGE;
    }
    char *s = dump(body);
    char path[PATH_CAP];
    int rc = ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/policy", a.pos[0]) != 0
                 ? too_long()
                 : send_and_print(c, "PUT", path, s, NULL);
    free(s);
    return rc;
}

static int policy_show(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    PARSE(NULL, 1, 1);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/policy", a.pos[0]) != 0)
        return too_long();
    return get_and_print(c, path, NULL);
}

/* ---- wallet ---- */

static int wallet_show(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    PARSE(NULL, 1, 1);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/wallet", a.pos[0]) != 0)
        return too_long();
    return get_and_print(c, path, NULL);
}

static int wallet_top_up(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"idempotency-key", NULL};
    PARSE(opts, 2, 2);
    int64_t amount;
    if (parse_i64(a.pos[1], &amount) != 0) {
        fprintf(stderr, "tollgatectl: AMOUNT must be an integer number of micro-credits\nusage: %s\n",
                self->usage);
        return CTL_EXIT_USAGE;
    }
    char key[64];
    const char *given = ctl_arg(&a, "idempotency-key");
    if (given) {
        if (strlen(given) == 0 || strlen(given) >= sizeof(key) || strpbrk(given, "\r\n") != NULL)
            return bad_option(self, "idempotency-key", "must be 1 to 63 characters on one line");
        snprintf(key, sizeof(key), "%s", given);
    } else {
        /* 128 random bits: a retry of this same command line must reuse it, so it is printed. */
        unsigned char r[16];
        if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
            fprintf(stderr, "tollgatectl: no randomness for the idempotency key: %s\n", strerror(errno));
            return CTL_EXIT_TRANSPORT;
        }
        for (size_t i = 0; i < sizeof(r); i++)
            snprintf(key + 2 * i, 3, "%02x", r[i]);
    }
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/wallet/top-ups", a.pos[0]) != 0)
        return too_long();
    char body[64];
    snprintf(body, sizeof(body), "{\"amount\":%" PRId64 "}", amount);
    ctl_req_t rq = {
        .method = "POST", .path = path, .body = body, .body_len = strlen(body), .idempotency_key = key};
    ctl_res_t res;
    int rc = ctl_call(c, &rq, &res);
    if (rc == CTL_OK) {
        ctl_print(c, res.json, NULL);
        if (!c->json)
            printf("idempotency_key  %s\n", key);
    } else if (rc != CTL_EXIT_API || res.status == 409) {
        /* The top-up may or may not have been applied: the same key makes a retry safe. */
        fprintf(stderr, "tollgatectl: retry safely with --idempotency-key %s\n", key);
    }
    ctl_res_free(&res);
    return rc;
}

static int wallet_ledger(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"limit", "cursor", NULL};
    PARSE(opts, 1, 1);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/wallet/ledger", a.pos[0]) != 0 ||
        page_query(path, &a) != 0)
        return too_long();
    return get_and_print(c, path, NULL);
}

/* ---- usage and events ---- */

static int usage_list(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"from",   "to",    "key",    "model", "provider",
                                       "status", "limit", "cursor", "csv",   NULL};
    ctl_args_t a;
    /* --csv takes no value: accept it bare by rewriting it to "--csv=1" for the parser. */
    char *args2[64];
    if (argc > 64)
        return too_long();
    bool csv = false;
    int n2 = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--csv") == 0)
            csv = true;
        else
            args2[n2++] = argv[i];
    }
    if (ctl_args_parse(&a, n2, args2, opts, 1, 1, self->usage) != 0)
        return CTL_EXIT_USAGE;
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/usage", a.pos[0]) != 0)
        return too_long();
    for (int i = 0; opts[i]; i++)
        if (ctl_query_add(path, sizeof(path), opts[i], ctl_arg(&a, opts[i])) != 0)
            return too_long();
    if (!csv)
        return get_and_print(c, path, NULL);
    ctl_req_t rq = {.method = "GET", .path = path, .accept = "text/csv", .stream_to = stdout};
    ctl_res_t res;
    int rc = ctl_call(c, &rq, &res);
    ctl_res_free(&res);
    if (fflush(stdout) != 0 && rc == CTL_OK) {
        fprintf(stderr, "tollgatectl: writing the export failed: %s\n", strerror(errno));
        rc = CTL_EXIT_TRANSPORT;
    }
    return rc;
}

static int usage_summary(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"from", "to", "model", NULL};
    PARSE(opts, 1, 1);
    char path[PATH_CAP];
    if (ctl_path(path, sizeof(path), "/admin/v1/tenants/%s/usage/summary", a.pos[0]) != 0)
        return too_long();
    for (int i = 0; opts[i]; i++)
        if (ctl_query_add(path, sizeof(path), opts[i], ctl_arg(&a, opts[i])) != 0)
            return too_long();
    return get_and_print(c, path, NULL);
}

static const char *const EVENT_COLS[] = {"at", "tenant_id", "chain",  "kind",   "from",
                                         "to", "reason",    "status", "served", NULL};

static int events_list(const ctl_t *c, const ctl_cmd_t *self, int argc, char **argv)
{
    static const char *const opts[] = {"tenant", "since", "limit", "cursor", NULL};
    PARSE(opts, 0, 0);
    char path[PATH_CAP] = "/admin/v1/failover-events";
    for (int i = 0; opts[i]; i++)
        if (ctl_query_add(path, sizeof(path), opts[i], ctl_arg(&a, opts[i])) != 0)
            return too_long();
    return get_and_print(c, path, EVENT_COLS);
}

/* ---- the table ---- */

const ctl_cmd_t ctl_commands[] = {
    {"tenants", "create", "tollgatectl tenants create NAME [--credits MICRO]",
     "Creates a tenant (and its wallet). --credits: initial credits in micro-credits (1 credit = 1000000).",
     tenants_create},
    {"tenants", "list", "tollgatectl tenants list [--limit N] [--cursor C]",
     "Lists tenants, a page at a time.", tenants_list},
    {"tenants", "get", "tollgatectl tenants get TENANT", "Shows one tenant (TENANT: its id, as everywhere).",
     tenants_get},
    {"tenants", "suspend", "tollgatectl tenants suspend TENANT",
     "Suspends a tenant: every key of it gets 403 tenant_suspended.", tenants_suspend},
    {"tenants", "resume", "tollgatectl tenants resume TENANT", "Resumes a suspended tenant.", tenants_resume},
    {"keys", "create", "tollgatectl keys create TENANT [--label L] [--expires-at RFC3339]",
     "Issues an API key. The secret (field key) is shown this once only: store it now.", keys_create},
    {"keys", "list", "tollgatectl keys list TENANT [--limit N] [--cursor C]",
     "Lists a tenant's keys (never a secret).", keys_list},
    {"keys", "revoke", "tollgatectl keys revoke TENANT KEY_ID", "Revokes a key at once (idempotent).",
     keys_revoke},
    {"byok", "set", "tollgatectl byok set TENANT PROVIDER [--file FILE]",
     "Stores the tenant's own key for PROVIDER, sealed. The key is read from FILE or, without --file\n"
     "(or with --file -), from stdin: one line. It is never taken from the command line.",
     byok_set},
    {"byok", "show", "tollgatectl byok show TENANT PROVIDER",
     "Shows a stored provider key's metadata (provider, created, last four characters at most).", byok_show},
    {"byok", "delete", "tollgatectl byok delete TENANT PROVIDER", "Deletes the tenant's key for PROVIDER.",
     byok_delete},
    {"policy", "set",
     "tollgatectl policy set TENANT [--zero-retention true|false] [--allowed-models M1,M2|inherit]\n"
     "                              [--max-tokens N|inherit] [--rpm N|inherit] [--tpm N|inherit]\n"
     "                              [--byok-fallback true|false|inherit]",
     "Changes the fields given of the tenant's policy; `inherit` clears one back to the default.",
     policy_set},
    {"policy", "show", "tollgatectl policy show TENANT", "Shows the tenant's policy.", policy_show},
    {"wallet", "show", "tollgatectl wallet show TENANT",
     "Shows the wallet: balance, reserved, spent (micro-credits).", wallet_show},
    {"wallet", "top-up", "tollgatectl wallet top-up TENANT AMOUNT [--idempotency-key K]",
     "Adds AMOUNT micro-credits. An Idempotency-Key is generated unless given and printed; run the\n"
     "command again with --idempotency-key K after a failure and the top-up is applied at most once.",
     wallet_top_up},
    {"wallet", "ledger", "tollgatectl wallet ledger TENANT [--limit N] [--cursor C]",
     "Lists the wallet's ledger entries, a page at a time.", wallet_ledger},
    {"usage", "list",
     "tollgatectl usage list TENANT [--since T] [--until T] [--key ID] [--model M] [--provider P]\n"
     "                             [--status S] [--limit N] [--cursor C] [--csv]",
     "Lists usage records (T: RFC 3339 or unix milliseconds; S: an HTTP status). --csv streams the whole\n"
     "export (every matching record) as CSV to stdout.",
     usage_list},
    {"usage", "summary", "tollgatectl usage summary TENANT [--from DAY] [--to DAY] [--model M]",
     "Per day and model: requests, errors, tokens, cost, charged (DAY: YYYY-MM-DD).", usage_summary},
    {"events", NULL, "tollgatectl events [--tenant ID] [--since T] [--limit N] [--cursor C]",
     "Lists failover events, oldest first (T: RFC 3339 or unix milliseconds).", events_list},
};
const size_t ctl_commands_count = sizeof(ctl_commands) / sizeof(ctl_commands[0]);
