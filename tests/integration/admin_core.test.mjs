// Issue #12, the admin API's core (admin/README.md): JWT roles on every route (operator,
// tenant_admin of its own tenant, auditor read only), tenants, keys, BYOK provider keys and
// policies through the same functions as the CLI, ETag / If-Match (412), every write in the audit
// log with its actor in the same transaction, a refused request writing nothing, breakers and
// failover events behind auth, and the admin job pool (a client that leaves mid-job).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { admin } from './lib/http.mjs';
import { stack } from './lib/stack.mjs';
import { psql } from './lib/control.mjs';
import { runCmd } from './lib/instance.mjs';

const suffix = randomBytes(4).toString('hex');
const name = (what) => `adm-${what}-${suffix}`;

/** A token of the stack's config (`tollgate token`). */
async function token(role, { tenant, sub = `test-${role}`, ttl = '1h' } = {}) {
    const S = stack();
    const args = ['token', '-c', S.config, '--role', role, '--ttl', ttl, '--sub', sub];
    if (tenant !== undefined) args.push('--tenant', String(tenant));
    const r = await runCmd(S.gatewayBin, args);
    assert.equal(r.code, 0, `tollgate token: ${r.stderr}`);
    return r.stdout.trim();
}

async function auditCount() {
    return Number((await psql('SELECT count(*) FROM admin_audit'))[0][0]);
}

async function auditRows(where) {
    const out = await psql(`SELECT coalesce(jsonb_agg(to_jsonb(a) ORDER BY id), '[]') FROM admin_audit a WHERE ${where}`);
    return JSON.parse(out[0][0]);
}

let auditor, ownerTok, otherTok;
let tenant; // created by the operator
let other;

before(async () => {
    auditor = await token('auditor', { sub: 'the-auditor' });
    const a = await admin('POST', '/admin/v1/tenants', { body: { name: name('a'), initial_credits: 5000000 } });
    assert.equal(a.status, 201, a.text);
    tenant = a.json;
    const b = await admin('POST', '/admin/v1/tenants', { body: { name: name('b') } });
    assert.equal(b.status, 201, b.text);
    other = b.json;
    ownerTok = await token('tenant_admin', { tenant: tenant.id, sub: 'owner-a' });
    otherTok = await token('tenant_admin', { tenant: other.id, sub: 'owner-b' });
});

test('tenants: create 201 with id and credits, audited with the actor in the same transaction', async () => {
    assert.ok(Number.isInteger(tenant.id) && tenant.id > 0);
    assert.equal(tenant.name, name('a'));
    assert.equal(tenant.status, 'active');
    assert.ok(tenant.balance >= 5000000, `initial credits on top of the trial: ${tenant.balance}`);
    const rows = await auditRows(`tenant_id = ${tenant.id} AND action = 'tenants.create'`);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].actor, 'integration-stack');
    assert.equal(rows[0].role, 'operator');
    assert.equal(rows[0].after.name, name('a'));
    assert.equal(rows[0].before, null);
});

test('tenants: a refused create writes nothing and audits nothing; every bad field is listed', async () => {
    const before = await auditCount();
    const r = await admin('POST', '/admin/v1/tenants', { body: { name: '', zero_retention: 'yes', initial_credits: -1, color: 'red' } });
    assert.equal(r.status, 400, r.text);
    const fields = r.json.error.fields.map((f) => f.field).sort();
    assert.deepEqual(fields, ['color', 'initial_credits', 'name', 'zero_retention']);
    const dup = await admin('POST', '/admin/v1/tenants', { body: { name: name('a') } });
    assert.equal(dup.status, 409, dup.text);
    assert.equal(dup.json.error.code, 'conflict');
    assert.equal(await auditCount(), before);
});

test('tenants: get has an ETag; patch with a stale If-Match is 412 and changes nothing', async () => {
    const g = await admin('GET', `/admin/v1/tenants/${tenant.id}`);
    assert.equal(g.status, 200);
    const etag = g.headers.get('etag');
    assert.match(etag, /^"[0-9a-f]{32}"$/);
    const p = await admin('PATCH', `/admin/v1/tenants/${tenant.id}`, { body: { zero_retention: true }, headers: { 'if-match': etag } });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.zero_retention, true);
    assert.notEqual(p.headers.get('etag'), etag);
    const stale = await admin('PATCH', `/admin/v1/tenants/${tenant.id}`, { body: { zero_retention: false }, headers: { 'if-match': etag } });
    assert.equal(stale.status, 412, stale.text);
    assert.equal(stale.json.error.code, 'precondition_failed');
    const after = await admin('GET', `/admin/v1/tenants/${tenant.id}`);
    assert.equal(after.json.zero_retention, true);
    const rows = await auditRows(`tenant_id = ${tenant.id} AND action = 'tenants.patch'`);
    assert.equal(rows.length, 1, 'the 412 wrote no audit row');
    assert.equal(rows[0].before.zero_retention, false);
    assert.equal(rows[0].after.zero_retention, true);
});

test('tenants: roles (tenant admin sees its own only, another tenant is a 404 like a missing one; auditor reads only)', async () => {
    const own = await admin('GET', `/admin/v1/tenants/${tenant.id}`, { token: ownerTok });
    assert.equal(own.status, 200);
    const foreign = await admin('GET', `/admin/v1/tenants/${other.id}`, { token: ownerTok });
    const missing = await admin('GET', '/admin/v1/tenants/999999999999', { token: ownerTok });
    assert.equal(foreign.status, 404);
    assert.equal(foreign.text, missing.text, 'nothing tells them apart');
    const list = await admin('GET', '/admin/v1/tenants', { token: ownerTok });
    assert.deepEqual(list.json.data.map((t) => t.id), [tenant.id]);
    const susp = await admin('POST', `/admin/v1/tenants/${tenant.id}/suspend`, { token: ownerTok });
    assert.equal(susp.status, 403, 'suspension is the operator\'s');
    const aud = await admin('GET', `/admin/v1/tenants/${other.id}`, { token: auditor });
    assert.equal(aud.status, 200);
    const audw = await admin('PATCH', `/admin/v1/tenants/${other.id}`, { token: auditor, body: { zero_retention: true } });
    assert.equal(audw.status, 403);
    const none = await admin('GET', '/admin/v1/tenants', { token: null });
    assert.equal(none.status, 401);
    assert.equal(none.headers.get('www-authenticate'), 'Bearer');
});

test('tenants: suspend and resume (operator), audited', async () => {
    const s = await admin('POST', `/admin/v1/tenants/${other.id}/suspend`);
    assert.equal(s.status, 200, s.text);
    assert.equal(s.json.status, 'suspended');
    const r = await admin('POST', `/admin/v1/tenants/${other.id}/resume`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, 'active');
    const rows = await auditRows(`tenant_id = ${other.id} AND action IN ('tenants.suspend', 'tenants.resume')`);
    assert.deepEqual(rows.map((x) => x.action), ['tenants.suspend', 'tenants.resume']);
});

test('tenants: list pages with a capped limit and an opaque cursor', async () => {
    const p1 = await admin('GET', '/admin/v1/tenants?limit=1');
    assert.equal(p1.status, 200);
    assert.equal(p1.json.data.length, 1);
    assert.equal(typeof p1.json.next_cursor, 'string');
    const p2 = await admin('GET', `/admin/v1/tenants?limit=1&cursor=${p1.json.next_cursor}`);
    assert.ok(p2.json.data[0].id > p1.json.data[0].id);
    const big = await admin('GET', '/admin/v1/tenants?limit=1001');
    assert.equal(big.status, 400);
    assert.equal(big.json.error.param, 'limit');
    const bad = await admin('GET', '/admin/v1/tenants?cursor=%27%3B--');
    assert.equal(bad.status, 400);
});

test('routes: odd segments are 404, a wrong method 405 with Allow, unknown paths 404 after auth', async () => {
    for (const p of ['/admin/v1/tenants/abc', '/admin/v1/tenants/0', '/admin/v1/tenants/-1', '/admin/v1/tenants/1e3', '/admin/v1/tenants/99999999999999999999', '/admin/v1/nothing']) {
        const r = await admin('GET', p);
        assert.equal(r.status, 404, `${p}: ${r.text}`);
        assert.equal(r.json.error.code, 'not_found');
    }
    const m = await admin('DELETE', '/admin/v1/tenants');
    assert.equal(m.status, 405);
    assert.match(m.headers.get('allow'), /GET/);
    const anon = await admin('GET', '/admin/v1/nothing', { token: null });
    assert.equal(anon.status, 401, 'an anonymous client learns nothing of which routes exist');
});
