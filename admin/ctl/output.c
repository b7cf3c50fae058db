/*
 * output.c - tollgatectl's output: the API's JSON as is (--json), or plain text: an object as
 * "field  value" lines, a list as a table with aligned columns. Values are shown as JSON scalars
 * (strings without quotes); nested values as compact JSON; control characters as '?', so a name
 * stored with an escape sequence cannot drive the terminal.
 */
#include "ctl.h"

#include <stdlib.h>
#include <string.h>

void ctl_print_json(const json_t *v)
{
    char *s = v ? json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) : NULL;
    puts(s ? s : "null");
    free(s);
}

/* A cell's text, malloc'd. */
static char *cell(const json_t *v)
{
    char *s;
    if (v == NULL || json_is_null(v))
        s = strdup("-");
    else if (json_is_string(v))
        s = strdup(json_string_value(v));
    else
        s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    if (s == NULL)
        return NULL;
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
    return s;
}

/* Display width: UTF-8 continuation bytes take no column. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        w += (*p & 0xc0) != 0x80;
    return w;
}

static void print_object(const json_t *obj)
{
    size_t kw = 0;
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (strlen(k) > kw)
            kw = strlen(k);
    }
    json_object_foreach((json_t *)obj, k, v)
    {
        char *s = cell(v);
        printf("%-*s  %s\n", (int)kw, k, s ? s : "?");
        free(s);
    }
}

static void print_list(const json_t *data, const char *const *columns)
{
    const char *own[64];
    size_t ncol = 0;
    if (columns) {
        while (columns[ncol] && ncol < 64)
            ncol++;
    } else {
        const json_t *first = json_array_get(data, 0);
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)first, k, v)
        {
            if (ncol < 64)
                own[ncol++] = k;
        }
        columns = own;
    }
    size_t rows = json_array_size(data);
    if (ncol == 0 || rows == 0) {
        puts("(none)");
        return;
    }
    char **cells = calloc(rows * ncol, sizeof(char *));
    size_t *w = calloc(ncol, sizeof(size_t));
    if (cells == NULL || w == NULL) {
        free(cells);
        free(w);
        fputs("tollgatectl: out of memory\n", stderr);
        return;
    }
    for (size_t j = 0; j < ncol; j++)
        w[j] = strlen(columns[j]);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < ncol; j++) {
            cells[i * ncol + j] = cell(json_object_get(json_array_get(data, i), columns[j]));
            size_t cw = cells[i * ncol + j] ? width(cells[i * ncol + j]) : 1;
            if (cw > w[j])
                w[j] = cw;
        }
    for (size_t j = 0; j < ncol; j++)
        printf("%-*s%s", (int)w[j], columns[j], j + 1 < ncol ? "  " : "\n");
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < ncol; j++) {
            const char *s = cells[i * ncol + j] ? cells[i * ncol + j] : "?";
            size_t pad = w[j] - width(s);
            fputs(s, stdout);
            if (j + 1 < ncol)
                printf("%*s  ", (int)pad, "");
            else
                fputc('\n', stdout);
        }
    for (size_t i = 0; i < rows * ncol; i++)
        free(cells[i]);
    free(cells);
    free(w);
}

void ctl_print_table(const json_t *v, const char *const *columns)
{
    const json_t *data = json_object_get(v, "data");
    if (json_is_array(data)) {
        print_list(data, columns);
        const json_t *next = json_object_get(v, "next_cursor");
        if (json_is_string(next))
            printf("next page: --cursor %s\n", json_string_value(next));
    } else if (json_is_object(v)) {
        print_object(v);
    } else {
        ctl_print_json(v);
    }
}

void ctl_print(const ctl_t *c, const json_t *v, const char *const *columns)
{
    if (c->json)
        ctl_print_json(v);
    else
        ctl_print_table(v, columns);
}
