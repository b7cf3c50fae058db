// Issue #12 item 6: the tenant-isolation matrix. Every admin route (from the server's route table,
// lib/admin_routes.mjs) x every caller: operator, the tenant's own admin, another tenant's admin,
// an auditor (writing or reading), no token, and broken tokens (expired, wrong audience, wrong
// issuer, `alg: none`, algorithm confusion, forged signature) -> the right status. Another
// tenant's resource is a 404 whose body is exactly that of a tenant that does not exist. Every
// failure names the route and the case; all of them are listed at once. Then: every write appears
// in the audit log with its actor.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { auditOf, brokenTokens, cleanupProviderKeys, startDualKeyInstance, useAdmin, fill, isWrite, makeTenant, raw, routes, sampleBody, sampleHeaders, token, uniq } from './lib/adminapi.mjs';
import { req } from './lib/instance.mjs';
import { waitFor } from './lib/wait.mjs';
import { stack } from './lib/stack.mjs';

const MISSING_TENANT = 999999999999; // a valid id that no tenant has

const hasTenant = (r) => r.access.includes('tenant');
const operatorOnly = (r) => r.access.includes('operator');

/** Calls a route on tenant t with a token (null: none); a fresh body and headers each time. */
function call(r, t, tok, over = {}) {
    return raw(r.method, fill(r.pattern, t, over), {
        token: tok,
        body: sampleBody(r.method, r.pattern),
        headers: sampleHeaders(r.method, r.pattern),
    });
}

const ok2xx = (s) => s >= 200 && s < 300;

// The matrix runs on a gateway of its own whose admin_auth has an HS256 secret AND an ES256 key (the
// stack's has the secret only), same database and config as the stack.
let inst = null;
before(async () => {
    inst = await startDualKeyInstance();
});
after(async () => {
    useAdmin(null);
    await cleanupProviderKeys();
    if (inst) await inst.stop();
});

test('isolation matrix: every route x every caller gets the right status', async () => {
    const list = await routes();
    // a breaker to reset, so the reset route can succeed
    const served = await req(inst.url, 'POST', '/v1/chat/completions', { key: stack().key, body: { model: 'openai-chat', messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(served.status, 200, `a request through the instance (its breaker is the reset route's target): ${served.text}`);
    const other = await makeTenant('adm3-other');
    const broken = brokenTokens();
    const failures = [];
    const expect = (r, kase, res, want, extra = '') => {
        const good = typeof want === 'function' ? want(res.status) : res.status === want;
        if (!good)
            failures.push(`${r.method} ${r.pattern} [${kase}]: expected ${typeof want === 'function' ? (want.label || '2xx') : want}, got ${res.status}${extra} ${res.text.slice(0, 160)}`);
    };
    let cases = 0;
    for (const r of list) {
        // a fresh tenant per route: writes (revoke, delete) must not spoil the next case
        const fresh = async () => (isWrite(r) ? makeTenant('adm3-iso') : own);
        const own = await makeTenant('adm3-iso');

        if (r.public) {
            expect(r, 'no token (public)', await call(r, own, null), ok2xx);
            cases++;
            continue;
        }
        // operator: everything, with either configured algorithm
        expect(r, 'operator (HS256)', await call(r, await fresh(), token('operator')), ok2xx);
        expect(r, 'operator (ES256)', await call(r, await fresh(), token('operator', undefined, {}, 'ES256')), ok2xx);
        // the tenant's own admin
        {
            const t = await fresh();
            const res = await call(r, t, token('tenant_admin', t.id));
            expect(r, 'own tenant admin', res, operatorOnly(r) ? 403 : ok2xx);
        }
        // another tenant's admin on this tenant's resource: 404 like a missing tenant, nothing revealed
        if (hasTenant(r)) {
            const t = await fresh();
            const res = await call(r, t, token('tenant_admin', other.id));
            const missing = await call(r, { ...t, id: MISSING_TENANT }, token('tenant_admin', other.id));
            if (operatorOnly(r)) {
                expect(r, "another tenant's admin", res, 403);
            } else {
                expect(r, "another tenant's admin", res, 404);
                expect(r, 'a missing tenant (operator)', await call(r, { ...t, id: MISSING_TENANT }, token('operator')), 404);
                if (res.status === 404 && res.text !== missing.text)
                    failures.push(`${r.method} ${r.pattern} [another tenant's admin]: the 404 differs from a missing tenant's: ${res.text} vs ${missing.text}`);
            }
            cases += 2;
        } else if (!operatorOnly(r)) {
            // a tenant-wide read (failover events, audit): allowed, scoped by the server
            expect(r, "another tenant's admin (own scope)", await call(r, own, token('tenant_admin', other.id)), ok2xx);
            cases++;
        }
        // auditor: reads yes, writes 403
        {
            const t = await fresh();
            const res = await call(r, t, token('auditor'));
            expect(r, isWrite(r) ? 'auditor writing' : 'auditor reading', res, isWrite(r) ? 403 : ok2xx);
        }
        // no token and every broken token: 401, whatever the route
        expect(r, 'no token', await call(r, own, null), 401);
        for (const [kase, tok] of Object.entries(broken)) expect(r, kase, await call(r, own, tok), 401);
        cases += 5 + Object.keys(broken).length;
    }
    assert.ok(Object.keys(broken).includes('alg_confusion'), 'the stack configures an ES256 key: algorithm confusion is part of the matrix');
    assert.deepEqual(failures, [], `${failures.length} of ${cases} cases failed:\n${failures.join('\n')}`);
    console.log(`# isolation matrix: ${list.length} routes, ${cases} cases, all as expected`);
});

test('every write appears in the audit log with its actor', async () => {
    const list = (await routes()).filter((r) => isWrite(r) && !r.public);
    const missing = [];
    for (const r of list) {
        const t = await makeTenant('adm3-audit');
        const actor = uniq('auditor-of');
        const res = await call(r, t, token('operator', undefined, { sub: actor }));
        if (!ok2xx(res.status)) {
            missing.push(`${r.method} ${r.pattern}: the write itself failed: ${res.status} ${res.text.slice(0, 160)}`);
            continue;
        }
        const rows = await auditOf(actor);
        if (rows.length === 0) missing.push(`${r.method} ${r.pattern}: no audit entry with actor ${actor}`);
        for (const e of rows) {
            const text = JSON.stringify(e);
            if (res.json && typeof res.json.key === 'string' && text.includes(res.json.key))
                missing.push(`${r.method} ${r.pattern}: the audit entry holds the new key's secret`);
            if (/sk-test-[0-9a-f]{24}/.test(text)) missing.push(`${r.method} ${r.pattern}: the audit entry holds a provider key`);
        }
    }
    assert.deepEqual(missing, [], missing.join('\n'));
    console.log(`# audit: ${list.length} write routes, each write found with its actor`);
});

test("tenant-wide reads show a tenant admin nothing of another tenant", async () => {
    const a = await makeTenant('adm3-scope-a');
    const b = await makeTenant('adm3-scope-b');
    const asB = token('tenant_admin', b.id);
    const problems = [];
    // A gets failover events of its own: a chain of A's whose first target is unreachable
    const put = await raw('PUT', `/admin/v1/tenants/${a.id}/chains/scope-chain`, { token: token('operator'), body: { targets: ['openai-dead', 'openai-chat'] } });
    assert.ok(put.status === 201 || put.status === 200, `A's chain: ${put.status} ${put.text}`);
    const served = await waitFor(async () => {
        const r = await req(inst.url, 'POST', '/v1/chat/completions', { key: a.key, body: { model: 'scope-chain', messages: [{ role: 'user', content: 'hi' }] } });
        return r.status === 200 ? r : null;
    }, { what: "A's request through its chain to be served (the tenant chain reaches the gateway within 1 s)" });
    assert.equal(served.status, 200);
    const own = await waitFor(async () => {
        const r = await raw('GET', '/admin/v1/failover-events?limit=1000', { token: token('tenant_admin', a.id) });
        return r.status === 200 && r.json.data.some((e) => e.tenant_id === a.id) ? r : null;
    }, { what: "A's failover event to be stored and shown to A's admin" });
    assert.ok(own.json.data.every((e) => e.tenant_id === a.id), "A's admin sees only A's events");
    // the tenant list: only its own
    const tl = await raw('GET', '/admin/v1/tenants?limit=1000', { token: asB });
    if (tl.status !== 200) problems.push(`GET /admin/v1/tenants as B: ${tl.status}`);
    else if (tl.json.data.some((t) => t.id !== b.id)) problems.push(`GET /admin/v1/tenants as B lists ${tl.json.data.map((t) => t.id)}`);
    // reads filtered by ?tenant=: another tenant's id is a 404 or shows nothing of it
    for (const r of routes().filter((x) => x.method === 'GET' && !x.access.includes('tenant') && !x.access.includes('operator') && !x.public)) {
        const res = await raw('GET', `${r.pattern}?tenant=${a.id}`, { token: asB });
        if (res.status === 404 || res.status === 403) continue;
        if (res.status !== 200) {
            problems.push(`GET ${r.pattern}?tenant=<A> as B: ${res.status} ${res.text.slice(0, 160)}`);
            continue;
        }
        const rows = res.json.data || [];
        const leaked = rows.filter((x) => x.tenant_id === a.id || (typeof x.target === 'string' && x.target.endsWith(`#byok:${a.id}`)));
        if (leaked.length) problems.push(`GET ${r.pattern}?tenant=<A> as B shows A's rows: ${JSON.stringify(leaked).slice(0, 200)}`);
        const plain = await raw('GET', r.pattern, { token: asB });
        const others = (plain.json?.data || []).filter((x) => (x.tenant_id != null && x.tenant_id !== b.id) || (typeof x.target === 'string' && /#byok:/.test(x.target) && !x.target.endsWith(`#byok:${b.id}`)));
        if (others.length) problems.push(`GET ${r.pattern} as B shows other tenants' rows: ${JSON.stringify(others).slice(0, 200)}`);
    }
    assert.deepEqual(problems, [], problems.join('\n'));
});
