/*
 * test_drain.c - the drain reaches every worker even when memory runs out at that moment.
 *
 * The server runs in-process on its own thread (as in test_http.c) with two workers and no
 * database, so an idle worker sleeps in h2o_evloop_run with no timer at all: only a message on its
 * loop wakes it. From SIGTERM on, every calloc of the server's main thread fails (this binary is
 * linked with -Wl,--wrap=calloc, tests/CMakeLists.txt; calloc calls of the project's code land in
 * __wrap_calloc below). The stop message used to be calloc'ed at that point: on failure a plain
 * flag was set and the worker never woke, so tg_server_run never returned. The test waits for it
 * with a generous bound, so that a regression fails instead of hanging the suite.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np, memmem */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "log.h"
#include "server.h"
#include "server_harness.h"

/* ---------------------------------------------------------------- calloc that fails on demand */

void *__real_calloc(size_t n, size_t size);

static atomic_bool fail_armed;
static pthread_t fail_thread;
static atomic_int failed_callocs;

void *__wrap_calloc(size_t n, size_t size)
{
    if (atomic_load(&fail_armed) && pthread_equal(pthread_self(), fail_thread)) {
        atomic_fetch_add(&failed_callocs, 1);
        return NULL;
    }
    return __real_calloc(n, size);
}

/* ---------------------------------------------------------------- helpers */

/* ---------------------------------------------------------------- the test */

static void test_drain_without_memory(void **state)
{
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    char dir[256], path[300];
    snprintf(dir, sizeof(dir), "%s/tg-test-drain-XXXXXX", tmp);
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/tollgate.json", dir);
    setenv("TG_TEST_PEPPER", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", 1);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    /* no database: no pool timers, so an idle worker's loop has nothing that wakes it */
    fprintf(f,
            "{\"listen\":{\"data\":\"127.0.0.1:%u\",\"admin\":\"127.0.0.1:%u\"},\"workers\":2,"
            "\"secrets\":{\"key_pepper_env\":\"TG_TEST_PEPPER\"},\"shutdown_grace_ms\":2000,"
            "\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:1/v1\"}},"
            "\"models\":{\"m1\":{\"provider\":\"p\",\"upstream\":\"m1\"}}}",
            (unsigned)free_port(), (unsigned)free_port());
    fclose(f);

    int logp[2];
    assert_int_equal(pipe2(logp, O_CLOEXEC), 0);
    fcntl(logp[1], F_SETFL, O_NONBLOCK);
    tg_log_set_fd(logp[1]);

    server_thread_t st = {.path = path, .rc = -1};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, run_server, &st), 0);
    assert_true(log_has(logp[0], "\"server_started\""));

    fail_thread = tid;
    atomic_store(&fail_armed, true);
    pthread_kill(tid, SIGTERM);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30; /* a liveness bound, not a timing: the drain itself takes milliseconds */
    int rc = pthread_timedjoin_np(tid, NULL, &until);
    atomic_store(&fail_armed, false);
    assert_int_equal(rc, 0); /* ETIMEDOUT: a worker missed its stop message */
    assert_int_equal(st.rc, 0);
    assert_true(log_has(logp[0], "\"server_stopped\""));

    tg_log_set_fd(2);
    close(logp[0]);
    close(logp[1]);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_without_memory),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
