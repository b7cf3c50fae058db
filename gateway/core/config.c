/*
 * config.c - load and validate the JSON config whole, see config.h and docs/CONVENTIONS.md.
 *
 * Validation never stops at the first problem: every check appends a line
 * "<key path>: <problem>" to the caller's error buffer and carries on, so an
 * operator fixes a file in one round. Values are echoed in messages to show
 * what was wrong, except for secret-bearing fields (database.url, keys,
 * pepper), whose values are never echoed: only their names and sources.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "keyring.h"
#include "log.h"

#define CFG_FILE_MAX    (4u << 20) /* a config file larger than this is a mistake */
#define SECRET_FILE_MAX 4096
#define NAME_MAX_LEN    128
#define MAX_CHAIN_LEN   16

/* The public snapshot plus fields config.h has no room for (they stay private to this file). */
typedef struct cfg_priv {
    tg_config_t pub;
    tg_log_level_t log_level; /* applied by tg_config_publish */
} cfg_priv_t;

/* pub is the first member, and every snapshot is allocated here as a cfg_priv_t */
#define PRIV(c) ((cfg_priv_t *)(void *)(c))

typedef struct vctx {
    tg_buf_t *errors;
    unsigned n_errors;
} vctx_t;

static const char *const kind_names[] = {"openai", "anthropic", "gemini"};
static const char *const kind_default_base[] = {"https://api.openai.com/v1", "https://api.anthropic.com",
                                                "https://generativelanguage.googleapis.com"};

const char *tg_provider_kind_name(tg_provider_kind_t k)
{
    if ((unsigned)k < sizeof(kind_names) / sizeof(kind_names[0]))
        return kind_names[k];
    return "unknown";
}

__attribute__((format(printf, 2, 3))) static void verr(vctx_t *v, const char *fmt, ...)
{
    v->n_errors++;
    if (v->errors == NULL)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* a full error buffer only loses the later lines; the load still fails */
    TG_IGNORE_RESULT(tg_buf_appendf(v->errors, "%s\n", line));
}

/* "prefix.key", or "key" at the top level. */
static void join(char *out, size_t cap, const char *prefix, const char *key)
{
    int n;
    if (prefix == NULL || prefix[0] == '\0')
        n = snprintf(out, cap, "%s", key);
    else
        n = snprintf(out, cap, "%s.%s", prefix, key);
    if (n < 0 || (size_t)n >= cap) /* a path too long for a message is cut, visibly */
        memcpy(out + cap - 4, "...", 4);
}

/* A short JSON rendering of a (non-secret) value for an error message. */
static void show(const json_t *j, char *out, size_t cap)
{
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    if (s == NULL) {
        snprintf(out, cap, "(unprintable)");
        return;
    }
    if (strlen(s) > 60)
        snprintf(out, cap, "%.57s...", s);
    else
        snprintf(out, cap, "%s", s);
    free(s);
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static void check_keys(vctx_t *v, const json_t *obj, const char *path, const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a != NULL; a++)
            if (strcmp(*a, key) == 0)
                ok = true;
        if (!ok) {
            char p[256];
            join(p, sizeof(p), path, key);
            verr(v, "%s: unknown key", p);
        }
    }
}

/* Returns the member if it is an object, NULL if absent; reports a wrong type. */
static json_t *get_obj(vctx_t *v, const json_t *obj, const char *path, const char *key)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL)
        return NULL;
    if (!json_is_object(j)) {
        char p[256];
        join(p, sizeof(p), path, key);
        verr(v, "%s: must be an object, got %s", p, json_type_name(j));
        return NULL;
    }
    return j;
}

static void get_u64(vctx_t *v, const json_t *obj, const char *path, const char *key, uint64_t min,
                    uint64_t max, uint64_t *dst)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL)
        return;
    char p[256], got[80];
    join(p, sizeof(p), path, key);
    if (!json_is_integer(j) || json_integer_value(j) < 0 || (uint64_t)json_integer_value(j) < min ||
        (uint64_t)json_integer_value(j) > max) {
        show(j, got, sizeof(got));
        verr(v, "%s: must be an integer between %llu and %llu, got %s", p, (unsigned long long)min,
             (unsigned long long)max, got);
        return;
    }
    *dst = (uint64_t)json_integer_value(j);
}

static void get_u32(vctx_t *v, const json_t *obj, const char *path, const char *key, uint32_t min,
                    uint32_t max, uint32_t *dst)
{
    uint64_t x = *dst;
    get_u64(v, obj, path, key, min, max, &x);
    *dst = (uint32_t)x;
}

static void get_size(vctx_t *v, const json_t *obj, const char *path, const char *key, size_t min, size_t max,
                     size_t *dst)
{
    uint64_t x = *dst;
    get_u64(v, obj, path, key, min, max, &x);
    *dst = (size_t)x;
}

static void get_bool(vctx_t *v, const json_t *obj, const char *path, const char *key, bool *dst)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL)
        return;
    if (!json_is_boolean(j)) {
        char p[256], got[80];
        join(p, sizeof(p), path, key);
        show(j, got, sizeof(got));
        verr(v, "%s: must be true or false, got %s", p, got);
        return;
    }
    *dst = json_is_true(j);
}

/* A string member, or NULL (absent or reported). `secret`: never echo the value. */
static const char *get_str(vctx_t *v, const json_t *obj, const char *path, const char *key, bool secret)
{
    json_t *j = json_object_get(obj, key);
    if (j == NULL)
        return NULL;
    char p[256];
    join(p, sizeof(p), path, key);
    if (!json_is_string(j)) {
        if (secret) {
            verr(v, "%s: must be a string, got %s", p, json_type_name(j));
        } else {
            char got[80];
            show(j, got, sizeof(got));
            verr(v, "%s: must be a string, got %s", p, got);
        }
        return NULL;
    }
    if (json_string_length(j) == 0) {
        verr(v, "%s: must not be empty", p);
        return NULL;
    }
    return json_string_value(j);
}

static bool has_ctl_or_space(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return true;
    return false;
}

static bool valid_name(const char *s, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || strchr(extra, c) != NULL))
            return false;
    }
    return true;
}

static char *xstrdup(const char *s)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL) {
        /* config loading happens at start or reload, where giving up is the only sane answer */
        fputs("tollgate: out of memory while loading the config\n", stderr);
        abort();
    }
    return d;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n == 0 ? 1 : n, sz);
    if (p == NULL) {
        fputs("tollgate: out of memory while loading the config\n", stderr);
        abort();
    }
    return p;
}

static void free_secret(char *s)
{
    if (s == NULL)
        return;
    sodium_memzero(s, strlen(s));
    free(s);
}

/* The host is kept in inet_ntop's form, so "localhost" is stored as 127.0.0.1 (what gets bound) and
 * two spellings of one IPv6 address compare equal in the checks below. */
static bool parse_hostport(const char *s, char **host, uint16_t *port)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char h[INET6_ADDRSTRLEN];
    if (tg_addr_parse(s, false, &ss, &len) != 0)
        return false;
    const void *ip;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
        ip = &a6->sin6_addr;
        *port = ntohs(a6->sin6_port);
    } else {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
        ip = &a4->sin_addr;
        *port = ntohs(a4->sin_port);
    }
    if (inet_ntop(ss.ss_family, ip, h, sizeof(h)) == NULL)
        return false;
    *host = xstrdup(h);
    return true;
}

static bool is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

static void parse_listen(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"data", "admin", NULL};
    const char *data = "127.0.0.1:8080", *admin = "127.0.0.1:8081";
    json_t *l = get_obj(v, root, "", "listen");
    if (l != NULL) {
        check_keys(v, l, "listen", keys);
        const char *s;
        if ((s = get_str(v, l, "listen", "data", false)) != NULL)
            data = s;
        else if (json_object_get(l, "data") != NULL)
            data = NULL;
        if ((s = get_str(v, l, "listen", "admin", false)) != NULL)
            admin = s;
        else if (json_object_get(l, "admin") != NULL)
            admin = NULL;
    }
    if (data != NULL && !parse_hostport(data, &c->data_host, &c->data_port))
        verr(v, "listen.data: invalid address \"%.80s\" (want host:port)", data);
    if (admin != NULL) {
        if (!parse_hostport(admin, &c->admin_host, &c->admin_port))
            verr(v, "listen.admin: invalid address \"%.80s\" (want host:port)", admin);
    }
    if (data != NULL && admin != NULL && c->data_host != NULL && c->admin_host != NULL &&
        c->data_port == c->admin_port && strcmp(c->data_host, c->admin_host) == 0)
        verr(v, "listen.admin: same address as listen.data");
}

/* Reads an environment variable holding a secret; the value never reaches a message. */
static char *secret_from_env(vctx_t *v, const char *path, const char *name)
{
    const char *val = getenv(name);
    if (val == NULL) {
        verr(v, "%s: environment variable \"%.80s\" is not set", path, name);
        return NULL;
    }
    if (val[0] == '\0') {
        verr(v, "%s: environment variable \"%.80s\" is empty", path, name);
        return NULL;
    }
    return xstrdup(val);
}

/* Reads a small secret file, trailing whitespace trimmed; the value never reaches a message. */
static char *secret_from_file(vctx_t *v, const char *path, const char *file)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        verr(v, "%s: cannot read \"%.120s\": %s", path, file, strerror(errno));
        return NULL;
    }
    char *buf = xcalloc(1, SECRET_FILE_MAX + 1);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, SECRET_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            verr(v, "%s: cannot read \"%.120s\": %s", path, file, strerror(errno));
            close(fd);
            free_secret(buf);
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > SECRET_FILE_MAX) {
            verr(v, "%s: file \"%.120s\" is larger than %u bytes", path, file, SECRET_FILE_MAX);
            close(fd);
            sodium_memzero(buf, SECRET_FILE_MAX + 1);
            free(buf);
            return NULL;
        }
    }
    close(fd);
    while (len > 0 &&
           (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        buf[--len] = '\0';
    if (len == 0) {
        verr(v, "%s: file \"%.120s\" is empty", path, file);
        free(buf);
        return NULL;
    }
    return buf;
}

/* `<prefix>_env` or `<prefix>_file` (at most one); returns the secret or NULL. */
static char *get_secret(vctx_t *v, const json_t *obj, const char *path, const char *env_key,
                        const char *file_key)
{
    const char *env = get_str(v, obj, path, env_key, false);
    const char *file = get_str(v, obj, path, file_key, false);
    char p[256];
    if (env != NULL && file != NULL) {
        join(p, sizeof(p), path, env_key);
        verr(v, "%s: give only one of %s and %s", p, env_key, file_key);
        return NULL;
    }
    if (env != NULL) {
        join(p, sizeof(p), path, env_key);
        return secret_from_env(v, p, env);
    }
    if (file != NULL) {
        join(p, sizeof(p), path, file_key);
        return secret_from_file(v, p, file);
    }
    return NULL;
}

/* Whether one entry of a libpq host list connects without a name lookup: a unix socket directory
 * (an absolute path, or '@' for Linux's abstract namespace), a numeric IPv4 or IPv6 address, or
 * empty (libpq's default socket directory). */
static bool db_host_is_literal(const char *h, size_t n)
{
    if (n == 0 || h[0] == '/' || h[0] == '@')
        return true;
    char tmp[INET6_ADDRSTRLEN + 1];
    unsigned char addr[sizeof(struct in6_addr)];
    if (n >= sizeof(tmp))
        return false;
    memcpy(tmp, h, n);
    tmp[n] = '\0';
    return inet_pton(AF_INET, tmp, addr) == 1 || inet_pton(AF_INET6, tmp, addr) == 1;
}

/*
 * libpq resolves a host name synchronously inside PQconnectStart and PQconnectPoll, that is on a
 * worker's loop (pgpool.h), stalling every request of that worker for as long as the resolver
 * takes. Only connection strings that need no lookup pass: hostaddr given, or every host a socket
 * directory or a numeric address. Options the string leaves out come from libpq's environment
 * variables, so those count too. `what` names the key the string came from; the host itself is
 * not echoed (database.url is secret-bearing).
 */
static void check_db_host(vctx_t *v, const PQconninfoOption *opts, const char *what)
{
    const char *host = NULL, *hostaddr = NULL, *service = NULL;
    for (const PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "service") == 0)
            service = o->val;
    }
    const char *env_hostaddr = getenv("PGHOSTADDR"), *env_host = getenv("PGHOST");
    const char *env_service = getenv("PGSERVICE");
    if (hostaddr != NULL || (env_hostaddr != NULL && env_hostaddr[0] != '\0'))
        return; /* libpq connects to hostaddr and uses host only for authentication */
    if (service != NULL || (env_service != NULL && env_service[0] != '\0')) {
        verr(v,
             "%s: a connection service (service= or PGSERVICE) is not supported: its host cannot be "
             "checked; give host (a unix socket directory or a numeric IP address) or hostaddr",
             what);
        return;
    }
    const char *from = what;
    if (host == NULL && env_host != NULL && env_host[0] != '\0') {
        host = env_host;
        from = "PGHOST (environment)";
    }
    if (host == NULL)
        return; /* libpq's default unix socket directory */
    for (const char *h = host;;) {
        size_t n = strcspn(h, ",");
        if (!db_host_is_literal(h, n)) {
            verr(v,
                 "%s: the host is a name, which libpq would resolve on a worker's event loop and block "
                 "it: give a unix socket directory (an absolute path), a numeric IP address, or "
                 "hostaddr=IP next to the name",
                 from);
            return;
        }
        if (h[n] == '\0')
            return;
        h += n + 1;
    }
}

static void parse_database(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"url", "url_env", "pool_size", "job_timeout_ms", "max_queue", NULL};
    c->db_pool_size = 2;
    c->db_job_timeout_ms = 2000; /* TG_PGPOOL_JOB_TIMEOUT_MS */
    c->db_max_queue = 1024;      /* TG_PGPOOL_MAX_QUEUE */
    json_t *d = get_obj(v, root, "", "database");
    if (d == NULL)
        return;
    check_keys(v, d, "database", keys);
    get_u32(v, d, "database", "pool_size", 1, 64, &c->db_pool_size);
    get_u32(v, d, "database", "job_timeout_ms", 10, 600000, &c->db_job_timeout_ms);
    get_u32(v, d, "database", "max_queue", 1, 1000000, &c->db_max_queue);
    const char *url = get_str(v, d, "database", "url", true);
    const char *env = get_str(v, d, "database", "url_env", false);
    if (url != NULL && env != NULL) {
        verr(v, "database.url: give only one of url and url_env");
        return;
    }
    char *u = url != NULL ? xstrdup(url) : env != NULL ? secret_from_env(v, "database.url_env", env) : NULL;
    if (u == NULL) {
        if (json_object_get(d, "url") == NULL && json_object_get(d, "url_env") == NULL)
            verr(v, "database: url or url_env is required");
        return;
    }
    /* PQconninfoParse's own message may quote parts of the string (a password): not echoed */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(u, &perr);
    if (opts == NULL) {
        verr(v, "%s: not a valid PostgreSQL connection string",
             url != NULL ? "database.url" : "database.url_env");
        PQfreemem(perr);
        free_secret(u);
        return;
    }
    check_db_host(v, opts, url != NULL ? "database.url" : "database.url_env");
    PQconninfoFree(opts);
    c->database_url = u;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static void parse_secrets(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"key_pepper_env", "key_pepper_file", "master_keys", NULL};
    json_t *s = get_obj(v, root, "", "secrets");
    if (s == NULL)
        return;
    check_keys(v, s, "secrets", keys);
    /* BYOK master keys (keyring.h): files only, never the environment */
    v->n_errors +=
        tg_keyring_load(json_object_get(s, "master_keys"), "secrets.master_keys", &c->keyring, v->errors);
    char *hex = get_secret(v, s, "secrets", "key_pepper_env", "key_pepper_file");
    if (hex == NULL)
        return;
    const char *src =
        json_object_get(s, "key_pepper_env") != NULL ? "secrets.key_pepper_env" : "secrets.key_pepper_file";
    bool ok = strlen(hex) == 64;
    for (size_t i = 0; ok && i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            ok = false;
        else
            c->key_pepper[i] = (uint8_t)(hi << 4 | lo);
    }
    if (ok)
        c->has_pepper = true;
    else {
        sodium_memzero(c->key_pepper, sizeof(c->key_pepper));
        verr(v, "%s: must hold 64 hex characters (32 bytes)", src);
    }
    free_secret(hex);
}

static void parse_limits(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"max_body_bytes",
                                       "max_upstream_body_bytes",
                                       "max_sse_event_bytes",
                                       "stream_buffer_bytes",
                                       "body_memory_factor",
                                       "rate_window_ms",
                                       NULL};
    c->max_body_bytes = 1048576;
    c->max_upstream_body_bytes = 8388608;
    c->max_sse_event_bytes = 262144;
    c->stream_buffer_bytes = 262144;
    c->body_memory_factor = 10; /* jsonmem.h: chat bodies cost 1-9x their size, tiny values 15-75x */
    c->rate_window_ms = TG_RATE_WINDOW_MS_DEFAULT;
    json_t *l = get_obj(v, root, "", "limits");
    if (l == NULL)
        return;
    check_keys(v, l, "limits", keys);
    const size_t lo = 1024, hi = (size_t)1 << 30;
    get_size(v, l, "limits", "max_body_bytes", lo, hi, &c->max_body_bytes);
    get_size(v, l, "limits", "max_upstream_body_bytes", lo, hi, &c->max_upstream_body_bytes);
    get_size(v, l, "limits", "max_sse_event_bytes", lo, hi, &c->max_sse_event_bytes);
    get_size(v, l, "limits", "stream_buffer_bytes", lo, hi, &c->stream_buffer_bytes);
    get_u32(v, l, "limits", "body_memory_factor", 0, 1000, &c->body_memory_factor);
    /* the limits are per minute; a shorter window is for tests (a whole window in a few seconds),
     * a longer one for slow limits. Every instance on one database must use the same. */
    get_u32(v, l, "limits", "rate_window_ms", 1000, 3600000u, &c->rate_window_ms);
}

static void parse_retention(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"stored_requests",
                                       "stored_requests_days",
                                       "max_record_bytes",
                                       "queue_bytes",
                                       "job_interval_ms",
                                       "allow_core_dumps",
                                       NULL};
    c->retention.stored_requests = true;
    c->retention.days = 30;
    c->retention.max_record_bytes = 65536;
    c->retention.queue_bytes = (size_t)32 << 20;
    c->retention.job_interval_ms = 3600000;
    json_t *r = get_obj(v, root, "", "retention");
    if (r == NULL)
        return;
    check_keys(v, r, "retention", keys);
    get_bool(v, r, "retention", "stored_requests", &c->retention.stored_requests);
    get_u32(v, r, "retention", "stored_requests_days", 1, 3650, &c->retention.days);
    get_size(v, r, "retention", "max_record_bytes", 256, (size_t)16 << 20, &c->retention.max_record_bytes);
    get_size(v, r, "retention", "queue_bytes", (size_t)64 << 10, (size_t)1 << 32, &c->retention.queue_bytes);
    get_u32(v, r, "retention", "job_interval_ms", 100, 86400000u, &c->retention.job_interval_ms);
    get_bool(v, r, "retention", "allow_core_dumps", &c->retention.allow_core_dumps);
    if (c->retention.queue_bytes < 2 * c->retention.max_record_bytes)
        verr(v, "retention.queue_bytes: must hold at least two records (2 x max_record_bytes)");
}

/* idempotency: the life of an Idempotency-Key and what its record may hold (idempotency.h). */
static void parse_idempotency(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"ttl_ms", "running_lease_ms", "max_answer_bytes", "purge_interval_ms",
                                       NULL};
    c->idempotency.ttl_ms = 86400000u;
    c->idempotency.running_lease_ms = 0; /* not given: 600000, or the ttl when that is shorter */
    c->idempotency.max_answer_bytes = (size_t)1 << 20;
    c->idempotency.purge_interval_ms = 60000u;
    json_t *o = get_obj(v, root, "", "idempotency");
    if (o != NULL) {
        check_keys(v, o, "idempotency", keys);
        get_u32(v, o, "idempotency", "ttl_ms", 1000, 7u * 86400000u, &c->idempotency.ttl_ms);
        get_u32(v, o, "idempotency", "running_lease_ms", 1000, 86400000u, &c->idempotency.running_lease_ms);
        get_size(v, o, "idempotency", "max_answer_bytes", 256, (size_t)16 << 20,
                 &c->idempotency.max_answer_bytes);
        get_u32(v, o, "idempotency", "purge_interval_ms", 100, 86400000u, &c->idempotency.purge_interval_ms);
    }
    if (c->idempotency.running_lease_ms == 0)
        c->idempotency.running_lease_ms = c->idempotency.ttl_ms < 600000u ? c->idempotency.ttl_ms : 600000u;
    else if (c->idempotency.running_lease_ms > c->idempotency.ttl_ms)
        verr(v, "idempotency.running_lease_ms: must not exceed idempotency.ttl_ms");
}

/* admin_auth: the admin API's JWT keys (admin/README.md, "Auth"). Without a key the admin API has
 * no authentication, so the admin listener must stay on loopback. */
static void parse_admin_auth(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"issuer",
                                       "audience",
                                       "hs256_secret_file",
                                       "es256_public_key_file",
                                       "skew_s",
                                       "threads",
                                       "queue",
                                       "job_timeout_ms",
                                       NULL};
    c->admin_auth.skew_s = 60;
    c->admin_auth.threads = 2;
    c->admin_auth.queue = 64;
    c->admin_auth.job_timeout_ms = 10000;
    json_t *a = get_obj(v, root, "", "admin_auth");
    if (a != NULL) {
        check_keys(v, a, "admin_auth", keys);
        get_u32(v, a, "admin_auth", "skew_s", 0, 300, &c->admin_auth.skew_s);
        get_u32(v, a, "admin_auth", "threads", 1, 64, &c->admin_auth.threads);
        get_u32(v, a, "admin_auth", "queue", 1, 100000, &c->admin_auth.queue);
        get_u32(v, a, "admin_auth", "job_timeout_ms", 100, 600000, &c->admin_auth.job_timeout_ms);
        const char *iss = get_str(v, a, "admin_auth", "issuer", false);
        const char *aud = get_str(v, a, "admin_auth", "audience", false);
        if (iss == NULL || *iss == '\0' || aud == NULL || *aud == '\0')
            verr(v, "admin_auth: issuer and audience are required (non-empty strings)");
        c->admin_auth.issuer = iss != NULL ? xstrdup(iss) : NULL;
        c->admin_auth.audience = aud != NULL ? xstrdup(aud) : NULL;
        const char *hs = get_str(v, a, "admin_auth", "hs256_secret_file", false);
        const char *es = get_str(v, a, "admin_auth", "es256_public_key_file", false);
        if (hs != NULL) {
            c->admin_auth.hs256_secret = secret_from_file(v, "admin_auth.hs256_secret_file", hs);
            if (c->admin_auth.hs256_secret != NULL) {
                c->admin_auth.hs256_len = strlen(c->admin_auth.hs256_secret);
                if (c->admin_auth.hs256_len < 32)
                    verr(v, "admin_auth.hs256_secret_file: the secret must be at least 32 bytes");
            }
        }
        if (es != NULL) {
            c->admin_auth.es256_public_key = secret_from_file(v, "admin_auth.es256_public_key_file", es);
            if (c->admin_auth.es256_public_key != NULL &&
                strstr(c->admin_auth.es256_public_key, "-----BEGIN PUBLIC KEY-----") == NULL)
                verr(v, "admin_auth.es256_public_key_file: not a PEM public key (BEGIN PUBLIC KEY)");
        }
        if (hs == NULL && es == NULL)
            verr(v, "admin_auth: give hs256_secret_file, es256_public_key_file or both");
        c->admin_auth.enabled = true;
    }
    if (!c->admin_auth.enabled && c->admin_host != NULL && !is_loopback(c->admin_host))
        verr(v, "listen.admin: must be a loopback address unless admin_auth is configured, got \"%.80s\"",
             c->admin_host);
}

/* billing: the credit ledger's amounts (micro-credits; at most a billion credits) and lease life. */
static void parse_billing(vctx_t *v, const json_t *root, tg_config_t *c)
{
    static const char *const keys[] = {"enabled",      "trial_credits", "lease_credits",
                                       "lease_ttl_ms", "journal_path",  "journal_fsync",
                                       "commit_ms",    "queue_max",     NULL};
    const uint64_t max_credits = 1000000000000000ull;
    uint64_t trial = 0, lease = 10000000;
    c->billing.lease_ttl_ms = 60000;
    c->billing.enabled = true; /* a gateway that sells credits charges unless told otherwise */
    c->billing.journal_fsync = true;
    c->billing.commit_ms = 2000;
    c->billing.queue_max = 1u << 20;
    const char *journal = NULL;
    json_t *b = get_obj(v, root, "", "billing");
    if (b != NULL) {
        check_keys(v, b, "billing", keys);
        get_bool(v, b, "billing", "enabled", &c->billing.enabled);
        get_u64(v, b, "billing", "trial_credits", 0, max_credits, &trial);
        get_u64(v, b, "billing", "lease_credits", 1, max_credits, &lease);
        get_u32(v, b, "billing", "lease_ttl_ms", 5000, 3600000u, &c->billing.lease_ttl_ms);
        journal = get_str(v, b, "billing", "journal_path", false);
        get_bool(v, b, "billing", "journal_fsync", &c->billing.journal_fsync);
        get_u32(v, b, "billing", "commit_ms", 1, 5000, &c->billing.commit_ms);
        get_u32(v, b, "billing", "queue_max", 16, 1u << 24, &c->billing.queue_max);
    }
    c->billing.journal_path = strdup(journal != NULL ? journal : "tollgate-ledger.journal");
    if (c->billing.journal_path == NULL)
        verr(v, "billing.journal_path: out of memory");
    c->billing.trial_credits = (int64_t)trial;
    c->billing.lease_credits = (int64_t)lease;
}

/* request_first_byte_ms is the whole request's budget: only the top level (request_budget != NULL)
 * has it; a provider's timeouts are per attempt. */
static void parse_timeouts(vctx_t *v, const json_t *parent, const char *path, tg_timeouts_t *t,
                           uint32_t *request_budget)
{
    static const char *const keys[] = {"connect_ms", "first_byte_ms", "idle_ms", "total_ms", NULL};
    static const char *const top_keys[] = {"connect_ms", "first_byte_ms",         "idle_ms",
                                           "total_ms",   "request_first_byte_ms", NULL};
    json_t *o = get_obj(v, parent, path, "timeouts");
    if (o == NULL)
        return;
    char p[256];
    join(p, sizeof(p), path, "timeouts");
    check_keys(v, o, p, request_budget != NULL ? top_keys : keys);
    if (request_budget != NULL)
        get_u32(v, o, p, "request_first_byte_ms", 1, 86400000u, request_budget);
    const uint32_t day = 86400000u;
    get_u32(v, o, p, "connect_ms", 1, day, &t->connect_ms);
    get_u32(v, o, p, "first_byte_ms", 1, day, &t->first_byte_ms);
    get_u32(v, o, p, "idle_ms", 1, day, &t->idle_ms);
    get_u32(v, o, p, "total_ms", 1, day, &t->total_ms);
}

static void parse_breaker(vctx_t *v, const json_t *parent, const char *path, tg_breaker_opts_t *b)
{
    static const char *const keys[] = {"failure_threshold", "open_ms", "half_open_probes", "probe_timeout_ms",
                                       NULL};
    json_t *o = get_obj(v, parent, path, "breaker");
    if (o == NULL)
        return;
    char p[256];
    join(p, sizeof(p), path, "breaker");
    check_keys(v, o, p, keys);
    get_u32(v, o, p, "failure_threshold", 1, 1000, &b->failure_threshold);
    get_u32(v, o, p, "open_ms", 1, 86400000u, &b->open_ms);
    get_u32(v, o, p, "half_open_probes", 1, 100, &b->half_open_probes);
    get_u32(v, o, p, "probe_timeout_ms", 1, 86400000u, &b->probe_timeout_ms);
}

static void parse_health(vctx_t *v, const json_t *parent, const char *path, tg_health_opts_t *h)
{
    static const char *const keys[] = {"enabled", "interval_ms", "timeout_ms", NULL};
    json_t *o = get_obj(v, parent, path, "health");
    if (o == NULL)
        return;
    char p[256];
    join(p, sizeof(p), path, "health");
    check_keys(v, o, p, keys);
    get_bool(v, o, p, "enabled", &h->enabled);
    get_u32(v, o, p, "interval_ms", 100, 86400000u, &h->interval_ms);
    get_u32(v, o, p, "timeout_ms", 1, 600000u, &h->timeout_ms);
}

static void parse_provider(vctx_t *v, const char *name, const json_t *j, const tg_config_t *c,
                           const tg_breaker_opts_t *def_breaker, tg_provider_cfg_t *pr)
{
    static const char *const keys[] = {
        "kind",    "base_url", "api_key_env",          "api_key_file",      "timeouts",
        "breaker", "health",   "latency_threshold_ms", "anthropic_version", "zero_retention",
        NULL};
    char path[256];
    snprintf(path, sizeof(path), "providers.%s", name);
    pr->name = xstrdup(name);
    pr->timeouts = c->timeouts;
    pr->breaker = *def_breaker;
    pr->health = (tg_health_opts_t){.enabled = false, .interval_ms = 10000, .timeout_ms = 2000};
    pr->anthropic_version = xstrdup("2023-06-01");
    if (!valid_name(name, ""))
        verr(v, "%s: invalid provider name (use letters, digits, '-', '_', '.'; at most %d)", path,
             NAME_MAX_LEN);
    if (!json_is_object(j)) {
        verr(v, "%s: must be an object, got %s", path, json_type_name(j));
        return;
    }
    check_keys(v, j, path, keys);

    bool kind_ok = false;
    json_t *kj = json_object_get(j, "kind");
    if (kj == NULL) {
        verr(v, "%s.kind: is required (one of openai, anthropic, gemini)", path);
    } else {
        for (size_t i = 0; json_is_string(kj) && i < 3; i++)
            if (strcmp(json_string_value(kj), kind_names[i]) == 0) {
                pr->kind = (tg_provider_kind_t)i;
                kind_ok = true;
            }
        if (!kind_ok) {
            char got[80];
            show(kj, got, sizeof(got));
            verr(v, "%s.kind: must be one of openai, anthropic, gemini, got %s", path, got);
        }
    }

    const char *url = get_str(v, j, path, "base_url", false);
    if (url == NULL && json_object_get(j, "base_url") == NULL && kind_ok)
        url = kind_default_base[pr->kind];
    if (url != NULL) {
        if ((strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) || has_ctl_or_space(url) ||
            strchr(url, '?') != NULL || strchr(url, '#') != NULL) {
            verr(v, "%s.base_url: invalid URL \"%.100s\" (want http(s)://host[:port][/path])", path, url);
        } else {
            pr->base_url = xstrdup(url);
            size_t n = strlen(pr->base_url);
            while (n > 0 && pr->base_url[n - 1] == '/') /* paths are appended as "/..." */
                pr->base_url[--n] = '\0';
        }
    }

    pr->api_key = get_secret(v, j, path, "api_key_env", "api_key_file");
    if (pr->api_key != NULL && has_ctl_or_space(pr->api_key)) {
        /* it goes into an HTTP header: a stray newline would split it */
        verr(v, "%s: the provider key contains spaces or control characters", path);
        free_secret(pr->api_key);
        pr->api_key = NULL;
    }

    parse_timeouts(v, j, path, &pr->timeouts, NULL);
    parse_breaker(v, j, path, &pr->breaker);
    parse_health(v, j, path, &pr->health);
    get_u32(v, j, path, "latency_threshold_ms", 0, 86400000u, &pr->latency_threshold_ms);
    get_bool(v, j, path, "zero_retention", &pr->zero_retention);

    const char *av = get_str(v, j, path, "anthropic_version", false);
    if (av != NULL) {
        if (kind_ok && pr->kind != TG_KIND_ANTHROPIC)
            verr(v, "%s.anthropic_version: only allowed for kind anthropic", path);
        else if (has_ctl_or_space(av))
            verr(v, "%s.anthropic_version: invalid value \"%.40s\"", path, av);
        else {
            free(pr->anthropic_version);
            pr->anthropic_version = xstrdup(av);
        }
    }
}

static void parse_model(vctx_t *v, const char *name, const json_t *j, tg_config_t *c, tg_model_cfg_t *m)
{
    static const char *const keys[] = {"provider", "upstream", "context_window", "max_output_tokens", NULL};
    char path[256];
    snprintf(path, sizeof(path), "models.%s", name);
    m->name = xstrdup(name);
    if (!valid_name(name, ":/@"))
        verr(v, "%s: invalid model name (use letters, digits, '-', '_', '.', ':', '/', '@'; at most %d)",
             path, NAME_MAX_LEN);
    if (!json_is_object(j)) {
        verr(v, "%s: must be an object, got %s", path, json_type_name(j));
        return;
    }
    check_keys(v, j, path, keys);
    const char *prov = get_str(v, j, path, "provider", false);
    if (prov == NULL && json_object_get(j, "provider") == NULL)
        verr(v, "%s.provider: is required", path);
    if (prov != NULL) {
        m->provider = tg_config_find_provider(c, prov);
        if (m->provider == NULL)
            verr(v, "%s.provider: unknown provider \"%.80s\"", path, prov);
    }
    /* in the dev config a model's upstream id equals its name: make that the default */
    const char *up = get_str(v, j, path, "upstream", false);
    if (up == NULL && json_object_get(j, "upstream") == NULL)
        up = name;
    if (up != NULL) {
        if (has_ctl_or_space(up) || strlen(up) > 256 || strchr(up, '?') != NULL || strchr(up, '#') != NULL)
            verr(v, "%s.upstream: invalid model id \"%.80s\"", path, up);
        else
            m->upstream = xstrdup(up);
    }
    get_u32(v, j, path, "context_window", 0, UINT32_MAX, &m->context_window);
    /* what the rate limits count for a request without max_tokens: the model's own cap; the
     * default is a common one (a smaller context window lowers it) */
    m->max_output_tokens = TG_MODEL_MAX_OUTPUT_DEFAULT;
    if (m->context_window != 0 && m->context_window < m->max_output_tokens)
        m->max_output_tokens = m->context_window;
    get_u32(v, j, path, "max_output_tokens", 1, 10000000u, &m->max_output_tokens);
    if (m->context_window != 0 && m->max_output_tokens > m->context_window)
        verr(v, "%s.max_output_tokens: must not exceed context_window (%u), got %u", path, m->context_window,
             m->max_output_tokens);
    if (m->provider != NULL && m->upstream != NULL) {
        size_t n = strlen(m->provider->name) + 1 + strlen(m->upstream) + 1;
        m->target_key = xcalloc(1, n);
        snprintf(m->target_key, n, "%s/%s", m->provider->name, m->upstream);
    }
}

static void parse_chain(vctx_t *v, const char *name, const json_t *j, tg_config_t *c, tg_chain_cfg_t *ch)
{
    static const char *const keys[] = {"targets", "context_fallback", "request_first_byte_ms", NULL};
    char path[256];
    snprintf(path, sizeof(path), "chains.%s", name);
    ch->name = xstrdup(name);
    if (!valid_name(name, ":/@"))
        verr(v, "%s: invalid chain name (use letters, digits, '-', '_', '.', ':', '/', '@'; at most %d)",
             path, NAME_MAX_LEN);
    if (tg_config_find_model(c, name) != NULL)
        verr(v, "%s: \"%.80s\" is already a model name (models and chains share one namespace)", path, name);
    if (!json_is_object(j)) {
        verr(v, "%s: must be an object, got %s", path, json_type_name(j));
        return;
    }
    check_keys(v, j, path, keys);
    json_t *t = json_object_get(j, "targets");
    if (t == NULL) {
        verr(v, "%s.targets: is required (a list of model names)", path);
    } else if (!json_is_array(t) || json_array_size(t) == 0 || json_array_size(t) > MAX_CHAIN_LEN) {
        verr(v, "%s.targets: must be a list of 1 to %d model names", path, MAX_CHAIN_LEN);
    } else {
        ch->targets = xcalloc(json_array_size(t), sizeof(*ch->targets));
        size_t i;
        json_t *e;
        json_array_foreach(t, i, e)
        {
            char got[80];
            if (!json_is_string(e)) {
                show(e, got, sizeof(got));
                verr(v, "%s.targets[%zu]: must be a model name, got %s", path, i, got);
                continue;
            }
            const tg_model_cfg_t *m = tg_config_find_model(c, json_string_value(e));
            if (m == NULL) {
                verr(v, "%s.targets[%zu]: unknown model \"%.80s\"", path, i, json_string_value(e));
                continue;
            }
            bool dup = false;
            for (size_t k = 0; k < ch->n_targets; k++)
                if (ch->targets[k] == m)
                    dup = true;
            if (dup) {
                verr(v, "%s.targets[%zu]: model \"%.80s\" is listed twice", path, i, m->name);
                continue;
            }
            ch->targets[ch->n_targets++] = m;
        }
    }
    get_u32(v, j, path, "request_first_byte_ms", 1, 86400000u, &ch->request_first_byte_ms);
    const char *fb = get_str(v, j, path, "context_fallback", false);
    if (fb != NULL) {
        ch->context_fallback = tg_config_find_model(c, fb);
        if (ch->context_fallback == NULL)
            verr(v, "%s.context_fallback: unknown model \"%.80s\"", path, fb);
    }
}

static void parse_root(vctx_t *v, const json_t *root, cfg_priv_t *cp)
{
    static const char *const keys[] = {"listen",
                                       "workers",
                                       "log_level",
                                       "database",
                                       "secrets",
                                       "limits",
                                       "timeouts",
                                       "breaker",
                                       "shutdown_grace_ms",
                                       "retry_wait_cap_ms",
                                       "key_cache_ttl_ms",
                                       "max_attempts_per_target",
                                       "retention",
                                       "providers",
                                       "models",
                                       "chains",
                                       "billing",
                                       "idempotency",
                                       "admin_auth",
                                       NULL};
    tg_config_t *c = &cp->pub;
    check_keys(v, root, "", keys);
    parse_listen(v, root, c);

    c->workers = 0;
    get_u32(v, root, "", "workers", 0, 1024, &c->workers);
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n > 0 ? (uint32_t)n : 1;
    }

    cp->log_level = TG_LOG_INFO;
    const char *lvl = get_str(v, root, "", "log_level", false);
    if (lvl != NULL) {
        static const char *const names[] = {"error", "warn", "info", "debug"};
        bool ok = false;
        for (int i = 0; i < 4; i++)
            if (strcmp(lvl, names[i]) == 0) {
                cp->log_level = (tg_log_level_t)i;
                ok = true;
            }
        if (!ok)
            verr(v, "log_level: must be one of error, warn, info, debug, got \"%.40s\"", lvl);
    }

    parse_database(v, root, c);
    parse_secrets(v, root, c);
    parse_limits(v, root, c);
    parse_billing(v, root, c);
    parse_admin_auth(v, root, c);

    c->timeouts =
        (tg_timeouts_t){.connect_ms = 3000, .first_byte_ms = 60000, .idle_ms = 30000, .total_ms = 600000};
    c->request_first_byte_ms = 90000;
    parse_timeouts(v, root, "", &c->timeouts, &c->request_first_byte_ms);
    tg_breaker_opts_t def_breaker = {
        .failure_threshold = 3, .open_ms = 30000, .half_open_probes = 1, .probe_timeout_ms = 5000};
    parse_breaker(v, root, "", &def_breaker);

    c->shutdown_grace_ms = 10000;
    c->retry_wait_cap_ms = 10000;
    c->key_cache_ttl_ms = 60000;
    c->max_attempts_per_target = 1;
    get_u32(v, root, "", "shutdown_grace_ms", 0, 3600000u, &c->shutdown_grace_ms);
    get_u32(v, root, "", "retry_wait_cap_ms", 0, 600000u, &c->retry_wait_cap_ms);
    get_u32(v, root, "", "key_cache_ttl_ms", 0, 86400000u, &c->key_cache_ttl_ms);
    get_u32(v, root, "", "max_attempts_per_target", 1, 10, &c->max_attempts_per_target);
    parse_retention(v, root, c);
    parse_idempotency(v, root, c);

    /* providers, then models (which name providers), then chains (which name models) */
    json_t *o;
    const char *name;
    json_t *val;
    if ((o = get_obj(v, root, "", "providers")) != NULL) {
        c->providers = xcalloc(json_object_size(o), sizeof(*c->providers));
        json_object_foreach(o, name, val)
        {
            tg_provider_cfg_t *pr = &c->providers[c->n_providers];
            pr->index = c->n_providers++;
            parse_provider(v, name, val, c, &def_breaker, pr);
        }
    }
    if ((o = get_obj(v, root, "", "models")) != NULL) {
        c->models = xcalloc(json_object_size(o), sizeof(*c->models));
        json_object_foreach(o, name, val)
        {
            tg_model_cfg_t *m = &c->models[c->n_models];
            m->index = c->n_models++;
            parse_model(v, name, val, c, m);
        }
    }
    if ((o = get_obj(v, root, "", "chains")) != NULL) {
        c->chains = xcalloc(json_object_size(o), sizeof(*c->chains));
        json_object_foreach(o, name, val)
        {
            tg_chain_cfg_t *ch = &c->chains[c->n_chains++];
            parse_chain(v, name, val, c, ch);
        }
    }
}

static void config_free(tg_config_t *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->n_providers; i++) {
        tg_provider_cfg_t *p = &c->providers[i];
        free(p->name);
        free(p->base_url);
        free_secret(p->api_key);
        free(p->anthropic_version);
    }
    free(c->providers);
    for (size_t i = 0; i < c->n_models; i++) {
        free(c->models[i].name);
        free(c->models[i].upstream);
        free(c->models[i].target_key);
    }
    free(c->models);
    for (size_t i = 0; i < c->n_chains; i++) {
        free(c->chains[i].name);
        free(c->chains[i].targets);
    }
    free(c->chains);
    free(c->path);
    free(c->billing.journal_path);
    free(c->data_host);
    free(c->admin_host);
    free_secret(c->database_url);
    free(c->admin_auth.issuer);
    free(c->admin_auth.audience);
    free_secret(c->admin_auth.hs256_secret);
    free(c->admin_auth.es256_public_key);
    sodium_memzero(c->key_pepper, sizeof(c->key_pepper));
    tg_keyring_free(c->keyring);
    free(PRIV(c));
}

int tg_config_parse(const char *json, size_t len, const char *path, tg_config_t **out, tg_buf_t *errors)
{
    *out = NULL;
    vctx_t v = {.errors = errors, .n_errors = 0};
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        verr(&v, "%s: invalid JSON at line %d, column %d: %s", path != NULL ? path : "config", jerr.line,
             jerr.column, jerr.text);
        return TG_ECONFIG;
    }
    if (!json_is_object(root)) {
        verr(&v, "%s: the top level must be an object", path != NULL ? path : "config");
        json_decref(root);
        return TG_ECONFIG;
    }
    if (sodium_init() < 0) {
        json_decref(root);
        verr(&v, "config: libsodium failed to initialise");
        return TG_ECONFIG;
    }
    cfg_priv_t *cp = xcalloc(1, sizeof(*cp));
    atomic_init(&cp->pub.refcnt, 1);
    cp->pub.path = xstrdup(path != NULL ? path : "");
    parse_root(&v, root, cp);
    json_decref(root);
    if (v.n_errors != 0) {
        config_free(&cp->pub);
        return TG_ECONFIG;
    }
    *out = &cp->pub;
    return 0;
}

int tg_config_load(const char *path, tg_config_t **out, tg_buf_t *errors)
{
    *out = NULL;
    vctx_t v = {.errors = errors, .n_errors = 0};
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        verr(&v, "%s: cannot open: %s", path, strerror(errno));
        return TG_ECONFIG;
    }
    tg_buf_t b;
    tg_buf_init(&b, CFG_FILE_MAX);
    char chunk[8192];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = tg_buf_append(&b, chunk, n);
    bool rerr = ferror(f) != 0;
    fclose(f);
    if (rc != 0 || rerr) {
        if (rc == TG_ETOO_LARGE)
            verr(&v, "%s: file is larger than %u bytes", path, CFG_FILE_MAX);
        else
            verr(&v, "%s: cannot read", path);
        tg_buf_dispose(&b);
        return TG_ECONFIG;
    }
    rc = tg_config_parse(b.data != NULL ? b.data : "", b.len, path, out, errors);
    tg_buf_dispose(&b);
    return rc;
}

tg_config_t *tg_config_ref(tg_config_t *c)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->refcnt, 1, memory_order_relaxed);
    return c;
}

void tg_config_unref(tg_config_t *c)
{
    if (c == NULL)
        return;
    /* acq_rel: the freeing thread must see every other thread's last use of the snapshot */
    if (atomic_fetch_sub_explicit(&c->refcnt, 1, memory_order_acq_rel) == 1)
        config_free(c);
}

const tg_model_cfg_t *tg_config_find_model(const tg_config_t *c, const char *name)
{
    for (size_t i = 0; c != NULL && name != NULL && i < c->n_models; i++)
        if (c->models[i].name != NULL && strcmp(c->models[i].name, name) == 0)
            return &c->models[i];
    return NULL;
}

const tg_chain_cfg_t *tg_config_find_chain(const tg_config_t *c, const char *name)
{
    for (size_t i = 0; c != NULL && name != NULL && i < c->n_chains; i++)
        if (c->chains[i].name != NULL && strcmp(c->chains[i].name, name) == 0)
            return &c->chains[i];
    return NULL;
}

const tg_provider_cfg_t *tg_config_find_provider(const tg_config_t *c, const char *name)
{
    for (size_t i = 0; c != NULL && name != NULL && i < c->n_providers; i++)
        if (c->providers[i].name != NULL && strcmp(c->providers[i].name, name) == 0)
            return &c->providers[i];
    return NULL;
}

/* The current snapshot: a mutex around pointer swap + ref keeps acquire and a concurrent
 * publish from racing on the old snapshot's last reference. */
static pthread_mutex_t g_current_mu = PTHREAD_MUTEX_INITIALIZER;
static tg_config_t *g_current;

tg_config_t *tg_config_acquire(void)
{
    pthread_mutex_lock(&g_current_mu);
    tg_config_t *c = tg_config_ref(g_current);
    pthread_mutex_unlock(&g_current_mu);
    return c;
}

void tg_config_publish(tg_config_t *c)
{
    pthread_mutex_lock(&g_current_mu);
    tg_config_t *old = g_current;
    g_current = c;
    pthread_mutex_unlock(&g_current_mu);
    /* config.h has no log level field: the published snapshot's level becomes the process's */
    if (c != NULL)
        tg_log_set_level(PRIV(c)->log_level);
    tg_config_unref(old);
}
