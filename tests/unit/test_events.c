/*
 * test_events.c - the failover event queue: bounded (a full queue drops and
 * counts, emit never blocks), flush waits for everything emitted before it,
 * failovers are counted at emit time. Without a database (conninfo NULL).
 * With a database (TG_TEST_PG or TG_TEST_PG_FILE, see pg_env.h; ctest passes the "pg" fixture's),
 * also writes to a real failover_events table (made by the embedded migrations, each test in a
 * schema of its own, dropped first and at the end) and reads the rows back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "events.h"
#include "metrics.h"
#include "pg_env.h"

static tg_failover_event_t make_event(tg_event_kind_t kind, const char *from, const char *to,
                                      const char *reason)
{
    tg_failover_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = kind;
    snprintf(ev.request_id, sizeof(ev.request_id), "req_test");
    ev.tenant_id = 42;
    snprintf(ev.chain, sizeof(ev.chain), "smart");
    snprintf(ev.from_target, sizeof(ev.from_target), "%s", from);
    snprintf(ev.to_target, sizeof(ev.to_target), "%s", to);
    snprintf(ev.reason, sizeof(ev.reason), "%s", reason);
    ev.status = 503;
    ev.added_latency_us = 1234;
    return ev;
}

static void test_kind_names(void **state)
{
    assert_string_equal(tg_event_kind_name(TG_EV_SKIPPED), "skipped");
    assert_string_equal(tg_event_kind_name(TG_EV_FAILED), "failed");
}

static void test_full_queue_drops(void **state)
{
    assert_int_equal(tg_events_start(NULL, 4), 0);
    assert_int_equal(tg_events_start(NULL, 4), TG_EINTERNAL); /* only one writer */
    tg_events_pause(true);
    double dropped0 = tg_metrics_get("tollgate_events_dropped_total", "");
    tg_failover_event_t ev = make_event(TG_EV_FAILED, "p/a", "p/b", "http_503");
    for (int i = 0; i < 6; i++)
        tg_events_emit(&ev); /* never blocks, even with the writer paused */
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.emitted, 4);
    assert_int_equal(st.queued, 4);
    assert_int_equal(st.dropped, 2);
    assert_int_equal(st.written, 0);
    assert_true(tg_metrics_get("tollgate_events_dropped_total", "") == dropped0 + 2);
    /* every failover is counted, stored or not */
    assert_true(tg_metrics_get("tollgate_failovers_total", "from=\"p/a\",to=\"p/b\",reason=\"http_503\"") >=
                6);

    tg_events_pause(false);
    tg_events_flush();
    tg_events_stats(&st);
    assert_int_equal(st.written, 4);
    assert_int_equal(st.queued, 0);
    tg_events_stop();
}

static void test_flush_many_batches(void **state)
{
    assert_int_equal(tg_events_start(NULL, 2048), 0);
    tg_failover_event_t ev = make_event(TG_EV_SKIPPED, "p/a", "", "breaker_open");
    for (int i = 0; i < 1000; i++)
        tg_events_emit(&ev);
    tg_events_flush();
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.emitted, 1000);
    assert_int_equal(st.written, 1000);
    assert_int_equal(st.dropped, 0);
    tg_events_stop();
    /* after stop, emit only counts: nothing is queued, nothing blocks */
    tg_events_emit(&ev);
    tg_events_flush();
}

/* Every hop that names a `to` is a move and counted once, the served one too (there is no separate
 * summary row to leave out); a last attempt with no `to` is no move. */
static void test_hops_counted_once(void **state)
{
    assert_int_equal(tg_events_start(NULL, 16), 0);
    const char *l = "from=\"x/1\",to=\"x/2\",reason=\"timeout_idle\"";
    double before = tg_metrics_get("tollgate_failovers_total", l);
    tg_failover_event_t ev = make_event(TG_EV_FAILED, "x/1", "x/2", "timeout_idle");
    ev.served = true;
    tg_events_emit(&ev);
    assert_true(tg_metrics_get("tollgate_failovers_total", l) == before + 1);
    ev.served = false;
    tg_events_emit(&ev);
    assert_true(tg_metrics_get("tollgate_failovers_total", l) == before + 2);
    ev = make_event(TG_EV_FAILED, "x/1", "", "timeout_idle"); /* the last attempt: no move */
    tg_events_emit(&ev);
    assert_true(tg_metrics_get("tollgate_failovers_total", "from=\"x/1\",to=\"\",reason=\"timeout_idle\"") ==
                0);
    /* what was queued is what was emitted, served flag included */
    tg_events_pause(true);
    tg_failover_event_t got;
    ev = make_event(TG_EV_SKIPPED, "x/3", "x/4", "breaker_open");
    ev.served = true;
    tg_events_stats_t st;
    tg_events_stats(&st);
    tg_events_emit(&ev);
    assert_true(tg_events_peek(st.queued, &got));
    assert_int_equal(got.kind, TG_EV_SKIPPED);
    assert_true(got.served);
    assert_string_equal(got.to_target, "x/4");
    assert_false(tg_events_peek(st.queued + 1, &got));
    tg_events_pause(false);
    tg_events_stop();
}

static void test_db_down_stop_does_not_hang(void **state)
{
    /* nothing listens there: connecting fails at once, the writer backs off holding the
     * batch, and stop gives up on it (counted as dropped) instead of hanging */
    assert_int_equal(tg_events_start("host=/nonexistent-tollgate-dir port=1 connect_timeout=1", 16), 0);
    tg_failover_event_t ev = make_event(TG_EV_FAILED, "p/a", "p/b", "http_503");
    for (int i = 0; i < 3; i++)
        tg_events_emit(&ev);
    tg_events_stop();
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.emitted, 3);
    assert_int_equal(st.written, 0);
    assert_int_equal(st.dropped, 3);
    assert_int_equal(st.queued, 0);
}

/* The label strings are cached per thread; the count must stay exact per (from, to, reason),
 * including for fields that fill their arrays (cut to fit, never read past). */
static void test_failover_count_exact(void **state)
{
    assert_int_equal(tg_events_start(NULL, 64), 0);
    const char *l1 = "from=\"c/1\",to=\"c/2\",reason=\"http_500\"";
    const char *l2 = "from=\"c/1\",to=\"c/2\",reason=\"http_502\"";
    double b1 = tg_metrics_get("tollgate_failovers_total", l1);
    double b2 = tg_metrics_get("tollgate_failovers_total", l2);
    tg_failover_event_t e1 = make_event(TG_EV_FAILED, "c/1", "c/2", "http_500");
    tg_failover_event_t e2 = make_event(TG_EV_SKIPPED, "c/1", "c/2", "http_502");
    for (int i = 0; i < 20; i++) {
        tg_events_emit(&e1);
        if (i % 2 == 0)
            tg_events_emit(&e2);
    }
    /* more distinct moves than the cache holds, then the first again */
    for (int i = 0; i < 12; i++) {
        char to[16];
        snprintf(to, sizeof(to), "d/%d", i);
        tg_failover_event_t e = make_event(TG_EV_FAILED, "c/1", to, "http_500");
        tg_events_emit(&e);
    }
    tg_events_emit(&e1);
    assert_true(tg_metrics_get("tollgate_failovers_total", l1) == b1 + 21);
    assert_true(tg_metrics_get("tollgate_failovers_total", l2) == b2 + 10);
    assert_true(tg_metrics_get("tollgate_failovers_total", "from=\"c/1\",to=\"d/11\",reason=\"http_500\"") >=
                1);

    tg_failover_event_t full = make_event(TG_EV_FAILED, "", "c/2", "http_500");
    memset(full.from_target, 'x', sizeof(full.from_target)); /* no NUL */
    tg_events_emit(&full);
    tg_events_emit(&full);
    tg_events_flush();
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.written, st.emitted);
    tg_events_stop();
}

static PGresult *exec_ok(PGconn *c, const char *sql);

static PGresult *exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    return r;
}

/* A scratch schema made by every embedded migration, in order (as `tollgate migrate` does), so
 * the writer's COPY is checked against the schema that ships and a migrated DB is untouched. */
static void migrated_schema(PGconn *c, const char *schema)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s; SET search_path = %s",
             schema, schema, schema);
    PQclear(exec_ok(c, sql));
    assert_true(tg_migrations_count >= 2);
    for (size_t i = 0; i < tg_migrations_count; i++)
        PQclear(exec_ok(c, tg_migrations[i].sql));
    PQclear(exec_ok(c, "SET search_path = DEFAULT"));
}

static void test_postgres_writer(void **state)
{
    const char *ci = tg_test_pg_or_skip();
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(exec_ok(c, "SET client_min_messages = warning"));
    migrated_schema(c, "tg_events_test");
    char conninfo[1024];
    snprintf(conninfo, sizeof(conninfo),
             "%s application_name=tg_events_test_writer options='-c search_path=tg_events_test'", ci);
    assert_int_equal(tg_events_start(conninfo, 1024), 0);
    tg_failover_event_t ev = make_event(TG_EV_FAILED, "p/a", "p/b", "http_503");
    for (int i = 0; i < 300; i++) /* more than one batch */
        tg_events_emit(&ev);
    ev = make_event(TG_EV_SKIPPED, "p/b", "", "breaker_open");
    ev.tenant_id = 0;
    ev.status = 0;
    ev.at_unix_ms = 1700000000123;
    tg_events_emit(&ev);
    tg_events_flush();
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.written, 301);
    assert_int_equal(st.dropped, 0);

    PGresult *r =
        exec_ok(c, "SELECT count(*) FROM tg_events_test.failover_events WHERE kind = 'failed' AND "
                   "tenant_id = 42 AND status = 503 AND to_target = 'p/b' AND added_latency_us = 1234 "
                   "AND request_id = 'req_test' AND chain = 'smart' AND NOT served");
    assert_string_equal(PQgetvalue(r, 0, 0), "300");
    PQclear(r);
    r = exec_ok(c, "SELECT tenant_id IS NULL, status IS NULL, to_target IS NULL, "
                   "(extract(epoch from at) * 1000)::bigint FROM tg_events_test.failover_events "
                   "WHERE kind = 'skipped'");
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "t");
    assert_string_equal(PQgetvalue(r, 0, 1), "t");
    assert_string_equal(PQgetvalue(r, 0, 2), "t");
    assert_string_equal(PQgetvalue(r, 0, 3), "1700000000123");
    PQclear(r);

    /* the writer's connection dies: it reconnects (with back-off) and the batch is kept */
    r = exec_ok(c, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE application_name = 'tg_events_test_writer') t");
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    ev = make_event(TG_EV_SKIPPED, "p/a", "p/c", "breaker_open");
    ev.status = 0;
    ev.added_latency_us = 0;
    ev.served = true; /* the hop into the target that served: the fallback event */
    for (int i = 0; i < 5; i++)
        tg_events_emit(&ev);
    tg_events_flush();
    tg_events_stats(&st);
    assert_int_equal(st.written, 306);
    assert_int_equal(st.dropped, 0);
    r = exec_ok(c,
                "SELECT count(*) FILTER (WHERE served), count(*) FILTER (WHERE served AND kind = 'skipped' "
                "AND from_target = 'p/a' AND to_target = 'p/c'), count(*) FILTER (WHERE kind = 'fallback') "
                "FROM tg_events_test.failover_events");
    assert_string_equal(PQgetvalue(r, 0, 0), "5");
    assert_string_equal(PQgetvalue(r, 0, 1), "5");
    assert_string_equal(PQgetvalue(r, 0, 2), "0");
    PQclear(r);

    tg_events_stop();
    PQclear(exec_ok(c, "DROP SCHEMA tg_events_test CASCADE"));
    PQfinish(c);
}

/* COPY text format: tabs, newlines, carriage returns and backslashes in any text field survive
 * as themselves, "\\N" stays a string, an empty optional field is NULL, bytes that are not UTF-8
 * become '?' instead of failing the batch, and a queue deeper than one COPY takes several. */
static void test_postgres_copy_text(void **state)
{
    const char *ci = tg_test_pg_or_skip();
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(exec_ok(c, "SET client_min_messages = warning"));
    migrated_schema(c, "tg_events_copy");
    char conninfo[1024];
    snprintf(conninfo, sizeof(conninfo), "%s options='-c search_path=tg_events_copy'", ci);
    assert_int_equal(tg_events_start(conninfo, 16384), 0);

    tg_failover_event_t ev = make_event(TG_EV_FAILED, "p/a\tb", "q/\\N", "why\nnot\r");
    snprintf(ev.request_id, sizeof(ev.request_id), "r\\1\t2");
    snprintf(ev.chain, sizeof(ev.chain), "caf\xc3\xa9 \xff\xc3 end"); /* é, then two broken bytes */
    ev.at_unix_ms = 1700000000007;
    ev.added_latency_us = 0;
    tg_events_emit(&ev);
    ev = make_event(TG_EV_SKIPPED, "p/b", "", "breaker_open");
    ev.request_id[0] = '\0';
    ev.chain[0] = '\0';
    tg_events_emit(&ev);
    tg_events_flush();

    PGresult *r = exec_ok(c, "SELECT request_id, chain, from_target, to_target, reason, "
                             "(extract(epoch from at) * 1000)::bigint, added_latency_us "
                             "FROM tg_events_copy.failover_events WHERE kind = 'failed'");
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "r\\1\t2");
    assert_string_equal(PQgetvalue(r, 0, 1), "caf\xc3\xa9 ?? end");
    assert_string_equal(PQgetvalue(r, 0, 2), "p/a\tb");
    assert_string_equal(PQgetvalue(r, 0, 3), "q/\\N");
    assert_string_equal(PQgetvalue(r, 0, 4), "why\nnot\r");
    assert_string_equal(PQgetvalue(r, 0, 5), "1700000000007");
    assert_string_equal(PQgetvalue(r, 0, 6), "0");
    PQclear(r);
    r = exec_ok(c, "SELECT request_id IS NULL, chain IS NULL, to_target IS NULL, from_target "
                   "FROM tg_events_copy.failover_events WHERE kind = 'skipped'");
    assert_int_equal(PQntuples(r), 1);
    assert_string_equal(PQgetvalue(r, 0, 0), "t");
    assert_string_equal(PQgetvalue(r, 0, 1), "t");
    assert_string_equal(PQgetvalue(r, 0, 2), "t");
    assert_string_equal(PQgetvalue(r, 0, 3), "p/b");
    PQclear(r);

    /* a deep queue (the writer paused while it fills): more rows than one COPY holds */
    tg_events_pause(true);
    ev = make_event(TG_EV_FAILED, "p/a", "p/c", "http_503");
    for (int i = 0; i < 9000; i++) {
        ev.added_latency_us = (uint64_t)i;
        ev.served = i % 3 == 0;
        tg_events_emit(&ev);
    }
    tg_events_pause(false);
    tg_events_flush();
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.written, 9002);
    assert_int_equal(st.dropped, 0);
    r = exec_ok(
        c, "SELECT count(*), count(DISTINCT added_latency_us), sum(added_latency_us), "
           "count(*) FILTER (WHERE served), count(*) FILTER (WHERE served <> (added_latency_us % 3 = 0)) "
           "FROM tg_events_copy.failover_events WHERE to_target = 'p/c'");
    assert_string_equal(PQgetvalue(r, 0, 0), "9000");
    assert_string_equal(PQgetvalue(r, 0, 1), "9000");
    assert_string_equal(PQgetvalue(r, 0, 2), "40495500");
    assert_string_equal(PQgetvalue(r, 0, 3), "3000");
    assert_string_equal(PQgetvalue(r, 0, 4), "0");
    PQclear(r);

    tg_events_stop();
    PQclear(exec_ok(c, "DROP SCHEMA tg_events_copy CASCADE"));
    PQfinish(c);
}

/* A COPY the server rejects (here: no such table) would never succeed: its batch is dropped and
 * counted, and the writer goes on (flush returns, stop does not hang). */
static void test_postgres_rejected_batch_dropped(void **state)
{
    const char *ci = tg_test_pg_or_skip();
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(exec_ok(c, "SET client_min_messages = warning"));
    PQclear(exec_ok(c, "DROP SCHEMA IF EXISTS tg_events_none CASCADE; CREATE SCHEMA tg_events_none"));
    char conninfo[1024];
    snprintf(conninfo, sizeof(conninfo), "%s options='-c search_path=tg_events_none'", ci);
    double dropped0 = tg_metrics_get("tollgate_events_dropped_total", "");
    assert_int_equal(tg_events_start(conninfo, 64), 0);
    tg_failover_event_t ev = make_event(TG_EV_FAILED, "p/a", "p/b", "http_503");
    for (int i = 0; i < 3; i++)
        tg_events_emit(&ev);
    tg_events_flush();
    tg_events_stats_t st;
    tg_events_stats(&st);
    assert_int_equal(st.emitted, 3);
    assert_int_equal(st.written, 0);
    assert_int_equal(st.dropped, 3);
    assert_true(tg_metrics_get("tollgate_events_dropped_total", "") == dropped0 + 3);
    tg_events_stop();
    PQclear(exec_ok(c, "DROP SCHEMA tg_events_none CASCADE"));
    PQfinish(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_full_queue_drops),
        cmocka_unit_test(test_flush_many_batches),
        cmocka_unit_test(test_hops_counted_once),
        cmocka_unit_test(test_db_down_stop_does_not_hang),
        cmocka_unit_test(test_failover_count_exact),
        cmocka_unit_test(test_postgres_writer),
        cmocka_unit_test(test_postgres_copy_text),
        cmocka_unit_test(test_postgres_rejected_batch_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
