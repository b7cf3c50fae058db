/*
 * cli_args.h - what the management subcommands (cli_tenants.c, cli_keys.c, cli_policy.c) share:
 * a table-driven option parser, value parsers (ids, durations, times, model lists), opening the
 * config and the database, and printing a management error (admin/manage.h) field by field.
 *
 * Exit codes: 0 done, 1 failure (database, not found), 2 bad input (usage, a bad value, or a
 * field the management function refused), always after a message on stderr.
 */
#ifndef TG_CLI_ARGS_H
#define TG_CLI_ARGS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "manage.h"

/** One option of a subcommand: "--tenant" with a value (metavar) or a flag (metavar NULL). */
typedef struct tg_cli_opt {
    const char *name;
    const char *metavar;
    const char *value; /* set by the parser: the value, or "1" for a flag; NULL when absent */
} tg_cli_opt_t;

/** Parses argv[first..]: -c/--config FILE (required unless help), then opts. Returns 0, 1 for
 *  -h/--help (the caller prints its help on stdout and exits 0), or 2 after messages on stderr
 *  (an unknown or repeated option, a missing value, no config). */
int tg_cli_parse(const char *cmd, int argc, char **argv, int first, tg_cli_opt_t *opts, size_t n,
                 const char **config);
/** The value of option name (NULL absent). */
const char *tg_cli_get(const tg_cli_opt_t *opts, size_t n, const char *name);

/** Value parsers: true and *out set, or false (the caller reports the option). */
bool tg_cli_parse_id(const char *s, int64_t *out);    /* 1.. */
bool tg_cli_parse_count(const char *s, int64_t *out); /* 1.. */
bool tg_cli_parse_bool(const char *s, bool *out);     /* true|false|yes|no|on|off|1|0 */
/** "90s", "15m", "24h", "7d", "1500ms", "0" -> milliseconds. */
bool tg_cli_parse_duration(const char *s, int64_t *ms);
/** "+DURATION" from now_ms, or RFC 3339 UTC ("2027-01-31T12:00:00Z", fraction allowed). */
bool tg_cli_parse_time(const char *s, int64_t now_ms, int64_t *unix_ms);

/** A comma-separated list of names ("" is an empty list), split in a copy of its own. */
typedef struct tg_cli_names {
    char *copy;
    const char *names[TG_MGMT_MODELS_MAX + 1];
    size_t n;
    bool too_many;
} tg_cli_names_t;
bool tg_cli_split_names(const char *s, tg_cli_names_t *out);
void tg_cli_names_free(tg_cli_names_t *l);

/** The tenant named by --tenant NAME or --tenant-id ID (exactly one). false after a message. */
bool tg_cli_tenant_ref(const char *cmd, const tg_cli_opt_t *opts, size_t n, tg_tenant_ref_t *out,
                       bool required);

/** Loads the config and connects; false after a message on stderr. need_pepper: the key's hash
 *  needs it. */
bool tg_cli_open(const char *config, bool need_pepper, tg_config_t **cfg, PGconn **db);
void tg_cli_close(tg_config_t *cfg, PGconn *db);

/** Prints err on stderr ("tollgate: CMD: msg", then one line per field); returns the exit code
 *  (2 for bad input, 1 otherwise). */
int tg_cli_report(const char *cmd, const tg_mgmt_err_t *err);

/** Unix ms as RFC 3339 UTC ("-" for 0) into buf. */
const char *tg_cli_time(int64_t unix_ms, char buf[32]);

/** A subcommand of a command ("tollgate keys create"): its word and what runs it (argv whole). */
typedef struct tg_cli_sub {
    const char *name;
    int (*run)(int argc, char **argv);
} tg_cli_sub_t;

/** Runs the subcommand argv[2] names among subs[0..n): -h, --help or help print usage on stdout
 *  (0); a missing or unknown one is 2, named, with usage on stderr. */
int tg_cli_dispatch(const char *cmd, int argc, char **argv, const tg_cli_sub_t *subs, size_t n,
                    const char *usage);

#endif
