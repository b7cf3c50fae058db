/*
 * args.c - see args.h.
 */
#include "args.h"

#include <stdio.h>
#include <string.h>

int ctl_args_parse(ctl_args_t *a, int argc, char **argv, const char *const *options, int min_pos, int max_pos,
                   const char *usage)
{
    memset(a, 0, sizeof(*a));
    int nopt = 0;
    while (options && options[nopt] && nopt < CTL_MAX_OPTS) {
        a->names[nopt] = options[nopt];
        nopt++;
    }
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (!only_pos && strcmp(s, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (!only_pos && (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0)) {
            a->help = true;
            return 0;
        }
        if (!only_pos && strncmp(s, "--", 2) == 0) {
            const char *name = s + 2;
            const char *eq = strchr(name, '=');
            size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
            int k = -1;
            for (int j = 0; j < nopt; j++)
                if (strlen(a->names[j]) == nlen && strncmp(a->names[j], name, nlen) == 0)
                    k = j;
            if (k < 0) {
                fprintf(stderr, "tollgatectl: unknown option --%.*s\nusage: %s\n", (int)nlen, name, usage);
                return -1;
            }
            if (eq) {
                a->values[k] = eq + 1;
            } else if (i + 1 < argc) {
                a->values[k] = argv[++i];
            } else {
                fprintf(stderr, "tollgatectl: option --%s needs a value\nusage: %s\n", a->names[k], usage);
                return -1;
            }
            continue;
        }
        if (a->npos >= max_pos || a->npos >= CTL_MAX_POS) {
            fprintf(stderr, "tollgatectl: unexpected argument '%s'\nusage: %s\n", s, usage);
            return -1;
        }
        a->pos[a->npos++] = s;
    }
    if (a->npos < min_pos) {
        fprintf(stderr, "tollgatectl: missing argument\nusage: %s\n", usage);
        return -1;
    }
    return 0;
}

const char *ctl_arg(const ctl_args_t *a, const char *name)
{
    for (int i = 0; i < CTL_MAX_OPTS && a->names[i]; i++)
        if (strcmp(a->names[i], name) == 0)
            return a->values[i];
    return NULL;
}
