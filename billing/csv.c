/*
 * csv.c - CSV fields, see csv.h.
 */
#include "csv.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

bool tg_csv_formula_lead(unsigned char c)
{
    return c == '=' || c == '+' || c == '-' || c == '@' || c == '\t' || c == '\r';
}

int tg_csv_text(tg_buf_t *b, const char *s, size_t n)
{
    bool guard = n > 0 && tg_csv_formula_lead((unsigned char)s[0]);
    bool quote = false;
    size_t quotes = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"')
            quotes++;
        if (c == '"' || c == ',' || c == '\r' || c == '\n')
            quote = true;
    }
    if (!quote && !guard)
        return tg_buf_append(b, s, n);
    /* the whole field at once, so a field that does not fit leaves the buffer as it was */
    size_t need = n + quotes + (guard ? 1u : 0u) + (quote ? 2u : 0u);
    if (tg_buf_reserve(b, need) != 0)
        return TG_ETOO_LARGE;
    size_t start = b->len;
    int rc = 0;
    if (quote)
        rc |= tg_buf_append(b, "\"", 1);
    if (guard)
        rc |= tg_buf_append(b, "'", 1);
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '"')
            continue;
        rc |= tg_buf_append(b, s + from, i + 1 - from); /* through the quote, then the quote again */
        rc |= tg_buf_append(b, "\"", 1);
        from = i + 1;
    }
    rc |= tg_buf_append(b, s + from, n - from);
    if (quote)
        rc |= tg_buf_append(b, "\"", 1);
    if (rc != 0) {
        b->len = start;
        b->data[start] = '\0';
        return TG_ETOO_LARGE;
    }
    return 0;
}

int tg_csv_int(tg_buf_t *b, int64_t v)
{
    char s[24];
    int n = snprintf(s, sizeof(s), "%" PRId64, v);
    return tg_buf_append(b, s, (size_t)n);
}

int tg_csv_sep(tg_buf_t *b)
{
    return tg_buf_append(b, ",", 1);
}

int tg_csv_end(tg_buf_t *b)
{
    return tg_buf_append(b, "\r\n", 2);
}
