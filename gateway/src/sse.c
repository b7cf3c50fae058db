/*
 * sse.c - incremental server-sent events parser and writer, see sse.h.
 *
 * The parser follows the WHATWG event-stream rules that matter for LLM
 * providers: lines end in \n, \r\n or a lone \r; a line starting with ':' is a
 * comment; "data" lines accumulate joined by \n; an empty line dispatches the
 * event. "id" and "retry" are ignored (no provider relies on them and we never
 * reconnect a stream). Unknown fields are ignored as the spec demands.
 */
#include "sse.h"

#include <string.h>

void tg_sse_parser_init(tg_sse_parser_t *p, size_t max_event_bytes)
{
    /* the line buffer only ever holds one partial line, which counts against the event */
    tg_buf_init(&p->_line, max_event_bytes);
    tg_buf_init(&p->_data, max_event_bytes);
    tg_buf_init(&p->_event, 128);
    p->_max_event = max_event_bytes;
    p->_has_data = 0;
    p->_skip_lf = 0;
}

void tg_sse_parser_dispose(tg_sse_parser_t *p)
{
    tg_buf_dispose(&p->_line);
    tg_buf_dispose(&p->_data);
    tg_buf_dispose(&p->_event);
}

/* Offset of the first \n or \r in buf[0, n), or n. Two vectorised memchr passes beat a byte loop:
 * events are hundreds of bytes between line ends, and both the parser and the writer run on
 * every byte of every stream. */
static size_t find_eol(const char *buf, size_t n)
{
    if (n == 0)
        return 0; /* buf may be NULL then, which memchr must not see */
    const char *lf = memchr(buf, '\n', n);
    size_t m = lf != NULL ? (size_t)(lf - buf) : n;
    const char *cr = memchr(buf, '\r', m);
    return cr != NULL ? (size_t)(cr - buf) : m;
}

static int dispatch(tg_sse_parser_t *p, tg_sse_event_cb cb, void *ud)
{
    if (!p->_has_data) {
        /* an event without data is not dispatched (spec); drop its event name */
        tg_buf_reset(&p->_event);
        return 0;
    }
    size_t dlen = p->_data.len;
    if (dlen > 0 && p->_data.data[dlen - 1] == '\n')
        dlen--; /* the join adds a \n after every line; the last one is not data */
    if (p->_data.data != NULL)
        p->_data.data[dlen] = '\0';
    tg_sse_event_t ev = {
        .event = p->_event.data != NULL ? p->_event.data : "",
        .event_len = p->_event.len,
        .data = p->_data.data != NULL ? p->_data.data : "",
        .data_len = dlen,
    };
    int rc = cb(ud, &ev);
    tg_buf_reset(&p->_data);
    tg_buf_reset(&p->_event);
    p->_has_data = 0;
    return rc;
}

/* Handles one complete line (without its terminator). */
static int process_line(tg_sse_parser_t *p, const char *line, size_t n, tg_sse_event_cb cb, void *ud)
{
    if (n == 0)
        return dispatch(p, cb, ud);
    if (line[0] == ':')
        return 0;
    const char *colon = memchr(line, ':', n);
    size_t flen = colon != NULL ? (size_t)(colon - line) : n;
    const char *val = colon != NULL ? colon + 1 : line + n;
    size_t vlen = (size_t)(line + n - val);
    if (vlen > 0 && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        if (p->_data.len + vlen + 1 > p->_max_event)
            return TG_ETOO_LARGE;
        int rc = tg_buf_append(&p->_data, val, vlen);
        if (rc == 0)
            rc = tg_buf_append(&p->_data, "\n", 1);
        if (rc != 0)
            return rc;
        p->_has_data = 1;
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        tg_buf_reset(&p->_event);
        int rc = tg_buf_append(&p->_event, val, vlen);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int tg_sse_parser_feed(tg_sse_parser_t *p, const char *buf, size_t n, tg_sse_event_cb cb, void *ud)
{
    size_t i = 0;
    if (p->_skip_lf && n > 0) {
        if (buf[0] == '\n')
            i = 1;
        p->_skip_lf = 0;
    }
    while (i < n) {
        size_t j = i + find_eol(buf + i, n - i); /* the next line end: \n or \r */
        if (j == n) {
            /* partial line: carry it to the next feed, bounded by the event limit */
            if (p->_line.len + (n - i) + p->_data.len > p->_max_event)
                return TG_ETOO_LARGE;
            return tg_buf_append(&p->_line, buf + i, n - i);
        }
        int rc;
        if (p->_line.len == 0) {
            /* fast path: the whole line is in this chunk, no copy */
            rc = process_line(p, buf + i, j - i, cb, ud);
        } else {
            if (p->_line.len + (j - i) + p->_data.len > p->_max_event)
                return TG_ETOO_LARGE;
            rc = tg_buf_append(&p->_line, buf + i, j - i);
            if (rc == 0)
                rc = process_line(p, p->_line.data, p->_line.len, cb, ud);
            tg_buf_reset(&p->_line);
        }
        if (buf[j] == '\r') {
            if (j + 1 < n) {
                if (buf[j + 1] == '\n')
                    j++;
            } else {
                p->_skip_lf = 1; /* the \n of a \r\n may come in the next feed */
            }
        }
        i = j + 1;
        if (rc != 0)
            return rc;
    }
    return 0;
}

int tg_sse_write_data(tg_buf_t *out, const char *data, size_t n)
{
    size_t orig = out->len;
    int rc = 0;
    size_t i = 0;
    /* every segment becomes a data: line, including an empty one after a trailing newline, so that
     * a parser joining the lines with \n gets back exactly `data` */
    for (;;) {
        size_t j = i + find_eol(data + i, n - i);
        rc = tg_buf_append(out, "data: ", 6);
        if (rc == 0)
            rc = tg_buf_append(out, data + i, j - i);
        if (rc == 0)
            rc = tg_buf_append(out, "\n", 1);
        if (rc != 0 || j == n)
            break;
        if (data[j] == '\r' && j + 1 < n && data[j + 1] == '\n')
            j++;
        i = j + 1;
    }
    if (rc == 0)
        rc = tg_buf_append(out, "\n", 1);
    if (rc != 0) {
        /* leave the buffer as it was: a half-written event would corrupt the stream */
        out->len = orig;
        if (out->data != NULL)
            out->data[orig] = '\0';
    }
    return rc;
}

int tg_sse_write_comment(tg_buf_t *out, const char *text)
{
    size_t orig = out->len;
    int rc = tg_buf_append(out, ": ", 2);
    size_t n = strlen(text);
    if (rc == 0)
        rc = tg_buf_append(out, text, n);
    if (rc == 0) {
        /* a newline would end the comment and let the rest be read as a field */
        for (size_t k = orig + 2; k < out->len; k++)
            if (out->data[k] == '\n' || out->data[k] == '\r')
                out->data[k] = ' ';
        rc = tg_buf_append(out, "\n\n", 2);
    }
    if (rc != 0) {
        out->len = orig;
        if (out->data != NULL)
            out->data[orig] = '\0';
    }
    return rc;
}

int tg_sse_write_done(tg_buf_t *out)
{
    return tg_buf_append(out, "data: [DONE]\n\n", 14);
}
