/*
 * csv.h - CSV fields for exports (RFC 4180), safe to open in a spreadsheet.
 *
 * Pure: appends to a bounded tg_buf_t (core/buf.h), no I/O. A text field is quoted when it holds a
 * comma, a quote, CR or LF (quotes doubled inside); one that a spreadsheet would read as a formula
 * (its first byte '=', '+', '-', '@', TAB or CR: CSV injection, OWASP) gets a leading apostrophe,
 * inside the quotes, so that the cell shows the text instead of running it. Numbers that the
 * export writes itself go through tg_csv_int, never the text path: a negative amount stays a
 * number. Records end with CRLF.
 */
#ifndef TG_BILLING_CSV_H
#define TG_BILLING_CSV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/** Appends one text field (n bytes of s; s may hold any byte), escaped and guarded. */
TG_MUST_CHECK int tg_csv_text(tg_buf_t *b, const char *s, size_t n);
/** Appends an integer field. */
TG_MUST_CHECK int tg_csv_int(tg_buf_t *b, int64_t v);
/** Appends the separator before every field but a record's first. */
TG_MUST_CHECK int tg_csv_sep(tg_buf_t *b);
/** Ends a record (CRLF). */
TG_MUST_CHECK int tg_csv_end(tg_buf_t *b);
/** Whether a spreadsheet would take a cell starting with this byte as a formula. */
bool tg_csv_formula_lead(unsigned char c);

#endif
