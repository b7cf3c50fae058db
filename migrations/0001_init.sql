-- 0001_init: tenants, API keys and failover events (docs/CONVENTIONS.md, "Database").
-- Applied by `tollgate migrate` inside one transaction; forward-only.

-- `tollgate migrate` creates this table itself before reading it (so it can tell what is
-- applied); it is repeated here so the schema is complete when read on its own.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    zero_retention boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Only the keyed BLAKE2b-256 hash of a key is stored (keyed with the server's pepper), plus a
-- short prefix to recognise it by in listings. The unique index on key_hash serves the
-- gateway's lookup on every key-cache miss.
CREATE TABLE api_keys (
    id         bigserial PRIMARY KEY,
    tenant_id  bigint NOT NULL REFERENCES tenants (id),
    key_hash   bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    prefix     text NOT NULL,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

-- A revoked or deleted key must leave every instance's key cache quickly: gateways may
-- LISTEN on this channel and drop their cached entries.
CREATE FUNCTION tollgate_api_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tollgate_api_keys', OLD.tenant_id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate_api_keys_notify();

-- No foreign key on tenant_id: events are written in batches off the request path and must
-- outlive the tenant rows they mention.
CREATE TABLE failover_events (
    id               bigserial PRIMARY KEY,
    at               timestamptz NOT NULL,
    request_id       text,
    tenant_id        bigint,
    chain            text,
    kind             text,
    from_target      text,
    to_target        text,
    reason           text,
    status           integer,
    added_latency_us bigint
);
CREATE INDEX failover_events_at_idx ON failover_events (at, id);
CREATE INDEX failover_events_tenant_at_idx ON failover_events (tenant_id, at, id);
