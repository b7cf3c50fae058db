/*
 * copytext.h - one field of PostgreSQL's COPY text format, for the writers that store batches
 * with COPY (failover events, stored requests).
 *
 * In COPY text a backslash, tab, newline or carriage return inside a field would end the field or
 * the row, so each is escaped. The server also rejects a whole batch for one byte that is not
 * valid UTF-8 (or a NUL), and the text written here often comes from outside (a provider's model
 * name, a client's body): such a byte becomes '?' instead, so one bad field cannot lose a batch.
 * Pure; any thread.
 */
#ifndef TG_COPYTEXT_H
#define TG_COPYTEXT_H

#include <stddef.h>

/** Length (2..4) of the valid UTF-8 sequence at s, with `left` bytes readable, or 0 when the bytes
 *  there are not one (a lone continuation, an overlong form, a surrogate, past U+10FFFF). */
size_t tg_utf8_seq_len(const unsigned char *s, size_t left);

/** The most bytes tg_copy_text_put writes for n bytes of input. */
#define TG_COPY_TEXT_MAX(n) (2 * (n))

/** Writes n bytes of s as one COPY text field at out (room for TG_COPY_TEXT_MAX(n) bytes);
 *  returns the new end. The SQL NULL is the caller's ("\N"). */
char *tg_copy_text_put(char *out, const char *s, size_t n);

#endif
