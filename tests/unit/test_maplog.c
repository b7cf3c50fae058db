/*
 * test_maplog.c - gateway/core/maplog.h: appends land in the file (the data, then zeros up to the
 * allocated step); a reopened log appends after its last newline, and tg_maplog_cut drops a torn
 * line and the zeros; a process killed with SIGKILL right after its appends leaves every byte of
 * them; the flock keeps a second opener out; truncate empties the file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "maplog.h"

static char dir[4096], path[4200];

static int setup(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(dir, sizeof(dir), "%s/tg_maplog_XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (n < 0 || (size_t)n >= sizeof(dir) || mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof(path), "%s/journal", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

/* The file's bytes: *n of them, malloc'd. */
static char *slurp(size_t *n)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *b = malloc((size_t)st.st_size + 1);
    assert_int_equal(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    b[st.st_size] = '\0';
    *n = (size_t)st.st_size;
    return b;
}

static void test_append_reopen_cut(void **state)
{
    (void)state;
    unlink(path);
    tg_maplog_t l;
    assert_int_equal(tg_maplog_open(&l, path, true), 0);
    assert_int_equal(l.len, 0);
    char line[64];
    size_t want = 0;
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(line, sizeof(line), "record %d\tof\tthe journal\n", i);
        assert_int_equal(tg_maplog_append(&l, line, (size_t)n), 0);
        want += (size_t)n;
    }
    assert_int_equal(l.len, want);
    size_t n;
    char *b = slurp(&n);
    assert_true(n >= want && n % TG_MAPLOG_GROW == 0); /* allocated in steps */
    assert_int_equal(strlen(b), want);                 /* then zeros */
    assert_memory_equal(b, "record 0\tof\tthe journal\nrecord 1\t", 33);
    free(b);
    /* a second opener is kept out by the lock */
    tg_maplog_t other;
    assert_int_equal(tg_maplog_open(&other, path, true), -EWOULDBLOCK);
    tg_maplog_close(&l);

    /* a torn line after the data: reopened, the appends go after the last newline; cut drops it */
    int fd = open(path, O_WRONLY);
    assert_int_equal(pwrite(fd, "torn re", 7, (off_t)want), 7);
    close(fd);
    assert_int_equal(tg_maplog_open(&l, path, true), 0);
    assert_int_equal(l.len, want);
    assert_int_equal(tg_maplog_cut(&l), 0);
    b = slurp(&n);
    assert_int_equal(n, want);
    free(b);
    assert_int_equal(tg_maplog_append(&l, "after\n", 6), 0);
    b = slurp(&n);
    assert_int_equal(strlen(b), want + 6);
    assert_string_equal(b + want, "after\n");
    free(b);

    /* truncate: empty */
    assert_int_equal(tg_maplog_truncate(&l), 0);
    b = slurp(&n);
    assert_int_equal(n, 0);
    free(b);
    assert_int_equal(tg_maplog_append(&l, "again\n", 6), 0);
    assert_int_equal(tg_maplog_sync(&l), 0);
    b = slurp(&n);
    assert_string_equal(b, "again\n");
    free(b);
    tg_maplog_close(&l);
    tg_maplog_close(&l); /* twice: harmless */
}

/* What a killed process appended is in the file: the pages are the kernel's. */
static void test_survives_kill(void **state)
{
    (void)state;
    unlink(path);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        tg_maplog_t l;
        if (tg_maplog_open(&l, path, true) != 0)
            _exit(1);
        char line[32];
        for (int i = 0; i < 5000; i++) {
            int n = snprintf(line, sizeof(line), "kill %d\n", i);
            if (tg_maplog_append(&l, line, (size_t)n) != 0)
                _exit(2);
        }
        if (write(ready[1], "x", 1) != 1)
            _exit(3);
        pause(); /* killed here, with nothing flushed, unmapped or closed */
        _exit(4);
    }
    char x;
    assert_int_equal(read(ready[0], &x, 1), 1);
    kill(pid, SIGKILL);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    close(ready[0]);
    close(ready[1]);
    size_t n;
    char *b = slurp(&n);
    size_t lines = 0;
    for (char *p = b; (p = strchr(p, '\n')) != NULL; p++)
        lines++;
    assert_int_equal(lines, 5000);
    assert_non_null(strstr(b, "kill 4999\n"));
    free(b);
    /* and the lock went with the process */
    tg_maplog_t l;
    assert_int_equal(tg_maplog_open(&l, path, true), 0);
    tg_maplog_close(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_reopen_cut),
        cmocka_unit_test(test_survives_kill),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
