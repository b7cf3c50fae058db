/*
 * main.c - tollgatectl's entry point: global options (--json, --help), the command lookup in
 * ctl_commands, per-command --help, and the environment (TOLLGATE_ADMIN_URL, TOLLGATE_ADMIN_TOKEN).
 */
#include "ctl.h"

#include <string.h>

#include <curl/curl.h>

static void usage_all(FILE *out)
{
    fputs("usage: tollgatectl [--json] COMMAND [ARGS...]\n"
          "       tollgatectl COMMAND --help\n\n"
          "A client of tollgate's admin API. Environment:\n"
          "  TOLLGATE_ADMIN_URL    the admin listener, e.g. http://127.0.0.1:8081\n"
          "  TOLLGATE_ADMIN_TOKEN  an admin JWT (sent as a bearer token, never printed)\n\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < ctl_commands_count; i++)
        fprintf(out, "  %s\n", ctl_commands[i].usage + strlen("tollgatectl "));
    fputs("\n--json prints the API's JSON instead of a table.\n"
          "Exit codes: 0 done; 1 the API refused the request (4xx, its error on stderr); 2 bad command\n"
          "line (nothing sent); 3 no URL or token, or the server could not be reached; 4 the server\n"
          "failed (5xx) or answered something that is not the API's.\n",
          out);
}

static const ctl_cmd_t *find(int argc, char **argv, int *used)
{
    for (size_t i = 0; i < ctl_commands_count; i++) {
        const ctl_cmd_t *cmd = &ctl_commands[i];
        if (argc < 1 || strcmp(argv[0], cmd->group) != 0)
            continue;
        if (cmd->verb == NULL) {
            *used = 1;
            return cmd;
        }
        if (argc >= 2 && strcmp(argv[1], cmd->verb) == 0) {
            *used = 2;
            return cmd;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    ctl_t c0 = {0};
    int i = 1;
    bool json = false;
    for (; i < argc && strncmp(argv[i], "-", 1) == 0; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage_all(stdout);
            return CTL_OK;
        } else {
            fprintf(stderr, "tollgatectl: unknown option %s\n", argv[i]);
            usage_all(stderr);
            return CTL_EXIT_USAGE;
        }
    }
    int used = 0;
    const ctl_cmd_t *cmd = find(argc - i, argv + i, &used);
    if (cmd == NULL) {
        if (i < argc)
            fprintf(stderr, "tollgatectl: unknown command '%s%s%s'\n", argv[i], i + 1 < argc ? " " : "",
                    i + 1 < argc ? argv[i + 1] : "");
        usage_all(stderr);
        return CTL_EXIT_USAGE;
    }
    int cargc = argc - i - used;
    char **cargv = argv + i + used;
    /* --json may follow the command too; --help anywhere before "--" shows the command's help. */
    int n = 0;
    for (int k = 0; k < cargc; k++) {
        if (strcmp(cargv[k], "--") == 0) {
            for (; k < cargc; k++)
                cargv[n++] = cargv[k];
            break;
        }
        if (strcmp(cargv[k], "--help") == 0 || strcmp(cargv[k], "-h") == 0) {
            printf("usage: %s\n\n%s\n", cmd->usage, cmd->help);
            return CTL_OK;
        }
        if (strcmp(cargv[k], "--json") == 0)
            json = true;
        else
            cargv[n++] = cargv[k];
    }
    (void)ctl_init(&c0); /* a bad environment is reported by the first request */
    c0.json = json;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "tollgatectl: libcurl did not start\n");
        return CTL_EXIT_TRANSPORT;
    }
    int rc = cmd->run(&c0, cmd, n, cargv);
    curl_global_cleanup();
    return rc;
}
