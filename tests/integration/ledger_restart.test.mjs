// The credit ledger while PostgreSQL restarts under load (issue #11 item 7): on a cluster of this
// file's own (lib/pgfreeze.mjs), a gateway with billing on serves a steady load while the cluster is
// restarted (a fast shutdown cuts every session, the settlement batch in flight included). Afterwards
// every request the clients got an answer for is recorded exactly once, and tollgate_ledger_check()
// is clean: no lost and no doubled charge.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { FreezableCluster } from './lib/pgfreeze.mjs';
import { startInstance, baseConfig, req } from './lib/instance.mjs';
import { billingOn } from './lib/ledger.mjs';
import { waitFor } from './lib/wait.mjs';

const cluster = new FreezableCluster(55471, 'tg-pg-ledger-');
let inst = null;
let inst2 = null;
let conninfo = null;

after(async () => {
    cluster.thaw();
    if (inst) await inst.stop();
    if (inst2) await inst2.stop();
    await cluster.stop();
});

/** A gateway with billing on, on this file's cluster; `billing` extends its billing block. */
const gateway = (tenant, billing = {}) =>
    startInstance(
        (ctx) =>
            baseConfig({
                ...ctx,
                providers: { 'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
                models: { 'restart-chat': { provider: 'sim-openai', upstream: 'openai-chat', context_window: 128000 } },
                extra: { database: { url: conninfo, pool_size: 1, job_timeout_ms: 1000 }, billing: billingOn(ctx.dir, billing) },
            }),
        { tenant, migrate: true }
    );

test('PostgreSQL restarted under load: every served request charged once, invariants clean', async (t) => {
    conninfo = await cluster.start();
    inst = await gateway('restart-tenant', { lease_credits: 1000000 });
    await cluster.sql(`INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, effective_from)
                       VALUES ('restart-chat', 1000000, 4000000, 500000, now() - interval '1 minute')`);
    const tid = await cluster.sql(`SELECT id FROM tenants WHERE name = 'restart-tenant'`);
    await cluster.sql(`SELECT tollgate_top_up(${tid}, 100000000000, 'restart', 'test')`);
    const count = async () => Number(await cluster.sql(`SELECT count(*) FROM usage_records WHERE tenant_id = ${tid}`).catch(() => -1));

    const served = new Set();
    const statuses = {};
    let stop = false;
    const body = { model: 'restart-chat', messages: [{ role: 'user', content: 'count the credits' }] };
    const worker = async () => {
        while (!stop) {
            const r = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body });
            statuses[r.status] = (statuses[r.status] || 0) + 1;
            if (r.status === 200) served.add(r.headers.get('x-tollgate-request-id'));
        }
    };
    const load = Array.from({ length: 8 }, worker);
    await waitFor(async () => ((await count()) >= 40 ? true : null), { tries: 400, every: 50, what: 'load to be under way' });
    await cluster.restart();
    const mark = served.size;
    await waitFor(() => (served.size >= mark + 40 ? true : null), { tries: 600, every: 50, what: 'requests served after the restart' });
    stop = true;
    await Promise.all(load);
    const rows = await waitFor(async () => {
        const r = await cluster.sql(`SELECT request_id FROM usage_records WHERE tenant_id = ${tid} AND status = 200`);
        const ids = r === '' ? [] : r.split('\n');
        return ids.length >= served.size ? ids : null;
    }, { tries: 400, every: 50, what: 'every served request to be recorded' });
    const failed = inst.gateway.logEvents().filter((e) => e.event === 'ledger_settle_failed').length;
    t.diagnostic(`statuses ${JSON.stringify(statuses)}; served ${served.size}, recorded ${rows.length}; settlement commits that failed and were retried: ${failed}`);
    assert.ok(failed >= 1, 'the restart cut the settlement writer (a commit failed and was retried)');
    assert.equal(rows.length, served.size, 'one record per served request');
    assert.deepEqual([...served].filter((id) => !rows.includes(id)), [], 'every served request is recorded');
    assert.equal(new Set(rows).size, rows.length, 'no request recorded twice');
    const check = await cluster.sql('SELECT invariant, tenant_id, detail FROM tollgate_ledger_check()');
    assert.equal(check, '', `tollgate_ledger_check(): ${check}`);
    const charged = Number(await cluster.sql(`SELECT coalesce(sum(charged), 0) FROM usage_records WHERE tenant_id = ${tid}`));
    const spent = Number(await cluster.sql(`SELECT spent FROM wallets WHERE tenant_id = ${tid}`));
    assert.equal(spent, charged, 'the wallet spent exactly what the records charged');
});

test('PostgreSQL frozen under load with a writer queue of 16: the records past it wait in the journal, and each is charged once when the database is back', async (t) => {
    inst2 = await gateway('overflow-tenant', { lease_credits: 100000000, lease_ttl_ms: 60000, queue_max: 16 });
    const tid = await cluster.sql(`SELECT id FROM tenants WHERE name = 'overflow-tenant'`);
    await cluster.sql(`SELECT tollgate_top_up(${tid}, 100000000000, 'overflow', 'test')`);
    const body = { model: 'restart-chat', messages: [{ role: 'user', content: 'count the credits' }] };
    const call = () => req(inst2.url, 'POST', '/v1/chat/completions', { key: inst2.key, body });
    const overflowed = async () => {
        const r = await req(inst2.adminUrl, 'GET', '/metrics');
        return Number((/^tollgate_ledger_overflow_total (\S+)$/m.exec(r.text) || [])[1] ?? NaN);
    };
    // a lease first, so that the calls while frozen reserve in memory
    assert.equal((await call()).status, 200);
    const served = [];
    await cluster.freeze();
    try {
        for (let i = 0; i < 60; i++) {
            const r = await call();
            assert.equal(r.status, 200, `while frozen: ${r.text}`);
            served.push(r.headers.get('x-tollgate-request-id'));
        }
        const o = await overflowed();
        t.diagnostic(`60 served while frozen; ${o} records went to the journal only`);
        assert.ok(o >= 60 - 2 * 16, `the queue of 16 overflowed into the journal (${o})`);
    } finally {
        cluster.thaw();
    }
    const count = async () => Number(await cluster.sql(`SELECT count(*) FROM usage_records WHERE tenant_id = ${tid}`));
    await waitFor(async () => ((await count()) >= 61 ? true : null), { tries: 600, every: 50, what: 'all 61 records committed' });
    const ids = (await cluster.sql(`SELECT request_id FROM usage_records WHERE tenant_id = ${tid}`)).split('\n');
    assert.equal(ids.length, 61, 'one record per request');
    assert.deepEqual(served.filter((id) => !ids.includes(id)), [], 'every request served while frozen is recorded');
    assert.ok(inst2.gateway.logEvents().some((e) => e.event === 'ledger_overflow_replay'), 'the journal was committed after the queue drained');
    const check = await cluster.sql('SELECT invariant, tenant_id, detail FROM tollgate_ledger_check()');
    assert.equal(check, '', `tollgate_ledger_check(): ${check}`);
    const charged = Number(await cluster.sql(`SELECT coalesce(sum(charged), 0) FROM usage_records WHERE tenant_id = ${tid}`));
    const spent = Number(await cluster.sql(`SELECT spent FROM wallets WHERE tenant_id = ${tid}`));
    assert.equal(spent, charged, 'the wallet spent exactly what the records charged');
});
