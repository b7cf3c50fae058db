-- 0009_idempotency: the Idempotency-Key of POST /v1/chat/completions (gateway/src/idempotency.h;
-- docs/CONVENTIONS.md, "Idempotency-Key"). Applied by `tollgate migrate` in one transaction.
--
-- One row per (tenant, key): who claimed it (the request id of the call that runs), a keyed hash of
-- the canonical request body (never the body), whether that call is still running, and once it is
-- done either the answer to replay (status, the headers that matter, the body) or why there is none
-- (zero retention, a stream, an answer above the size cap, a client that left). A row expires
-- `idempotency.ttl_ms` after its claim (24 h by default); an expired row is claimed anew by the next
-- request with its key, and purged in bounded batches by every gateway.
--
-- The running state has a lease (`lease_until`, idempotency.running_lease_ms): a gateway killed in
-- the middle of a call never marks its row done, and once the lease has passed a retry is told the
-- first call was interrupted (409) instead of "still running". It is never run again before the row
-- expires: the interrupted call may have been charged, and a key is never charged twice.

CREATE TABLE idempotency_keys (
    tenant_id   bigint NOT NULL REFERENCES tenants (id),
    idem_key    text NOT NULL CHECK (octet_length(idem_key) BETWEEN 1 AND 200),
    fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    request_id  text NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 64),
    state       text NOT NULL CHECK (state IN ('running', 'done')),
    status      smallint CHECK (status BETWEEN 100 AND 599),
    headers     text, -- a JSON object: the answer's headers a replay carries again
    body        bytea,
    no_answer   text CHECK (no_answer IN ('zero_retention', 'stream', 'too_large', 'client_gone')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, idem_key),
    -- done: exactly one of an answer (status and body) or the reason there is none
    CONSTRAINT idempotency_keys_done CHECK (
        state = 'running'
        OR (finished_at IS NOT NULL
            AND ((body IS NOT NULL AND status IS NOT NULL AND no_answer IS NULL)
                 OR (body IS NULL AND headers IS NULL AND no_answer IS NOT NULL))))
);

-- the purge's scan
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

-- The claim, one round trip: insert the key as running for p_request_id, or, when the tenant already
-- has it, return what is there (locked, so a concurrent claim by another gateway waits and then sees
-- the committed row: exactly one caller ever gets its own request id back). An expired row is taken
-- over. The caller compares o_request_id with its own: equal means "run it".
CREATE FUNCTION tollgate_idempotency_claim(p_tenant bigint, p_key text, p_fingerprint text,
                                           p_request_id text, p_lease_ms bigint, p_ttl_ms bigint)
RETURNS TABLE (o_request_id text, o_fingerprint text, o_state text, o_lapsed boolean,
               o_status smallint, o_headers text, o_body bytea, o_no_answer text)
LANGUAGE plpgsql AS $$
DECLARE
    r idempotency_keys%ROWTYPE;
BEGIN
    -- a row released (deleted) between the insert and the lock is simply tried again
    FOR i IN 1..3 LOOP
        INSERT INTO idempotency_keys (tenant_id, idem_key, fingerprint, request_id, state, lease_until,
                                      expires_at)
        VALUES (p_tenant, p_key, p_fingerprint, p_request_id, 'running',
                now() + p_lease_ms * interval '1 millisecond', now() + p_ttl_ms * interval '1 millisecond')
        ON CONFLICT (tenant_id, idem_key) DO NOTHING;
        IF FOUND THEN
            RETURN QUERY SELECT p_request_id, p_fingerprint, 'running'::text, false, NULL::smallint,
                                NULL::text, NULL::bytea, NULL::text;
            RETURN;
        END IF;
        SELECT * INTO r FROM idempotency_keys k WHERE k.tenant_id = p_tenant AND k.idem_key = p_key
            FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        IF r.expires_at <= now() THEN
            UPDATE idempotency_keys k
               SET fingerprint = p_fingerprint, request_id = p_request_id, state = 'running',
                   status = NULL, headers = NULL, body = NULL, no_answer = NULL, created_at = now(),
                   lease_until = now() + p_lease_ms * interval '1 millisecond',
                   expires_at = now() + p_ttl_ms * interval '1 millisecond', finished_at = NULL
             WHERE k.tenant_id = p_tenant AND k.idem_key = p_key;
            RETURN QUERY SELECT p_request_id, p_fingerprint, 'running'::text, false, NULL::smallint,
                                NULL::text, NULL::bytea, NULL::text;
            RETURN;
        END IF;
        RETURN QUERY SELECT r.request_id, r.fingerprint, r.state,
                            (r.state = 'running' AND r.lease_until <= now()), r.status, r.headers, r.body,
                            r.no_answer;
        RETURN;
    END LOOP;
    RAISE EXCEPTION 'idempotency claim of tenant % did not settle', p_tenant;
END;
$$;
