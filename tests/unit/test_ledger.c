/*
 * test_ledger.c - the credit ledger in PostgreSQL (migration 0007) through billing's C calls:
 * `tollgate migrate` applies it; wallets open with their trial credits once; top-ups are idempotent
 * on their key (same amount: the same entry; another amount: refused); the price snapshot answers
 * for past times; the C cost and the SQL cost agree on a sweep; leases, group settlements (replayed,
 * late after an expiry, per-request reservations) keep every invariant; the ledger refuses updates,
 * deletes and overspends; tollgate_ledger_check() finds nothing, then finds each corruption made.
 *
 * Needs a PostgreSQL conninfo in TG_TEST_PG or TG_TEST_PG_FILE (pg_env.h; ctest passes the "pg"
 * fixture's); skipped without one. Runs in a schema of its own, made afresh.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"
#include "cli.h"
#include "cost.h"
#include "lease.h"
#include "pg_env.h"
#include "prices.h"
#include "wallet.h"

#define SCHEMA "tg_ledger_test"

static PGconn *db;
static int64_t tenant_a, tenant_b, tenant_c;

/* Runs tg_cli_main with stdout captured into out. */
static int run_cli(char **argv, int argc, char *out, size_t cap)
{
    char path[] = "/tmp/tg_test_cli_outXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    int rc = tg_cli_main(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    ssize_t n = pread(fd, out, cap - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static PGresult *q(const char *sql)
{
    PGresult *r = PQexec(db, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    return r;
}

static void exec_ok(const char *sql)
{
    PQclear(q(sql));
}

/* The SQLSTATE a statement fails with ("" when it succeeds). */
static const char *exec_fails(const char *sql, char state[6])
{
    PGresult *r = PQexec(db, sql);
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", s != NULL ? s : "");
    PQclear(r);
    return state;
}

static int64_t q_i64(const char *sql)
{
    PGresult *r = q(sql);
    assert_int_equal(PQntuples(r), 1);
    int64_t v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static int64_t new_tenant(const char *name)
{
    char sql[200];
    snprintf(sql, sizeof(sql), "INSERT INTO tenants (name) VALUES ('%s') RETURNING id", name);
    return q_i64(sql);
}

/* Migrates a fresh schema with `tollgate migrate` (once per run). */
static void schema(void)
{
    const char *pg = tg_test_pg_or_skip();
    if (db != NULL)
        return;
    PGconn *admin = PQconnectdb(pg);
    assert_int_equal(PQstatus(admin), CONNECTION_OK);
    PGresult *res = PQexec(admin, "SET client_min_messages = warning; DROP SCHEMA IF EXISTS " SCHEMA
                                  " CASCADE; CREATE SCHEMA " SCHEMA);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    PQfinish(admin);
    char conninfo[1200];
    snprintf(conninfo, sizeof(conninfo), "%s options='-c search_path=" SCHEMA "'", pg);

    char cfg_path[] = "/tmp/tg_test_ledger_cfgXXXXXX";
    int fd = mkstemp(cfg_path);
    assert_true(fd >= 0);
    setenv("TG_TEST_LEDGER_PEPPER", "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf", 1);
    json_t *cfg =
        json_pack("{s:{s:s},s:{s:s},s:{s:I}}", "database", "url", conninfo, "secrets", "key_pepper_env",
                  "TG_TEST_LEDGER_PEPPER", "billing", "trial_credits", (json_int_t)5000000);
    char *text = json_dumps(cfg, 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    free(text);
    json_decref(cfg);
    char out[256];
    char *migrate[] = {"tollgate", "migrate", "-c", cfg_path};
    assert_int_equal(run_cli(migrate, 4, out, sizeof(out)), 0);
    assert_int_equal(run_cli(migrate, 4, out, sizeof(out)), 0); /* nothing left to apply */
    /* the config's trial credits are what a tenant creation passes to tg_wallet_open */
    tg_config_t *c = tg_cli_load_config(cfg_path);
    assert_non_null(c);
    assert_int_equal(c->billing.trial_credits, 5000000);
    assert_int_equal(c->billing.lease_credits, 10000000);
    tg_config_unref(c);
    /* `keys create` opens a new tenant's wallet with those trial credits, once per tenant */
    char cli_tenant[64];
    snprintf(cli_tenant, sizeof(cli_tenant), "ledger-cli-%d", (int)getpid());
    char *create[] = {"tollgate", "keys", "create", "-c", cfg_path, "--tenant", cli_tenant};
    assert_int_equal(run_cli(create, 7, out, sizeof(out)), 0);
    assert_int_equal(run_cli(create, 7, out, sizeof(out)), 0);
    memset(out, 0, sizeof(out));
    unlink(cfg_path);

    db = PQconnectdb(conninfo);
    assert_int_equal(PQstatus(db), CONNECTION_OK);
    exec_ok("SET client_min_messages = warning");
    char sql[300];
    snprintf(sql, sizeof(sql),
             "SELECT w.balance * 10 + (SELECT count(*) FROM ledger_entries e WHERE e.tenant_id = t.id) FROM "
             "tenants t JOIN wallets w ON w.tenant_id = t.id WHERE t.name = '%s'",
             cli_tenant);
    assert_int_equal(q_i64(sql), 5000000 * 10 + 1); /* the trial, granted once for two keys */
    char name[64];
    snprintf(name, sizeof(name), "ledger-a-%d", (int)getpid());
    tenant_a = new_tenant(name);
    snprintf(name, sizeof(name), "ledger-b-%d", (int)getpid());
    tenant_b = new_tenant(name);
    snprintf(name, sizeof(name), "ledger-c-%d", (int)getpid());
    tenant_c = new_tenant(name);
}

static void expect_clean(void)
{
    PGresult *r = q("SELECT invariant, tenant_id, detail FROM tollgate_ledger_check()");
    for (int i = 0; i < PQntuples(r); i++)
        print_error("violation: %s tenant %s: %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                    PQgetvalue(r, i, 2));
    assert_int_equal(PQntuples(r), 0);
    PQclear(r);
}

static void test_wallets(void **state)
{
    schema();
    tg_error_t err;
    int64_t bal = -1;
    assert_int_equal(tg_wallet_open(db, tenant_a, 5000000, &bal, &err), 0);
    assert_int_equal(bal, 5000000);
    /* opened again (a retried tenant creation): the trial is granted once */
    assert_int_equal(tg_wallet_open(db, tenant_a, 5000000, &bal, &err), 0);
    assert_int_equal(bal, 5000000);
    assert_int_equal(tg_wallet_open(db, tenant_b, 0, &bal, &err), 0);
    assert_int_equal(bal, 0);
    assert_int_equal(tg_wallet_open(db, tenant_c, 1000, NULL, &err), 0);
    assert_int_equal(tg_wallet_open(db, 999999999, 10, &bal, &err), TG_ENOT_FOUND);
    assert_int_equal(tg_wallet_open(db, tenant_a, -1, &bal, &err), TG_EINVALID_REQUEST);

    tg_ledger_entry_t e1, e2, e3;
    assert_int_equal(tg_wallet_top_up(db, tenant_a, 250000, "order-17", "card", &e1, &err), 0);
    assert_int_equal(e1.amount, 250000);
    assert_int_equal(e1.balance_after, 5250000);
    /* the same key and amount: the same entry, nothing new */
    assert_int_equal(tg_wallet_top_up(db, tenant_a, 250000, "order-17", "card", &e2, &err), 1);
    assert_int_equal(e2.id, e1.id);
    assert_int_equal(e2.balance_after, 5250000);
    assert_string_equal(e2.created_at, e1.created_at);
    /* the same key, another amount: refused, the first entry named */
    assert_int_equal(tg_wallet_top_up(db, tenant_a, 260000, "order-17", NULL, &e3, &err),
                     TG_EIDEMPOTENCY_MISMATCH);
    assert_int_equal(e3.id, e1.id);
    /* keys are per tenant: the same key elsewhere is another top-up */
    assert_int_equal(tg_wallet_top_up(db, tenant_b, 100, "order-17", NULL, &e3, &err), 0);
    assert_int_not_equal(e3.id, e1.id);
    assert_int_equal(tg_wallet_top_up(db, tenant_a, 0, "k", NULL, &e3, &err), TG_EINVALID_REQUEST);
    assert_int_equal(tg_wallet_top_up(db, tenant_a, TG_WALLET_MAX_AMOUNT + 1, "k", NULL, &e3, &err),
                     TG_EINVALID_REQUEST);
    assert_int_equal(tg_wallet_top_up(db, tenant_a, 5, "has space", NULL, &e3, &err), TG_EINVALID_REQUEST);
    assert_int_equal(tg_wallet_top_up(db, tenant_a, 5, "", NULL, &e3, &err), TG_EINVALID_REQUEST);
    assert_int_equal(tg_wallet_top_up(db, 999999999, 5, "k", NULL, &e3, &err), TG_ENOT_FOUND);

    tg_wallet_t w;
    assert_int_equal(tg_wallet_read(db, tenant_a, &w, &err), 0);
    assert_int_equal(w.balance, 5250000);
    assert_int_equal(w.reserved, 0);
    assert_int_equal(w.spent, 0);
    assert_int_equal(tg_wallet_available(&w), 5250000);
    assert_int_equal(tg_wallet_read(db, 999999999, &w, &err), TG_ENOT_FOUND);
    expect_clean();
}

static void test_prices(void **state)
{
    schema();
    exec_ok("INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, byok_fee, "
            "effective_from) VALUES "
            "('gpt-4o-mini', 150000, 600000, 75000, 2000, '2026-01-01T00:00:00Z'), "
            "('gpt-4o-mini', 300000, 1200000, 150000, 3000, '2026-06-01T00:00:00Z'), "
            "('claude-3-5-haiku', 800000, 4000000, 80000, 2000, '2026-01-01T00:00:00Z')");
    tg_prices_t *t = NULL;
    tg_error_t err;
    assert_int_equal(tg_prices_load(db, &t, &err), 0);
    assert_int_equal(t->n, 3);
    const int64_t jan2 = INT64_C(1767312000000000); /* 2026-01-02 */
    const int64_t jun1 = INT64_C(1780272000000000); /* 2026-06-01T00:00:00Z exactly */
    const tg_price_t *p = tg_prices_at(t, "gpt-4o-mini", jan2);
    assert_non_null(p);
    assert_int_equal(p->unit.input, 150000);
    p = tg_prices_at(t, "gpt-4o-mini", jun1 - 1);
    assert_int_equal(p->unit.input, 150000);
    p = tg_prices_at(t, "gpt-4o-mini", jun1); /* in effect from its first microsecond */
    assert_int_equal(p->unit.input, 300000);
    assert_int_equal(p->unit.byok_fee, 3000);
    p = tg_prices_at(t, "claude-3-5-haiku", jun1);
    assert_int_equal(p->unit.output, 4000000);
    assert_null(tg_prices_at(t, "gpt-4o-mini", jan2 - INT64_C(86400000001)));     /* before any price */
    assert_non_null(tg_prices_at(t, "gpt-4o-mini", jan2 - INT64_C(86400000000))); /* its first microsecond */
    assert_null(tg_prices_at(t, "no-such-model", jun1));
    assert_null(tg_prices_at(t, "gpt-4o", jun1)); /* a prefix is another model */

    /* published, replaced: a holder keeps its snapshot until it lets go */
    tg_prices_publish(t);
    tg_prices_t *held = tg_prices_acquire();
    assert_ptr_equal(held, t);
    exec_ok(
        "INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, effective_from) "
        "VALUES ('gpt-4o-mini', 1, 1, 1, '2027-01-01T00:00:00Z')");
    tg_prices_t *t2 = NULL;
    assert_int_equal(tg_prices_load(db, &t2, &err), 0);
    tg_prices_publish(t2);
    assert_int_equal(held->n, 3);
    assert_int_equal(tg_prices_at(held, "gpt-4o-mini", jun1)->unit.input, 300000);
    tg_prices_unref(held);
    tg_prices_t *now = tg_prices_acquire();
    assert_int_equal(now->n, 4);
    tg_prices_unref(now);
    tg_prices_publish(NULL);

    /* history is never rewritten */
    char st[6];
    assert_string_equal(exec_fails("UPDATE prices SET input_per_mtok = 1", st), "23000");
    assert_string_equal(exec_fails("DELETE FROM prices", st), "23000");
    assert_string_equal(exec_fails("INSERT INTO prices (model, input_per_mtok, output_per_mtok, "
                                   "cached_input_per_mtok, effective_from) VALUES ('x', -1, 0, 0, now())",
                                   st),
                        "23514");
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static int64_t rnd(int64_t max)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    switch (rng % 5) {
    case 0:
        return 0;
    case 1:
        return max;
    default:
        return (int64_t)((rng >> 3) %
                         (uint64_t)((int64_t)1 << (rng % 40) < max ? (int64_t)1 << (rng % 40) : max));
    }
}

/* The C rule and the SQL rule on the same 3000 cases, in one query: any disagreement is a row. */
static void test_cost_matches_sql(void **state)
{
    schema();
    json_t *cases = json_array();
    for (int i = 0; i < 3000; i++) {
        tg_tokens_t t = {.input = rnd(TG_COST_MAX_TOKENS), .output = rnd(TG_COST_MAX_TOKENS)};
        t.cached = t.input > 0 ? rnd(t.input) : 0;
        tg_unit_prices_t p = {.input = rnd(TG_COST_MAX_PRICE),
                              .output = rnd(TG_COST_MAX_PRICE),
                              .cached_input = rnd(TG_COST_MAX_PRICE),
                              .byok_fee = rnd(TG_COST_MAX_PRICE)};
        bool byok = i % 7 == 0;
        int64_t c;
        assert_int_equal(tg_cost_compute(&p, &t, byok, &c), 0);
        json_array_append_new(cases, json_pack("{sIsIsIsIsIsIsbsIsI}", "i", (json_int_t)t.input, "c",
                                               (json_int_t)t.cached, "o", (json_int_t)t.output, "pi",
                                               (json_int_t)p.input, "pc", (json_int_t)p.cached_input, "po",
                                               (json_int_t)p.output, "b", byok, "f", (json_int_t)p.byok_fee,
                                               "cost", (json_int_t)c));
    }
    char *text = json_dumps(cases, JSON_COMPACT);
    json_decref(cases);
    const char *params[1] = {text};
    PGresult *r =
        PQexecParams(db,
                     "SELECT count(*) FILTER (WHERE tollgate_cost(i, c, o, pi, pc, po, b, f) <> cost), "
                     "count(*) FROM jsonb_to_recordset($1::jsonb) AS x(i bigint, c bigint, o bigint, "
                     "pi bigint, pc bigint, po bigint, b boolean, f bigint, cost bigint)",
                     1, NULL, params, NULL, NULL, 0);
    free(text);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "0");
    assert_string_equal(PQgetvalue(r, 0, 1), "3000");
    PQclear(r);
}

/* One usage record as the settlement writer sends it, priced by the C rule at price row `price_id`. */
static json_t *record(int64_t tenant, const char *req, const char *at, int64_t in, int64_t cached,
                      int64_t out, int64_t price_id, bool billed, int64_t charge, int64_t lease)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT input_per_mtok, output_per_mtok, cached_input_per_mtok, byok_fee FROM prices WHERE id = "
             "%" PRId64,
             price_id);
    PGresult *r = q(sql);
    tg_unit_prices_t p = {.input = strtoll(PQgetvalue(r, 0, 0), NULL, 10),
                          .output = strtoll(PQgetvalue(r, 0, 1), NULL, 10),
                          .cached_input = strtoll(PQgetvalue(r, 0, 2), NULL, 10),
                          .byok_fee = strtoll(PQgetvalue(r, 0, 3), NULL, 10)};
    PQclear(r);
    int64_t cost = 0;
    tg_tokens_t t = {.input = in, .cached = cached, .output = out};
    if (billed)
        assert_int_equal(tg_cost_compute(&p, &t, false, &cost), 0);
    if (charge < 0 || charge > cost)
        charge = cost;
    json_t *rec = json_pack(
        "{sIsssssIsssssIsIsIsIsIsIsIsIsbsIsIsIsisisi}", "tenant_id", (json_int_t)tenant, "request_id", req,
        "created_at", at, "key_id", (json_int_t)1, "model", "gpt-4o-mini", "provider", "sim-openai",
        "input_tokens", (json_int_t)in, "cached_tokens", (json_int_t)cached, "output_tokens", (json_int_t)out,
        "price_id", (json_int_t)price_id, "price_input", (json_int_t)p.input, "price_output",
        (json_int_t)p.output, "price_cached", (json_int_t)p.cached_input, "platform_fee",
        (json_int_t)p.byok_fee, "billed", billed, "cost", (json_int_t)cost, "charge", (json_int_t)charge,
        "lease_id", (json_int_t)lease, "latency_ms", 120, "attempts", 1, "status", billed ? 200 : 502);
    if (lease == 0) /* no lease: settled late, from what is available */
        json_object_set_new(rec, "lease_id", json_null());
    return rec;
}

/* tollgate_settle(batch, [one record]) must fail whole with SQLSTATE `state`. */
static void settle_refused(const char *batch, json_t *rec, const char *state)
{
    json_t *b = json_array();
    json_array_append_new(b, rec);
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    const char *params[2] = {batch, text};
    PGresult *r =
        PQexecParams(db, "SELECT * FROM tollgate_settle($1, $2::jsonb)", 2, NULL, params, NULL, NULL, 0);
    free(text);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), state);
    PQclear(r);
}

/* tollgate_settle(batch, records, close): returns "recorded,charged". */
static void settle(const char *batch, json_t *records, const char *close, char *out, size_t cap)
{
    char *text = json_dumps(records, JSON_COMPACT);
    json_decref(records);
    const char *params[3] = {batch, text, close};
    PGresult *r = PQexecParams(
        db, "SELECT recorded || ',' || charged FROM tollgate_settle($1, $2::jsonb, $3::bigint[])", 3, NULL,
        params, NULL, NULL, 0);
    free(text);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("settle %s: %s", batch, PQresultErrorMessage(r));
    snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

static int64_t price_id(void)
{
    return q_i64(
        "SELECT id FROM prices WHERE model = 'gpt-4o-mini' AND effective_from = '2026-01-01T00:00:00Z'");
}

static void test_settlement(void **state)
{
    schema();
    if (q_i64("SELECT count(*) FROM prices") == 0)
        test_prices(state);
    int64_t pid = price_id();
    char sql[400], got[64], st[6];
    tg_error_t err;
    tg_wallet_t w;
    assert_int_equal(tg_wallet_read(db, tenant_a, &w, &err), 0);
    const int64_t start = w.balance;

    /* a lease: half of what is available at most, here the 1000000 asked */
    snprintf(sql, sizeof(sql),
             "SELECT lease_id FROM tollgate_lease_open(%" PRId64 ", 'gw-1', '0', 1000000, 10000, 50, 60000)",
             tenant_a);
    int64_t lease = q_i64(sql);
    assert_int_equal(q_i64(sql), lease); /* the same key: the same lease */
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM ledger_entries WHERE idempotency_key = 'lease/gw-1/%" PRId64 "/0'",
             tenant_a);
    assert_int_equal(q_i64(sql), 1);
    assert_int_equal(tg_wallet_read(db, tenant_a, &w, &err), 0);
    assert_int_equal(w.reserved, 1000000);
    assert_int_equal(w.balance, start);

    /* a batch: two served requests (one with cached tokens), one failed request that costs nothing */
    json_t *b = json_array();
    json_array_append_new(
        b, record(tenant_a, "req_a1", "2026-12-04T10:00:00Z", 1000, 100, 200, pid, true, -1, lease));
    json_array_append_new(
        b, record(tenant_a, "req_a2", "2026-12-04T10:00:01Z", 5000, 0, 800, pid, true, -1, lease));
    json_array_append_new(
        b, record(tenant_a, "req_a3", "2026-12-04T10:00:02Z", 300, 0, 0, pid, false, 0, lease));
    settle("gw-1/1", b, "{}", got, sizeof(got));
    /* 263 + ceil(750 + 480) */
    assert_string_equal(got, "3,1493");
    assert_int_equal(tg_wallet_read(db, tenant_a, &w, &err), 0);
    assert_int_equal(w.balance, start - 1493);
    assert_int_equal(w.reserved, 1000000 - 1493);
    assert_int_equal(w.spent, 1493);

    /* the journal replays it after a crash, in another batch: nothing is charged twice */
    b = json_array();
    json_array_append_new(
        b, record(tenant_a, "req_a1", "2026-12-04T10:00:00Z", 1000, 100, 200, pid, true, -1, lease));
    json_array_append_new(
        b, record(tenant_a, "req_a2", "2026-12-04T10:00:01Z", 5000, 0, 800, pid, true, -1, lease));
    settle("gw-1/replay-1", b, "{}", got, sizeof(got));
    assert_string_equal(got, "0,0");
    /* a batch key used twice for new charges is refused (its entry would hide them) */
    settle_refused("gw-1/1",
                   record(tenant_a, "req_a4", "2026-12-04T10:00:03Z", 10, 0, 10, pid, true, -1, lease),
                   "23505");
    /* a charge past the lease is refused whole (the engine never sends one) */
    settle_refused(
        "gw-1/2",
        record(tenant_a, "req_a5", "2026-12-04T10:00:04Z", 1000000000, 0, 1000000000, pid, true, -1, lease),
        "23514");
    /* a record charging another tenant's lease is refused whole (its charge would land on the
     * lease's tenant) */
    settle_refused("gw-1/3",
                   record(tenant_b, "req_b_wrong", "2026-12-04T10:00:04Z", 10, 0, 10, pid, true, -1, lease),
                   "23000");
    expect_clean();

    /* the lease closes behind its last batch: its unused part goes back */
    b = json_array();
    json_array_append_new(
        b, record(tenant_a, "req_a6", "2026-12-04T10:00:05Z", 2000, 0, 0, pid, true, -1, lease));
    snprintf(sql, sizeof(sql), "{%" PRId64 "}", lease);
    settle("gw-1/3", b, sql, got, sizeof(got));
    assert_string_equal(got, "1,300");
    assert_int_equal(tg_wallet_read(db, tenant_a, &w, &err), 0);
    assert_int_equal(w.reserved, 0);
    assert_int_equal(w.balance, start - 1793);
    assert_int_equal(w.spent, 1793);
    snprintf(sql, sizeof(sql), "SELECT released FROM leases WHERE id = %" PRId64, lease);
    assert_int_equal(q_i64(sql), 1000000 - 1793);
    expect_clean();

    /* a lease that expires (its gateway died) gives its credits back; a settlement replayed after
     * that is charged late, from what is available */
    snprintf(sql, sizeof(sql),
             "SELECT lease_id FROM tollgate_lease_open(%" PRId64 ", 'gw-2', '0', 50000, 1000, "
             "50, 0)",
             tenant_a);
    int64_t dead = q_i64(sql);
    assert_int_equal(q_i64("SELECT tollgate_leases_expire()"), 1);
    /* asked again under its key (an answer lost long ago): an ended lease is not handed out */
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(lease_id, 0) FROM tollgate_lease_open(%" PRId64
             ", 'gw-2', '0', 50000, 1000, 50, 0)",
             tenant_a);
    assert_int_equal(q_i64(sql), 0);
    snprintf(sql, sizeof(sql), "SELECT state FROM leases WHERE id = %" PRId64, dead);
    PGresult *r = q(sql);
    assert_string_equal(PQgetvalue(r, 0, 0), "expired");
    PQclear(r);
    b = json_array();
    json_array_append_new(
        b, record(tenant_a, "req_late", "2026-12-04T10:01:00Z", 1000, 0, 1000, pid, true, -1, dead));
    settle("gw-2/1", b, "{}", got, sizeof(got));
    assert_string_equal(got, "1,750");
    assert_int_equal(tg_wallet_read(db, tenant_a, &w, &err), 0);
    assert_int_equal(w.reserved, 0);
    assert_int_equal(w.spent, 2543);
    expect_clean();

    /* tenant c (1000 credits): too small for a lease of 10000 ... */
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(lease_id, 0) FROM tollgate_lease_open(%" PRId64 ", 'gw-1', "
             "'c/0', 100000, 10000, 50, 60000)",
             tenant_c);
    assert_int_equal(q_i64(sql), 0);
    /* ... so a request is reserved exactly, for itself: 600 of 1000 */
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(lease_id, 0) FROM tollgate_lease_open(%" PRId64 ", 'gw-1', "
             "'req_c1', 600, 600, 100, 60000, 'req_c1')",
             tenant_c);
    int64_t exact = q_i64(sql);
    assert_true(exact > 0);
    /* a second one of 600 does not fit in the 400 left: the 402 case, nothing reserved */
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(lease_id, 0) FROM tollgate_lease_open(%" PRId64 ", 'gw-1', "
             "'req_c2', 600, 600, 100, 60000, 'req_c2')",
             tenant_c);
    assert_int_equal(q_i64(sql), 0);
    /* settled at 263 of its 600: the per-request lease closes in the same call */
    b = json_array();
    json_array_append_new(
        b, record(tenant_c, "req_c1", "2026-12-04T11:00:00Z", 1000, 100, 200, pid, true, -1, exact));
    settle("gw-1/4", b, "{}", got, sizeof(got));
    assert_string_equal(got, "1,263");
    assert_int_equal(tg_wallet_read(db, tenant_c, &w, &err), 0);
    assert_int_equal(w.balance, 737);
    assert_int_equal(w.reserved, 0);
    expect_clean();

    /* the ledger holds: no entry can take a wallet below what it holds, none can be changed */
    snprintf(sql, sizeof(sql),
             "INSERT INTO ledger_entries (tenant_id, kind, amount, idempotency_key) VALUES "
             "(%" PRId64 ", 'correction', -738, 'fix/1')",
             tenant_c);
    assert_string_equal(exec_fails(sql, st), "23514");
    snprintf(sql, sizeof(sql),
             "INSERT INTO ledger_entries (tenant_id, kind, amount, idempotency_key) VALUES "
             "(%" PRId64 ", 'correction', -737, 'fix/1')",
             tenant_c);
    exec_ok(sql);
    assert_string_equal(exec_fails("UPDATE ledger_entries SET amount = amount + 1", st), "23000");
    assert_string_equal(exec_fails("DELETE FROM ledger_entries", st), "23000");
    assert_string_equal(exec_fails("TRUNCATE ledger_entries CASCADE", st), "23000");
    assert_string_equal(exec_fails("UPDATE wallets SET balance = balance + 1", st), "23000");
    snprintf(sql, sizeof(sql),
             "INSERT INTO ledger_entries (tenant_id, kind, amount, idempotency_key) VALUES "
             "(%" PRId64 ", 'top_up', -5, 'bad/1')",
             tenant_c);
    assert_string_equal(exec_fails(sql, st), "23514"); /* a top-up is positive */
    expect_clean();

    /* the rollup followed: tenant a's day has its 6 records and their cost */
    snprintf(sql, sizeof(sql),
             "SELECT requests * 1000000 + cost FROM usage_daily WHERE tenant_id = %" PRId64
             " AND day = '2026-12-04' AND model = 'gpt-4o-mini'",
             tenant_a);
    assert_int_equal(q_i64(sql), 5 * 1000000 + 2543);
    /* and the records sit in their month's partition */
    assert_int_equal(q_i64("SELECT count(*) FROM usage_records_y2026m12 WHERE request_id LIKE 'req_%'"), 6);

    /* a month with no partition yet lands in the default one; creating the month moves it there */
    b = json_array();
    json_array_append_new(b,
                          record(tenant_b, "req_future", "2031-01-15T00:00:00Z", 10, 0, 0, pid, false, 0, 0));
    settle("gw-1/5", b, "{}", got, sizeof(got));
    assert_string_equal(got, "1,0");
    assert_int_equal(q_i64("SELECT count(*) FROM usage_records_default"), 1);
    assert_int_equal(q_i64("SELECT tollgate_usage_partitions('2031-01-01T00:00:00Z', 2)"), 2);
    assert_int_equal(q_i64("SELECT tollgate_usage_partitions('2031-01-01T00:00:00Z', 2)"), 0);
    assert_int_equal(q_i64("SELECT count(*) FROM usage_records_default"), 0);
    assert_int_equal(q_i64("SELECT count(*) FROM usage_records_y2031m01"), 1);
    expect_clean();
}

/* Waits for the one result of an async query on c and returns its first value (or the SQLSTATE). */
static void async_result(PGconn *c, char *out, size_t cap)
{
    PGresult *r, *first = NULL;
    while ((r = PQgetResult(c)) != NULL) {
        if (first == NULL)
            first = r;
        else
            PQclear(r);
    }
    assert_non_null(first);
    if (PQresultStatus(first) == PGRES_TUPLES_OK)
        snprintf(out, cap, "%s", PQntuples(first) > 0 ? PQgetvalue(first, 0, 0) : "");
    else
        snprintf(out, cap, "error %s", PQresultErrorField(first, PG_DIAG_SQLSTATE));
    PQclear(first);
}

/* A stage row (gateway/src/ledger.c's record_row) at the price `pid` (test_prices' first
 * gpt-4o-mini price: 0.15 / 0.6 / 0.075 per token, BYOK fee 2000); lease 0 is \N. */
static char *stage_row(int64_t tenant, const char *req, const char *at, int64_t in, int64_t out, int64_t pid,
                       int64_t charge, int64_t lease)
{
    tg_unit_prices_t p = {.input = 150000, .output = 600000, .cached_input = 75000, .byok_fee = 2000};
    tg_tokens_t t = {.input = in, .cached = 0, .output = out};
    int64_t cost = 0;
    assert_int_equal(tg_cost_compute(&p, &t, false, &cost), 0);
    char buf[512], l[24] = "\\N";
    if (lease != 0)
        snprintf(l, sizeof(l), "%" PRId64, lease);
    snprintf(buf, sizeof(buf),
             "%" PRId64 "\t%s\t%s\t1\tgpt-4o-mini\tsim-openai\tf\t%" PRId64 "\t%" PRId64 "\t0\tf\t%" PRId64
             "\t150000\t600000\t75000\t2000\tt\t%" PRId64 "\t%" PRId64 "\t%s\t120\t1\t200\t\\N\n",
             tenant, req, at, in, out, pid, cost, charge < 0 ? cost : charge, l);
    return strdup(buf);
}

/* COPY `text` by the COPY statement `sql`; "" or the SQLSTATE of its failure in state[6]. */
static void copy_in(const char *sql, const tg_buf_t *text, char *state)
{
    state[0] = '\0';
    PGresult *r = PQexec(db, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    assert_int_equal(text->len == 0 || PQputCopyData(db, text->data, (int)text->len) == 1, 1);
    assert_int_equal(PQputCopyEnd(db, NULL), 1);
    while ((r = PQgetResult(db)) != NULL) { /* the COPY's result, then NULL */
        if (PQresultStatus(r) != PGRES_COMMAND_OK && state[0] == '\0')
            snprintf(state, 6, "%s", PQresultErrorField(r, PG_DIAG_SQLSTATE));
        PQclear(r);
    }
}

/* A fresh batch the gateway's way (migrations 0013, 0014): BEGIN saying the batch keeps the
 * rollup, the rows COPYed straight into usage_records with their charge keys, the rollup rows into
 * the rollup stage, tollgate_settle_direct with the sums billing/batch.c took from them, COMMIT.
 * `days_drop` rollup rows are left out (a writer whose rollup does not add up). Returns
 * "recorded,charged", or "error <SQLSTATE>" (rolled back). */
static void direct_days(const char *batch, char **rows, size_t n, const char *close, size_t days_drop,
                        char *out, size_t cap)
{
    tg_batch_t bt;
    assert_int_equal(tg_batch_prepare(&bt, rows, n), 0);
    tg_buf_t a[TG_BATCH_COLS], copy, days;
    for (int i = 0; i < TG_BATCH_COLS; i++) {
        tg_buf_init(&a[i], 1 << 20);
        assert_int_equal(tg_batch_array(&a[i], bt.leases, bt.n_leases, (tg_batch_col_t)i), 0);
    }
    tg_buf_init(&copy, 1 << 20);
    tg_buf_init(&days, 1 << 20);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tg_batch_copy_row(&copy, rows[i], batch), 0);
    for (size_t i = days_drop; i < bt.n_days; i++)
        assert_int_equal(tg_batch_day_row(&days, &bt.days[i]), 0);
    exec_ok("SELECT tollgate_settle_stage_open()");
    exec_ok(TG_BATCH_BEGIN_SQL);
    char st[6];
    copy_in(TG_BATCH_COPY_SQL, &copy, st);
    if (st[0] == '\0')
        copy_in(TG_BATCH_ROLLUP_COPY_SQL, &days, st);
    char records[24];
    snprintf(records, sizeof(records), "%zu", n);
    const char *v[8] = {batch, a[0].data, a[1].data, a[2].data, a[3].data, a[4].data, records, close};
    PGresult *r = st[0] == '\0' ? PQexecParams(db, TG_BATCH_SETTLE_SQL, 8, NULL, v, NULL, NULL, 0) : NULL;
    if (r != NULL && PQresultStatus(r) == PGRES_TUPLES_OK) {
        snprintf(out, cap, "%s,%s", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
        exec_ok("COMMIT");
    } else {
        snprintf(out, cap, "error %s", r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : st);
        exec_ok("ROLLBACK");
    }
    PQclear(r);
    for (int i = 0; i < TG_BATCH_COLS; i++)
        tg_buf_dispose(&a[i]);
    tg_buf_dispose(&copy);
    tg_buf_dispose(&days);
    tg_batch_dispose(&bt);
}

static void direct(const char *batch, char **rows, size_t n, const char *close, char *out, size_t cap)
{
    direct_days(batch, rows, n, close, 0, out, cap);
}

/* The settlement of a fresh batch without the stage: what it records and charges equals what the
 * stage's way would; whatever it cannot settle (a record already there, a lease that ended, arrays
 * that do not match) it refuses whole, so the gateway can send the batch through the stage. */
static void test_settle_direct(void **state)
{
    schema();
    if (q_i64("SELECT count(*) FROM prices") == 0)
        test_prices(state);
    int64_t pid = price_id();
    char sql[300], got[64];
    tg_error_t err;
    tg_wallet_t w;
    int64_t t = new_tenant("ledger-direct");
    assert_int_equal(tg_wallet_open(db, t, 0, NULL, &err), 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM tollgate_top_up(%" PRId64 ", 100000000, 'd-1', NULL)",
             t);
    assert_int_equal(q_i64(sql), 1);
    snprintf(sql, sizeof(sql),
             "SELECT lease_id FROM tollgate_lease_open(%" PRId64 ", 'gw-d', '0', 1000000, 1000, 100, 60000)",
             t);
    int64_t lease = q_i64(sql);

    /* two paying records and a free one: one charge entry of 1500 on the lease */
    char *rows[3] = {stage_row(t, "d1", "2026-12-04T11:00:01.000000Z", 1000, 1000, pid, -1, lease),
                     stage_row(t, "d2", "2026-12-04T11:00:00.000000Z", 1000, 1000, pid, -1, lease),
                     stage_row(t, "d3", "2026-12-04T11:00:02.000000Z", 1000, 0, pid, 0, lease)};
    direct("gw-d/1", rows, 3, "{}", got, sizeof(got));
    assert_string_equal(got, "3,1500");
    assert_int_equal(tg_wallet_read(db, t, &w, &err), 0);
    assert_int_equal(w.spent, 1500);
    assert_int_equal(w.reserved, 1000000 - 1500);
    snprintf(sql, sizeof(sql),
             "SELECT amount * 1000 + requests FROM ledger_entries WHERE idempotency_key = "
             "'usage_charge/gw-d/1/%" PRId64 "' AND records_from = '2026-12-04T11:00:00Z'",
             lease);
    assert_int_equal(q_i64(sql), -1500 * 1000 + 2);
    snprintf(sql, sizeof(sql), "SELECT requests FROM usage_daily WHERE tenant_id = %" PRId64, t);
    assert_int_equal(q_i64(sql), 3); /* the batch's rollup rows, folded */
    expect_clean();

    /* rollup rows that do not add up to the batch's records: refused whole (the stage then takes
     * the rollup from the records themselves) */
    char *more[2] = {stage_row(t, "d6", "2026-12-04T11:00:05.000000Z", 1000, 1000, pid, -1, lease),
                     stage_row(t, "d7", "2026-12-05T00:00:00.000000Z", 1000, 1000, pid, -1, lease)};
    direct_days("gw-d/0", more, 2, "{}", 1, got, sizeof(got)); /* a day's row left out */
    assert_string_equal(got, "error 22023");
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM usage_records WHERE tenant_id = %" PRId64, t);
    assert_int_equal(q_i64(sql), 3);
    free(more[0]);
    free(more[1]);
    /* and records inserted by a transaction that has not said it keeps the rollup are refused */
    char st0[6];
    assert_string_equal(exec_fails("INSERT INTO usage_records SELECT * FROM usage_records WHERE false", st0),
                        "55000");
    expect_clean();

    /* the same records again (a batch whose commit was lost): refused whole, nothing charged */
    direct("gw-d/2", rows, 3, "{}", got, sizeof(got));
    assert_string_equal(got, "error 23505");
    assert_int_equal(tg_wallet_read(db, t, &w, &err), 0);
    assert_int_equal(w.spent, 1500);
    free(rows[0]);
    free(rows[1]);
    free(rows[2]);

    /* a lease that ended meanwhile: its charge is a late one, the stage's to settle */
    snprintf(sql, sizeof(sql), "SELECT tollgate_lease_end(%" PRId64 ", 'closed')", lease);
    exec_ok(sql);
    rows[0] = stage_row(t, "d4", "2026-12-04T11:00:03.000000Z", 1000, 1000, pid, -1, lease);
    direct("gw-d/3", rows, 1, "{}", got, sizeof(got));
    assert_string_equal(got, "error TG001");
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM usage_records WHERE tenant_id = %" PRId64, t);
    assert_int_equal(q_i64(sql), 3);
    free(rows[0]);
    expect_clean();

    /* a per-request (exact) lease is closed behind its record; a close asked is done */
    snprintf(sql, sizeof(sql),
             "SELECT lease_id FROM tollgate_lease_open(%" PRId64
             ", 'gw-d', 'x/d5', 5000, 5000, 100, 60000, 'd5')",
             t);
    int64_t exact = q_i64(sql);
    snprintf(sql, sizeof(sql),
             "SELECT lease_id FROM tollgate_lease_open(%" PRId64 ", 'gw-d', '1', 10000, 1000, 100, 60000)",
             t);
    int64_t other = q_i64(sql);
    rows[0] = stage_row(t, "d5", "2026-12-04T11:00:04.000000Z", 1000, 1000, pid, -1, exact);
    char close[40];
    snprintf(close, sizeof(close), "{%" PRId64 "}", other);
    direct("gw-d/4", rows, 1, close, got, sizeof(got));
    assert_string_equal(got, "1,750");
    free(rows[0]);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM leases WHERE id IN (%" PRId64 ", %" PRId64 ") AND state = 'closed'", exact,
             other);
    assert_int_equal(q_i64(sql), 2);
    assert_int_equal(tg_wallet_read(db, t, &w, &err), 0);
    assert_int_equal(w.spent, 2250);
    assert_int_equal(w.reserved, 0);

    /* arrays of different lengths are a caller's bug, refused */
    char st[6];
    assert_string_equal(exec_fails("SELECT * FROM tollgate_settle_direct('gw-d/5', '{1}', '{}', '{}', '{}', "
                                   "'{}', 0)",
                                   st),
                        "22023");
    expect_clean();
}

/* Whether `c`'s backend is waiting on a lock (seen from db). */
static bool blocked(PGconn *c)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND wait_event_type = 'Lock'",
             PQbackendPID(c));
    return q_i64(sql) == 1;
}

/* Two sessions (two gateways, two admin calls) on one wallet at the same moment: the wallet row
 * lock orders them, and the second sees what the first committed. */
static void test_concurrent(void **state)
{
    schema();
    char conninfo[1200], got[64], sql[300];
    snprintf(conninfo, sizeof(conninfo), "%s options='-c search_path=" SCHEMA "'", tg_test_pg_or_skip());
    PGconn *other = PQconnectdb(conninfo);
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    int64_t t = new_tenant("ledger-race");
    tg_error_t err;
    assert_int_equal(tg_wallet_open(db, t, 0, NULL, &err), 0);

    /* the same top-up twice at once: the second waits, then returns the first's entry */
    exec_ok("BEGIN");
    snprintf(sql, sizeof(sql), "SELECT outcome FROM tollgate_top_up(%" PRId64 ", 7000, 'wire-1', NULL)", t);
    PGresult *r = q(sql);
    assert_string_equal(PQgetvalue(r, 0, 0), "created");
    PQclear(r);
    assert_int_equal(PQsendQuery(other, sql), 1);
    for (int i = 0; i < 500 && !blocked(other); i++)
        usleep(10000); /* polling the condition itself: the other session reaching the lock */
    assert_true(blocked(other));
    exec_ok("COMMIT");
    async_result(other, got, sizeof(got));
    assert_string_equal(got, "replayed");
    tg_wallet_t w;
    assert_int_equal(tg_wallet_read(db, t, &w, &err), 0);
    assert_int_equal(w.balance, 7000);

    /* two gateways lease at once, each asking for everything: together they get what there is */
    exec_ok("BEGIN");
    snprintf(sql, sizeof(sql),
             "SELECT amount FROM tollgate_lease_open(%" PRId64 ", 'gw-a', '0', 7000, 1, 100, "
             "60000)",
             t);
    r = q(sql);
    assert_string_equal(PQgetvalue(r, 0, 0), "7000");
    PQclear(r);
    snprintf(sql, sizeof(sql),
             "SELECT amount FROM tollgate_lease_open(%" PRId64 ", 'gw-b', '0', 7000, 1, 100, "
             "60000)",
             t);
    assert_int_equal(PQsendQuery(other, sql), 1);
    for (int i = 0; i < 500 && !blocked(other); i++)
        usleep(10000);
    assert_true(blocked(other));
    exec_ok("COMMIT");
    async_result(other, got, sizeof(got));
    assert_string_equal(got, "0"); /* nothing left to lease */
    assert_int_equal(tg_wallet_read(db, t, &w, &err), 0);
    assert_int_equal(w.reserved, 7000);
    assert_int_equal(tg_wallet_available(&w), 0);
    PQfinish(other);
    assert_int_equal(
        q_i64("SELECT count(*) FROM (SELECT tollgate_lease_close(id) FROM leases WHERE instance = "
              "'gw-a' AND state = 'open') x"),
        1);
    expect_clean();
}

/* Each corruption, made behind the guards' backs, is found by tollgate_ledger_check(). */
static int64_t violations(const char *invariant)
{
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM tollgate_ledger_check() WHERE invariant = '%s'",
             invariant);
    return q_i64(sql);
}

static void test_check_finds_corruption(void **state)
{
    schema();
    if (q_i64("SELECT count(*) FROM usage_records") == 0)
        test_settlement(state);
    expect_clean();
    char sql[300];

    /* a wallet that drifted from its entries */
    exec_ok("BEGIN");
    exec_ok("ALTER TABLE wallets DISABLE TRIGGER wallets_guard");
    snprintf(sql, sizeof(sql), "UPDATE wallets SET balance = balance + 1 WHERE tenant_id = %" PRId64,
             tenant_a);
    exec_ok(sql);
    assert_true(violations("balance") >= 1);
    assert_int_equal(violations("overspend"), 0);
    exec_ok("ROLLBACK");
    expect_clean();

    /* an entry edited in place */
    exec_ok("BEGIN");
    exec_ok("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only");
    snprintf(sql, sizeof(sql),
             "UPDATE ledger_entries SET amount = amount + 5 WHERE tenant_id = %" PRId64
             " AND kind = 'top_up'",
             tenant_a);
    exec_ok(sql);
    assert_true(violations("balance") >= 2); /* the wallet's sum and the entry's running balance */
    exec_ok("ROLLBACK");

    /* an overspend: more held than owned */
    exec_ok("BEGIN");
    exec_ok("ALTER TABLE wallets DISABLE TRIGGER wallets_guard");
    exec_ok("ALTER TABLE wallets DROP CONSTRAINT wallets_no_overspend");
    snprintf(sql, sizeof(sql), "UPDATE wallets SET reserved = balance + 1 WHERE tenant_id = %" PRId64,
             tenant_b);
    exec_ok(sql);
    assert_int_equal(violations("overspend"), 1);
    exec_ok("ROLLBACK");

    /* a request recorded twice (another time, so the primary key lets it in) and charged twice,
     * by a writer that says it keeps the rollup and does not */
    exec_ok("BEGIN; SET LOCAL tollgate.usage_rollup = 'caller'");
    exec_ok(
        "INSERT INTO usage_records SELECT tenant_id, request_id, created_at + interval '1 s', "
        "key_id, model, provider, byok, input_tokens, output_tokens, cached_tokens, estimated, price_id, "
        "price_input, price_output, price_cached, platform_fee, billed, cost, charged, charge_key, lease_id, "
        "latency_ms, attempts, status, error FROM usage_records WHERE request_id = 'req_a1'");
    assert_int_equal(violations("charged_twice"), 2); /* the request twice; its entry's records sum */
    assert_int_equal(violations("rollup"), 1);        /* and its day's rollup is short of it */
    exec_ok("ROLLBACK");

    /* a cost that is not its tokens at its prices */
    exec_ok("BEGIN");
    exec_ok("ALTER TABLE usage_records DROP CONSTRAINT usage_records_cost");
    exec_ok("UPDATE usage_records SET cost = cost + 1 WHERE request_id = 'req_a2'");
    assert_int_equal(violations("cost"), 1);
    exec_ok("ROLLBACK");
    /* ... or prices that are not the ones of the price row it names */
    exec_ok("BEGIN");
    exec_ok("UPDATE usage_records SET price_input = price_input + 1, cost = tollgate_cost(input_tokens, "
            "cached_tokens, output_tokens, price_input + 1, price_cached, price_output, byok, platform_fee) "
            "WHERE request_id = 'req_a2'");
    assert_int_equal(violations("cost"), 1);
    assert_int_equal(violations("rollup"), 1); /* and its day's rollup no longer matches */
    exec_ok("ROLLBACK");
    expect_clean();

    /* retention: a month of records is dropped whole; its entries and rollup rows stay, and the
     * check compares records with them only from the horizon on */
    json_t *b = json_array();
    json_array_append_new(
        b, record(tenant_a, "req_old", "2026-10-15T00:00:00Z", 1000, 0, 1000, price_id(), true, -1, 0));
    char got[64];
    settle("gw-1/old", b, "{}", got, sizeof(got)); /* no open lease: charged late, from what is available */
    assert_string_equal(got, "1,750");
    assert_int_equal(q_i64("SELECT tollgate_usage_partitions('2026-10-01T00:00:00Z', 1)"), 1);
    expect_clean();
    char st[6];
    assert_string_equal(exec_fails("SELECT tollgate_usage_drop_before('2026-11-15T00:00:00Z')", st), "22023");
    assert_string_equal(exec_fails("SELECT tollgate_usage_drop_before('2027-02-01T00:00:00Z')", st), "22023");
    assert_int_equal(q_i64("SELECT tollgate_usage_drop_before('2026-11-01T00:00:00Z')"), 1);
    assert_int_equal(q_i64("SELECT count(*) FROM usage_records WHERE request_id = 'req_old'"), 0);
    assert_int_equal(
        q_i64("SELECT count(*) FROM ledger_entries WHERE idempotency_key LIKE 'usage_charge/late/%/req_old'"),
        1);
    assert_int_equal(q_i64("SELECT count(*) FROM usage_daily WHERE day = '2026-10-15'"), 1);
    expect_clean();
    /* a record of that past lost later is still seen from the horizon on: the check is not blind */
    exec_ok("BEGIN");
    exec_ok("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_append_only");
    exec_ok("UPDATE ledger_entries SET records_from = '2026-12-01' WHERE idempotency_key LIKE "
            "'usage_charge/late/%/req_old'");
    assert_int_equal(violations("charged_twice"), 1);
    exec_ok("ROLLBACK");
}

static int teardown(void **state)
{
    if (db != NULL) {
        PQclear(PQexec(db, "DROP SCHEMA " SCHEMA " CASCADE"));
        PQfinish(db);
        db = NULL;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wallets),          cmocka_unit_test(test_prices),
        cmocka_unit_test(test_cost_matches_sql), cmocka_unit_test(test_settlement),
        cmocka_unit_test(test_concurrent),       cmocka_unit_test(test_check_finds_corruption),
        cmocka_unit_test(test_settle_direct),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
