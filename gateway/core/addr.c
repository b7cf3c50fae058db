/*
 * addr.c - "HOST:PORT" to a socket address, see addr.h.
 *
 * Strict on purpose: every character is accounted for, so a typo in a config file or on a command
 * line is refused at start instead of binding somewhere unexpected.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#define PORT_DIGITS_MAX 5

/* Digits only: strtol would let through a sign, leading spaces and an empty string. */
static bool parse_port(const char *p, bool allow_zero, uint16_t *port)
{
    size_t n = strlen(p);
    if (n == 0 || n > PORT_DIGITS_MAX)
        return false;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(p[i] - '0');
    }
    if (v > 65535 || (v == 0 && !allow_zero))
        return false;
    *port = (uint16_t)v;
    return true;
}

int tg_addr_parse(const char *s, bool allow_port_zero, struct sockaddr_storage *out, socklen_t *out_len)
{
    char host[INET6_ADDRSTRLEN];
    const char *host_start, *host_end, *port_s;
    if (s == NULL)
        return TG_ECONFIG;
    bool v6 = s[0] == '[';
    if (v6) {
        host_start = s + 1;
        host_end = strchr(host_start, ']');
        if (host_end == NULL || host_end[1] != ':')
            return TG_ECONFIG;
        port_s = host_end + 2;
    } else {
        /* the first colon: a bracketless IPv6 literal then leaves a colon in the port, refused there */
        host_start = s;
        host_end = strchr(s, ':');
        if (host_end == NULL)
            return TG_ECONFIG;
        port_s = host_end + 1;
    }
    size_t host_len = (size_t)(host_end - host_start);
    if (host_len == 0 || host_len >= sizeof(host))
        return TG_ECONFIG;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';

    uint16_t port;
    if (!parse_port(port_s, allow_port_zero, &port))
        return TG_ECONFIG;

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (v6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            return TG_ECONFIG;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        *out_len = sizeof(*a6);
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        if (strcmp(host, "localhost") == 0)
            a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
            return TG_ECONFIG;
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        *out_len = sizeof(*a4);
    }
    *out = ss;
    return 0;
}
