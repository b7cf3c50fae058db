/*
 * test_addr.c - "HOST:PORT" parsing: the forms config, simulator and relay accept, and every near
 * miss refused without touching the output.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "addr.h"

#define SENTINEL 0xA5

static void expect_v4(const char *s, bool allow_zero, const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    memset(&ss, SENTINEL, sizeof(ss));
    assert_int_equal(tg_addr_parse(s, allow_zero, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    struct in_addr want;
    assert_int_equal(inet_pton(AF_INET, ip, &want), 1);
    assert_int_equal(a->sin_addr.s_addr, want.s_addr);
    assert_int_equal(ntohs(a->sin_port), port);
    /* no sentinel byte may survive in the part of the address that bind() reads */
    static const unsigned char zero[sizeof(a->sin_zero)];
    assert_memory_equal(a->sin_zero, zero, sizeof(zero));
}

static void expect_v6(const char *s, bool allow_zero, const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    memset(&ss, SENTINEL, sizeof(ss));
    assert_int_equal(tg_addr_parse(s, allow_zero, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    struct in6_addr want;
    assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
    assert_memory_equal(&a->sin6_addr, &want, sizeof(want));
    assert_int_equal(ntohs(a->sin6_port), port);
    assert_int_equal(a->sin6_flowinfo, 0);
    assert_int_equal(a->sin6_scope_id, 0);
}

/* Refused whatever allow_zero says, with the output left exactly as it was. */
static void expect_refused(const char *s)
{
    for (int allow_zero = 0; allow_zero <= 1; allow_zero++) {
        struct sockaddr_storage ss, before;
        socklen_t len = 12345;
        memset(&ss, SENTINEL, sizeof(ss));
        memcpy(&before, &ss, sizeof(ss));
        int rc = tg_addr_parse(s, allow_zero, &ss, &len);
        if (rc != TG_ECONFIG)
            fail_msg("\"%s\" (allow_zero %d): got %d, want TG_ECONFIG", s ? s : "(null)", allow_zero, rc);
        assert_memory_equal(&ss, &before, sizeof(ss));
        assert_int_equal(len, 12345);
    }
}

static void test_ipv4(void **state)
{
    expect_v4("127.0.0.1:8080", false, "127.0.0.1", 8080);
    expect_v4("0.0.0.0:1", false, "0.0.0.0", 1);
    expect_v4("255.255.255.255:65535", false, "255.255.255.255", 65535);
    expect_v4("10.1.2.3:443", true, "10.1.2.3", 443);
    /* five digits, leading zeros included, as the config loader always accepted */
    expect_v4("127.0.0.1:00080", false, "127.0.0.1", 80);
}

static void test_localhost_is_loopback_without_resolver(void **state)
{
    expect_v4("localhost:9100", false, "127.0.0.1", 9100);
    expect_v4("localhost:0", true, "127.0.0.1", 0);
}

static void test_ipv6_in_brackets(void **state)
{
    expect_v6("[::1]:8081", false, "::1", 8081);
    expect_v6("[2001:db8::1]:443", false, "2001:db8::1", 443);
    expect_v6("[0:0:0:0:0:0:0:1]:65535", false, "::1", 65535);
    expect_v6("[::ffff:127.0.0.1]:80", false, "::ffff:127.0.0.1", 80);
    expect_v6("[::]:0", true, "::", 0);
}

static void test_port_zero_only_when_allowed(void **state)
{
    expect_v4("127.0.0.1:0", true, "127.0.0.1", 0);
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(tg_addr_parse("127.0.0.1:0", false, &ss, &len), TG_ECONFIG);
    assert_int_equal(tg_addr_parse("127.0.0.1:00000", false, &ss, &len), TG_ECONFIG);
    assert_int_equal(tg_addr_parse("[::1]:0", false, &ss, &len), TG_ECONFIG);
    assert_int_equal(tg_addr_parse("localhost:0", false, &ss, &len), TG_ECONFIG);
}

static void test_empty_or_missing_parts(void **state)
{
    expect_refused(NULL);
    expect_refused("");
    expect_refused(":");
    expect_refused(":8080");
    expect_refused("127.0.0.1");
    expect_refused("127.0.0.1:");
    expect_refused("localhost");
    expect_refused("localhost:");
    expect_refused("[]:80");
    expect_refused("[::1]");
    expect_refused("[::1]:");
}

static void test_bad_ports(void **state)
{
    expect_refused("127.0.0.1:+80");
    expect_refused("127.0.0.1:-1");
    expect_refused("127.0.0.1: 80");
    expect_refused("127.0.0.1:80 ");
    expect_refused("127.0.0.1:80x");
    expect_refused("127.0.0.1:0x50");
    expect_refused("127.0.0.1:8.0");
    expect_refused("127.0.0.1:65536");
    expect_refused("127.0.0.1:99999");
    expect_refused("127.0.0.1:000080"); /* six digits, even though the value fits */
    expect_refused("127.0.0.1:123456");
    expect_refused("127.0.0.1:80:80");
    expect_refused("[::1]:80]");
    expect_refused("[::1]:65536");
}

static void test_bad_hosts(void **state)
{
    expect_refused("example.com:80");
    expect_refused("LOCALHOST:80");
    expect_refused("localhost.:80");
    expect_refused(" 127.0.0.1:80");
    expect_refused("1.2.3:80");
    expect_refused("1.2.3.256:80");
    expect_refused("1.2.3.4.5:80");
    expect_refused("[127.0.0.1]:80");
    expect_refused("[localhost]:80");
    expect_refused("[::1:80");
    expect_refused("[::1]8080");
    expect_refused("[::1]x:80");
    expect_refused("[fe80::1%eth0]:80");
    expect_refused("[:::1]:80");
    expect_refused("[0123456789012345678901234567890123456789012345678901234567890123]:80");
    expect_refused("0123456789012345678901234567890123456789012345678901234567890123:80");
}

static void test_bracketless_ipv6_refused(void **state)
{
    expect_refused("::1:8080");
    expect_refused("::1");
    expect_refused("fe80::1:80");
    expect_refused("2001:db8::1:443");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_localhost_is_loopback_without_resolver),
        cmocka_unit_test(test_ipv6_in_brackets),
        cmocka_unit_test(test_port_zero_only_when_allowed),
        cmocka_unit_test(test_empty_or_missing_parts),
        cmocka_unit_test(test_bad_ports),
        cmocka_unit_test(test_bad_hosts),
        cmocka_unit_test(test_bracketless_ipv6_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
