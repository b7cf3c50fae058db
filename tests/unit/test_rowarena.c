/*
 * test_rowarena.c - gateway/core/rowarena.h: strings come back as put, packed into blocks; a block
 * is freed with its last string once the arena moved past it, whatever the order of releases; a
 * string larger than a block gets a block of its own; and a producer and a releasing thread
 * running at once (the settlement queue's shape) lose nothing and leak nothing (the sanitizer
 * build's leak check sees every block).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rowarena.h"

static void test_put_release(void **state)
{
    (void)state;
    tg_rowarena_t a;
    tg_rowarena_init(&a, 256);
    char *s[40];
    char want[64];
    for (int i = 0; i < 40; i++) {
        snprintf(want, sizeof(want), "row %d\twith\ttabs\n", i);
        s[i] = tg_rowarena_put(&a, want, strlen(want));
        assert_non_null(s[i]);
        assert_string_equal(s[i], want);
        assert_int_equal((uintptr_t)s[i] % sizeof(void *), 0);
    }
    /* packed: consecutive strings of one block are close together, and several blocks were made */
    assert_true(s[1] > s[0] && s[1] - s[0] < 64);
    int blocks = 1;
    for (int i = 1; i < 40; i++)
        blocks += !(s[i] > s[i - 1] && s[i] - s[i - 1] < 64);
    assert_true(blocks > 2);
    /* released out of order, the later ones first: nothing is read after its block is gone */
    for (int i = 39; i >= 0; i -= 2)
        tg_rowarena_release(s[i]);
    for (int i = 0; i < 40; i += 2) {
        snprintf(want, sizeof(want), "row %d\twith\ttabs\n", i);
        assert_string_equal(s[i], want);
        tg_rowarena_release(s[i]);
    }
    tg_rowarena_release(NULL);
    /* a string longer than a block */
    char big[1000];
    memset(big, 'x', sizeof(big));
    char *b = tg_rowarena_put(&a, big, sizeof(big));
    assert_non_null(b);
    assert_int_equal(strlen(b), sizeof(big));
    char *after = tg_rowarena_put(&a, "y", 1);
    assert_string_equal(after, "y");
    tg_rowarena_release(b);
    tg_rowarena_dispose(&a); /* the arena's hold goes; the block lives until "y" is released */
    assert_string_equal(after, "y");
    tg_rowarena_release(after);
    /* empty */
    tg_rowarena_init(&a, 256);
    tg_rowarena_dispose(&a);
}

/* The queue's shape: one thread puts (under a lock), another takes and releases. */
#define N_ROWS 200000
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *q[1024];
    size_t head, count;
    int done;
} Q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *consumer(void *arg)
{
    size_t *seen = arg;
    for (;;) {
        pthread_mutex_lock(&Q.mu);
        while (Q.count == 0 && !Q.done)
            pthread_cond_wait(&Q.cv, &Q.mu);
        if (Q.count == 0 && Q.done) {
            pthread_mutex_unlock(&Q.mu);
            return NULL;
        }
        char *s = Q.q[Q.head];
        Q.head = (Q.head + 1) % 1024;
        Q.count--;
        pthread_cond_broadcast(&Q.cv);
        pthread_mutex_unlock(&Q.mu);
        char want[32];
        snprintf(want, sizeof(want), "r%zu", *seen);
        if (strcmp(s, want) != 0)
            return (void *)1;
        (*seen)++;
        tg_rowarena_release(s);
    }
}

static void test_two_threads(void **state)
{
    (void)state;
    tg_rowarena_t a;
    tg_rowarena_init(&a, 4096);
    size_t seen = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, consumer, &seen), 0);
    for (size_t i = 0; i < N_ROWS; i++) {
        char s[32];
        int n = snprintf(s, sizeof(s), "r%zu", i);
        pthread_mutex_lock(&Q.mu);
        while (Q.count == 1024)
            pthread_cond_wait(&Q.cv, &Q.mu);
        char *p = tg_rowarena_put(&a, s, (size_t)n);
        assert_non_null(p);
        Q.q[(Q.head + Q.count) % 1024] = p;
        Q.count++;
        pthread_cond_broadcast(&Q.cv);
        pthread_mutex_unlock(&Q.mu);
    }
    pthread_mutex_lock(&Q.mu);
    Q.done = 1;
    pthread_cond_broadcast(&Q.cv);
    tg_rowarena_dispose(&a);
    pthread_mutex_unlock(&Q.mu);
    void *rc;
    assert_int_equal(pthread_join(t, &rc), 0);
    assert_null(rc);
    assert_int_equal(seen, N_ROWS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_release),
        cmocka_unit_test(test_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
