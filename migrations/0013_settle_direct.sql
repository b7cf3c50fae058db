-- 0013_settle_direct: a settlement batch of fresh records COPYs them straight into usage_records,
-- not through the stage (issue #11's bench: the stage's COPY and its INSERT ... SELECT with ON
-- CONFLICT were about 5 of a record's 11 µs of database time). Applied by `tollgate migrate` inside
-- one transaction; forward-only.
--
-- The gateway's writer knows what 0012's tollgate_settle_staged has to find out: the records of a
-- batch it queued itself are new (a request is settled once, and a batch that fails is retried
-- through the stage below, never through this path again), and it can sum their charges per lease
-- as it sends them. So for such a batch it sends, in one transaction:
--
--   COPY usage_records (the stage's 24 columns, charged for charge, then charge_key) FROM STDIN
--   SELECT * FROM tollgate_settle_direct(batch, tenants[], leases[], sums[], paying[], first_at[],
--                                        records, closes[])
--
-- and the function does what tollgate_settle_staged does for records whose lease is open: lock the
-- leases, add the sums to them, one charge entry per lease (key usage_charge/<batch>/<lease>, the
-- key the records carry), close the per-request leases and the closes asked. What it cannot settle
-- raises, and the whole transaction rolls back: a lease that ended meanwhile (the batch holds a late
-- charge: SQLSTATE TG001), a record that is there already (the primary key: 23505), a batch key used
-- before. The writer then sends the same batch through the stage (tollgate_settle_staged), which
-- settles every case. Every row still passes the records' CHECKs, the primary key, the rollup
-- trigger, the entry's unique key and the wallet's trigger; the sums are the writer's, taken from
-- the rows it sends in the same transaction, and tollgate_ledger_check compares every charge entry
-- with the records under its key.

CREATE FUNCTION tollgate_settle_direct(p_batch text, p_tenant bigint[], p_lease bigint[], p_sum bigint[],
                                       p_paying integer[], p_first timestamptz[], p_records integer,
                                       p_close bigint[] DEFAULT '{}')
    RETURNS TABLE (recorded integer, charged bigint)
    LANGUAGE plpgsql AS $$
DECLARE
    open_ids bigint[];
    rows_done bigint;
    total bigint := 0;
    n integer := cardinality(p_lease);
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
        -- in (tenant, lease) order (the caller sorts), so the entries lock their wallets in order
        INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id, requests,
                                    records_from)
        SELECT u.tenant_id, 'usage_charge', -u.s, -u.s, 'usage_charge/' || p_batch || '/' || u.lease_id,
               u.lease_id, u.paying, u.first_at
          FROM unnest(p_tenant, p_lease, p_sum, p_paying, p_first) WITH ORDINALITY
               AS u(tenant_id, lease_id, s, paying, first_at, ord)
         ORDER BY u.ord;
        GET DIAGNOSTICS rows_done = ROW_COUNT;
        IF rows_done <> n THEN -- the entry trigger skipped a key that exists
            RAISE EXCEPTION 'settlement batch key % was used before', p_batch
                USING ERRCODE = 'unique_violation';
        END IF;
        SELECT sum(v) INTO total FROM unnest(p_sum) v;
    END IF;

    PERFORM tollgate_lease_end(id, 'closed')
       FROM leases WHERE id = ANY (open_ids) AND (request_id IS NOT NULL OR id = ANY (p_close))
      ORDER BY id;
    RETURN QUERY SELECT p_records, total;
END;
$$;
