/*
 * buf.c - bounded growable buffer, see buf.h.
 */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg_buf_init(tg_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void tg_buf_dispose(tg_buf_t *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void tg_buf_reset(tg_buf_t *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

static int reserve(tg_buf_t *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return TG_ETOO_LARGE;
    size_t need = b->len + extra;
    if (need <= b->cap && b->data != NULL)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max)
        cap = b->max;
    char *p = realloc(b->data, cap + 1);
    if (p == NULL)
        return TG_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int tg_buf_reserve(tg_buf_t *b, size_t extra)
{
    int rc = reserve(b, extra);
    if (rc == 0)
        b->data[b->len] = '\0';
    return rc;
}

int tg_buf_append(tg_buf_t *b, const void *p, size_t n)
{
    int rc = reserve(b, n);
    if (rc != 0)
        return rc;
    if (n != 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int tg_buf_append_str(tg_buf_t *b, const char *s)
{
    return tg_buf_append(b, s, strlen(s));
}

int tg_buf_appendf(tg_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return TG_EINTERNAL;
    int rc = reserve(b, (size_t)n);
    if (rc != 0)
        return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void tg_buf_consume(tg_buf_t *b, size_t n)
{
    if (n >= b->len) {
        tg_buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *tg_buf_take(tg_buf_t *b, size_t *len)
{
    char *p = b->data;
    if (len != NULL)
        *len = b->len;
    if (p == NULL)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void tg_str_copy(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strnlen(src, cap - 1) : 0;
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}
