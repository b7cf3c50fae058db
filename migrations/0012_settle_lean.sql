-- 0012_settle_lean: what a usage record costs PostgreSQL, cut (issue #11's bench: the settlement
-- batch took ~31 µs of database CPU per request, on the cores the gateway needs). Applied by
-- `tollgate migrate` inside one transaction; forward-only. Measured per record on a 1000-record
-- batch (billing/README.md, "What a record costs"): the jsonb parameter (parsed whole, then walked
-- twice by jsonb_to_recordset) was about half; five indexes, a numeric CHECK and the rollup the rest.
--
--   1. Records reach the settlement by COPY into a session's temporary stage table, not as one jsonb
--      parameter: tollgate_settle_stage_open() creates the stage (once per connection; its rows go
--      at commit), the writer COPYs a batch into it and calls tollgate_settle_staged(batch, closes)
--      in the same transaction. tollgate_settle(batch, jsonb, closes) stays, as a wrapper that fills
--      the stage from its jsonb (the journal of an older gateway, the tests' hand-made batches):
--      one body decides what is recorded and charged, whichever way the records came.
--   2. usage_records keeps two indexes of five: the primary key becomes (tenant, created_at,
--      request id), which is both the replay check (a record that exists is skipped) and the
--      keyset of a tenant's usage pages (the index usage_records_tenant_time_idx was, so it goes),
--      and (tenant, key, created_at) stays for a key's usage. The model filter walks the tenant's
--      time range (a model's totals come from usage_daily); the charge-key index only served
--      tollgate_ledger_check, which hashes instead.
--   3. tollgate_cost in bigint: the price split into whole micro-credits per token and a remainder
--      below 10^6, as billing/cost.c does, so every product stays below 10^16 and the sum is exact
--      with no numeric arithmetic (the CHECK on every record calls it).

-- 3. cost = tokens x prices in integers. With at most 10^9 tokens and 10^12 per million tokens:
-- tokens x (price div 10^6) <= 10^15, tokens x (price mod 10^6) < 10^15; the fractional parts are
-- summed before the one round-up, so the result equals the numeric form's for every input.
CREATE OR REPLACE FUNCTION tollgate_cost(p_input bigint, p_cached bigint, p_output bigint,
                                         p_price_input bigint, p_price_cached bigint,
                                         p_price_output bigint, p_byok boolean, p_byok_fee bigint)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_byok THEN p_byok_fee
                ELSE (p_input - p_cached) * (p_price_input / 1000000)
                     + p_cached * (p_price_cached / 1000000)
                     + p_output * (p_price_output / 1000000)
                     + ((p_input - p_cached) * (p_price_input % 1000000)
                        + p_cached * (p_price_cached % 1000000)
                        + p_output * (p_price_output % 1000000) + 999999) / 1000000 END
$$;

-- 2. Two indexes. The new primary key is built on every partition (ATTACH of a later month's
-- partition builds it there too, from the parent's).
ALTER TABLE usage_records DROP CONSTRAINT usage_records_pkey;
ALTER TABLE usage_records ADD PRIMARY KEY (tenant_id, created_at, request_id);
DROP INDEX usage_records_tenant_time_idx;
DROP INDEX usage_records_tenant_model_time_idx;
DROP INDEX usage_records_charge_key_idx;

-- 1. The stage: one batch's records, as the writer COPYs them (COPY text, these columns in this
-- order; gateway/src/ledger.c, record_row). Temporary, so each connection has its own and nothing
-- of it is logged; ON COMMIT DELETE ROWS empties it with the batch's transaction.
CREATE FUNCTION tollgate_settle_stage_open() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.tollgate_settle_stage') IS NOT NULL THEN
        RETURN; -- (not IF NOT EXISTS: its notice would reach the client on every call)
    END IF;
    CREATE TEMP TABLE tollgate_settle_stage (
        tenant_id bigint, request_id text, created_at timestamptz, key_id bigint, model text,
        provider text, byok boolean, input_tokens bigint, output_tokens bigint, cached_tokens bigint,
        estimated boolean, price_id bigint, price_input bigint, price_output bigint, price_cached bigint,
        platform_fee bigint, billed boolean, cost bigint, charge bigint, lease_id bigint,
        latency_ms integer, attempts smallint, status smallint, error text) ON COMMIT DELETE ROWS;
END;
$$;

-- The settlement of the stage's records: what 0007's tollgate_settle did with its jsonb (the
-- records, one charge entry per lease for the new records' charges, the late charges, the closes),
-- with set statements where 0007 looped per tenant. Call it in the transaction that filled the
-- stage, once per batch.
CREATE FUNCTION tollgate_settle_staged(p_batch text, p_close bigint[] DEFAULT '{}')
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
    -- FOR UPDATE returns each row as it is once locked, so `state` is the committed one
    SELECT coalesce(array_agg(id ORDER BY id) FILTER (WHERE state = 'open'), '{}') INTO open_ids
      FROM (SELECT id, state FROM leases
             WHERE id IN (SELECT x.lease_id FROM pg_temp.tollgate_settle_stage x
                          UNION SELECT unnest(p_close))
             ORDER BY id FOR UPDATE) locked;

    -- The records (a replayed one is skipped by the primary key), then per (tenant, lease) the sum
    -- of the new records' charges. "IN (SELECT unnest(...))" rather than "= ANY (...)": a hash of
    -- the open leases, not a walk of the array per record (1000 tenants make 1000 leases a batch).
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
                  usage_records.created_at
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

    -- One statement for every lease's charge and one for every charge entry: a statement per
    -- tenant costs PostgreSQL an executor start-up each (the bulk of a batch of many tenants).
    IF cardinality(g_lease) > 0 THEN
        UPDATE leases l SET charged = l.charged + u.s
          FROM unnest(g_lease, g_tenant, g_sum) AS u(lease_id, tenant_id, s)
         WHERE l.id = u.lease_id AND l.tenant_id = u.tenant_id;
        GET DIAGNOSTICS rows_done = ROW_COUNT;
        IF rows_done <> cardinality(g_lease) THEN
            RAISE EXCEPTION 'settlement % names a lease of another tenant than its records', p_batch
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        -- in (tenant, lease) order, so the entries lock their wallets in tenant order
        INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id, requests,
                                    records_from)
        SELECT u.tenant_id, 'usage_charge', -u.s, -u.s, 'usage_charge/' || p_batch || '/' || u.lease_id,
               u.lease_id, u.paying, u.first_at
          FROM unnest(g_tenant, g_lease, g_sum, g_paying, g_first) WITH ORDINALITY
               AS u(tenant_id, lease_id, s, paying, first_at, ord)
         ORDER BY u.ord;
        GET DIAGNOSTICS rows_done = ROW_COUNT;
        IF rows_done <> cardinality(g_lease) THEN -- the entry trigger skipped a key that exists
            RAISE EXCEPTION 'settlement batch key % was used before', p_batch
                USING ERRCODE = 'unique_violation';
        END IF;
        SELECT sum(v) INTO total FROM unnest(g_sum) v;
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
        n := n + 1;
        IF c > 0 THEN
            INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id, requests,
                                        records_from)
            VALUES (r.tenant_id, 'usage_charge', -c, 0, k, r.lease_id, 1, r.created_at);
            total := total + c;
        END IF;
    END LOOP;

    PERFORM tollgate_lease_end(id, 'closed')
       FROM leases WHERE id = ANY (open_ids) AND (request_id IS NOT NULL OR id = ANY (p_close))
      ORDER BY id;
    RETURN QUERY SELECT n, total;
END;
$$;

-- The jsonb form, for callers that have the records as JSON (a journal written before this
-- migration, tests): they go into the stage, then through the one body above.
CREATE OR REPLACE FUNCTION tollgate_settle(p_batch text, p_records jsonb, p_close bigint[] DEFAULT '{}')
    RETURNS TABLE (recorded integer, charged bigint)
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tollgate_settle_stage_open();
    DELETE FROM pg_temp.tollgate_settle_stage; -- a staged batch earlier in this transaction
    INSERT INTO pg_temp.tollgate_settle_stage
    SELECT * FROM jsonb_to_recordset(p_records) AS x(
        tenant_id bigint, request_id text, created_at timestamptz, key_id bigint, model text,
        provider text, byok boolean, input_tokens bigint, output_tokens bigint, cached_tokens bigint,
        estimated boolean, price_id bigint, price_input bigint, price_output bigint, price_cached bigint,
        platform_fee bigint, billed boolean, cost bigint, charge bigint, lease_id bigint,
        latency_ms integer, attempts smallint, status smallint, error text);
    RETURN QUERY SELECT * FROM tollgate_settle_staged(p_batch, p_close);
    DELETE FROM pg_temp.tollgate_settle_stage;
END;
$$;
