/*
 * cli.h - the tollgate command line, apart from `serve` (main.c runs that and
 * hands every other subcommand here).
 *
 *   tollgate check -c FILE                                 validate; every error printed; exit 1
 *   tollgate migrate -c FILE                               apply pending embedded migrations
 *   tollgate keys create -c FILE --tenant NAME [--name L]  prints the new key (only) on stdout
 *
 * These run before any worker starts, so they use blocking libpq.
 */
#ifndef TG_CLI_H
#define TG_CLI_H

#include <stddef.h>

/** argv[0] is the program, argv[1] the subcommand. Returns the exit code (0, 1 failure, 2 usage). */
int tg_cli_main(int argc, char **argv);

/* The SQL files of migrations/, embedded at build time (see gateway/CMakeLists.txt), in order. */
typedef struct tg_migration {
    int version;      /* NNNN of NNNN_name.sql */
    const char *name; /* "0001_init" */
    const char *sql;
} tg_migration_t;

extern const tg_migration_t tg_migrations[];
extern const size_t tg_migrations_count;

#endif
