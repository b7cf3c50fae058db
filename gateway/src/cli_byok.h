/*
 * cli_byok.h - `tollgate byok set|delete|list` and `tollgate rotate-master-key` (cli_byok.c);
 * cli.c dispatches to them.
 */
#ifndef TG_CLI_BYOK_H
#define TG_CLI_BYOK_H

/** argv[1] is "byok": argv[2] the action. Returns the exit code (0, 1 failure, 2 usage). */
int tg_cli_byok_main(int argc, char **argv);
/** argv[1] is "rotate-master-key". Returns the exit code. */
int tg_cli_rotate_main(int argc, char **argv);

#endif
