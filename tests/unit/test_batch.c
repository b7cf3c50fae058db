/*
 * test_batch.c - billing/batch.h: the per-lease sums of a fresh settlement batch (grouped and
 * ordered by tenant then lease, counting only charged rows, the earliest paying time kept), its
 * rollup rows (per tenant, UTC day and model), the rows regrouped by tenant, the rows as
 * usage_records COPY rows with their charge keys, the array literals, and the refusal of every row
 * that is not a whole stage row as the gateway writes it (the writer then sends the batch through
 * the stage).
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

/* A stage row as gateway/src/ledger.c writes it, of `model` (COPY text) and `status`; charge and
 * lease as text (lease may be \N); cost = charge, 12 input tokens (2 cached), 20 output. */
static char *rowm(int64_t tenant, const char *req, const char *at, const char *charge, const char *lease,
                  const char *model, int status)
{
    char buf[512];
    snprintf(buf, sizeof(buf),
             "%" PRId64 "\t%s\t%s\t7\t%s\tsim\tf\t12\t20\t2\tf\t3\t150000\t600000\t75000\t0\tt\t%s\t%s\t%s"
             "\t4\t1\t%d\t\\N\n",
             tenant, req, at, model, charge, charge, lease, status);
    return strdup(buf);
}

static char *row(int64_t tenant, const char *req, const char *at, const char *charge, const char *lease)
{
    return rowm(tenant, req, at, charge, lease, "gpt-4o-mini", 200);
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
    tg_batch_t bt;
    assert_int_equal(tg_batch_prepare(&bt, r, 7), 0);
    tg_batch_lease_t *l = bt.leases;
    size_t n = bt.n_leases;
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
    tg_batch_dispose(&bt);
    assert_null(bt.leases);

    /* nothing charged: no lease; nothing at all: nothing */
    char *free_one = row(2, "b9", "2026-12-05T09:59:59.000000Z", "0", "\\N");
    assert_int_equal(tg_batch_prepare(&bt, &free_one, 1), 0);
    assert_int_equal(bt.n_leases, 0);
    assert_int_equal(bt.n_days, 1);
    tg_batch_dispose(&bt);
    free(free_one);
    assert_int_equal(tg_batch_prepare(&bt, NULL, 0), 0);
    assert_int_equal(bt.n_leases + bt.n_days, 0);
    assert_null(bt.leases);
    free_rows(r, 7);
}

/* The rollup rows: one per tenant, UTC day and model (the model as the row has it, escapes and
 * all), every record counted, errors by status, tokens, cost and charges summed; and their COPY
 * text. */
static void test_rollup(void **state)
{
    (void)state;
    char *r[7] = {
        rowm(9, "a1", "2026-12-05T23:59:59.999999Z", "5", "40", "m-a", 200),
        rowm(9, "a2", "2026-12-06T00:00:00.000000Z", "6", "40", "m-a", 200),  /* the next UTC day */
        rowm(9, "a3", "2026-12-05T10:00:00.000000Z", "0", "\\N", "m-a", 502), /* an error, free */
        rowm(9, "a4", "2026-12-05T10:00:01.000000Z", "3", "40", "m\\\\b", 429),
        rowm(2, "b1", "2026-12-05T10:00:02.000000Z", "7", "41", "m-a", 200), /* another tenant */
        rowm(9, "a5", "2026-12-05T10:00:03.000000Z", "4", "40", "m-a", 400),
        rowm(9, "a6", "2026-12-05T10:00:04.000000Z", "2", "40", "m-a ", 200), /* another model */
    };
    tg_batch_t bt;
    assert_int_equal(tg_batch_prepare(&bt, r, 7), 0);
    assert_int_equal(bt.n_days, 5);
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    for (size_t i = 0; i < bt.n_days; i++)
        assert_int_equal(tg_batch_day_row(&b, &bt.days[i]), 0);
    /* first seen order; requests, errors, input, output, cached, cost, charged */
    assert_string_equal(b.data, "9\t2026-12-05\tm-a\t3\t2\t36\t60\t6\t9\t9\n"
                                "9\t2026-12-06\tm-a\t1\t0\t12\t20\t2\t6\t6\n"
                                "9\t2026-12-05\tm\\\\b\t1\t1\t12\t20\t2\t3\t3\n"
                                "2\t2026-12-05\tm-a\t1\t0\t12\t20\t2\t7\t7\n"
                                "9\t2026-12-05\tm-a \t1\t0\t12\t20\t2\t2\t2\n");
    /* a row that does not fit leaves the buffer as it was */
    tg_buf_t small;
    tg_buf_init(&small, 16);
    assert_int_equal(tg_batch_day_row(&small, &bt.days[0]), TG_ETOO_LARGE);
    assert_int_equal(small.len, 0);
    tg_buf_dispose(&small);
    tg_buf_dispose(&b);
    tg_batch_dispose(&bt);
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

/* Anything but a whole stage row as the gateway writes it is refused, and nothing is appended. */
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
        row(9, "a1", "2026-12-05T10:00:02+01", "5", "40"),         /* not UTC: its day is not its text's */
        row(9, "a1", "2026/12/05T10:00:02.000000Z", "5", "40"),    /* not the gateway's form */
        rowm(9, "a1", "2026-12-05T10:00:02.000000Z", "5", "40", "\\N", 200), /* no model */
        row(9, "a1", "2026-12-05T10:00:02.000000Z", "5", "40"),              /* torn: no newline (below) */
    };
    size_t nbad = sizeof(bad) / sizeof(bad[0]);
    bad[nbad - 1][strlen(bad[nbad - 1]) - 1] = '\0';
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    for (size_t i = 0; i < nbad; i++) {
        tg_batch_t bt;
        memset(&bt, 0x5a, sizeof(bt)); /* overwritten: empty */
        assert_int_equal(tg_batch_prepare(&bt, &bad[i], 1), TG_EINVALID_REQUEST);
        assert_null(bt.leases);
        assert_null(bt.days);
        assert_int_equal(bt.n_leases + bt.n_days, 0);
        if (i == 0 || i == 1 || i == 2 || i == 4 || i == 5 || i == nbad - 1) /* the rest: COPY's to refuse */
            assert_int_equal(tg_batch_copy_row(&b, bad[i], "gw/1"), TG_EINVALID_REQUEST);
        assert_int_equal(b.len, 0);
    }
    /* charges that overflow a sum are refused, not wrapped */
    char *big[2] = {row(9, "a1", "2026-12-05T10:00:02.000000Z", "900000000000000000", "40"),
                    row(9, "a2", "2026-12-05T10:00:02.000000Z", "900000000000000000", "40")};
    char *more[12];
    for (int i = 0; i < 12; i++)
        more[i] = big[i % 2];
    tg_batch_t bt;
    assert_int_equal(tg_batch_prepare(&bt, more, 12), TG_EINVALID_REQUEST);
    assert_null(bt.leases);
    free_rows(big, 2);
    free_rows(bad, nbad);
    tg_buf_dispose(&b);
}

/* Rows regrouped by tenant (tenants in the order first seen), each tenant's in the order they
 * came; a batch with a row that is not a stage row is refused. */
static void test_order(void **state)
{
    (void)state;
    char *r[6] = {
        row(9, "a2", "2026-12-05T10:00:02.000000Z", "5", "40"),
        row(2, "b2", "2026-12-05T10:00:03.000000Z", "0", "\\N"),
        row(5, "c1", "2026-12-05T10:00:03.000000Z", "1", "50"),
        row(9, "a1", "2026-12-05T10:00:01.000000Z", "5", "40"),
        row(2, "b1", "2026-12-05T10:00:00.000000Z", "7", "41"),
        row(9, "a3", "2026-12-05T10:00:02.000000Z", "1", "40"),
    };
    char *orig[6];
    memcpy(orig, r, sizeof(r));
    tg_batch_t bt;
    assert_int_equal(tg_batch_prepare(&bt, r, 6), 0);
    char *want[6] = {orig[0], orig[3], orig[5], orig[1], orig[4], orig[2]};
    for (int i = 0; i < 6; i++)
        assert_ptr_equal(r[i], want[i]);
    tg_batch_dispose(&bt);
    char *one = r[0];
    assert_int_equal(tg_batch_prepare(&bt, r, 1), 0);
    assert_ptr_equal(r[0], one);
    tg_batch_dispose(&bt);
    char *with_bad[2] = {r[0], "not a row\n"};
    assert_int_equal(tg_batch_prepare(&bt, with_bad, 2), TG_EINVALID_REQUEST);
    free_rows(r, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums),    cmocka_unit_test(test_rollup), cmocka_unit_test(test_copy_row),
        cmocka_unit_test(test_refused), cmocka_unit_test(test_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
