-- 0005: stored_requests, the request and the answer of every call of a tenant without zero
-- retention (for the replay lab), written in batches by the gateway (gateway/src/retention.c).
-- One partition per UTC day, so that expiry is a partition drop, never a DELETE.
-- A zero-retention call (the tenant's policy, or the x-tollgate-zero-retention header) never has
-- a row here.

CREATE TABLE stored_requests (
    created_at timestamptz NOT NULL,
    request_id text NOT NULL,
    tenant_id bigint NOT NULL,
    key_id bigint,
    model_requested text,          -- the request's "model" (a chain's name, or a model's)
    model_served text,             -- NULL when no target served
    provider text,                 -- the serving target's provider
    status int NOT NULL,           -- what the client got (499: it left first)
    stream boolean NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    request_body text NOT NULL,    -- the client's body, cut at retention.max_record_bytes
    request_truncated boolean NOT NULL,
    response_body text NOT NULL,   -- what the client received (a stream: its data payloads, one per line), cut likewise
    response_truncated boolean NOT NULL
) PARTITION BY RANGE (created_at);

-- created on every partition: a tenant's requests over time, and one request by id
CREATE INDEX stored_requests_tenant_created ON stored_requests (tenant_id, created_at);
CREATE INDEX stored_requests_request_id ON stored_requests (request_id);

-- The partition job: creates the partitions of today and the next ahead_days days (UTC), and drops
-- every partition whose whole range is older than keep_days. Returns the partitions dropped, or -1
-- when another session holds the job's advisory lock (another gateway instance is running it: this
-- round is skipped). The lock is transaction-scoped, so it cannot outlive a lost connection.
-- Partitions are found through their bounds, not their names.
CREATE FUNCTION tollgate_stored_requests_partitions(keep_days int, ahead_days int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    today timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    d timestamptz;
    part record;
    upper_bound timestamptz;
    dropped int := 0;
BEGIN
    -- "tollgate" + 1: beside the migration lock (8390876119406896229, migrations/README.md)
    IF NOT pg_try_advisory_xact_lock(8390876119406896230) THEN
        RETURN -1;
    END IF;
    FOR i IN 0..ahead_days LOOP
        d := today + make_interval(days => i);
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF stored_requests FOR VALUES FROM (%L) TO (%L)',
                       'stored_requests_' || to_char(d AT TIME ZONE 'UTC', 'YYYYMMDD'), d,
                       d + interval '1 day');
    END LOOP;
    FOR part IN
        SELECT c.oid::regclass AS rel, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'stored_requests'::regclass
    LOOP
        upper_bound := (regexp_match(part.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz;
        IF upper_bound IS NOT NULL AND upper_bound <= now() - make_interval(days => keep_days) THEN
            EXECUTE format('DROP TABLE %s', part.rel);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END
$$;

-- today's partitions exist before the first gateway writes (the gateway runs the job at start too)
SELECT tollgate_stored_requests_partitions(30, 2);
