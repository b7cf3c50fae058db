/*
 * test_metrics.c - the Prometheus text format: HELP/TYPE lines, counters,
 * gauges, cumulative histogram buckets, label escaping, render hooks, and no
 * lost increments under concurrency.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "metrics.h"

static char *render(void)
{
    static tg_buf_t out;
    tg_buf_dispose(&out);
    tg_buf_init(&out, 1 << 20);
    assert_int_equal(tg_metrics_render(&out), 0);
    return out.data;
}

static void test_counter_and_gauge(void **state)
{
    tg_metrics_register("t_requests_total", "Requests by route and status", TG_METRIC_COUNTER);
    tg_metrics_add("t_requests_total", "route=\"chat\",status=\"200\"", 1);
    tg_metrics_add("t_requests_total", "route=\"chat\",status=\"200\"", 2);
    tg_metrics_add("t_requests_total", "route=\"chat\",status=\"503\"", 1);
    tg_metrics_register("t_active", "Active things", TG_METRIC_GAUGE);
    tg_metrics_set("t_active", "", 5);
    tg_metrics_set("t_active", "", 2.5);
    const char *txt = render();
    assert_non_null(strstr(txt, "# HELP t_requests_total Requests by route and status\n"
                                "# TYPE t_requests_total counter\n"
                                "t_requests_total{route=\"chat\",status=\"200\"} 3\n"
                                "t_requests_total{route=\"chat\",status=\"503\"} 1\n"));
    assert_non_null(strstr(txt, "# HELP t_active Active things\n# TYPE t_active gauge\nt_active 2.5\n"));
    assert_true(tg_metrics_get("t_requests_total", "route=\"chat\",status=\"200\"") == 3);
    assert_true(tg_metrics_get("t_nothing", "") == 0);
}

static void test_histogram(void **state)
{
    tg_metrics_register("t_dur_seconds", "Durations", TG_METRIC_HISTOGRAM);
    tg_metrics_observe("t_dur_seconds", "target=\"x\"", 0.0005); /* <= 0.001 */
    tg_metrics_observe("t_dur_seconds", "target=\"x\"", 0.001);  /* le is inclusive */
    tg_metrics_observe("t_dur_seconds", "target=\"x\"", 0.2);    /* <= 0.25 */
    tg_metrics_observe("t_dur_seconds", "target=\"x\"", 100);    /* only +Inf */
    const char *txt = render();
    assert_non_null(strstr(txt, "# TYPE t_dur_seconds histogram\n"
                                "t_dur_seconds_bucket{target=\"x\",le=\"0.001\"} 2\n"
                                "t_dur_seconds_bucket{target=\"x\",le=\"0.0025\"} 2\n"));
    assert_non_null(strstr(txt, "t_dur_seconds_bucket{target=\"x\",le=\"0.1\"} 2\n"
                                "t_dur_seconds_bucket{target=\"x\",le=\"0.25\"} 3\n"));
    assert_non_null(strstr(txt, "t_dur_seconds_bucket{target=\"x\",le=\"60\"} 3\n"
                                "t_dur_seconds_bucket{target=\"x\",le=\"+Inf\"} 4\n"
                                "t_dur_seconds_sum{target=\"x\"} 100.2015"));
    assert_non_null(strstr(txt, "\nt_dur_seconds_count{target=\"x\"} 4\n"));
    assert_true(tg_metrics_get("t_dur_seconds", "target=\"x\"") == 4);

    /* a series without labels */
    tg_metrics_observe("t_dur_seconds", "", 1);
    txt = render();
    assert_non_null(strstr(txt, "t_dur_seconds_bucket{le=\"1\"} 1\n"));
    assert_non_null(strstr(txt, "t_dur_seconds_sum 1\nt_dur_seconds_count 1\n"));
}

static void test_label_escaping(void **state)
{
    char l[128] = "";
    tg_metrics_label(l, sizeof(l), "from", "a\"b\\c\nd");
    assert_string_equal(l, "from=\"a\\\"b\\\\c\\nd\"");
    tg_metrics_label(l, sizeof(l), "to", "x");
    assert_string_equal(l, "from=\"a\\\"b\\\\c\\nd\",to=\"x\"");
    /* a label that does not fit is left out whole */
    char s[16] = "";
    tg_metrics_label(s, sizeof(s), "k", "12345");
    assert_string_equal(s, "k=\"12345\"");
    tg_metrics_label(s, sizeof(s), "k2", "1234567");
    assert_string_equal(s, "k=\"12345\"");
    /* HELP text newlines are escaped */
    tg_metrics_register("t_esc", "line one\nline two", TG_METRIC_COUNTER);
    tg_metrics_add("t_esc", l, 1);
    const char *txt = render();
    assert_non_null(strstr(txt, "# HELP t_esc line one\\nline two\n"));
    assert_non_null(strstr(txt, "t_esc{from=\"a\\\"b\\\\c\\nd\",to=\"x\"} 1\n"));
}

static void test_implicit_family_then_register(void **state)
{
    tg_metrics_add("t_implicit_total", "", 1);
    const char *txt = render();
    assert_non_null(strstr(txt, "# TYPE t_implicit_total counter\nt_implicit_total 1\n"));
    assert_null(strstr(txt, "# HELP t_implicit_total"));
    tg_metrics_register("t_implicit_total", "Now with help", TG_METRIC_COUNTER);
    txt = render();
    assert_non_null(strstr(txt, "# HELP t_implicit_total Now with help\n# TYPE t_implicit_total counter\n"));
}

static void set_hook_gauge(void *ud)
{
    (*(int *)ud)++;
    tg_metrics_set("t_hooked", "", (double)*(int *)ud);
}

static void test_render_hook(void **state)
{
    static int calls;
    tg_metrics_register("t_hooked", "Set at render time", TG_METRIC_GAUGE);
    tg_metrics_on_render(set_hook_gauge, &calls);
    const char *txt = render();
    assert_int_equal(calls, 1);
    assert_non_null(strstr(txt, "t_hooked 1\n"));
    txt = render();
    assert_non_null(strstr(txt, "t_hooked 2\n"));
}

#define NTH  8
#define NADD 20000

static void *adder(void *arg)
{
    for (int i = 0; i < NADD; i++) {
        tg_metrics_add("t_conc_total", "k=\"shared\"", 1);
        char l[32] = "";
        tg_metrics_label(l, sizeof(l), "k", (i & 1) ? "odd" : "even"); /* creation races too */
        tg_metrics_add("t_conc_total", l, 0.5);
        tg_metrics_observe("t_conc_seconds", "", 0.01);
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    pthread_t th[NTH];
    for (int i = 0; i < NTH; i++)
        assert_int_equal(pthread_create(&th[i], NULL, adder, NULL), 0);
    for (int i = 0; i < NTH; i++)
        pthread_join(th[i], NULL);
    assert_true(tg_metrics_get("t_conc_total", "k=\"shared\"") == NTH * NADD);
    assert_true(tg_metrics_get("t_conc_total", "k=\"odd\"") == NTH * NADD / 4);
    assert_true(tg_metrics_get("t_conc_seconds", "") == NTH * NADD);
    const char *txt = render();
    assert_non_null(strstr(txt, "t_conc_seconds_bucket{le=\"0.01\"} 160000\n"));

    tg_metrics_reset();
    assert_true(tg_metrics_get("t_conc_total", "k=\"shared\"") == 0);
    txt = render();
    assert_non_null(strstr(txt, "t_conc_seconds_count 0\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_and_gauge), cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_label_escaping),    cmocka_unit_test(test_implicit_family_then_register),
        cmocka_unit_test(test_render_hook),       cmocka_unit_test(test_concurrent_updates),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    return rc;
}
