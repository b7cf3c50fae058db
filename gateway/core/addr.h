/*
 * addr.h - the one parser of listen and upstream addresses "HOST:PORT" (config, simulator, relay).
 *
 * HOST is an IPv4 literal (a.b.c.d), a bracketed IPv6 literal ([v6]) or "localhost", which stands
 * for 127.0.0.1: addresses are parsed before anything may block, so no resolver is ever asked.
 * PORT is 1 to 5 decimal digits and nothing else (no sign, no spaces, nothing after it).
 */
#ifndef TG_ADDR_H
#define TG_ADDR_H

#include <stdbool.h>
#include <sys/socket.h>

#include "err.h"

/**
 * Parses s into *out (a sockaddr_in or a sockaddr_in6, zeroed around the fields it sets) and its
 * length into *out_len. Port 0 ("pick a free one") is accepted only when allow_port_zero is set.
 * Returns 0, or TG_ECONFIG with *out and *out_len untouched for anything else: an empty host or
 * port, a host name other than localhost, an IPv6 literal without brackets, a port out of range.
 */
TG_MUST_CHECK int tg_addr_parse(const char *s, bool allow_port_zero, struct sockaddr_storage *out,
                                socklen_t *out_len);

#endif
