// Issue #12, the admin API's core (admin/README.md): JWT roles on every route (operator,
// tenant_admin of its own tenant, auditor read only), tenants, keys, BYOK provider keys and
// policies through the same functions as the CLI, ETag / If-Match (412), every write in the audit
// log with its actor in the same transaction, a refused request writing nothing, breakers and
// failover events behind auth, and the admin job pool (a client that leaves mid-job).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { admin, gw } from './lib/http.mjs';
import { ROUTES, fill } from './lib/admin_routes.mjs';
import { badTokens, tokenFor } from './lib/admin_tokens.mjs';
import { stack } from './lib/stack.mjs';
import { psql } from './lib/control.mjs';
import { runCmd } from './lib/instance.mjs';
import { waitFor } from './lib/wait.mjs';

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

test('keys: create 201 shows the secret once, it works on the data plane, list never shows it; audit without it', async () => {
    const c = await admin('POST', `/admin/v1/tenants/${tenant.id}/keys`, { token: ownerTok, body: { label: 'ci', allowed_models: ['openai-chat'] } });
    assert.equal(c.status, 201, c.text);
    assert.match(c.json.key, /^tg_/);
    assert.ok(c.json.id > 0);
    assert.deepEqual(c.json.allowed_models, ['openai-chat']);
    const models = await gw('GET', '/v1/models', { key: c.json.key });
    assert.equal(models.status, 200, models.text);
    const list = await admin('GET', `/admin/v1/tenants/${tenant.id}/keys`, { token: ownerTok });
    assert.equal(list.status, 200);
    assert.ok(list.json.data.some((k) => k.id === c.json.id));
    assert.ok(!list.text.includes(c.json.key), 'the list never shows the secret');
    assert.ok(!list.text.includes('key_hash'));
    const rows = await auditRows(`action = 'keys.create' AND resource_id = '${c.json.id}'`);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].actor, 'owner-a');
    assert.equal(rows[0].role, 'tenant_admin');
    assert.ok(!JSON.stringify(rows[0]).includes(c.json.key), 'the audit never holds the secret');
    // another tenant's admin cannot see or touch it
    const foreign = await admin('GET', `/admin/v1/tenants/${tenant.id}/keys`, { token: otherTok });
    assert.equal(foreign.status, 404);
    const viaOwn = await admin('DELETE', `/admin/v1/tenants/${other.id}/keys/${c.json.id}`, { token: otherTok });
    assert.equal(viaOwn.status, 404, 'a key of another tenant under one\'s own tenant id is not found');
    // bad input: every field listed, nothing written
    const before = await auditCount();
    const bad = await admin('POST', `/admin/v1/tenants/${tenant.id}/keys`, { body: { label: 7, expires_at: 'tomorrow', allowed_models: ['no-such-model'], x: 1 } });
    assert.equal(bad.status, 400, bad.text);
    assert.deepEqual(bad.json.error.fields.map((f) => f.field).sort(), ['expires_at', 'label', 'x']);
    const unknownModel = await admin('POST', `/admin/v1/tenants/${tenant.id}/keys`, { body: { allowed_models: ['no-such-model'] } });
    assert.equal(unknownModel.status, 400, unknownModel.text);
    assert.equal(unknownModel.json.error.param, 'allowed_models[0]');
    assert.equal(await auditCount(), before);
});

test('keys: rotate gives a new key and keeps the old one for the grace period; revoke with If-Match', async () => {
    const c = await admin('POST', `/admin/v1/tenants/${tenant.id}/keys`, { body: { label: 'rot' } });
    assert.equal(c.status, 201, c.text);
    const r = await admin('POST', `/admin/v1/tenants/${tenant.id}/keys/${c.json.id}/rotate`, { body: { grace_s: 3600 } });
    assert.equal(r.status, 201, r.text);
    assert.notEqual(r.json.key, c.json.key);
    assert.equal(r.json.rotated_from, c.json.id);
    assert.ok(r.json.old_expires_at);
    for (const k of [c.json.key, r.json.key]) assert.equal((await gw('GET', '/v1/models', { key: k })).status, 200);
    const g = await admin('GET', `/admin/v1/tenants/${tenant.id}/keys/${r.json.id}`);
    assert.equal(g.status, 200);
    // the key was just used: its last_used_at lands in a batch later, and is no change for If-Match
    await waitFor(async () => (await psql(`SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = ${r.json.id}`))[0][0] === 't', { what: 'last_used_at of the new key' });
    const stale = await admin('DELETE', `/admin/v1/tenants/${tenant.id}/keys/${r.json.id}`, { headers: { 'if-match': '"00000000000000000000000000000000"' } });
    assert.equal(stale.status, 412);
    const d = await admin('DELETE', `/admin/v1/tenants/${tenant.id}/keys/${r.json.id}`, { headers: { 'if-match': g.headers.get('etag') } });
    assert.equal(d.status, 200, d.text);
    assert.ok(d.json.revoked_at);
    const rows = await auditRows(`action IN ('keys.rotate', 'keys.revoke') AND tenant_id = ${tenant.id}`);
    assert.deepEqual(rows.map((x) => x.action), ['keys.rotate', 'keys.revoke']);
    assert.ok(!JSON.stringify(rows).includes(r.json.key) && !JSON.stringify(rows).includes(c.json.key));
    const aud = await admin('DELETE', `/admin/v1/tenants/${tenant.id}/keys/${c.json.id}`, { token: auditor });
    assert.equal(aud.status, 403);
});

test('provider keys: PUT stores sealed, GET is metadata only (last four at most), DELETE; never audited in clear', async () => {
    const secret = `sk-byok-${randomBytes(12).toString('hex')}`;
    const p = await admin('PUT', `/admin/v1/tenants/${tenant.id}/provider-keys/sim-openai`, { token: ownerTok, body: { api_key: secret } });
    assert.equal(p.status, 201, p.text);
    assert.equal(p.json.provider, 'sim-openai');
    assert.equal(p.json.last4, secret.slice(-4));
    assert.ok(!p.text.includes(secret.slice(0, -4)));
    const g = await admin('GET', `/admin/v1/tenants/${tenant.id}/provider-keys/sim-openai`, { token: auditor });
    assert.equal(g.status, 200);
    assert.deepEqual(Object.keys(g.json).sort(), ['created_at', 'last4', 'master_key_id', 'provider', 'updated_at']);
    const list = await admin('GET', `/admin/v1/tenants/${tenant.id}/provider-keys`);
    assert.equal(list.json.data.length, 1);
    const stored = await psql(`SELECT count(*) FROM provider_credentials WHERE tenant_id = ${tenant.id} AND position(convert_to('${secret}', 'UTF8') in sealed) = 0`);
    assert.equal(stored[0][0], '1', 'the database holds it sealed');
    const unknown = await admin('PUT', `/admin/v1/tenants/${tenant.id}/provider-keys/no-such-provider`, { body: { api_key: 'x' } });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json.error.param, 'provider');
    const d = await admin('DELETE', `/admin/v1/tenants/${tenant.id}/provider-keys/sim-openai`, { token: ownerTok });
    assert.equal(d.status, 204, d.text);
    const gone = await admin('GET', `/admin/v1/tenants/${tenant.id}/provider-keys/sim-openai`);
    assert.equal(gone.status, 404);
    const again = await admin('DELETE', `/admin/v1/tenants/${tenant.id}/provider-keys/sim-openai`);
    assert.equal(again.status, 404);
    const rows = await auditRows(`tenant_id = ${tenant.id} AND resource = 'provider_key'`);
    assert.deepEqual(rows.map((x) => [x.action, x.actor]), [['provider_keys.put', 'owner-a'], ['provider_keys.delete', 'owner-a']]);
    assert.ok(!JSON.stringify(rows).includes(secret.slice(-4)), 'not even the last four are audited');
});

test('policy: PUT sets, null clears, absent keeps; validated against the catalog; audited before/after', async () => {
    const g0 = await admin('GET', `/admin/v1/tenants/${other.id}/policy`);
    assert.equal(g0.status, 200);
    assert.equal(g0.json.max_tokens, null);
    const p = await admin('PUT', `/admin/v1/tenants/${other.id}/policy`, { token: otherTok, headers: { 'if-match': g0.headers.get('etag') }, body: { max_tokens: 256, allowed_models: ['openai-chat'], rpm: 100 } });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.max_tokens, 256);
    assert.deepEqual(p.json.allowed_models, ['openai-chat']);
    const q = await admin('PUT', `/admin/v1/tenants/${other.id}/policy`, { token: otherTok, body: { rpm: null } });
    assert.equal(q.json.rpm, null);
    assert.equal(q.json.max_tokens, 256, 'absent fields are kept');
    const stale = await admin('PUT', `/admin/v1/tenants/${other.id}/policy`, { headers: { 'if-match': g0.headers.get('etag') }, body: { tpm: 5 } });
    assert.equal(stale.status, 412);
    const bad = await admin('PUT', `/admin/v1/tenants/${other.id}/policy`, { body: { max_tokens: 0, allowed_models: ['nope'], zero_retention: 'no' } });
    assert.equal(bad.status, 400, bad.text);
    const fields = bad.json.error.fields.map((f) => f.field).sort();
    assert.deepEqual(fields, ['max_tokens', 'zero_retention']);
    const badModel = await admin('PUT', `/admin/v1/tenants/${other.id}/policy`, { body: { allowed_models: ['nope'] } });
    assert.equal(badModel.status, 400);
    const empty = await admin('PUT', `/admin/v1/tenants/${other.id}/policy`, { body: {} });
    assert.equal(empty.status, 400);
    const rows = await auditRows(`tenant_id = ${other.id} AND action = 'policy.put'`);
    assert.equal(rows.length, 2);
    assert.equal(rows[0].before.max_tokens, null);
    assert.equal(rows[0].after.max_tokens, 256);
    assert.equal(rows[1].actor, 'owner-b');
});

test('key policy: one key\'s override (allowed models, max_tokens, key_rpm, key_tpm), audited; tenant-wide fields refused', async () => {
    const k = await admin('POST', `/admin/v1/tenants/${other.id}/keys`, { token: otherTok, body: { label: 'kp' } });
    assert.equal(k.status, 201, k.text);
    const g0 = await admin('GET', `/admin/v1/tenants/${other.id}/keys/${k.json.id}/policy`, { token: otherTok });
    assert.equal(g0.status, 200, g0.text);
    assert.equal(g0.json.key_id, k.json.id);
    assert.equal(g0.json.max_tokens, null);
    const p = await admin('PUT', `/admin/v1/tenants/${other.id}/keys/${k.json.id}/policy`, { token: otherTok, headers: { 'if-match': g0.headers.get('etag') }, body: { max_tokens: 64, key_rpm: 10 } });
    assert.equal(p.status, 200, p.text);
    assert.equal(p.json.max_tokens, 64);
    assert.equal(p.json.key_rpm, 10);
    const bad = await admin('PUT', `/admin/v1/tenants/${other.id}/keys/${k.json.id}/policy`, { body: { rpm: 5, zero_retention: true } });
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.json.error.fields.map((f) => f.field).sort(), ['rpm', 'zero_retention']);
    const foreign = await admin('GET', `/admin/v1/tenants/${tenant.id}/keys/${k.json.id}/policy`);
    assert.equal(foreign.status, 404, 'a key of another tenant under this tenant is not found');
    const rows = await auditRows(`tenant_id = ${other.id} AND action = 'key_policy.put'`);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].resource_id, String(k.json.id));
    assert.equal(rows[0].after.max_tokens, 64);
});

test('audit: operators and auditors page it, tenant admins may not; it is append-only', async () => {
    const a = await admin('GET', `/admin/v1/audit?tenant=${tenant.id}&limit=2`, { token: auditor });
    assert.equal(a.status, 200, a.text);
    assert.equal(a.json.data.length, 2);
    assert.ok(a.json.next_cursor);
    const b = await admin('GET', `/admin/v1/audit?tenant=${tenant.id}&limit=2&cursor=${a.json.next_cursor}`);
    assert.ok(b.json.data[0].id > a.json.data[1].id);
    assert.equal((await admin('GET', '/admin/v1/audit', { token: ownerTok })).status, 403);
    await assert.rejects(psql('UPDATE admin_audit SET actor = \'x\' WHERE id = (SELECT min(id) FROM admin_audit)'), /append-only/);
    await assert.rejects(psql('DELETE FROM admin_audit'), /append-only/);
    await assert.rejects(psql('TRUNCATE admin_audit'), /append-only/);
});

test('breakers and failover events behind auth; a tenant admin sees its own only', async () => {
    assert.equal((await admin('GET', '/admin/v1/breakers', { token: null })).status, 401);
    const all = await admin('GET', '/admin/v1/breakers', { token: auditor });
    assert.equal(all.status, 200);
    const mine = await admin('GET', '/admin/v1/breakers', { token: ownerTok });
    assert.equal(mine.status, 200);
    for (const b of mine.json.data) assert.ok(b.target.endsWith(`#byok:${tenant.id}`), b.target);
    assert.equal((await admin('POST', '/admin/v1/breakers/x%2Fy/reset', { token: ownerTok })).status, 403);
    assert.equal((await admin('POST', '/admin/v1/breakers/x%2Fy/reset', { token: auditor })).status, 403);
    const ev = await admin('GET', '/admin/v1/failover-events', { token: ownerTok });
    assert.equal(ev.status, 200, ev.text);
    for (const e of ev.json.data) assert.equal(e.tenant_id, tenant.id);
    const otherEv = await admin('GET', `/admin/v1/failover-events?tenant=${other.id}`, { token: ownerTok });
    assert.equal(otherEv.status, 404);
});

test('tokens: expired, wrong audience or issuer, alg none, forged signature are 401', async () => {
    const S = stack();
    const good = await token('operator');
    const [h, p, sig] = good.split('.');
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${enc({ alg: 'none', typ: 'JWT' })}.${p}.`;
    const forged = `${h}.${enc({ ...payload, role: 'operator', sub: 'mallory' })}.${sig}`;
    const flipped = `${h}.${p}.${sig.slice(0, -2)}${sig.slice(-2) === 'AA' ? 'AB' : 'AA'}`;
    for (const [what, t] of [['alg none', none], ['forged payload', forged], ['bad signature', flipped], ['garbage', 'abc'], ['empty', '']]) {
        const r = await admin('GET', '/admin/v1/tenants', { token: t });
        assert.equal(r.status, 401, what);
    }
    assert.ok(S.adminToken);
});

test('routes: every route of the list exists (an operator never gets 404/405 for its shape)', async () => {
    const params = { id: tenant.id, key_id: 1, provider: 'sim-openai', target: 'x/y', name: 'example' };
    for (const r of ROUTES) {
        // an invalid body on purpose: writes are refused (400) or not found, so nothing changes
        const res = await admin(r.method, fill(r, params), r.method === 'GET' ? {} : { body: { no_such_field: true } });
        assert.ok(res.status !== 405, `${r.name}: ${res.status}`);
        if (!r.path.includes('{')) assert.notEqual(res.status, 404, `${r.name}: ${res.status} ${res.text}`);
    }
});

test('tokens of lib/admin_tokens.mjs: every attack is 401, valid HS256 and ES256 tokens pass', async () => {
    for (const [what, t] of Object.entries(badTokens())) {
        const r = await admin('GET', `/admin/v1/tenants/${tenant.id}`, { token: t });
        assert.equal(r.status, 401, `${what}: ${r.text}`);
        assert.equal(r.json.error.code, 'unauthenticated');
    }
    assert.equal((await admin('GET', `/admin/v1/tenants/${tenant.id}`, { token: tokenFor('auditor') })).status, 200);
    assert.equal((await admin('GET', `/admin/v1/tenants/${tenant.id}`, { token: tokenFor('auditor', { alg: 'ES256' }) })).status, 200);
    assert.equal((await admin('GET', `/admin/v1/tenants/${tenant.id}`, { token: tokenFor('tenant_admin', { tenant: tenant.id, alg: 'ES256' }) })).status, 200);
    assert.equal((await admin('GET', `/admin/v1/tenants/${tenant.id}`, { token: tokenFor('tenant_admin', { tenant: other.id }) })).status, 404);
});
