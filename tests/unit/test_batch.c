/*
 * test_batch.c - billing/batch.h: the per-lease sums of a fresh settlement batch (grouped and
 * ordered by tenant then lease, counting only charged rows, the earliest paying time kept), the
 * rows as usage_records COPY rows with their charge keys, the array literals, and the refusal of
 * every row that is not a whole stage row (the writer then sends the batch through the stage).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

/* A stage row as gateway/src/ledger.c writes it; charge and lease as text (lease may be \N). */
static char *row(int64_t tenant, const char *req, const char *at, const char *charge, const char *lease)
{
    char buf[512];
    snprintf(buf, sizeof(buf),
             "%" PRId64
             "\t%s\t%s\t7\tgpt-4o-mini\tsim\tf\t12\t20\t0\tf\t3\t150000\t600000\t75000\t0\tt\t%s\t%s\t%s"
             "\t4\t1\t200\t\\N\n",
             tenant, req, at, charge, charge, lease);
    return strdup(buf);
}

static void free_rows(char **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(r[i]);
}

static void test_sums(void **state)
{
    (void)state;
    char *r[7] = {
        row(9, "a1", "2026-12-05T10:00:02.000000Z", "5", "40"),
        row(2, "b1", "2026-12-05T10:00:03.000000Z", "7", "41"),
        row(9, "a2", "2026-12-05T10:00:01.000000Z", "6", "40"),
        row(9, "a3", "2026-12-05T10:00:00.000000Z", "0", "40"),  /* no charge: not counted */
        row(9, "a4", "2026-12-05T10:00:00.500000Z", "3", "39"),  /* an older lease of the same tenant */
        row(2, "b2", "2026-12-05T09:59:59.000000Z", "0", "\\N"), /* free, no lease */
        row(2, "b3", "2026-12-05T10:00:04.000000Z", "1", "41"),
    };
    tg_batch_lease_t *l = NULL;
    size_t n = 99;
    assert_int_equal(tg_batch_leases(r, 7, &l, &n), 0);
    assert_int_equal(n, 3);
    /* (tenant, lease) order: the order the charge entries lock wallets in */
    assert_int_equal(l[0].tenant_id, 2);
    assert_int_equal(l[0].lease_id, 41);
    assert_int_equal(l[0].sum, 8);
    assert_int_equal(l[0].paying, 2);
    assert_string_equal(l[0].first_at, "2026-12-05T10:00:03.000000Z");
    assert_int_equal(l[1].tenant_id, 9);
    assert_int_equal(l[1].lease_id, 39);
    assert_int_equal(l[1].sum, 3);
    assert_int_equal(l[1].paying, 1);
    assert_int_equal(l[2].lease_id, 40);
    assert_int_equal(l[2].sum, 11);
    assert_int_equal(l[2].paying, 2);
    /* the earliest paying record, not the earliest record (a3 paid nothing) */
    assert_string_equal(l[2].first_at, "2026-12-05T10:00:01.000000Z");

    tg_buf_t b;
    tg_buf_init(&b, 4096);
    assert_int_equal(tg_batch_array(&b, l, n, TG_BATCH_TENANT), 0);
    assert_int_equal(tg_batch_array(&b, l, n, TG_BATCH_LEASE), 0);
    assert_int_equal(tg_batch_array(&b, l, n, TG_BATCH_SUM), 0);
    assert_int_equal(tg_batch_array(&b, l, n, TG_BATCH_PAYING), 0);
    assert_int_equal(tg_batch_array(&b, l, n, TG_BATCH_FIRST_AT), 0);
    assert_string_equal(b.data, "{2,9,9}{41,39,40}{8,3,11}{2,1,2}"
                                "{\"2026-12-05T10:00:03.000000Z\",\"2026-12-05T10:00:00.500000Z\","
                                "\"2026-12-05T10:00:01.000000Z\"}");
    tg_buf_reset(&b);
    assert_int_equal(tg_batch_array(&b, NULL, 0, TG_BATCH_SUM), 0);
    assert_string_equal(b.data, "{}");
    tg_buf_dispose(&b);
    free(l);

    /* nothing charged: no lease, no allocation */
    assert_int_equal(tg_batch_leases(r + 3, 1, &l, &n), 0);
    assert_int_equal(n, 0);
    assert_null(l);
    assert_int_equal(tg_batch_leases(NULL, 0, &l, &n), 0);
    assert_int_equal(n, 0);
    free_rows(r, 7);
}

static void test_copy_row(void **state)
{
    (void)state;
    char *paid = row(9, "a1", "2026-12-05T10:00:02.000000Z", "5", "40");
    char *free_ = row(9, "a2", "2026-12-05T10:00:02.000000Z", "0", "40");
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    assert_int_equal(tg_batch_copy_row(&b, paid, "gw-1/17"), 0);
    size_t first = b.len;
    /* the row's 24 fields, then the key of its lease's charge entry */
    assert_int_equal(first, strlen(paid) + strlen("\tusage_charge/gw-1/17/40"));
    assert_memory_equal(b.data, paid, strlen(paid) - 1);
    assert_string_equal(b.data + strlen(paid) - 1, "\tusage_charge/gw-1/17/40\n");
    assert_int_equal(tg_batch_copy_row(&b, free_, "gw-1/17"), 0);
    assert_string_equal(b.data + first + strlen(free_) - 1, "\t\\N\n"); /* no charge, no key */

    /* a row that does not fit leaves the buffer as it was */
    tg_buf_t small;
    tg_buf_init(&small, strlen(paid) + 8); /* the row fits, its key does not */
    assert_int_equal(tg_batch_copy_row(&small, paid, "gw-1/17"), TG_ETOO_LARGE);
    assert_int_equal(small.len, 0);
    tg_buf_dispose(&small);
    tg_buf_dispose(&b);
    free(paid);
    free(free_);
}

/* Anything but a whole stage row is refused, by both calls, and nothing is appended. */
static void test_refused(void **state)
{
    (void)state;
    char *bad[] = {
        row(9, "a1", "2026-12-05T10:00:02.000000Z", "5", "\\N"),   /* a charge with no lease */
        row(9, "a1", "2026-12-05T10:00:02.000000Z", "5x", "40"),   /* not a number */
        row(9, "a1", "2026-12-05T10:00:02.000000Z", "-5", "40"),   /* not a charge */
        row(9, "a1", "2026-12-05T10:00:02\"},{\"Z", "5", "40"),    /* a time that would need escaping */
        row(9, "a1", "2026-12-05T10:00:02.000000Z", "5", "40\t1"), /* a field too many */
        strdup("9\ta1\t2026-12-05T10:00:02.000000Z\n"),            /* fields missing */
        row(9, "a1", "2026-12-05T10:00:02.000000Z", "5", "40"),    /* torn: no newline (below) */
    };
    size_t nbad = sizeof(bad) / sizeof(bad[0]);
    bad[nbad - 1][strlen(bad[nbad - 1]) - 1] = '\0';
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    for (size_t i = 0; i < nbad; i++) {
        tg_batch_lease_t *l = (tg_batch_lease_t *)&b; /* overwritten: NULL */
        size_t n = 5;
        assert_int_equal(tg_batch_leases(&bad[i], 1, &l, &n), TG_EINVALID_REQUEST);
        assert_null(l);
        assert_int_equal(n, 0);
        if (i != 3) /* its time is the COPY parser's to refuse */
            assert_int_equal(tg_batch_copy_row(&b, bad[i], "gw/1"), TG_EINVALID_REQUEST);
        assert_int_equal(b.len, 0);
    }
    /* charges that overflow a sum are refused, not wrapped */
    char *big[2] = {row(9, "a1", "2026-12-05T10:00:02.000000Z", "900000000000000000", "40"),
                    row(9, "a2", "2026-12-05T10:00:02.000000Z", "900000000000000000", "40")};
    char *more[12];
    for (int i = 0; i < 12; i++)
        more[i] = big[i % 2];
    tg_batch_lease_t *l = NULL;
    size_t n = 0;
    assert_int_equal(tg_batch_leases(more, 12, &l, &n), TG_EINVALID_REQUEST);
    assert_null(l);
    free_rows(big, 2);
    free_rows(bad, nbad);
    tg_buf_dispose(&b);
}

/* Rows ordered by tenant, then time, whatever order they came in; a row that is not a stage row
 * goes last; equal keys keep their order. */
static void test_sort(void **state)
{
    (void)state;
    char *r[6] = {
        row(9, "a2", "2026-12-05T10:00:02.000000Z", "5", "40"),
        row(2, "b2", "2026-12-05T10:00:03.000000Z", "0", "\\N"),
        strdup("not a row\n"),
        row(9, "a1", "2026-12-05T10:00:01.000000Z", "5", "40"),
        row(2, "b1", "2026-12-05T10:00:00.000000Z", "7", "41"),
        row(9, "a3", "2026-12-05T10:00:02.000000Z", "1", "40"), /* same time as a2: after it */
    };
    char *orig[6];
    memcpy(orig, r, sizeof(r));
    assert_int_equal(tg_batch_sort(r, 6), 0);
    char *want[6] = {orig[4], orig[1], orig[3], orig[0], orig[5], orig[2]};
    for (int i = 0; i < 6; i++)
        assert_ptr_equal(r[i], want[i]);
    assert_int_equal(tg_batch_sort(r, 1), 0);
    assert_int_equal(tg_batch_sort(NULL, 0), 0);
    free_rows(r, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums),
        cmocka_unit_test(test_copy_row),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_sort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
