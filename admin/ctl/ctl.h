/*
 * ctl.h - tollgatectl, a small CLI over the admin REST API (admin/ctl/README section of
 * admin/README.md). One process runs one command: it reads TOLLGATE_ADMIN_URL and
 * TOLLGATE_ADMIN_TOKEN, makes one or two HTTP requests with libcurl, prints a table or the API's
 * JSON, and exits with one of the codes below. The token is sent as a bearer header only: it is never
 * printed, logged or put in a URL.
 */
#ifndef TG_CTL_H
#define TG_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

/* Exit codes (documented in admin/README.md and `tollgatectl --help`). */
enum {
    CTL_OK = 0,
    CTL_EXIT_API = 1,       /* the API refused the request (4xx): its error is printed */
    CTL_EXIT_USAGE = 2,     /* bad command line: nothing was sent */
    CTL_EXIT_TRANSPORT = 3, /* no URL or token in the environment, or the server could not be reached */
    CTL_EXIT_SERVER = 4,    /* the server failed (5xx) or answered something that is not the API's */
};

/* A response body is held up to this size (a page of a list is far smaller); a larger one is an
 * error. The CSV export is streamed to stdout and never held. */
#define CTL_MAX_BODY (16u << 20)

typedef struct ctl {
    char url[1024];      /* TOLLGATE_ADMIN_URL without a trailing '/' */
    const char *token;   /* TOLLGATE_ADMIN_TOKEN (the environment's own storage) */
    bool json;           /* --json: print the API's JSON instead of a table */
    const char *env_err; /* why the environment is unusable (reported by the first request), or NULL */
} ctl_t;

typedef struct ctl_body {
    char *data; /* NUL-terminated */
    size_t len;
    size_t cap;
    bool too_large;
} ctl_body_t;

typedef struct ctl_req {
    const char *method;
    const char *path; /* from /admin/v1/..., segments already escaped (ctl_path) */
    const char *body; /* JSON request body or NULL */
    size_t body_len;
    const char *idempotency_key; /* or NULL */
    const char *accept;          /* NULL: application/json */
    FILE *stream_to;             /* non-NULL: the 2xx body is written here as it arrives (CSV) */
} ctl_req_t;

typedef struct ctl_res {
    long status;
    ctl_body_t body;
    json_t *json; /* parsed body, or NULL */
} ctl_res_t;

/* ---- api.c ---- */

/**
 * Fills c from the environment. A missing or bad variable sets c->env_err (and returns
 * CTL_EXIT_TRANSPORT); it is reported by the first ctl_call, so a bad command line is still a usage
 * error first.
 */
int ctl_init(ctl_t *c);
/**
 * Sends one request and reads the answer. Returns CTL_OK for a 2xx (res filled), otherwise prints
 * the failure to stderr (the API's error message, code, param and fields) and returns the exit code.
 */
int ctl_call(const ctl_t *c, const ctl_req_t *rq, ctl_res_t *res);
void ctl_res_free(ctl_res_t *res);
/**
 * Builds a path from a printf format whose %s arguments are path segments: each is percent-encoded
 * (so a name with '/' or '..' stays one segment). Returns 0, or -1 when it does not fit.
 */
int ctl_path(char *out, size_t cap, const char *fmt, ...);
/** Appends "&name=value" (or "?name=value" first) with value percent-encoded; skips a NULL value. */
int ctl_query_add(char *path, size_t cap, const char *name, const char *value);

/* ---- output.c ---- */

/** Prints the API's JSON (pretty) on stdout. */
void ctl_print_json(const json_t *v);
/**
 * Prints an object as "field  value" lines, or a list ({"data":[...],"next_cursor"}) as a table with
 * the given columns (NULL: the first row's fields); the next cursor, when there is one, on a last line.
 */
void ctl_print_table(const json_t *v, const char *const *columns);
/** Either of the two, by c->json. */
void ctl_print(const ctl_t *c, const json_t *v, const char *const *columns);

/* ---- commands.c ---- */

typedef struct ctl_cmd {
    const char *group; /* "tenants", "keys", ... */
    const char *verb;  /* "create", ... or NULL for a one-word command */
    const char *usage; /* first line of --help */
    const char *help;  /* the rest */
    int (*run)(const ctl_t *c, const struct ctl_cmd *self, int argc, char **argv);
} ctl_cmd_t;

extern const ctl_cmd_t ctl_commands[];
extern const size_t ctl_commands_count;

#endif
