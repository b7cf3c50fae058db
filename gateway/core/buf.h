/*
 * buf.h - a growable byte buffer with a mandatory cap (curl's dynbuf idea).
 *
 * An append that would pass `max` fails with TG_ETOO_LARGE and leaves the
 * buffer as it was, so a caller never half-owns a partial write. The bytes
 * are always NUL-terminated (the NUL is not counted in len), so a buffer can
 * be handed to a parser that wants a C string.
 *
 * tg_str_copy is the fixed-size counterpart, for the small char[N] fields of
 * records and events.
 */
#ifndef TG_BUF_H
#define TG_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "err.h"

typedef struct tg_buf {
    char *data; /* NULL until the first append */
    size_t len;
    size_t cap; /* allocated bytes, excluding the NUL */
    size_t max; /* hard limit on len */
} tg_buf_t;

void tg_buf_init(tg_buf_t *b, size_t max);
/** Frees the bytes; the buffer may be reused after tg_buf_init. NULL-safe. */
void tg_buf_dispose(tg_buf_t *b);
/** Empties without freeing. */
void tg_buf_reset(tg_buf_t *b);
/** Makes room for `extra` more bytes at once (one allocation for a size known up front); fails
 *  like an append of that size would. */
TG_MUST_CHECK int tg_buf_reserve(tg_buf_t *b, size_t extra);
TG_MUST_CHECK int tg_buf_append(tg_buf_t *b, const void *p, size_t n);
TG_MUST_CHECK int tg_buf_append_str(tg_buf_t *b, const char *s);
TG_MUST_CHECK int tg_buf_appendf(tg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Removes the first n bytes (n <= len). */
void tg_buf_consume(tg_buf_t *b, size_t n);
/** Transfers the malloc'd bytes to the caller (free() them); the buffer is left empty. */
char *tg_buf_take(tg_buf_t *b, size_t *len);

/** Copies the string src (NULL = "") into the field dst[cap] (cap >= 1), cut to fit and always
 *  terminated. Reads at most cap - 1 bytes of src, so src may be another such field that its
 *  text fills without a NUL. On the per-request path, in place of snprintf("%s"). */
void tg_str_copy(char *dst, size_t cap, const char *src);

#endif
