/*
 * query.h - URL helpers shared by the admin router and handlers (query.c).
 */
#ifndef TG_ADMIN_QUERY_H
#define TG_ADMIN_QUERY_H

#include <stddef.h>

#include "h2o.h"

/** Percent-decodes src[0..len) into dst (cap bytes incl. NUL). '+' stays '+'. Returns the length or
 *  -1 on a malformed escape, an embedded NUL or overflow. */
int tg_admin_url_decode(const char *src, size_t len, char *dst, size_t cap);
/** Finds query parameter `name` in the request's query string and decodes it into dst.
 *  Returns 1 when found, 0 when absent, -1 when malformed or too long. */
int tg_admin_query_param(h2o_req_t *req, const char *name, char *dst, size_t cap);

#endif
