/*
 * cli_byok.c - the command line of BYOK (tenants' own provider keys):
 *
 *   tollgate byok set -c FILE --tenant NAME --provider P [--key-file F]   key on stdin without --key-file
 *   tollgate byok delete -c FILE --tenant NAME --provider P
 *   tollgate byok list -c FILE [--tenant NAME]                             metadata, one JSON line each
 *   tollgate rotate-master-key -c FILE [--batch N]                         re-seal under the first key
 *
 * A provider key is never taken from the command line (other users see a process's arguments):
 * it is read from stdin or a file, into sodium_malloc'd memory, sealed (admin/credentials.c) and
 * wiped. Nothing of it is printed. Blocking libpq: these run outside the gateway's workers.
 * cli.c dispatches here (the entry points are declared in cli.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "byok.h"
#include "cli.h"
#include "config.h"
#include "credentials.h"
#include "keyring.h"

typedef struct byok_opts {
    const char *config, *tenant, *provider, *key_file, *batch;
} byok_opts_t;

static void usage_byok(FILE *f)
{
    fputs("usage: tollgate byok set -c FILE --tenant NAME --provider P [--key-file F]\n"
          "       tollgate byok delete -c FILE --tenant NAME --provider P\n"
          "       tollgate byok list -c FILE [--tenant NAME]\n"
          "  set     seal the tenant's own key for provider P (a provider name of the config) under the\n"
          "          first master key of secrets.master_keys and store it; the key is read from F, or\n"
          "          from stdin without --key-file (never from the command line)\n"
          "  delete  remove it: the tenant's requests use the platform's key again\n"
          "  list    the stored keys' metadata (provider, master key id, last four characters)\n",
          f);
}

static void usage_rotate(FILE *f)
{
    fputs("usage: tollgate rotate-master-key -c FILE [--batch N]\n"
          "  re-seals every stored BYOK key under the first master key of secrets.master_keys, N rows\n"
          "  per read (100), each row in its own short transaction; the gateways keep serving.\n"
          "  Idempotent and resumable. Prints the counts; exit 1 when a key did not open.\n"
          "  Procedure (docs/CONVENTIONS.md, \"BYOK\"): put the new key first and keep the old one,\n"
          "  reload every gateway (SIGHUP), run this, then drop the old key and reload again.\n",
          f);
}

static bool wants_help(int argc, char **argv, int first)
{
    for (int i = first; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    return false;
}

static bool parse(int argc, char **argv, int first, byok_opts_t *o)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0)
            dst = &o->config;
        else if (strcmp(a, "--tenant") == 0)
            dst = &o->tenant;
        else if (strcmp(a, "--provider") == 0)
            dst = &o->provider;
        else if (strcmp(a, "--key-file") == 0)
            dst = &o->key_file;
        else if (strcmp(a, "--batch") == 0)
            dst = &o->batch;
        else {
            fprintf(stderr, "tollgate: unknown argument \"%s\"%s\n", a,
                    strncmp(a, "--key", 5) == 0 ? " (a provider key is read from stdin or --key-file)" : "");
            return false;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "tollgate: %s needs a value\n", a);
            return false;
        }
        *dst = argv[++i];
    }
    if (o->config == NULL) {
        fputs("tollgate: -c FILE is required\n", stderr);
        return false;
    }
    return true;
}

/* Reads the provider key from fd into a new secret, trailing newline and spaces cut. NULL after a
 * message. */
static tg_secret_t *read_key(int fd, const char *what)
{
    size_t cap = TG_BYOK_KEY_MAX + 2;
    char *buf = sodium_malloc(cap);
    if (buf == NULL) {
        fputs("tollgate: out of memory\n", stderr);
        return NULL;
    }
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "tollgate: cannot read the key from %s: %s\n", what, strerror(errno));
            sodium_free(buf);
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap)
            break;
    }
    while (len > 0 &&
           (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        len--;
    tg_secret_t *s = NULL;
    if (len == 0)
        fprintf(stderr, "tollgate: no key on %s\n", what);
    else if (len > TG_BYOK_KEY_MAX)
        fprintf(stderr, "tollgate: the key on %s is longer than %d bytes\n", what, TG_BYOK_KEY_MAX);
    else if (memchr(buf, '\n', len) != NULL || memchr(buf, '\0', len) != NULL)
        fprintf(stderr, "tollgate: the key on %s must be one line\n", what);
    else if ((s = tg_secret_new(buf, len)) == NULL)
        fputs("tollgate: out of memory\n", stderr);
    sodium_free(buf); /* wipes */
    return s;
}

/* Loads the config and connects; NULL after a message. */
static PGconn *open_db(const byok_opts_t *o, tg_config_t **cfg)
{
    *cfg = tg_cli_load_config(o->config);
    if (*cfg == NULL)
        return NULL;
    PGconn *db = tg_cli_db_connect(*cfg);
    if (db == NULL) {
        tg_config_unref(*cfg);
        *cfg = NULL;
    }
    return db;
}

static int report(const tg_error_t *err)
{
    fprintf(stderr, "tollgate: %s\n", err->detail[0] != '\0' ? err->detail : tg_err_public_msg(err->code));
    return 1;
}

static int cmd_set(const byok_opts_t *o)
{
    if (o->tenant == NULL || o->provider == NULL) {
        fputs("tollgate: byok set needs --tenant and --provider\n", stderr);
        return 2;
    }
    tg_config_t *cfg = tg_cli_load_config(o->config);
    if (cfg == NULL)
        return 1;
    int rc = 1;
    tg_secret_t *key = NULL;
    PGconn *db = NULL;
    if (tg_config_find_provider(cfg, o->provider) == NULL) {
        fprintf(stderr, "tollgate: \"%s\" is not a provider of %s\n", o->provider, o->config);
        goto out;
    }
    if (tg_keyring_active(cfg->keyring) == NULL) {
        fprintf(stderr, "tollgate: %s has no master key (secrets.master_keys)\n", o->config);
        goto out;
    }
    if (o->key_file != NULL) {
        int fd = open(o->key_file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "tollgate: cannot open %s: %s\n", o->key_file, strerror(errno));
            goto out;
        }
        key = read_key(fd, o->key_file);
        close(fd);
    } else {
        /* typed at a terminal: not echoed */
        struct termios saved, quiet;
        bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
        if (tty) {
            fputs("tollgate: provider key (not echoed), then Enter and Ctrl-D: ", stderr);
            quiet = saved;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        key = read_key(STDIN_FILENO, "stdin");
        if (tty) {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
            fputc('\n', stderr);
        }
    }
    if (key == NULL)
        goto out;
    db = tg_cli_db_connect(cfg);
    if (db == NULL)
        goto out;
    tg_error_t err = {0};
    if (tg_cred_set(db, cfg->keyring, o->tenant, o->provider, key->s, key->len, &err) != 0) {
        report(&err);
        goto out;
    }
    fprintf(stderr, "tollgate: stored tenant \"%s\"'s key for %s, sealed under master key %s\n", o->tenant,
            o->provider, tg_keyring_active(cfg->keyring)->id);
    rc = 0;
out:
    tg_secret_free(key);
    if (db != NULL)
        PQfinish(db);
    tg_config_unref(cfg);
    return rc;
}

static int cmd_delete(const byok_opts_t *o)
{
    if (o->tenant == NULL || o->provider == NULL) {
        fputs("tollgate: byok delete needs --tenant and --provider\n", stderr);
        return 2;
    }
    tg_config_t *cfg;
    PGconn *db = open_db(o, &cfg);
    if (db == NULL)
        return 1;
    tg_error_t err = {0};
    int rc = tg_cred_delete(db, o->tenant, o->provider, &err) == 0 ? 0 : report(&err);
    if (rc == 0)
        fprintf(stderr, "tollgate: deleted tenant \"%s\"'s key for %s\n", o->tenant, o->provider);
    PQfinish(db);
    tg_config_unref(cfg);
    return rc;
}

static int cmd_list(const byok_opts_t *o)
{
    tg_config_t *cfg;
    PGconn *db = open_db(o, &cfg);
    if (db == NULL)
        return 1;
    tg_error_t err = {0};
    json_t *rows = NULL;
    int rc = tg_cred_list(db, o->tenant, &rows, &err) == 0 ? 0 : report(&err);
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        char *line = json_dumps(row, JSON_COMPACT);
        if (line != NULL)
            printf("%s\n", line);
        free(line);
    }
    json_decref(rows);
    PQfinish(db);
    tg_config_unref(cfg);
    return rc;
}

int tg_cli_byok_main(int argc, char **argv)
{
    const char *action = argc >= 3 ? argv[2] : "";
    if (argc < 3 || strcmp(action, "--help") == 0 || strcmp(action, "-h") == 0 || wants_help(argc, argv, 3)) {
        usage_byok(argc < 3 ? stderr : stdout);
        return argc < 3 ? 2 : 0;
    }
    byok_opts_t o = {0};
    if (!parse(argc, argv, 3, &o) || o.batch != NULL || (o.key_file != NULL && strcmp(action, "set") != 0)) {
        usage_byok(stderr);
        return 2;
    }
    if (strcmp(action, "set") == 0)
        return cmd_set(&o);
    if (strcmp(action, "delete") == 0)
        return cmd_delete(&o);
    if (strcmp(action, "list") == 0)
        return cmd_list(&o);
    fprintf(stderr, "tollgate: byok: unknown action \"%s\"\n", action);
    usage_byok(stderr);
    return 2;
}

static void on_progress(void *ud, const tg_cred_rotation_t *c)
{
    (void)ud;
    fprintf(stderr, "tollgate: rotate-master-key: %llu resealed, %llu already current, %llu failed so far\n",
            (unsigned long long)c->resealed, (unsigned long long)c->current, (unsigned long long)c->failed);
}

int tg_cli_rotate_main(int argc, char **argv)
{
    if (wants_help(argc, argv, 2)) {
        usage_rotate(stdout);
        return 0;
    }
    byok_opts_t o = {0};
    if (!parse(argc, argv, 2, &o) || o.tenant != NULL || o.provider != NULL || o.key_file != NULL) {
        usage_rotate(stderr);
        return 2;
    }
    long batch = o.batch != NULL ? strtol(o.batch, NULL, 10) : 100;
    if (batch < 1 || batch > 10000) {
        fputs("tollgate: --batch must be 1 to 10000\n", stderr);
        return 2;
    }
    tg_config_t *cfg;
    PGconn *db = open_db(&o, &cfg);
    if (db == NULL)
        return 1;
    int rc = 1;
    const tg_master_key_t *active = tg_keyring_active(cfg->keyring);
    if (active == NULL) {
        fprintf(stderr, "tollgate: %s has no master key (secrets.master_keys)\n", o.config);
    } else {
        tg_cred_rotation_t n;
        tg_error_t err = {0};
        if (tg_cred_rotate(db, cfg->keyring, (size_t)batch, &n, on_progress, NULL, &err) != 0) {
            report(&err);
        } else {
            /* stdout: one line a script can read */
            printf(
                "{\"active\":\"%s\",\"resealed\":%llu,\"current\":%llu,\"failed\":%llu,\"remaining\":%llu}\n",
                active->id, (unsigned long long)n.resealed, (unsigned long long)n.current,
                (unsigned long long)n.failed, (unsigned long long)n.remaining);
            rc = n.failed == 0 && n.remaining == 0 ? 0 : 1;
            if (n.remaining > 0)
                fprintf(stderr,
                        "tollgate: %llu key(s) are not under %s: their master key is not in %s, or they are "
                        "damaged (keep the old key until they are re-set with `tollgate byok set`)\n",
                        (unsigned long long)n.remaining, active->id, o.config);
        }
    }
    PQfinish(db);
    tg_config_unref(cfg);
    return rc;
}
