-- 0014_rollup_by_settlement: usage_daily is kept by the settlement itself, not by a trigger with a
-- transition table (issue #11's bench, 1000 tenants: perf put a quarter of the database's time per
-- record in that trigger and in what it cost the COPY). Applied by `tollgate migrate` inside one
-- transaction; forward-only.
--
-- Why: 0007's statement trigger on usage_records captured every inserted row into a tuplestore
-- (its transition table), then grouped them again. And PostgreSQL inserts a COPY into a partitioned
-- table row by row, not in multi-row batches, while the table has a trigger with a transition table
-- (copyfrom.c: "we can't support multi-inserts when there are any statement level insert triggers"
-- that read new rows). The writer of a fresh batch knows each group already: it passes the
-- per-(tenant, UTC day, model) sums of the very rows it COPYs.
--
--   1. The rollup trigger goes. In its place a statement-level BEFORE INSERT guard (no transition
--      table, so COPY keeps its multi-row inserts) refuses any statement that inserts usage records
--      in a transaction that has not said it keeps usage_daily itself (the setting
--      tollgate.usage_rollup = 'caller', local to the transaction). An old gateway's direct COPY,
--      or a hand-written INSERT, is refused instead of leaving the rollup short.
--   2. A second temporary stage per session, tollgate_rollup_stage: rollup rows, summed into
--      usage_daily by tollgate_usage_daily_fold() (one upsert in key order, as the trigger did),
--      which empties it and returns what it folded.
--   3. tollgate_settle_staged keeps the rollup of what it inserts (the records it inserted, each
--      late charge), and tollgate_settle_direct folds the rollup rows the writer COPYed, refusing
--      the batch when they do not add up to its records and charges (the writer then sends it
--      through the stage, as for any refusal).
--   4. tollgate_usage_daily_rebuild(tenant): a tenant's rollup recomputed from its records, from the
--      retention horizon on: for records written by hand (a repair, test data).
--   5. tollgate_charge_entries(batch, per-lease arrays): a batch's charge entries, which 0012 and
--      0013 each wrote out; both settlements call it now.
-- tollgate_ledger_check still compares every usage_daily row with the aggregate of its records.

DROP TRIGGER usage_records_rollup ON usage_records;
DROP FUNCTION tollgate_usage_rollup();

-- 1. The guard. Statement-level and BEFORE: one call per statement, whatever its rows.
CREATE FUNCTION tollgate_usage_records_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tollgate.usage_rollup', true) IS DISTINCT FROM 'caller' THEN
        RAISE EXCEPTION 'usage_records are written by the settlement functions, which keep usage_daily'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'A writer of its own sets tollgate.usage_rollup to ''caller'' in its transaction and '
                         'adds its records to usage_daily (tollgate_usage_daily_fold, or '
                         'tollgate_usage_daily_rebuild afterwards).';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER usage_records_guard BEFORE INSERT ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_usage_records_guard();

-- 2. The stages: 0012's settlement stage, unchanged, and the rollup stage (COPY text, these
-- columns in this order: billing/batch.h, TG_BATCH_ROLLUP_COPY_SQL). Both temporary, emptied at
-- commit.
CREATE OR REPLACE FUNCTION tollgate_settle_stage_open() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- (not IF NOT EXISTS: its notice would reach the client on every call)
    IF to_regclass('pg_temp.tollgate_settle_stage') IS NULL THEN
        CREATE TEMP TABLE tollgate_settle_stage (
            tenant_id bigint, request_id text, created_at timestamptz, key_id bigint, model text,
            provider text, byok boolean, input_tokens bigint, output_tokens bigint, cached_tokens bigint,
            estimated boolean, price_id bigint, price_input bigint, price_output bigint, price_cached bigint,
            platform_fee bigint, billed boolean, cost bigint, charge bigint, lease_id bigint,
            latency_ms integer, attempts smallint, status smallint, error text) ON COMMIT DELETE ROWS;
    END IF;
    IF to_regclass('pg_temp.tollgate_rollup_stage') IS NULL THEN
        CREATE TEMP TABLE tollgate_rollup_stage (
            tenant_id bigint NOT NULL, day date NOT NULL, model text NOT NULL, requests bigint NOT NULL,
            errors bigint NOT NULL, input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,
            cached_tokens bigint NOT NULL, cost bigint NOT NULL, charged bigint NOT NULL) ON COMMIT DELETE ROWS;
    END IF;
END;
$$;

-- Adds the rollup stage's rows to usage_daily (grouped again, so a caller may stage one row per
-- record), in key order so that two instances folding the same tenants lock their rows in the same
-- order; empties the stage. Returns the groups written and the requests and charges they added.
CREATE FUNCTION tollgate_usage_daily_fold(OUT n_groups integer, OUT n_requests bigint, OUT n_charged bigint)
    LANGUAGE plpgsql AS $$
BEGIN
    SELECT coalesce(sum(s.requests), 0)::bigint, coalesce(sum(s.charged), 0)::bigint
      INTO n_requests, n_charged FROM pg_temp.tollgate_rollup_stage s;
    WITH folded AS (
        INSERT INTO usage_daily AS d (tenant_id, day, model, requests, errors, input_tokens, output_tokens,
                                      cached_tokens, cost, charged)
        SELECT s.tenant_id, s.day, s.model, sum(s.requests), sum(s.errors), sum(s.input_tokens),
               sum(s.output_tokens), sum(s.cached_tokens), sum(s.cost), sum(s.charged)
          FROM pg_temp.tollgate_rollup_stage s
         GROUP BY 1, 2, 3
         ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, day, model) DO UPDATE
           SET requests = d.requests + EXCLUDED.requests, errors = d.errors + EXCLUDED.errors,
               input_tokens = d.input_tokens + EXCLUDED.input_tokens,
               output_tokens = d.output_tokens + EXCLUDED.output_tokens,
               cached_tokens = d.cached_tokens + EXCLUDED.cached_tokens,
               cost = d.cost + EXCLUDED.cost, charged = d.charged + EXCLUDED.charged
        RETURNING 1)
    SELECT count(*)::integer INTO n_groups FROM folded;
    DELETE FROM pg_temp.tollgate_rollup_stage;
END;
$$;

-- One usage_charge entry per (tenant, lease) of a batch, key usage_charge/<batch>/<lease>, in the
-- arrays' order: the callers pass (tenant, lease) order, so the entries lock their wallets in tenant
-- order. A key used before (the entry trigger skips it) refuses the whole batch. Returns the sum
-- charged. Both settlements below call it.
CREATE FUNCTION tollgate_charge_entries(p_batch text, p_tenant bigint[], p_lease bigint[], p_sum bigint[],
                                        p_paying integer[], p_first timestamptz[])
    RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    rows_done bigint;
BEGIN
    INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id, requests,
                                records_from)
    SELECT u.tenant_id, 'usage_charge', -u.s, -u.s, 'usage_charge/' || p_batch || '/' || u.lease_id,
           u.lease_id, u.paying, u.first_at
      FROM unnest(p_tenant, p_lease, p_sum, p_paying, p_first) WITH ORDINALITY
           AS u(tenant_id, lease_id, s, paying, first_at, ord)
     ORDER BY u.ord;
    GET DIAGNOSTICS rows_done = ROW_COUNT;
    IF rows_done <> cardinality(p_lease) THEN -- the entry trigger skipped a key that exists
        RAISE EXCEPTION 'settlement batch key % was used before', p_batch
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN coalesce((SELECT sum(v) FROM unnest(p_sum) v), 0);
END;
$$;

-- 3. 0012's settlement of the stage, with its rollup: the records it inserts and each late charge
-- go into the rollup stage, folded at the end. The rest is 0012's body as it was.
CREATE OR REPLACE FUNCTION tollgate_settle_staged(p_batch text, p_close bigint[] DEFAULT '{}')
    RETURNS TABLE (recorded integer, charged bigint)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    open_ids bigint[];
    g_tenant bigint[];
    g_lease bigint[];
    g_sum bigint[];
    g_paying integer[];
    g_first timestamptz[];
    r record;
    n integer := 0;
    total bigint := 0;
    rows_done bigint;
    avail bigint;
    c bigint;
    k text;
BEGIN
    PERFORM tollgate_settle_stage_open(); -- the rollup stage, for a session opened before 0014
    PERFORM set_config('tollgate.usage_rollup', 'caller', true);
    DELETE FROM pg_temp.tollgate_rollup_stage;

    -- FOR UPDATE returns each row as it is once locked, so `state` is the committed one
    SELECT coalesce(array_agg(id ORDER BY id) FILTER (WHERE state = 'open'), '{}') INTO open_ids
      FROM (SELECT id, state FROM leases
             WHERE id IN (SELECT x.lease_id FROM pg_temp.tollgate_settle_stage x
                          UNION SELECT unnest(p_close))
             ORDER BY id FOR UPDATE) locked;

    -- The records (a replayed one is skipped by the primary key), their rollup rows, then per
    -- (tenant, lease) the sum of the new records' charges.
    WITH ins AS (
        INSERT INTO usage_records (tenant_id, request_id, created_at, key_id, model, provider, byok,
                                   input_tokens, output_tokens, cached_tokens, estimated, price_id,
                                   price_input, price_output, price_cached, platform_fee, billed, cost,
                                   charged, charge_key, lease_id, latency_ms, attempts, status, error)
        SELECT tenant_id, request_id, created_at, key_id, model, provider, coalesce(byok, false),
               input_tokens, output_tokens, coalesce(cached_tokens, 0), coalesce(estimated, false),
               price_id, price_input, price_output, price_cached, coalesce(platform_fee, 0),
               coalesce(billed, true), cost, coalesce(charge, 0),
               CASE WHEN coalesce(charge, 0) > 0 THEN 'usage_charge/' || p_batch || '/' || lease_id END,
               lease_id, latency_ms, attempts, status, error
          FROM pg_temp.tollgate_settle_stage x
         WHERE coalesce(charge, 0) = 0 OR lease_id IN (SELECT unnest(open_ids))
         ORDER BY tenant_id, request_id
        ON CONFLICT DO NOTHING
        RETURNING usage_records.tenant_id, usage_records.lease_id, usage_records.charged,
                  usage_records.created_at, usage_records.model, usage_records.status,
                  usage_records.input_tokens, usage_records.output_tokens, usage_records.cached_tokens,
                  usage_records.cost
    ), roll AS (
        INSERT INTO pg_temp.tollgate_rollup_stage
        SELECT ins.tenant_id, (ins.created_at AT TIME ZONE 'UTC')::date, ins.model, count(*),
               count(*) FILTER (WHERE ins.status >= 400), sum(ins.input_tokens), sum(ins.output_tokens),
               sum(ins.cached_tokens), sum(ins.cost), sum(ins.charged)
          FROM ins GROUP BY 1, 2, 3
    ), grp AS (
        SELECT ins.tenant_id, ins.lease_id, sum(ins.charged)::bigint AS s, count(*)::integer AS cnt,
               (count(*) FILTER (WHERE ins.charged > 0))::integer AS paying,
               min(ins.created_at) FILTER (WHERE ins.charged > 0) AS first_at
          FROM ins GROUP BY 1, 2
    )
    SELECT coalesce(sum(cnt), 0),
           coalesce(array_agg(tenant_id ORDER BY tenant_id, lease_id) FILTER (WHERE s > 0), '{}'),
           coalesce(array_agg(lease_id ORDER BY tenant_id, lease_id) FILTER (WHERE s > 0), '{}'),
           coalesce(array_agg(s ORDER BY tenant_id, lease_id) FILTER (WHERE s > 0), '{}'),
           coalesce(array_agg(paying ORDER BY tenant_id, lease_id) FILTER (WHERE s > 0), '{}'),
           coalesce(array_agg(first_at ORDER BY tenant_id, lease_id) FILTER (WHERE s > 0), '{}')
      INTO n, g_tenant, g_lease, g_sum, g_paying, g_first
      FROM grp;

    IF cardinality(g_lease) > 0 THEN
        UPDATE leases l SET charged = l.charged + u.s
          FROM unnest(g_lease, g_tenant, g_sum) AS u(lease_id, tenant_id, s)
         WHERE l.id = u.lease_id AND l.tenant_id = u.tenant_id;
        GET DIAGNOSTICS rows_done = ROW_COUNT;
        IF rows_done <> cardinality(g_lease) THEN
            RAISE EXCEPTION 'settlement % names a lease of another tenant than its records', p_batch
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        total := tollgate_charge_entries(p_batch, g_tenant, g_lease, g_sum, g_paying, g_first);
    END IF;

    -- late charges: one entry per record, each clamped to what the wallet has available
    FOR r IN
        SELECT * FROM pg_temp.tollgate_settle_stage x
         WHERE coalesce(charge, 0) > 0 AND (lease_id IS NULL OR lease_id NOT IN (SELECT unnest(open_ids)))
         ORDER BY tenant_id, request_id
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM usage_records u WHERE u.tenant_id = r.tenant_id
                                 AND u.request_id = r.request_id AND u.created_at = r.created_at);
        SELECT balance - reserved INTO avail FROM wallets WHERE tenant_id = r.tenant_id FOR UPDATE;
        c := greatest(least(r.charge, coalesce(avail, 0)), 0);
        k := CASE WHEN c > 0 THEN 'usage_charge/late/' || r.tenant_id || '/' || r.request_id END;
        INSERT INTO usage_records (tenant_id, request_id, created_at, key_id, model, provider, byok,
                                   input_tokens, output_tokens, cached_tokens, estimated, price_id,
                                   price_input, price_output, price_cached, platform_fee, billed, cost,
                                   charged, charge_key, lease_id, latency_ms, attempts, status, error)
        VALUES (r.tenant_id, r.request_id, r.created_at, r.key_id, r.model, r.provider, coalesce(r.byok, false),
                r.input_tokens, r.output_tokens, coalesce(r.cached_tokens, 0), coalesce(r.estimated, false),
                r.price_id, r.price_input, r.price_output, r.price_cached, coalesce(r.platform_fee, 0),
                coalesce(r.billed, true), r.cost, c, k, r.lease_id, r.latency_ms, r.attempts, r.status,
                r.error);
        INSERT INTO pg_temp.tollgate_rollup_stage
        VALUES (r.tenant_id, (r.created_at AT TIME ZONE 'UTC')::date, r.model, 1, (r.status >= 400)::integer,
                r.input_tokens, r.output_tokens, coalesce(r.cached_tokens, 0), r.cost, c);
        n := n + 1;
        IF c > 0 THEN
            INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id, requests,
                                        records_from)
            VALUES (r.tenant_id, 'usage_charge', -c, 0, k, r.lease_id, 1, r.created_at);
            total := total + c;
        END IF;
    END LOOP;

    PERFORM tollgate_usage_daily_fold();
    PERFORM tollgate_lease_end(id, 'closed')
       FROM leases WHERE id = ANY (open_ids) AND (request_id IS NOT NULL OR id = ANY (p_close))
      ORDER BY id;
    RETURN QUERY SELECT n, total;
END;
$$;

-- 0013's settlement of a fresh batch, which now also folds the rollup rows the writer COPYed into
-- the rollup stage in the same transaction (after setting tollgate.usage_rollup, which its COPY
-- into usage_records needs). They must add up to the batch: as many requests as its records, as
-- much charged as its per-lease sums, else the batch is refused whole (the writer then sends it
-- through the stage, which takes its rollup from the records themselves).
CREATE OR REPLACE FUNCTION tollgate_settle_direct(p_batch text, p_tenant bigint[], p_lease bigint[],
                                                  p_sum bigint[], p_paying integer[], p_first timestamptz[],
                                                  p_records integer, p_close bigint[] DEFAULT '{}')
    RETURNS TABLE (recorded integer, charged bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    open_ids bigint[];
    rows_done bigint;
    total bigint := 0;
    n integer := cardinality(p_lease);
    f record;
BEGIN
    IF cardinality(p_tenant) <> n OR cardinality(p_sum) <> n OR cardinality(p_paying) <> n
       OR cardinality(p_first) <> n THEN
        RAISE EXCEPTION 'settlement %: the per-lease arrays differ in length', p_batch
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT coalesce(array_agg(id ORDER BY id) FILTER (WHERE state = 'open'), '{}') INTO open_ids
      FROM (SELECT id, state FROM leases
             WHERE id IN (SELECT unnest(p_lease) UNION SELECT unnest(p_close))
             ORDER BY id FOR UPDATE) locked;

    IF n > 0 THEN
        -- every lease charged is open and is its tenant's: else the stage settles the batch
        UPDATE leases l SET charged = l.charged + u.s
          FROM unnest(p_lease, p_tenant, p_sum) AS u(lease_id, tenant_id, s)
         WHERE l.id = u.lease_id AND l.tenant_id = u.tenant_id AND l.id IN (SELECT unnest(open_ids));
        GET DIAGNOSTICS rows_done = ROW_COUNT;
        IF rows_done <> n THEN
            RAISE EXCEPTION 'settlement %: a lease charged is not open, or not its tenant''s', p_batch
                USING ERRCODE = 'TG001';
        END IF;
        total := tollgate_charge_entries(p_batch, p_tenant, p_lease, p_sum, p_paying, p_first);
    END IF;

    f := tollgate_usage_daily_fold();
    IF f.n_requests <> p_records OR f.n_charged <> total THEN
        RAISE EXCEPTION 'settlement %: its rollup rows count % records charged %; the batch has % charged %',
                        p_batch, f.n_requests, f.n_charged, p_records, total
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM tollgate_lease_end(id, 'closed')
       FROM leases WHERE id = ANY (open_ids) AND (request_id IS NOT NULL OR id = ANY (p_close))
      ORDER BY id;
    RETURN QUERY SELECT p_records, total;
END;
$$;

-- 4. A tenant's rollup from its records, for days from the retention horizon on (earlier days keep
-- their rows: their records are gone). For records written other than by the settlement.
CREATE FUNCTION tollgate_usage_daily_rebuild(p_tenant bigint) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    since date := (SELECT (horizon AT TIME ZONE 'UTC')::date FROM usage_retention);
    made integer;
BEGIN
    DELETE FROM usage_daily WHERE tenant_id = p_tenant AND day >= since;
    INSERT INTO usage_daily (tenant_id, day, model, requests, errors, input_tokens, output_tokens,
                             cached_tokens, cost, charged)
    SELECT u.tenant_id, (u.created_at AT TIME ZONE 'UTC')::date, u.model, count(*),
           count(*) FILTER (WHERE u.status >= 400), sum(u.input_tokens), sum(u.output_tokens),
           sum(u.cached_tokens), sum(u.cost), sum(u.charged)
      FROM usage_records u
     WHERE u.tenant_id = p_tenant AND (u.created_at AT TIME ZONE 'UTC')::date >= since
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3;
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END;
$$;
