/*
 * main.c - the tollgate binary: `tollgate serve -c FILE` runs the server (after cli.c has checked
 * that the database schema is not older than the binary); every other subcommand (check, migrate,
 * tenants, keys, policy, ...) is handed to cli.c.
 *
 * Process-wide library setup happens here, before any thread exists: curl_global_init is not
 * thread-safe, sodium_init seeds the RNG used for request ids and key hashes, and SIGPIPE is
 * ignored because a client closing its socket mid-write must be an error return, not a death.
 */
#include <curl/curl.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "authn.h"
#include "cli.h"
#include "server.h"

static void usage(FILE *f)
{
    tg_cli_usage(f);
}

static int serve(int argc, char **argv)
{
    const char *config = NULL;
    for (int i = 2; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            config = argv[++i];
        else {
            usage(stderr);
            return 2;
        }
    }
    if (config == NULL) {
        usage(stderr);
        return 2;
    }
    /* blocking, and allowed here: no worker runs yet */
    if (tg_cli_check_schema(config) != 0)
        return 1;
    tg_server_set_admin_router(tg_admin_route);
    tg_server_set_metrics_guard(tg_admin_metrics_guard);
    int rc = tg_server_run(config);
    tg_adm_jobs_stop(); /* after the workers: no job is queued any more */
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) {
        fputs("tollgate: libsodium failed to initialise\n", stderr);
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("tollgate: libcurl failed to initialise\n", stderr);
        return 1;
    }
    int rc = strcmp(argv[1], "serve") == 0 ? serve(argc, argv) : tg_cli_main(argc, argv);
    curl_global_cleanup();
    return rc;
}
