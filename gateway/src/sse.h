/*
 * sse.h - server-sent events: an incremental parser and a writer.
 *
 * The parser is pure: bytes in (any chunking, \n or \r\n line ends), whole
 * events out through a callback. An event larger than the configured limit
 * fails the stream with TG_ETOO_LARGE instead of growing without bound.
 */
#ifndef TG_SSE_H
#define TG_SSE_H

#include <stddef.h>

#include "buf.h"

typedef struct tg_sse_event {
    const char *event; /* "" when the event had no "event:" field */
    size_t event_len;
    const char *data; /* "data:" lines joined with \n; NUL-terminated */
    size_t data_len;
} tg_sse_event_t;

/** Returns 0 to go on; anything else stops the feed and is returned by it. */
typedef int (*tg_sse_event_cb)(void *ud, const tg_sse_event_t *ev);

typedef struct tg_sse_parser {
    /* private */
    tg_buf_t _line, _data, _event;
    size_t _max_event;
    int _has_data;
    int _skip_lf; /* last byte was \r: a following \n belongs to it */
} tg_sse_parser_t;

void tg_sse_parser_init(tg_sse_parser_t *p, size_t max_event_bytes);
void tg_sse_parser_dispose(tg_sse_parser_t *p);
/** Feeds n bytes; calls cb once per complete event. Returns 0, a cb's nonzero value, or TG_ETOO_LARGE. */
TG_MUST_CHECK int tg_sse_parser_feed(tg_sse_parser_t *p, const char *buf, size_t n, tg_sse_event_cb cb,
                                     void *ud);

/** Appends "data: <data>\n\n" (multi-line data is split into several data: lines). */
TG_MUST_CHECK int tg_sse_write_data(tg_buf_t *out, const char *data, size_t n);
/** Appends ": <text>\n\n" (newlines in text become spaces). */
TG_MUST_CHECK int tg_sse_write_comment(tg_buf_t *out, const char *text);
/** Appends "data: [DONE]\n\n". */
TG_MUST_CHECK int tg_sse_write_done(tg_buf_t *out);

#endif
