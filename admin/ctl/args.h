/*
 * args.h - tollgatectl's per-command argument parsing: positionals and "--name VALUE" /
 * "--name=VALUE" options from a fixed list; an unknown option or a missing value is a usage error
 * that names it.
 */
#ifndef TG_CTL_ARGS_H
#define TG_CTL_ARGS_H

#include <stdbool.h>

#define CTL_MAX_OPTS 12
#define CTL_MAX_POS  4

typedef struct ctl_args {
    const char *pos[CTL_MAX_POS];
    int npos;
    const char *names[CTL_MAX_OPTS]; /* allowed option names, without "--" */
    const char *values[CTL_MAX_OPTS];
    bool help;
} ctl_args_t;

/**
 * Parses argv (after the command words) against the NULL-terminated `options`. Returns 0, or -1
 * after printing the error (unknown option, missing value, wrong number of positionals).
 */
int ctl_args_parse(ctl_args_t *a, int argc, char **argv, const char *const *options, int min_pos, int max_pos,
                   const char *usage);
/** The value of an option, or NULL when not given. */
const char *ctl_arg(const ctl_args_t *a, const char *name);

#endif
