// Issue #12, the admin API's job pool (admin/jobs.c) on a gateway of the test's own with one admin
// thread, a queue of one and a 3 s job deadline: a client that leaves while its job runs crashes
// nothing and its committed write stays (audited); a blocked thread plus a full queue answers 503
// server_busy with Retry-After at once (while the blocked job still waits), the blocked and the
// queued job end with 503 server_busy at their deadline, none of them writes or audits anything,
// and the pool serves again once the database lets go. The database is blocked by a row lock that
// a psql session holds on the tenant's row (the work locks it FOR UPDATE first).
// The instance's admin listener binds 0.0.0.0 (allowed with admin_auth): /metrics then needs an
// operator or auditor token, /healthz and /readyz stay open.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { startInstance, baseConfig, req, runCmd, assertNoSanitizerReport } from './lib/instance.mjs';
import { stack } from './lib/stack.mjs';
import { psql } from './lib/control.mjs';
import { waitFor } from './lib/wait.mjs';

let inst = null;
let tenantId = 0;
const suffix = randomBytes(4).toString('hex');

before(async () => {
    inst = await startInstance((ctx) => {
        const secret = join(ctx.dir, 'admin-hs256');
        writeFileSync(secret, randomBytes(32).toString('hex'), { mode: 0o600 });
        return baseConfig({
            ...ctx,
            providers: { sim: { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
            models: { 'j-a': { provider: 'sim', upstream: 'j-a' } },
            extra: {
                listen: { data: `127.0.0.1:${ctx.dataPort}`, admin: `0.0.0.0:${ctx.adminPort}` },
                admin_auth: { issuer: 'tollgate-test', audience: 'tollgate-admin', hs256_secret_file: secret, threads: 1, queue: 1, job_timeout_ms: 3000 },
            },
        });
    }, { tenant: `jobs-${suffix}` });
    const r = await req(inst.adminUrl, 'POST', '/admin/v1/tenants', { body: { name: `jobs-t-${suffix}` } });
    assert.equal(r.status, 201, r.text);
    tenantId = r.json.id;
});

after(async () => {
    if (inst) {
        await inst.stop();
        assertNoSanitizerReport(inst.gateway, 'the jobs gateway');
    }
});

/** Holds the tenant's row lock for `seconds` in a psql session of its own (resolves when it ends). */
function holdLock(seconds) {
    return psql(`BEGIN; SELECT 1 FROM tenants WHERE id = ${tenantId} FOR UPDATE; SELECT pg_sleep(${seconds}); COMMIT;`);
}

async function lockHeld() {
    return waitFor(async () => Number((await psql(`SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(%' AND query LIKE '%FOR UPDATE%' AND state = 'active' AND pid <> pg_backend_pid()`))[0][0]) === 1, {
        what: 'the lock holder',
    });
}

async function adminWaitingOnLock() {
    return Number((await psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tollgate-admin' AND wait_event_type = 'Lock'`))[0][0]);
}

async function audits(action) {
    return Number((await psql(`SELECT count(*) FROM admin_audit WHERE tenant_id = ${tenantId} AND action = '${action}'`))[0][0]);
}

test('beyond loopback: /metrics needs an operator or auditor token, probes stay open', async () => {
    assert.equal((await req(inst.adminUrl, 'GET', '/healthz', { key: null })).status, 200);
    assert.equal((await req(inst.adminUrl, 'GET', '/readyz', { key: null })).status, 200);
    const anon = await req(inst.adminUrl, 'GET', '/metrics', { key: null });
    assert.equal(anon.status, 401, anon.text);
    const op = await req(inst.adminUrl, 'GET', '/metrics');
    assert.equal(op.status, 200);
    assert.match(op.text, /tollgate_requests_total/);
    const S = stack();
    const t = await runCmd(S.gatewayBin, ['token', '-c', inst.configPath, '--role', 'tenant_admin', '--tenant', String(tenantId)]);
    assert.equal(t.code, 0, t.stderr);
    const ta = await req(inst.adminUrl, 'GET', '/metrics', { key: t.stdout.trim() });
    assert.equal(ta.status, 403);
});

test('a client that leaves while its job runs: nothing crashes, the write commits and is audited', async () => {
    const holder = holdLock(1);
    await lockHeld();
    const ac = new AbortController();
    const pending = req(inst.adminUrl, 'PATCH', `/admin/v1/tenants/${tenantId}`, { body: { zero_retention: true }, signal: ac.signal }).catch((e) => e);
    await waitFor(async () => (await adminWaitingOnLock()) === 1, { what: 'the job to wait on the row lock' });
    ac.abort();
    const gone = await pending;
    assert.equal(gone.name, 'AbortError');
    await holder;
    await waitFor(async () => (await audits('tenants.patch')) === 1, { what: 'the job to commit after its client left' });
    const g = await req(inst.adminUrl, 'GET', `/admin/v1/tenants/${tenantId}`);
    assert.equal(g.status, 200);
    assert.equal(g.json.zero_retention, true);
    const h = await req(inst.adminUrl, 'GET', '/healthz');
    assert.equal(h.status, 200);
});

test('a blocked thread and a full queue: 503 server_busy at once, the others at their deadline, nothing written', async () => {
    const holder = holdLock(8);
    await lockHeld();
    const before = await audits('tenants.suspend');
    const running = req(inst.adminUrl, 'POST', `/admin/v1/tenants/${tenantId}/suspend`);
    await waitFor(async () => (await adminWaitingOnLock()) === 1, { what: 'the first job to wait on the row lock' });
    // two more: one takes the only queue slot, the other finds the queue full
    const b = req(inst.adminUrl, 'POST', `/admin/v1/tenants/${tenantId}/suspend`);
    const c = req(inst.adminUrl, 'POST', `/admin/v1/tenants/${tenantId}/suspend`);
    const first = await Promise.race([b, c]);
    assert.equal(first.status, 503, first.text);
    assert.equal(first.json.error.code, 'server_busy');
    assert.match(first.headers.get('retry-after') || '', /^[1-9]\d*$/);
    assert.equal(await adminWaitingOnLock(), 1, 'refused while the first job still waits: the queue was full');
    const all = await Promise.all([running, b, c]);
    if (all.some((r) => r.status !== 503)) console.log(inst.gateway.output.slice(-4000));
    for (const r of all) {
        assert.equal(r.status, 503, r.text);
        assert.equal(r.json.error.code, 'server_busy');
    }
    assert.equal(await audits('tenants.suspend'), before, 'nothing audited');
    const g = await req(inst.adminUrl, 'GET', `/admin/v1/tenants/${tenantId}`);
    assert.equal(g.json.status, 'active', 'nothing written');
    await holder;
    const ok = await req(inst.adminUrl, 'POST', `/admin/v1/tenants/${tenantId}/suspend`);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.status, 'suspended');
});
