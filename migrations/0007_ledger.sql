-- 0007_ledger: the credit ledger (billing/README.md; docs/CONVENTIONS.md, "Money").
-- Applied by `tollgate migrate` inside one transaction; forward-only.
--
-- Money is bigint micro-credits everywhere; no column, parameter or intermediate value is floating
-- point (costs are computed in numeric, exactly, and rounded once, up, by tollgate_cost).
--
-- The shape in one paragraph: a wallet (one per tenant) keeps `balance` (credits owned, not yet
-- spent), `reserved` (the part of it held by open leases) and `spent`, and those three are moved
-- only by inserting ledger entries: a BEFORE INSERT trigger locks the wallet row, applies the
-- entry and stamps it with the wallet's running sequence and balances. The wallet's CHECKs refuse
-- any entry that would leave `balance < reserved` (an overspend) or a negative hold. Entries are
-- never updated or deleted. Leases move credits from available to reserved; usage charges take
-- them out of a lease (or, late, out of what is available); lease releases return what a lease
-- did not spend.

-- Wallet ------------------------------------------------------------------------------------------

CREATE TABLE wallets (
    tenant_id  bigint PRIMARY KEY REFERENCES tenants (id),
    balance    bigint NOT NULL DEFAULT 0, -- owned and not spent (includes `reserved`)
    reserved   bigint NOT NULL DEFAULT 0, -- held by open leases, not yet charged
    spent      bigint NOT NULL DEFAULT 0, -- usage charges minus refunds
    entries    bigint NOT NULL DEFAULT 0, -- seq of the last entry
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wallets_reserved_nonnegative CHECK (reserved >= 0),
    CONSTRAINT wallets_no_overspend CHECK (balance >= reserved),
    CONSTRAINT wallets_spent_nonnegative CHECK (spent >= 0)
);

-- The wallet row changes only through the ledger trigger below (trigger depth 2); a direct UPDATE
-- or DELETE is refused, so the balance cannot drift from its entries by accident.
CREATE FUNCTION tollgate_wallets_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'wallets change only through ledger_entries (tenant %)', OLD.tenant_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;
CREATE TRIGGER wallets_guard BEFORE UPDATE OR DELETE ON wallets
    FOR EACH ROW EXECUTE FUNCTION tollgate_wallets_guard();

-- Leases ------------------------------------------------------------------------------------------
-- A lease is a slice of a wallet held by one gateway instance (request_id NULL) or by one request
-- (an exact per-request reservation, request_id set). `charged` only grows, up to `amount`; when the
-- lease ends (closed by its holder, or expired), `released` = amount - charged goes back.

CREATE TABLE leases (
    id         bigserial PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES wallets (tenant_id),
    instance   text NOT NULL CHECK (char_length(instance) BETWEEN 1 AND 128),
    request_id text CHECK (char_length(request_id) BETWEEN 1 AND 64),
    amount     bigint NOT NULL CHECK (amount > 0),
    charged    bigint NOT NULL DEFAULT 0,
    released   bigint NOT NULL DEFAULT 0,
    state      text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'expired')),
    opened_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    closed_at  timestamptz,
    CONSTRAINT leases_charged_within CHECK (charged >= 0 AND charged <= amount),
    CONSTRAINT leases_released_rest CHECK ((state = 'open' AND released = 0 AND closed_at IS NULL)
                                           OR (state <> 'open' AND charged + released = amount
                                               AND closed_at IS NOT NULL))
);
CREATE INDEX leases_open_expiry_idx ON leases (expires_at) WHERE state = 'open';
CREATE INDEX leases_tenant_open_idx ON leases (tenant_id) WHERE state = 'open';

-- Ledger ------------------------------------------------------------------------------------------
-- amount: change to the wallet's balance; hold: change to its reserved part.
--   top_up, trial_grant, refund   amount > 0, hold 0
--   correction                     amount <> 0, hold 0
--   lease                          amount 0,  hold +leased        (lease_id)
--   lease_release                  amount 0,  hold -unused        (lease_id)
--   usage_charge                   amount -c, hold -c from a lease (lease_id), or hold 0 when
--                                  charged late from what is available (the lease had ended)
-- seq, balance_after and reserved_after are stamped by the trigger: entry n of a wallet carries the
-- balances after it, so the whole history is checkable, not only the current row.

CREATE TABLE ledger_entries (
    id              bigserial PRIMARY KEY,
    tenant_id       bigint NOT NULL REFERENCES wallets (tenant_id),
    seq             bigint NOT NULL,
    kind            text NOT NULL,
    amount          bigint NOT NULL,
    hold            bigint NOT NULL DEFAULT 0,
    balance_after   bigint NOT NULL,
    reserved_after  bigint NOT NULL,
    idempotency_key text NOT NULL UNIQUE CHECK (octet_length(idempotency_key) BETWEEN 1 AND 400),
    lease_id        bigint REFERENCES leases (id),
    requests        integer NOT NULL DEFAULT 0 CHECK (requests >= 0), -- usage_charge: records settled
    records_from    timestamptz, -- usage_charge: the earliest created_at of its records (retention)
    note            text CHECK (char_length(note) <= 500),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, seq),
    CONSTRAINT ledger_entries_shape CHECK (CASE kind
        WHEN 'top_up' THEN amount > 0 AND hold = 0
        WHEN 'trial_grant' THEN amount > 0 AND hold = 0
        WHEN 'refund' THEN amount > 0 AND hold = 0
        WHEN 'correction' THEN amount <> 0 AND hold = 0
        WHEN 'lease' THEN amount = 0 AND hold > 0 AND lease_id IS NOT NULL
        WHEN 'lease_release' THEN amount = 0 AND hold < 0 AND lease_id IS NOT NULL
        WHEN 'usage_charge' THEN amount < 0 AND ((hold = amount AND lease_id IS NOT NULL) OR hold = 0)
        ELSE false END)
);
CREATE INDEX ledger_entries_lease_idx ON ledger_entries (lease_id) WHERE lease_id IS NOT NULL;

-- Applies an entry to its wallet. The wallet row lock serialises a tenant's entries, so seq is
-- gapless and balance_after is the running sum. An entry whose idempotency key exists already is
-- not inserted (the INSERT reports 0 rows; the caller reads the existing one): the check runs after
-- the lock, so a concurrent twin that committed first is seen. Never INSERT ... ON CONFLICT into
-- this table: the trigger has moved the wallet before a conflict would be found (every key names
-- its tenant, so a twin always meets the check above, and a plain unique violation undoes all).
CREATE FUNCTION tollgate_ledger_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    w wallets%ROWTYPE;
BEGIN
    SELECT * INTO w FROM wallets WHERE tenant_id = NEW.tenant_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant % has no wallet', NEW.tenant_id USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM ledger_entries WHERE idempotency_key = NEW.idempotency_key) THEN
        RETURN NULL;
    END IF;
    NEW.seq := w.entries + 1;
    NEW.balance_after := w.balance + NEW.amount;
    NEW.reserved_after := w.reserved + NEW.hold;
    NEW.created_at := clock_timestamp();
    UPDATE wallets
       SET balance = NEW.balance_after,
           reserved = NEW.reserved_after,
           spent = w.spent + CASE NEW.kind WHEN 'usage_charge' THEN -NEW.amount
                                          WHEN 'refund' THEN -NEW.amount ELSE 0 END,
           entries = NEW.seq,
           updated_at = NEW.created_at
     WHERE tenant_id = NEW.tenant_id;
    RETURN NEW;
END;
$$;
CREATE TRIGGER ledger_entries_apply BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate_ledger_apply();

-- Append-only: a correction is a new entry.
CREATE FUNCTION tollgate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION tollgate_append_only();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_append_only();

-- Prices ------------------------------------------------------------------------------------------
-- Per model (the name tollgate serves, as in the config's `models`), per million tokens, in
-- micro-credits; byok_fee is the platform fee a BYOK request pays instead of token prices. A price
-- change is a new row with a later effective_from; rows are never changed, so the price in effect at
-- any past time stays known (and each usage record carries its own copy besides).

CREATE TABLE prices (
    id                    bigserial PRIMARY KEY,
    model                 text NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    input_per_mtok        bigint NOT NULL CHECK (input_per_mtok BETWEEN 0 AND 1000000000000),
    output_per_mtok       bigint NOT NULL CHECK (output_per_mtok BETWEEN 0 AND 1000000000000),
    cached_input_per_mtok bigint NOT NULL CHECK (cached_input_per_mtok BETWEEN 0 AND 1000000000000),
    byok_fee              bigint NOT NULL DEFAULT 0 CHECK (byok_fee BETWEEN 0 AND 1000000000000),
    effective_from        timestamptz NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    UNIQUE (model, effective_from)
);
CREATE TRIGGER prices_append_only BEFORE UPDATE OR DELETE ON prices
    FOR EACH ROW EXECUTE FUNCTION tollgate_append_only();

-- Every new price tells the gateways to reload their snapshot (billing/prices.h).
CREATE FUNCTION tollgate_prices_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tollgate_prices', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER prices_changed AFTER INSERT ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION tollgate_prices_notify();

-- The one rounding rule (billing/cost.h computes the same, in integers): the exact sum of the three
-- token x price products, divided by one million, rounded up once to a whole micro-credit. Integer
-- division of numerics (div), never `/`: numeric `/` rounds its quotient to a limited number of
-- digits, which for sums near 10^21 drops the fraction that the round-up must see. Input
-- tokens include the cached ones (as OpenAI counts prompt tokens); cached tokens are priced at the
-- cached rate, the rest of the input at the input rate. A BYOK request costs the platform fee.
CREATE FUNCTION tollgate_cost(p_input bigint, p_cached bigint, p_output bigint, p_price_input bigint,
                              p_price_cached bigint, p_price_output bigint, p_byok boolean,
                              p_byok_fee bigint)
    RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_byok THEN p_byok_fee
                ELSE div((p_input - p_cached)::numeric * p_price_input
                         + p_cached::numeric * p_price_cached
                         + p_output::numeric * p_price_output + 999999, 1000000)::bigint END
$$;

-- Usage records -----------------------------------------------------------------------------------
-- One row per admitted chat request, written by the settlement batch (tollgate_settle). The primary
-- key must hold the partition key, so "one record per request" is (tenant, request id, created_at):
-- a replayed settlement carries its original created_at and is a no-op; tollgate_ledger_check finds
-- any request id recorded twice under two times.
--   billed:  false for a request that costs nothing (it ended in an error with no completion
--            tokens); its cost is then 0 whatever its tokens.
--   cost:    tollgate_cost(tokens, the prices on the row) when billed (a CHECK).
--   charged: what the ledger took, <= cost: less only when an underestimated request went past its
--            hold and the lease (or, late, the wallet) could not cover the difference (the operator
--            absorbs it; a wallet never goes below zero).
--   charge_key: the usage_charge entry that took `charged` (NULL when charged is 0).

CREATE TABLE usage_records (
    tenant_id      bigint NOT NULL,
    request_id     text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 64),
    created_at     timestamptz NOT NULL,
    key_id         bigint,
    model          text NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    provider       text NOT NULL CHECK (char_length(provider) BETWEEN 1 AND 64),
    byok           boolean NOT NULL DEFAULT false,
    input_tokens   bigint NOT NULL CHECK (input_tokens BETWEEN 0 AND 1000000000),
    output_tokens  bigint NOT NULL CHECK (output_tokens BETWEEN 0 AND 1000000000),
    cached_tokens  bigint NOT NULL DEFAULT 0 CHECK (cached_tokens BETWEEN 0 AND input_tokens),
    estimated      boolean NOT NULL DEFAULT false,
    price_id       bigint,
    price_input    bigint NOT NULL CHECK (price_input BETWEEN 0 AND 1000000000000),
    price_output   bigint NOT NULL CHECK (price_output BETWEEN 0 AND 1000000000000),
    price_cached   bigint NOT NULL CHECK (price_cached BETWEEN 0 AND 1000000000000),
    platform_fee   bigint NOT NULL DEFAULT 0 CHECK (platform_fee BETWEEN 0 AND 1000000000000),
    billed         boolean NOT NULL DEFAULT true,
    cost           bigint NOT NULL,
    charged        bigint NOT NULL,
    charge_key     text,
    lease_id       bigint,
    latency_ms     integer CHECK (latency_ms >= 0),
    attempts       smallint CHECK (attempts >= 0),
    status         smallint NOT NULL, -- the HTTP status the client got
    error          text CHECK (char_length(error) <= 64), -- the error code, if any
    PRIMARY KEY (tenant_id, request_id, created_at),
    CONSTRAINT usage_records_cost CHECK (cost = CASE WHEN billed
        THEN tollgate_cost(input_tokens, cached_tokens, output_tokens, price_input, price_cached,
                           price_output, byok, platform_fee) ELSE 0 END),
    CONSTRAINT usage_records_charged CHECK (charged BETWEEN 0 AND cost
                                            AND (charged = 0) = (charge_key IS NULL))
) PARTITION BY RANGE (created_at);

-- The admin and tenant queries: a tenant's records newest first (with a (created_at, request_id)
-- cursor), by key, by model.
CREATE INDEX usage_records_tenant_time_idx ON usage_records (tenant_id, created_at, request_id);
CREATE INDEX usage_records_tenant_key_time_idx ON usage_records (tenant_id, key_id, created_at);
CREATE INDEX usage_records_tenant_model_time_idx ON usage_records (tenant_id, model, created_at);
CREATE INDEX usage_records_charge_key_idx ON usage_records (charge_key) WHERE charge_key IS NOT NULL;

-- Rows of a month without a partition land here; tollgate_usage_partitions() moves them into the
-- month's partition when it creates it. Retention is DROP TABLE of a month, never DELETE.
CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;

-- Creates the monthly partitions usage_records_yYYYYmMM from p_from's month for p_months months
-- (existing ones are kept). Returns how many it created. `tollgate migrate` creates this month and
-- the next two; a gateway calls it at start and daily (a month ahead is always there).
CREATE FUNCTION tollgate_usage_partitions(p_from timestamptz, p_months integer) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    lo timestamptz;
    hi timestamptz;
    part text;
    made integer := 0;
BEGIN
    FOR i IN 0 .. p_months - 1 LOOP
        -- month arithmetic on UTC timestamps: timestamptz + interval would follow the session's zone
        lo := (date_trunc('month', p_from AT TIME ZONE 'UTC') + make_interval(months => i)) AT TIME ZONE 'UTC';
        hi := (date_trunc('month', p_from AT TIME ZONE 'UTC') + make_interval(months => i + 1)) AT TIME ZONE 'UTC';
        part := format('usage_records_y%sm%s', to_char(lo AT TIME ZONE 'UTC', 'YYYY'),
                       to_char(lo AT TIME ZONE 'UTC', 'MM'));
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE usage_records INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part);
        EXECUTE format('WITH moved AS (DELETE FROM usage_records_default WHERE created_at >= $1 AND created_at < $2 '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
        EXECUTE format('ALTER TABLE usage_records ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        made := made + 1;
    END LOOP;
    RETURN made;
END;
$$;
SELECT tollgate_usage_partitions(now(), 3);

-- Retention: usage records before `horizon` have been dropped (whole months). Ledger entries and the
-- daily rollup are kept forever; tollgate_ledger_check compares records with entries and rollup
-- rows only from the horizon on.
CREATE TABLE usage_retention (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    horizon timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO usage_retention DEFAULT VALUES;

-- Drops the usage records of every month before p_before (a UTC month start, not after the current
-- month's): their partitions are dropped, never DELETEd row by row; rows of those months in the
-- default partition are removed. Returns how many partitions it dropped.
CREATE FUNCTION tollgate_usage_drop_before(p_before timestamptz) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    part record;
    lo timestamptz;
    n integer := 0;
BEGIN
    IF p_before <> date_trunc('month', p_before AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
       OR p_before > date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' THEN
        RAISE EXCEPTION 'usage retention: % is not a past UTC month start', p_before
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR part IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'usage_records'::regclass AND c.relname ~ '^usage_records_y[0-9]{4}m[0-9]{2}$'
                 ORDER BY 1 LOOP
        -- the month the name says (usage_records_yYYYYmMM), its end in UTC
        lo := (substr(part.relname, 16, 4) || '-' || substr(part.relname, 21, 2) || '-01 00:00:00+00')::timestamptz;
        CONTINUE WHEN (lo AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC' > p_before;
        EXECUTE format('ALTER TABLE usage_records DETACH PARTITION %I', part.relname);
        EXECUTE format('DROP TABLE %I', part.relname);
        n := n + 1;
    END LOOP;
    DELETE FROM usage_records_default WHERE created_at < p_before;
    UPDATE usage_retention SET horizon = greatest(horizon, p_before);
    RETURN n;
END;
$$;

-- Per tenant, UTC day and model, maintained as records land: one statement-level trigger folds a
-- whole settlement batch in with one upsert per (tenant, day, model), rows locked in key order.
-- A trigger (rather than the writer) so that no way of inserting records can skip it.
CREATE TABLE usage_daily (
    tenant_id     bigint NOT NULL,
    day           date NOT NULL,
    model         text NOT NULL,
    requests      bigint NOT NULL,
    errors        bigint NOT NULL,
    input_tokens  bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cached_tokens bigint NOT NULL,
    cost          bigint NOT NULL,
    charged       bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, model)
);

CREATE FUNCTION tollgate_usage_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_daily AS d (tenant_id, day, model, requests, errors, input_tokens, output_tokens,
                                  cached_tokens, cost, charged)
    SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, model, count(*), count(*) FILTER (WHERE status >= 400),
           sum(input_tokens), sum(output_tokens), sum(cached_tokens), sum(cost), sum(charged)
      FROM new_rows
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, day, model) DO UPDATE
       SET requests = d.requests + EXCLUDED.requests, errors = d.errors + EXCLUDED.errors,
           input_tokens = d.input_tokens + EXCLUDED.input_tokens,
           output_tokens = d.output_tokens + EXCLUDED.output_tokens,
           cached_tokens = d.cached_tokens + EXCLUDED.cached_tokens,
           cost = d.cost + EXCLUDED.cost, charged = d.charged + EXCLUDED.charged;
    RETURN NULL;
END;
$$;
CREATE TRIGGER usage_records_rollup AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tollgate_usage_rollup();

-- Wallet functions (billing/wallet.c calls them; each is one statement, so one transaction) ----

-- Opens a tenant's wallet (idempotent) and grants the trial credits once (key trial_grant/<tenant>).
-- Returns the wallet's balance after.
CREATE FUNCTION tollgate_wallet_open(p_tenant bigint, p_trial bigint) RETURNS bigint
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wallets (tenant_id) VALUES (p_tenant) ON CONFLICT (tenant_id) DO NOTHING;
    IF p_trial > 0 THEN
        INSERT INTO ledger_entries (tenant_id, kind, amount, idempotency_key, note)
        VALUES (p_tenant, 'trial_grant', p_trial, 'trial_grant/' || p_tenant, 'trial credits');
    END IF;
    RETURN (SELECT balance FROM wallets WHERE tenant_id = p_tenant);
END;
$$;

-- A top-up, idempotent on the caller's key (scoped to the tenant): the first call creates the entry
-- ('created'); the same key with the same amount returns that entry ('replayed'); with another
-- amount, nothing is written ('conflict', the existing entry returned).
CREATE FUNCTION tollgate_top_up(p_tenant bigint, p_amount bigint, p_key text, p_note text)
    RETURNS TABLE (outcome text, entry_id bigint, amount bigint, balance_after bigint, created_at timestamptz)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    k text := 'top_up/' || p_tenant || '/' || p_key;
    e ledger_entries%ROWTYPE;
BEGIN
    INSERT INTO ledger_entries (tenant_id, kind, amount, idempotency_key, note)
    VALUES (p_tenant, 'top_up', p_amount, k, p_note)
    RETURNING * INTO e;
    IF FOUND THEN
        RETURN QUERY SELECT 'created'::text, e.id, e.amount, e.balance_after, e.created_at;
        RETURN;
    END IF;
    SELECT * INTO e FROM ledger_entries l WHERE l.idempotency_key = k;
    RETURN QUERY SELECT CASE WHEN e.amount = p_amount THEN 'replayed' ELSE 'conflict' END, e.id, e.amount,
                        e.balance_after, e.created_at;
END;
$$;

-- Lease functions (the gateway's lease engine, billing/lease.h, asks through these) -------------

-- Opens a lease for p_tenant: at most p_want, at most p_share percent of what is available (but
-- p_min when that much is available), never more than available; nothing when that is below p_min
-- (the caller then reserves per request, exactly). Idempotent on (instance, tenant, key): the
-- entry's key is lease/<instance>/<tenant>/<key>, so an open retried after a lost answer returns the
-- lease it made. The answer has the wallet's available credits after, so the caller can size its
-- next ask.
CREATE FUNCTION tollgate_lease_open(p_tenant bigint, p_instance text, p_key text, p_want bigint,
                                    p_min bigint, p_share integer, p_ttl_ms integer,
                                    p_request_id text DEFAULT NULL)
    RETURNS TABLE (lease_id bigint, amount bigint, expires_at timestamptz, available bigint)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    w wallets%ROWTYPE;
    k text := 'lease/' || p_instance || '/' || p_tenant || '/' || p_key;
    g bigint;
    l leases%ROWTYPE;
BEGIN
    SELECT * INTO w FROM wallets WHERE tenant_id = p_tenant FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT le.* INTO l FROM ledger_entries e JOIN leases le ON le.id = e.lease_id WHERE e.idempotency_key = k;
    IF FOUND THEN -- asked before: that lease, unless it has ended since (then nothing: ask anew)
        RETURN QUERY SELECT CASE WHEN l.state = 'open' THEN l.id END,
                            CASE WHEN l.state = 'open' THEN l.amount ELSE 0 END,
                            CASE WHEN l.state = 'open' THEN l.expires_at END, w.balance - w.reserved;
        RETURN;
    END IF;
    g := least(p_want, greatest((w.balance - w.reserved) * p_share / 100, p_min), w.balance - w.reserved);
    IF g < greatest(p_min, 1) THEN
        RETURN QUERY SELECT NULL::bigint, 0::bigint, NULL::timestamptz, w.balance - w.reserved;
        RETURN;
    END IF;
    INSERT INTO leases (tenant_id, instance, request_id, amount, expires_at)
    VALUES (p_tenant, p_instance, p_request_id, g, now() + make_interval(secs => p_ttl_ms / 1000.0))
    RETURNING * INTO l;
    INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id)
    VALUES (p_tenant, 'lease', 0, g, k, l.id);
    RETURN QUERY SELECT l.id, l.amount, l.expires_at, w.balance - w.reserved - g;
END;
$$;

-- Moves an open lease's expiry later (a lease still draining long requests). Returns the new expiry,
-- or nothing when the lease is no longer open.
CREATE FUNCTION tollgate_lease_extend(p_lease bigint, p_ttl_ms integer) RETURNS timestamptz
    LANGUAGE sql AS $$
    UPDATE leases SET expires_at = greatest(expires_at, now() + make_interval(secs => p_ttl_ms / 1000.0))
     WHERE id = p_lease AND state = 'open'
    RETURNING expires_at
$$;

-- Ends a lease (its holder closes it, or it expired): what it did not charge goes back to the
-- wallet as a lease_release. Idempotent: an ended lease is left as it is. Returns the released part.
CREATE FUNCTION tollgate_lease_end(p_lease bigint, p_state text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    l leases%ROWTYPE;
BEGIN
    SELECT * INTO l FROM leases WHERE id = p_lease FOR UPDATE;
    IF NOT FOUND OR l.state <> 'open' THEN
        RETURN 0;
    END IF;
    IF l.amount > l.charged THEN
        INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id)
        VALUES (l.tenant_id, 'lease_release', 0, l.charged - l.amount, 'lease_release/' || l.id, l.id);
    END IF;
    UPDATE leases SET state = p_state, released = l.amount - l.charged, closed_at = now() WHERE id = l.id;
    RETURN l.amount - l.charged;
END;
$$;

CREATE FUNCTION tollgate_lease_close(p_lease bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT tollgate_lease_end(p_lease, 'closed')
$$;

-- Ends every open lease past its expiry (the holder crashed or lost the database). Any instance may
-- run it; SKIP LOCKED lets two run at once. Returns how many it ended.
CREATE FUNCTION tollgate_leases_expire() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := 0;
    id_ bigint;
BEGIN
    FOR id_ IN SELECT id FROM leases WHERE state = 'open' AND expires_at <= now() ORDER BY id
               FOR UPDATE SKIP LOCKED LOOP
        PERFORM tollgate_lease_end(id_, 'expired');
        n := n + 1;
    END LOOP;
    RETURN n;
END;
$$;

-- Settlement: one call per group-committed batch -------------------------------------------------
-- p_batch: a key unique to this batch (instance and batch number); p_records: a JSON array of usage
-- records, each with `charge` (what the lease engine settled, <= cost) and `lease_id`; p_close: the
-- leases to close after charging (the engine's drained leases). In one transaction:
--   1. the batch's leases are locked in id order (then wallets, through the entries, in tenant
--      order: every ledger writer takes leases before wallets, so batches cannot deadlock);
--   2. records of open leases (and records charging nothing) are inserted; a record that exists
--      already (a replay) is skipped; one usage_charge entry per lease takes the sum of the new
--      records' charges from the lease (the lease's CHECK refuses a charge beyond it);
--   3. records of leases that ended before their settlement landed (a crash, then a journal
--      replay after the expiry) are charged late from what is available, each clamped to it;
--   4. per-request leases in the batch, and p_close, are closed.
-- Returns the number of records inserted and the sum charged.
CREATE FUNCTION tollgate_settle(p_batch text, p_records jsonb, p_close bigint[] DEFAULT '{}')
    RETURNS TABLE (recorded integer, charged bigint)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    open_ids bigint[];
    g record;
    r record;
    n integer := 0;
    total bigint := 0;
    avail bigint;
    c bigint;
    k text;
    eid bigint;
BEGIN
    -- FOR UPDATE returns each row as it is once locked, so `state` is the committed one
    SELECT coalesce(array_agg(id ORDER BY id) FILTER (WHERE state = 'open'), '{}') INTO open_ids
      FROM (SELECT id, state FROM leases
             WHERE id IN (SELECT (x ->> 'lease_id')::bigint FROM jsonb_array_elements(p_records) x
                          UNION SELECT unnest(p_close))
             ORDER BY id FOR UPDATE) locked;

    FOR g IN
        WITH x AS (
            SELECT * FROM jsonb_to_recordset(p_records) AS x(
                tenant_id bigint, request_id text, created_at timestamptz, key_id bigint, model text,
                provider text, byok boolean, input_tokens bigint, output_tokens bigint, cached_tokens bigint,
                estimated boolean, price_id bigint, price_input bigint, price_output bigint, price_cached bigint,
                platform_fee bigint, billed boolean, cost bigint, charge bigint, lease_id bigint,
                latency_ms integer, attempts smallint, status smallint, error text)
        ), ins AS (
            INSERT INTO usage_records (tenant_id, request_id, created_at, key_id, model, provider, byok,
                                       input_tokens, output_tokens, cached_tokens, estimated, price_id,
                                       price_input, price_output, price_cached, platform_fee, billed, cost,
                                       charged, charge_key, lease_id, latency_ms, attempts, status, error)
            SELECT tenant_id, request_id, created_at, key_id, model, provider, coalesce(byok, false),
                   input_tokens, output_tokens, coalesce(cached_tokens, 0), coalesce(estimated, false),
                   price_id, price_input, price_output, price_cached, coalesce(platform_fee, 0),
                   coalesce(billed, true), cost, coalesce(charge, 0),
                   CASE WHEN coalesce(charge, 0) > 0
                        THEN 'usage_charge/' || p_batch || '/' || lease_id END,
                   lease_id, latency_ms, attempts, status, error
              FROM x
             WHERE coalesce(charge, 0) = 0 OR lease_id = ANY (open_ids)
             ORDER BY tenant_id, request_id
            ON CONFLICT DO NOTHING
            RETURNING usage_records.tenant_id, usage_records.lease_id, usage_records.charged,
                      usage_records.created_at
        )
        SELECT ins.tenant_id, ins.lease_id, sum(ins.charged)::bigint AS s, count(*)::integer AS cnt,
               (count(*) FILTER (WHERE ins.charged > 0))::integer AS paying,
               min(ins.created_at) FILTER (WHERE ins.charged > 0) AS first_at
          FROM ins GROUP BY 1, 2 ORDER BY 1, 2
    LOOP
        n := n + g.cnt;
        CONTINUE WHEN g.s = 0;
        UPDATE leases SET charged = leases.charged + g.s WHERE id = g.lease_id AND tenant_id = g.tenant_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'settlement % names lease % for another tenant than %', p_batch, g.lease_id,
                g.tenant_id USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        INSERT INTO ledger_entries (tenant_id, kind, amount, hold, idempotency_key, lease_id, requests,
                                    records_from)
        VALUES (g.tenant_id, 'usage_charge', -g.s, -g.s, 'usage_charge/' || p_batch || '/' || g.lease_id,
                g.lease_id, g.paying, g.first_at)
        RETURNING id INTO eid;
        IF eid IS NULL THEN
            RAISE EXCEPTION 'settlement batch key % was used before', p_batch
                USING ERRCODE = 'unique_violation';
        END IF;
        total := total + g.s;
    END LOOP;

    -- late charges: one entry per record, each clamped to what the wallet has available
    FOR r IN
        SELECT * FROM jsonb_to_recordset(p_records) AS x(
            tenant_id bigint, request_id text, created_at timestamptz, key_id bigint, model text,
            provider text, byok boolean, input_tokens bigint, output_tokens bigint, cached_tokens bigint,
            estimated boolean, price_id bigint, price_input bigint, price_output bigint, price_cached bigint,
            platform_fee bigint, billed boolean, cost bigint, charge bigint, lease_id bigint,
            latency_ms integer, attempts smallint, status smallint, error text)
         WHERE coalesce(charge, 0) > 0 AND (lease_id IS NULL OR NOT lease_id = ANY (open_ids))
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

-- The invariants, checked in one query ------------------------------------------------------------
-- `SELECT * FROM tollgate_ledger_check()` returns one row per violation, none when all hold:
--   balance      a wallet's balance / reserved / spent / entry count differs from its entries; an
--                entry's balance_after or reserved_after differs from the running sum; reserved
--                differs from its open leases' uncharged part; a lease's amount, charges or release
--                differ from its entries
--   overspend    an entry or a wallet with balance below reserved or a negative hold; a lease
--                charged beyond its amount
--   charged_twice  a request recorded more than once; a usage_charge entry whose amount is not the
--                sum its records name; a charged record with no entry
--   cost         a record whose cost is not tollgate_cost(its tokens, its prices), or whose prices
--                differ from the price row it names
--   rollup       a usage_daily row that differs from its records
CREATE FUNCTION tollgate_ledger_check()
    RETURNS TABLE (invariant text, tenant_id bigint, detail text)
    LANGUAGE sql STABLE AS $$
    -- balance = sum of entries
    SELECT 'balance', w.tenant_id,
           format('wallet balance %s reserved %s spent %s entries %s; entries sum to %s / %s / %s, count %s',
                  w.balance, w.reserved, w.spent, w.entries, coalesce(s.amount, 0), coalesce(s.hold, 0),
                  coalesce(s.spent, 0), coalesce(s.n, 0))
      FROM wallets w
      LEFT JOIN (SELECT e.tenant_id, sum(e.amount) AS amount, sum(e.hold) AS hold,
                        sum(CASE WHEN e.kind IN ('usage_charge', 'refund') THEN -e.amount ELSE 0 END) AS spent,
                        count(*) AS n, max(e.seq) AS top
                   FROM ledger_entries e GROUP BY e.tenant_id) s ON s.tenant_id = w.tenant_id
     WHERE w.balance <> coalesce(s.amount, 0) OR w.reserved <> coalesce(s.hold, 0)
        OR w.spent <> coalesce(s.spent, 0) OR w.entries <> coalesce(s.n, 0)
        OR w.entries <> coalesce(s.top, 0)
    UNION ALL
    SELECT 'balance', r.tenant_id,
           format('entry %s (seq %s) says balance %s reserved %s after it; the running sums are %s / %s',
                  r.id, r.seq, r.balance_after, r.reserved_after, r.run_amount, r.run_hold)
      FROM (SELECT e.*, sum(e.amount) OVER w AS run_amount, sum(e.hold) OVER w AS run_hold
              FROM ledger_entries e
            WINDOW w AS (PARTITION BY e.tenant_id ORDER BY e.seq)) r
     WHERE r.balance_after <> r.run_amount OR r.reserved_after <> r.run_hold
    UNION ALL
    SELECT 'balance', w.tenant_id,
           format('wallet reserved %s; its open leases hold %s', w.reserved, coalesce(o.held, 0))
      FROM wallets w
      LEFT JOIN (SELECT l.tenant_id, sum(l.amount - l.charged) AS held FROM leases l
                  WHERE l.state = 'open' GROUP BY l.tenant_id) o ON o.tenant_id = w.tenant_id
     WHERE w.reserved <> coalesce(o.held, 0)
    UNION ALL
    SELECT 'balance', l.tenant_id,
           format('lease %s: amount %s charged %s released %s; its entries lease %s, charged %s, released %s',
                  l.id, l.amount, l.charged, l.released, coalesce(e.leased, 0), coalesce(e.charged, 0),
                  coalesce(e.released, 0))
      FROM leases l
      LEFT JOIN (SELECT x.lease_id,
                        sum(x.hold) FILTER (WHERE x.kind = 'lease') AS leased,
                        -sum(x.hold) FILTER (WHERE x.kind = 'usage_charge') AS charged,
                        -sum(x.hold) FILTER (WHERE x.kind = 'lease_release') AS released
                   FROM ledger_entries x WHERE x.lease_id IS NOT NULL GROUP BY x.lease_id) e ON e.lease_id = l.id
     WHERE l.amount <> coalesce(e.leased, 0) OR l.charged <> coalesce(e.charged, 0)
        OR l.released <> coalesce(e.released, 0)
    -- no overspend
    UNION ALL
    SELECT 'overspend', e.tenant_id,
           format('entry %s (seq %s) left balance %s against reserved %s', e.id, e.seq, e.balance_after,
                  e.reserved_after)
      FROM ledger_entries e WHERE e.balance_after < e.reserved_after OR e.reserved_after < 0
    UNION ALL
    SELECT 'overspend', w.tenant_id, format('wallet balance %s, reserved %s', w.balance, w.reserved)
      FROM wallets w WHERE w.balance < w.reserved OR w.reserved < 0
    UNION ALL
    SELECT 'overspend', l.tenant_id, format('lease %s charged %s of %s', l.id, l.charged, l.amount)
      FROM leases l WHERE l.charged > l.amount OR l.charged < 0
    -- each request charged at most once
    UNION ALL
    SELECT 'charged_twice', u.tenant_id, format('request %s recorded %s times', u.request_id, count(*))
      FROM usage_records u GROUP BY u.tenant_id, u.request_id HAVING count(*) > 1
    UNION ALL
    SELECT 'charged_twice', e.tenant_id,
           format('entry %s (%s) charges %s for %s requests; its records were charged %s (%s records)',
                  e.id, e.idempotency_key, -e.amount, e.requests, coalesce(u.charged, 0), coalesce(u.n, 0))
      FROM ledger_entries e
      LEFT JOIN (SELECT r.charge_key, sum(r.charged) AS charged, count(*) AS n FROM usage_records r
                  WHERE r.charge_key IS NOT NULL GROUP BY r.charge_key) u ON u.charge_key = e.idempotency_key
     WHERE e.kind = 'usage_charge' AND (-e.amount <> coalesce(u.charged, 0) OR e.requests <> coalesce(u.n, 0))
       AND e.records_from >= (SELECT horizon FROM usage_retention)
    UNION ALL
    SELECT 'charged_twice', r.tenant_id, format('request %s was charged %s with no ledger entry %s',
                                                r.request_id, r.charged, r.charge_key)
      FROM usage_records r
     WHERE r.charge_key IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.idempotency_key = r.charge_key
                          AND e.kind = 'usage_charge' AND e.tenant_id = r.tenant_id)
    -- cost = tokens x prices
    UNION ALL
    SELECT 'cost', r.tenant_id,
           format('request %s costs %s; its tokens at its prices make %s', r.request_id, r.cost,
                  CASE WHEN r.billed THEN tollgate_cost(r.input_tokens, r.cached_tokens, r.output_tokens,
                       r.price_input, r.price_cached, r.price_output, r.byok, r.platform_fee) ELSE 0 END)
      FROM usage_records r
     WHERE r.cost <> CASE WHEN r.billed THEN tollgate_cost(r.input_tokens, r.cached_tokens, r.output_tokens,
                          r.price_input, r.price_cached, r.price_output, r.byok, r.platform_fee) ELSE 0 END
        OR r.charged > r.cost OR r.charged < 0
    UNION ALL
    SELECT 'cost', r.tenant_id, format('request %s names price %s but carries other prices', r.request_id,
                                       r.price_id)
      FROM usage_records r JOIN prices p ON p.id = r.price_id
     WHERE (p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok, p.byok_fee)
           IS DISTINCT FROM (r.price_input, r.price_output, r.price_cached, r.platform_fee)
    -- the rollup follows its records
    UNION ALL
    SELECT 'rollup', coalesce(d.tenant_id, a.tenant_id),
           format('%s %s: rollup %s requests cost %s; records %s requests cost %s', coalesce(d.day, a.day),
                  coalesce(d.model, a.model), d.requests, d.cost, a.requests, a.cost)
      FROM usage_daily d
      FULL JOIN (SELECT u.tenant_id, (u.created_at AT TIME ZONE 'UTC')::date AS day, u.model,
                        count(*) AS requests, count(*) FILTER (WHERE u.status >= 400) AS errors,
                        sum(u.input_tokens) AS input_tokens, sum(u.output_tokens) AS output_tokens,
                        sum(u.cached_tokens) AS cached_tokens, sum(u.cost) AS cost, sum(u.charged) AS charged
                   FROM usage_records u GROUP BY 1, 2, 3) a
        ON a.tenant_id = d.tenant_id AND a.day = d.day AND a.model = d.model
     WHERE (d.requests, d.errors, d.input_tokens, d.output_tokens, d.cached_tokens, d.cost, d.charged)
           IS DISTINCT FROM (a.requests, a.errors, a.input_tokens, a.output_tokens, a.cached_tokens, a.cost,
                             a.charged)
       AND coalesce(d.day, a.day) >= (SELECT (horizon AT TIME ZONE 'UTC')::date FROM usage_retention)
$$;

-- Every existing tenant gets an empty wallet (trial credits are for tenants created from now on).
INSERT INTO wallets (tenant_id) SELECT id FROM tenants;
