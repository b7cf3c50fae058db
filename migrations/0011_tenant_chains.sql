-- 0011_tenant_chains: a tenant's own named chains (admin/chains.h; docs/CONVENTIONS.md, "Chains").
-- Applied by `tollgate migrate` inside one transaction; forward-only.
--
-- A request whose "model" names a chain resolves the tenant's chain of that name first, then the
-- config's. A chain names models of the config's catalog (checked by the management functions
-- against the catalog they are given; a model that a reload removed later is skipped at request
-- time). The names follow the config's rule for chain names, cut to 63 bytes so that a chain's name
-- fits every event and log field that carries it.
--
-- Every change NOTIFYs tollgate_tenants with the tenant id (the trigger function of 0003): the
-- gateways drop the tenant's cached principals and chains at once, as for a policy change.

CREATE TABLE tenant_chains (
    tenant_id             bigint NOT NULL REFERENCES tenants (id),
    name                  text NOT NULL CHECK (name ~ '^[A-Za-z0-9._-]{1,63}$'),
    targets               text[] NOT NULL CHECK (cardinality(targets) BETWEEN 1 AND 16
                                                 AND array_position(targets, NULL) IS NULL
                                                 AND octet_length(array_to_string(targets, ',')) <= 2064),
    context_fallback      text CHECK (char_length(context_fallback) BETWEEN 1 AND 128),
    request_first_byte_ms integer CHECK (request_first_byte_ms BETWEEN 1 AND 86400000),
    version               bigint NOT NULL DEFAULT 1, -- the ETag: +1 on every update
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TRIGGER tenant_chains_changed AFTER INSERT OR UPDATE OR DELETE ON tenant_chains
    FOR EACH ROW EXECUTE FUNCTION tollgate_tenant_notify();
