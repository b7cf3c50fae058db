/*
 * test_listen.c - tg_listen_open: workers share a port through SO_REUSEPORT, and the bind-only
 * probe refuses an address another socket listens on (the check that keeps a second server of the
 * same user from silently sharing the port).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "listen.h"

/* 127.0.0.1 with the port the kernel picked for fd */
static void bound_addr(int fd, struct sockaddr_storage *ss, socklen_t *len)
{
    *len = sizeof(*ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)ss, len), 0);
    assert_int_not_equal(((struct sockaddr_in *)ss)->sin_port, 0);
}

static void test_shared_port_and_probe(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(tg_addr_parse("127.0.0.1:0", true, &ss, &len), 0);

    int a = tg_listen_open(&ss, len, true);
    assert_true(a >= 0);
    assert_true(fcntl(a, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(a, F_GETFD) & FD_CLOEXEC);
    bound_addr(a, &ss, &len);

    int b = tg_listen_open(&ss, len, true); /* a second worker on the same port */
    assert_true(b >= 0);

    errno = 0;
    assert_int_equal(tg_listen_open(&ss, len, false), -1); /* the probe: the port is taken */
    assert_int_equal(errno, EADDRINUSE);

    close(a);
    close(b);
    int probe = tg_listen_open(&ss, len, false); /* free again */
    assert_true(probe >= 0);
    close(probe);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_port_and_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
