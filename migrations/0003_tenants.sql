-- 0003_tenants: tenant status, the key lifecycle, per-tenant policies with per-key overrides,
-- and BYOK provider credentials (gateway/README.md, "Tenants"; docs/CONVENTIONS.md, "Database").
-- Applied by `tollgate migrate` inside one transaction; forward-only.

-- A suspended tenant's keys all answer 403 until it is resumed. A constant default makes these
-- catalogue changes only (no table rewrite).
ALTER TABLE tenants ADD COLUMN status text NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'suspended'));
ALTER TABLE tenants ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- expires_at: the key stops working then (rotation sets it on the old key: its grace period).
-- last_used_at: written in batches by each gateway (one UPDATE per instance every few seconds,
--   never one per request), only ever moved forward.
-- allowed_models: NULL = every model the tenant's policy allows; otherwise also limited to these.
-- rotated_from: the key this one replaced (`keys rotate`).
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;
ALTER TABLE api_keys ADD COLUMN allowed_models text[]
    CHECK (allowed_models IS NULL OR (cardinality(allowed_models) <= 32
           AND octet_length(array_to_string(allowed_models, ' ')) <= 480));
ALTER TABLE api_keys ADD COLUMN rotated_from bigint REFERENCES api_keys (id);

-- One policy row per tenant (key_id NULL) and at most one override row per key. A NULL column
-- inherits: a key's row from its tenant's row, a tenant's row from "no limit". Limits are per
-- minute: rpm/tpm bound the tenant as a whole, key_rpm/key_tpm each of its keys. The effective
-- allowed models are the intersection of every list that is set (tenant, key override, the key's
-- own allowed_models column).
CREATE TABLE policies (
    id             bigserial PRIMARY KEY,
    tenant_id      bigint NOT NULL REFERENCES tenants (id),
    key_id         bigint REFERENCES api_keys (id),
    allowed_models text[]
        CHECK (allowed_models IS NULL OR (cardinality(allowed_models) <= 32
               AND octet_length(array_to_string(allowed_models, ' ')) <= 480)),
    max_tokens     integer CHECK (max_tokens > 0),
    rpm            integer CHECK (rpm > 0),
    tpm            bigint  CHECK (tpm > 0),
    key_rpm        integer CHECK (key_rpm > 0),
    key_tpm        bigint  CHECK (key_tpm > 0),
    -- a tenant with its own key for a provider: may a request fall back to the platform's key for
    -- that provider when the tenant's key fails or is unusable? (tenant row only)
    byok_fallback  boolean,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (tenant_id, key_id)
);

-- BYOK: a tenant's own provider key, sealed with XChaCha20-Poly1305 (libsodium) under the master
-- key named by master_key_id, with "tenant_id/provider" as associated data, so a blob copied to
-- another tenant or provider does not open. The plaintext is never stored; last4 is its last four
-- characters at most, for display.
CREATE TABLE provider_credentials (
    tenant_id     bigint NOT NULL REFERENCES tenants (id),
    provider      text NOT NULL CHECK (provider ~ '^[A-Za-z0-9_.-]{1,64}$'),
    master_key_id text NOT NULL CHECK (master_key_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    nonce         bytea NOT NULL CHECK (octet_length(nonce) = 24),
    sealed        bytea NOT NULL CHECK (octet_length(sealed) BETWEEN 17 AND 4112),
    last4         text NOT NULL DEFAULT '' CHECK (char_length(last4) <= 4),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider)
);
CREATE INDEX provider_credentials_master_key_idx ON provider_credentials (master_key_id);

-- The intersection of two optional model lists (NULL = no restriction).
CREATE FUNCTION tollgate_models_and(a text[], b text[]) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN a IS NULL THEN b
                WHEN b IS NULL THEN a
                ELSE ARRAY(SELECT x FROM unnest(a) AS x WHERE x = ANY (b)) END
$$;

-- Every change that a gateway's key cache depends on (a key, its tenant, a policy, a credential)
-- notifies `tollgate_tenants` with the tenant id: every instance LISTENs and drops what it cached
-- (gateway/src/keywatch.c). The key lookup of gateway/src/auth.c reads all of it in one query.
CREATE FUNCTION tollgate_tenant_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t bigint;
BEGIN
    IF TG_TABLE_NAME = 'tenants' THEN
        t := COALESCE(NEW.id, OLD.id);
    ELSIF TG_OP = 'DELETE' THEN
        t := OLD.tenant_id;
    ELSE
        t := NEW.tenant_id;
    END IF;
    PERFORM pg_notify('tollgate_tenants', t::text);
    RETURN NULL;
END;
$$;

-- api_keys: not on last_used_at (the batched writer would clear every cache every few seconds).
DROP TRIGGER api_keys_changed ON api_keys;
CREATE TRIGGER api_keys_changed
    AFTER UPDATE OF tenant_id, key_hash, revoked_at, expires_at, allowed_models OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tollgate_tenant_notify();
CREATE TRIGGER tenants_changed AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tollgate_tenant_notify();
CREATE TRIGGER policies_changed AFTER INSERT OR UPDATE OR DELETE ON policies
    FOR EACH ROW EXECUTE FUNCTION tollgate_tenant_notify();
CREATE TRIGGER provider_credentials_changed AFTER INSERT OR UPDATE OR DELETE ON provider_credentials
    FOR EACH ROW EXECUTE FUNCTION tollgate_tenant_notify();
