/*
 * framing.h - HTTP/1 request framing that cannot be smuggled (RFC 9112, section 6.3).
 *
 * h2o 2.2.5 takes the body length from the first Content-Length or the last Transfer-Encoding of
 * a request head and drops both headers from req->headers, so a handler cannot see a conflict.
 * A head that two parsers could read differently is refused here instead: a proxy in front of
 * tollgate that framed the body otherwise would have the rest of the bytes served as a request of
 * their own. tg_framing_check_head is pure (thread: any); tg_framing_check reads the request's
 * connection (thread: the owning worker).
 */
#ifndef TG_FRAMING_H
#define TG_FRAMING_H

#include <stddef.h>

#include "h2o.h"

/**
 * Judges one complete HTTP/1 request head (request line, header lines, the empty line; what
 * follows is ignored). Returns 0 when its body length is unambiguous, or TG_EINVALID_REQUEST with
 * *why set to a public reason (a static string) when it has:
 *   - more than one Content-Length, even with equal values;
 *   - more than one Transfer-Encoding, or one whose value is not exactly `chunked`;
 *   - both Content-Length and Transfer-Encoding;
 *   - Transfer-Encoding in an HTTP/1.0 request;
 *   - a folded header line (obs-fold), which parsers join differently;
 *   - a head that does not parse at all.
 */
int tg_framing_check_head(const char *head, size_t len, const char **why);

/**
 * The same verdict for a request h2o has parsed: HTTP/2 requests are framed by their protocol and
 * pass; for HTTP/1.x the head is read again where h2o parsed it, at the start of the connection's
 * input buffer (h2o consumes a request's bytes only once its response is complete). Call it
 * before any handler work; on refusal answer 400 with the connection closed.
 */
int tg_framing_check(h2o_req_t *req, const char **why);

#endif
