-- bench/ledger_settle.sql - what one group-committed settlement costs PostgreSQL (migration 0007's
-- tollgate_settle), for one hot tenant and for many tenants per batch. Not a test: run it by hand
-- against a scratch database that `tollgate migrate` has brought up to date, e.g.
--   tests/pg_tmp.sh start /tmp/lpg 55499 && createdb -h /tmp/lpg -p 55499 -U postgres lbench
--   (a config whose database.url names lbench) tollgate migrate -c that.json
--   psql -h /tmp/lpg -p 55499 -U postgres -d lbench -f bench/ledger_settle.sql
-- It writes its own tenants (bench-ledger-*) and leaves them; run it on a database you drop after.
\set ON_ERROR_STOP on
\timing off
SET client_min_messages = warning;
INSERT INTO tenants (name) SELECT 'bench-ledger-' || g FROM generate_series(1, 1000) g
    ON CONFLICT (name) DO NOTHING;
CREATE TEMP TABLE bt AS SELECT id AS tenant_id FROM tenants WHERE name LIKE 'bench-ledger-%' ORDER BY id;
SELECT count(tollgate_wallet_open(tenant_id, 1000000000000)) AS wallets FROM bt;
INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, effective_from)
    VALUES ('bench-ledger-model', 150000, 600000, 75000, '2020-01-01') ON CONFLICT DO NOTHING;
CREATE TEMP TABLE bl AS
    SELECT row_number() OVER (ORDER BY tenant_id) AS n, tenant_id,
           (SELECT lease_id FROM tollgate_lease_open(tenant_id, 'bench-' || pg_backend_pid(), '0', 100000000000, 1,
                                                     100, 3600000)) AS lease_id
      FROM bt;
-- p_n records spread over p_tenants tenants, priced as the C rule does (263 each)
CREATE FUNCTION pg_temp.batch(p_tag text, p_n int, p_tenants int) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_agg(jsonb_build_object('tenant_id', bl.tenant_id, 'request_id', p_tag || '_' || g,
               'created_at', now(), 'model', 'bench-ledger-model', 'provider', 'sim-openai', 'input_tokens', 1000,
               'cached_tokens', 100, 'output_tokens', 200, 'price_input', 150000, 'price_output', 600000,
               'price_cached', 75000, 'platform_fee', 0, 'cost', 263, 'charge', 263, 'lease_id', bl.lease_id,
               'status', 200, 'attempts', 1, 'latency_ms', 100))
      FROM generate_series(1, p_n) g JOIN bl ON bl.n = 1 + (g % p_tenants)
$$;
CREATE TEMP TABLE bb AS SELECT 'one' AS k, pg_temp.batch('one-' || pg_backend_pid(), 1000, 1) AS j
    UNION ALL SELECT 'hundred', pg_temp.batch('hundred-' || pg_backend_pid(), 1000, 100)
    UNION ALL SELECT 'thousand', pg_temp.batch('thousand-' || pg_backend_pid(), 1000, 1000);
\echo 1000 records, 1 tenant / 100 tenants / 1000 tenants, then the first replayed (all skipped):
\timing on
SELECT * FROM tollgate_settle('bench-one-' || pg_backend_pid(), (SELECT j FROM bb WHERE k = 'one'));
SELECT * FROM tollgate_settle('bench-hundred-' || pg_backend_pid(), (SELECT j FROM bb WHERE k = 'hundred'));
SELECT * FROM tollgate_settle('bench-thousand-' || pg_backend_pid(), (SELECT j FROM bb WHERE k = 'thousand'));
SELECT * FROM tollgate_settle('bench-replay-' || pg_backend_pid(), (SELECT j FROM bb WHERE k = 'one'));
\timing off
SELECT count(*) AS violations FROM tollgate_ledger_check();
