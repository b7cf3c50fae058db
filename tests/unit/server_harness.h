/*
 * server_harness.h - what the in-process server tests share (test_http.c, test_drain.c): a free
 * loopback port, the server on a thread of its own, and a bounded wait for a line of its log.
 * Header-only, static: each test program includes it once. Needs cmocka, sockets, poll, pthread
 * and memmem (_GNU_SOURCE) included before it.
 */
#ifndef TG_TEST_SERVER_HARNESS_H
#define TG_TEST_SERVER_HARNESS_H

#include "server.h"

/* A loopback port nothing listens on now (the kernel's pick; freed again before use). */
static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

typedef struct server_thread {
    const char *path;
    int rc;
} server_thread_t;

static void *run_server(void *arg)
{
    server_thread_t *st = arg;
    st->rc = tg_server_run(st->path);
    return NULL;
}

/* Reads the log pipe until it holds `needle` (each read bounded by poll's timeout). */
static bool log_has(int fd, const char *needle)
{
    static char acc[1 << 16];
    static size_t len;
    for (int tries = 0; tries < 100; tries++) {
        if (memmem(acc, len, needle, strlen(needle)) != NULL)
            return true;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t r = read(fd, acc + len, sizeof(acc) - 1 - len);
        if (r > 0)
            len += (size_t)r;
        if (len > sizeof(acc) / 2) { /* keep the tail only */
            memmove(acc, acc + len - sizeof(acc) / 4, sizeof(acc) / 4);
            len = sizeof(acc) / 4;
        }
    }
    return memmem(acc, len, needle, strlen(needle)) != NULL;
}

#endif
