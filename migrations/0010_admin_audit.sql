-- 0010_admin_audit: the admin API's audit trail (admin/README.md, "Audit"; docs/CONVENTIONS.md).
-- Applied by `tollgate migrate` inside one transaction; forward-only.
--
-- One row per admin write, inserted by the admin API in the same transaction as the change it
-- records, so a change and its row commit together or not at all. The rows never hold a secret:
-- the API leaves keys, api_key values and hashes out of `before` and `after`. Append-only: a
-- trigger refuses UPDATE, DELETE and TRUNCATE, for every role that can write the table.

CREATE TABLE admin_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),   -- the token's `sub`
    role        text NOT NULL CHECK (role IN ('operator', 'tenant_admin', 'auditor')),
    action      text NOT NULL CHECK (length(action) BETWEEN 1 AND 64),   -- "tenants.create"
    resource    text NOT NULL CHECK (length(resource) BETWEEN 1 AND 64), -- "tenant", "api_key"
    resource_id text CHECK (length(resource_id) <= 128),
    tenant_id   bigint,          -- the tenant the resource belongs to (no foreign key: the trail outlives it)
    before      jsonb,
    after       jsonb
);

-- the audit route pages on id; a tenant's trail is (tenant_id, id)
CREATE INDEX admin_audit_tenant_id ON admin_audit (tenant_id, id);

CREATE FUNCTION admin_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'admin_audit is append-only' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER admin_audit_no_change BEFORE UPDATE OR DELETE ON admin_audit
    FOR EACH ROW EXECUTE FUNCTION admin_audit_append_only();
CREATE TRIGGER admin_audit_no_truncate BEFORE TRUNCATE ON admin_audit
    FOR EACH STATEMENT EXECUTE FUNCTION admin_audit_append_only();
