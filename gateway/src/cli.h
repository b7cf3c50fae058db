/*
 * cli.h - the tollgate command line, apart from `serve` (main.c runs that and
 * hands every other subcommand here).
 *
 *   tollgate check -c FILE                                 validate; every error printed; exit 1
 *   tollgate migrate -c FILE                               apply pending embedded migrations
 *   tollgate keys create -c FILE --tenant NAME [--name L]  prints the new key (only) on stdout
 *   tollgate byok set|delete|list, rotate-master-key       BYOK keys (cli_byok.c)
 *
 * These run before any worker starts, so they use blocking libpq.
 */
#ifndef TG_CLI_H
#define TG_CLI_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"

/** argv[0] is the program, argv[1] the subcommand. Returns the exit code (0, 1 failure, 2 usage). */
int tg_cli_main(int argc, char **argv);
/** The list of commands (`tollgate --help`). */
void tg_cli_usage(FILE *f);

/* The subcommands of files of their own: argv as tg_cli_main's, argv[2] their verb. */
int tg_cli_tenants(int argc, char **argv); /* cli_tenants.c */
int tg_cli_keys(int argc, char **argv);    /* cli_keys.c */
int tg_cli_policy(int argc, char **argv);  /* cli_policy.c */
int tg_cli_token(int argc, char **argv);   /* cli_token.c: an admin API token (admin/token.h) */

/* For the subcommands' files (cli_*.c): */
/** Loads the config, printing every error on stderr; NULL on failure. */
tg_config_t *tg_cli_load_config(const char *path);
/** A blocking connection (notices silenced); libpq's messages name host and user, never the
 *  password. NULL after a message on stderr. */
PGconn *tg_cli_db_connect(const tg_config_t *c);

/**
 * `serve`'s check before any worker starts (blocking): 1 when the database lacks a migration that
 * this binary embeds (one line on stderr naming `tollgate migrate`; the caller exits 1), else 0.
 * A database with migrations newer than the binary is logged (schema_newer) and accepted: the
 * migrations only add, and an older gateway keeps running during a rolling upgrade. A database
 * that cannot be reached is not checked (the gateway starts unready, as before), and a config that
 * does not load is left to `serve`, which reports its errors.
 */
int tg_cli_check_schema(const char *config_path);

/* cli_byok.c: `tollgate byok set|delete|list` (argv[1] "byok") and `tollgate rotate-master-key`;
 * each returns the exit code. */
int tg_cli_byok_main(int argc, char **argv);
int tg_cli_rotate_main(int argc, char **argv);

/* The SQL files of migrations/, embedded at build time (see gateway/CMakeLists.txt), in order. */
typedef struct tg_migration {
    int version;      /* NNNN of NNNN_name.sql */
    const char *name; /* "0001_init" */
    const char *sql;
} tg_migration_t;

extern const tg_migration_t tg_migrations[];
extern const size_t tg_migrations_count;

#endif
