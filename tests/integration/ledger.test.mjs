// The credit ledger on the request path (issue #11): RESERVE / SETTLE against real wallets, the
// credit headers, the stream's usage cost, exact admission under concurrency on one and two
// instances, a price change, and kill -9 with journal replay. Each scenario ends with
// tollgate_ledger_check() clean. Gateways of this file's own run with billing on.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stack } from './lib/stack.mjs';
import { startInstance, baseConfig, req, runCmd, Proc, assertNoSanitizerReport } from './lib/instance.mjs';
import { assertLedgerClean, setPrice, tenantId, topUp, wallet, records, waitRecords, waitNothingReserved, billingOn } from './lib/ledger.mjs';
import { waitFor } from './lib/wait.mjs';
import { psql, lit } from './lib/control.mjs';
import { SseRecorder } from './lib/sse.mjs';

async function readSse(res) {
    const rec = new SseRecorder();
    rec.feed(await res.text());
    rec.end();
    return rec.events;
}

const RUN = randomBytes(4).toString('hex');
const M = { openai: `led-oa-${RUN}`, anthropic: `led-an-${RUN}`, gemini: `led-ge-${RUN}`, slow: `led-slow-${RUN}` };
const instances = [];
const journals = mkdtempSync(join(tmpdir(), 'tg-ledger-'));

after(async () => {
    for (const i of instances) await i.stop();
    // LSan reports at exit: checked once every gateway is stopped
    for (const i of instances) assertNoSanitizerReport(i.gateway, 'a gateway of integration.ledger');
    rmSync(journals, { recursive: true, force: true });
});

function config(ctx, { journal, billing = {}, pepperFile } = {}) {
    const providers = {
        'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile },
        'sim-anthropic': { kind: 'anthropic', base_url: `${ctx.simUrl}/anthropic`, api_key_file: ctx.pepperFile },
        'sim-gemini': { kind: 'gemini', base_url: `${ctx.simUrl}/gemini`, api_key_file: ctx.pepperFile },
    };
    const models = {
        [M.openai]: { provider: 'sim-openai', upstream: 'openai-chat', context_window: 128000 },
        [M.anthropic]: { provider: 'sim-anthropic', upstream: 'anthropic-chat', context_window: 128000 },
        [M.gemini]: { provider: 'sim-gemini', upstream: 'gemini-chat', context_window: 128000 },
        [M.slow]: { provider: 'sim-openai', upstream: M.slow, context_window: 128000 },
    };
    const cfg = baseConfig({ ...ctx, providers, models, extra: { billing: billingOn(ctx.dir, { lease_credits: 100000000, ...billing }) } });
    if (journal) cfg.billing.journal_path = journal;
    if (pepperFile) cfg.secrets = { key_pepper_file: pepperFile };
    return cfg;
}

async function start(tenant, opts = {}) {
    const inst = await startInstance((ctx) => config(ctx, opts), { tenant, createKey: opts.createKey !== false });
    instances.push(inst);
    return inst;
}

const chat = (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'say something about ledgers' }], ...extra });

test('setup: prices for the models of this file', async () => {
    await setPrice(M.openai, { input: 1000000, output: 2000000, cached: 250000 });
    await setPrice(M.anthropic, { input: 3000000, output: 15000000, cached: 300000 });
    await setPrice(M.gemini, { input: 500000, output: 1500000, cached: 125000 });
    await setPrice(M.slow, { input: 1000000, output: 2000000, cached: 250000 });
});

test('a whole answer: x-tollgate-cost is the recorded cost, credits-remaining drops by exactly it', async () => {
    const name = `led-basic-${RUN}`;
    const inst = await start(name);
    const tid = await tenantId(name);
    await topUp(tid, 50000000, `basic-${RUN}`);
    const a = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(M.openai) });
    assert.equal(a.status, 200, a.text);
    const costA = Number(a.headers.get('x-tollgate-cost'));
    const remA = Number(a.headers.get('x-tollgate-credits-remaining'));
    assert.ok(costA > 0, `a cost header: ${a.headers.get('x-tollgate-cost')}`);
    assert.ok(remA > 0 && remA < 50000000);
    const b = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(M.openai, { messages: [{ role: 'user', content: 'a longer question about double-entry bookkeeping' }] }) });
    assert.equal(b.status, 200, b.text);
    const costB = Number(b.headers.get('x-tollgate-cost'));
    assert.equal(remA - Number(b.headers.get('x-tollgate-credits-remaining')), costB, 'the header drops by exactly the cost');
    const recs = await waitRecords(tid, 2);
    assert.deepEqual(recs.map((r) => r.cost).sort(), [costA, costB].sort());
    for (const r of recs) {
        assert.equal(r.charged, r.cost);
        assert.equal(r.cost, Math.ceil((r.input - r.cached) * 1 + r.cached * 0.25 + r.output * 2), 'tokens x prices');
    }
    // an error after AUTH carries the remaining credits and costs nothing
    const bad = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: { model: M.openai } });
    assert.equal(bad.status, 400);
    assert.ok(bad.headers.get('x-tollgate-credits-remaining') !== null, 'an error carries the credits header');
    await assertLedgerClean('after whole answers');
});

test('a model with no price in effect is refused, not served free', async () => {
    const name = `led-unpriced-${RUN}`;
    const inst = await startInstance((ctx) => {
        const c = config(ctx);
        c.models[`unpriced-${RUN}`] = { provider: 'sim-openai', upstream: 'openai-chat', context_window: 128000 };
        return c;
    }, { tenant: name });
    instances.push(inst);
    await topUp(await tenantId(name), 1000000, `unpriced-${RUN}`);
    const r = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(`unpriced-${RUN}`) });
    assert.equal(r.status, 503, r.text);
    assert.equal(r.json.error.code, 'model_not_priced');
});

test('streams: the include_usage chunk carries the cost, equal to the record, cached tokens priced as cached, for each provider kind', async () => {
    const name = `led-stream-${RUN}`;
    const inst = await start(name);
    const tid = await tenantId(name);
    await topUp(tid, 500000000, `stream-${RUN}`);
    const long = 'ledger '.repeat(1200); // long enough for the simulator to report cached tokens
    let n = 0;
    for (const model of Object.values(M)) {
        const res = await fetch(`${inst.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${inst.key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model, stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: long }] }),
        });
        assert.equal(res.status, 200);
        assert.ok(res.headers.get('x-tollgate-credits-remaining') !== null);
        const events = await readSse(res);
        const usage = events.map((e) => e.json).filter((j) => j && j.usage).map((j) => j.usage).pop();
        assert.ok(usage, `${model}: a usage chunk`);
        assert.equal(typeof usage.cost, 'number', `${model}: the usage chunk has a cost: ${JSON.stringify(usage)}`);
        const cached = usage.prompt_tokens_details ? usage.prompt_tokens_details.cached_tokens : 0;
        assert.ok(cached > 0, `${model}: the simulator reported cached tokens`);
        n++;
        const recs = await waitRecords(tid, n);
        const r = recs[recs.length - 1];
        assert.equal(r.cost, usage.cost, `${model}: the record's cost is the chunk's`);
        assert.equal(r.input, usage.prompt_tokens);
        assert.equal(r.output, usage.completion_tokens);
        assert.equal(r.cached, cached);
        assert.equal(r.estimated, false);
    }
    await assertLedgerClean('after streams');
});

test('a price change: each record keeps the price it was charged at', async () => {
    const name = `led-price-${RUN}`;
    const model = M.gemini;
    const inst = await start(name);
    const tid = await tenantId(name);
    await topUp(tid, 100000000, `price-${RUN}`);
    const a = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(model) });
    assert.equal(a.status, 200);
    await setPrice(model, { input: 500000, output: 3000000, cached: 125000 });
    // the gateway reloads its snapshot on NOTIFY tollgate_prices
    const b = await waitFor(async () => {
        const r = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(model) });
        return Number(r.headers.get('x-tollgate-cost')) > Number(a.headers.get('x-tollgate-cost')) ? r : null;
    }, { what: 'the new price to apply' });
    assert.equal(b.status, 200);
    const recs = await waitFor(async () => {
        const r = await records(tid);
        return r.length >= 2 && r[r.length - 1].cost === Number(b.headers.get('x-tollgate-cost')) ? r : null;
    }, { what: 'the records' });
    assert.equal(recs[0].priceOutput, 1500000, 'the first record keeps the old price');
    assert.equal(recs[recs.length - 1].priceOutput, 3000000);
    await assertLedgerClean('after a price change');
});

/* 200 requests at once against a wallet that covers exactly 50 of them: each costs exactly what it
 * reserves (output price only, max_tokens the simulator fills), the wallet is below the smallest
 * lease, so every reservation is exact in PostgreSQL. */
async function fifty(urlsAndKeys, tid) {
    const perReq = 10; // 10 output tokens at 1 credit per million tokens: 10 micro-credits
    await topUp(tid, 50 * perReq, `fifty-${RUN}-${tid}`);
    const body = { model: `led-fifty-${RUN}`, max_tokens: 10, messages: [{ role: 'user', content: 'write a long essay about accounting' }] };
    const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) => {
            const { url, key } = urlsAndKeys[i % urlsAndKeys.length];
            return req(url, 'POST', '/v1/chat/completions', { key, body });
        })
    );
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 402);
    assert.equal(ok.length + refused.length, 200, `every answer is 200 or 402: ${[...new Set(results.map((r) => r.status))]}`);
    for (const r of refused) {
        assert.equal(r.json.error.code, 'insufficient_credits');
        assert.equal(r.json.error.type, 'insufficient_quota');
    }
    for (const r of ok) assert.equal(Number(r.headers.get('x-tollgate-cost')), perReq);
    assert.equal(ok.length, 50, 'exactly the covered requests are served');
    const recs = await waitRecords(tid, 50);
    assert.equal(recs.filter((r) => r.charged > 0).length, 50);
    await waitNothingReserved(tid);
    const w = await wallet(tid);
    assert.equal(w.balance, 0, 'the wallet is spent exactly, never below zero');
    assert.equal(w.spent, 50 * perReq);
    await assertLedgerClean('after 200 against 50');
}

test('200 concurrent requests against a wallet that covers exactly 50: one instance', async () => {
    const name = `led-fifty1-${RUN}`;
    await setPrice(`led-fifty-${RUN}`, { input: 0, output: 1000000, cached: 0 });
    const inst = await startInstance((ctx) => {
        const c = config(ctx);
        c.models[`led-fifty-${RUN}`] = { provider: 'sim-openai', upstream: 'openai-chat', context_window: 128000 };
        return c;
    }, { tenant: name });
    instances.push(inst);
    await fifty([{ url: inst.url, key: inst.key }], await tenantId(name));
});

test('200 concurrent requests against a wallet that covers exactly 50: two instances on one database', async () => {
    const name = `led-fifty2-${RUN}`;
    const withModel = (c) => {
        c.models[`led-fifty-${RUN}`] = { provider: 'sim-openai', upstream: 'openai-chat', context_window: 128000 };
        return c;
    };
    const a = await startInstance((ctx) => withModel(config(ctx)), { tenant: name });
    instances.push(a);
    const b = await startInstance((ctx) => withModel(config(ctx, { pepperFile: a.pepperFile })), { tenant: name, createKey: false });
    instances.push(b);
    await fifty([{ url: a.url, key: a.key }, { url: b.url, key: a.key }], await tenantId(name));
});

test('kill -9 under load, restart on the same journal: the invariants hold, nothing is charged twice, the journal is replayed', async (t) => {
    const name = `led-kill-${RUN}`;
    const journal = join(journals, 'kill.journal');
    const inst = await start(name, { journal });
    const tid = await tenantId(name);
    await topUp(tid, 1000000000, `kill-${RUN}`);
    const served = new Set();
    let sent = 0;
    let stop = false;
    const worker = async () => {
        while (!stop) {
            sent++;
            try {
                const r = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(M.openai) });
                if (r.status === 200) served.add(r.headers.get('x-tollgate-request-id') || String(sent));
            } catch {
                /* the gateway died under this request */
            }
        }
    };
    const load = Array.from({ length: 16 }, worker);
    await waitFor(async () => (await records(tid)).length >= 50 ? true : null, { tries: 600, every: 50, what: 'load to be under way' });
    inst.gateway.kill('SIGKILL');
    await inst.gateway.closed;
    stop = true;
    await Promise.all(load);
    const before = (await records(tid)).length;
    // restart on the same config (same journal): the journal is replayed
    const S = stack();
    const gw = new Proc(S.gatewayBin, ['serve', '-c', inst.configPath]);
    inst.gateway = gw;
    await gw.waitOutput(/"server_started"/, 'the restarted gateway');
    await waitFor(async () => ((await records(tid)).length >= served.size ? true : null), { tries: 400, every: 50, what: 'every served request to be recorded' });
    const after_ = await records(tid);
    const ids = new Set(after_.map((r) => r.requestId));
    assert.equal(ids.size, after_.length, 'no request recorded twice');
    assert.ok(after_.length >= before, 'the replay lost nothing');
    assert.ok(after_.length <= sent, 'no record for a request never sent');
    const missing = [...served].filter((id) => !ids.has(id));
    const replayed = gw.logEvents().filter((e) => e.event === 'ledger_journal_replayed').reduce((a, e) => a + e.records, 0);
    t.diagnostic(`served ${served.size}, recorded ${after_.length} (${before} before the restart, ${replayed} replayed from the journal), served without a record ${missing.length}`);
    // The charge is journaled before the answer's last byte is handed over (tg_settle_charge), so
    // no answer a client got whole can be missing after the replay.
    assert.deepEqual(missing, [], `served requests without a record: ${missing.length} of ${served.size} (${after_.length} recorded)`);
    await waitNothingReserved(tid);
    await assertLedgerClean('after kill -9 and replay');
    assertNoSanitizerReport(gw, 'the restarted gateway');
});

test('a journal left by a gateway that stopped: its records are charged once at the next start; an older gateway\'s JSON records too; a torn last line is skipped', async (t) => {
    const name = `led-journal-${RUN}`;
    const journal = join(journals, 'left.journal');
    const inst = await start(name, { journal });
    const tid = await tenantId(name);
    await topUp(tid, 1000000, `journal-${RUN}`);
    inst.gateway.kill('SIGTERM');
    await inst.gateway.closed;
    const [[priceId]] = await psql(`SELECT id FROM prices WHERE model = ${lit(M.openai)} ORDER BY effective_from DESC LIMIT 1`);
    // M.openai's price: 1,000,000 / 2,000,000 per million: 10 input and 20 output tokens cost 50
    const at = new Date().toISOString();
    const fields = (rid) => [tid, rid, at, '\\N', M.openai, 'sim-openai', 'f', 10, 20, 0, 'f', priceId, 1000000, 2000000, 250000, 0, 't', 50, 50, '\\N', 5, 1, 200, '\\N'];
    const row = fields(`req_journalrow${RUN}`).join('\t') + '\n';
    const legacy = JSON.stringify({
        tenant_id: tid, request_id: `req_journaljson${RUN}`, created_at: at, key_id: null, model: M.openai, provider: 'sim-openai',
        byok: false, input_tokens: 10, output_tokens: 20, cached_tokens: 0, estimated: false, price_id: Number(priceId),
        price_input: 1000000, price_output: 2000000, price_cached: 250000, platform_fee: 0, billed: true, cost: 50, charge: 50,
        lease_id: null, latency_ms: 5, attempts: 1, status: 200, error: null,
    }) + '\n';
    const torn = fields(`req_journaltorn${RUN}`).join('\t').slice(0, 60); // a crash mid-write: no newline
    writeFileSync(journal, legacy + row);
    writeFileSync(`${journal}.alt`, row + torn); // the same row on both sides: still one charge

    const gw = new Proc(stack().gatewayBin, ['serve', '-c', inst.configPath]);
    inst.gateway = gw;
    await gw.waitOutput(/"server_started"/, 'the restarted gateway');
    const recs = await waitRecords(tid, 2, 'the journal\'s two records');
    t.diagnostic(JSON.stringify(recs.map((r) => [r.requestId, r.cost, r.charged])));
    assert.deepEqual(recs.map((r) => r.requestId).sort(), [`req_journaljson${RUN}`, `req_journalrow${RUN}`].sort());
    for (const r of recs) assert.deepEqual([r.cost, r.charged], [50, 50], `${r.requestId} charged its cost once`);
    assert.equal((await wallet(tid)).spent, 100, 'the wallet spent the two charges, once each');
    assert.equal(gw.logEvents().filter((e) => e.event === 'ledger_journal_line_skipped').length, 1, 'the torn line was skipped');
    await waitFor(() => (readFileSync(journal, 'utf8') === '' && readFileSync(`${journal}.alt`, 'utf8') === '' ? true : null), { what: 'both journal sides emptied once committed' });
    await assertLedgerClean('after the journal\'s replay');
    assertNoSanitizerReport(gw, 'the restarted gateway');
});

test('a tenant gone quiet: its lease account is freed, and a later request opens a new lease under a fresh key', async (t) => {
    const name = `led-quiet-${RUN}`;
    const inst = await start(name); // lease_ttl_ms 5000: a lease idles out in ~1.7 s, an account after 10 s quiet
    const tid = await tenantId(name);
    await topUp(tid, 100000000, `quiet-${RUN}`);
    const accounts = async () => {
        const r = await req(inst.adminUrl, 'GET', '/metrics');
        const m = /^tollgate_ledger_accounts (\S+)$/m.exec(r.text);
        return m ? Number(m[1]) : null;
    };
    const first = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(M.openai) });
    assert.equal(first.status, 200, first.text);
    await waitFor(async () => ((await accounts()) === 1 ? true : null), { tries: 400, every: 50, what: 'the account to be counted' });
    const t0 = Date.now();
    await waitFor(async () => ((await accounts()) === 0 ? true : null), { tries: 800, every: 50, what: 'the quiet account to be freed' });
    t.diagnostic(`account freed ${Date.now() - t0} ms after it was counted`);
    const second = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(M.openai) });
    assert.equal(second.status, 200, second.text);
    assert.match(second.headers.get('x-tollgate-credits-remaining') || '', /^\d+$/, 'the new account knows the wallet from its lease');
    await waitRecords(tid, 2);
    // two slice leases, no per-request one: the second open was granted, not answered with the first
    // account's ended lease (the same key would have been)
    const [[slices, exact]] = await psql(`SELECT count(*) FILTER (WHERE request_id IS NULL), count(*) FILTER (WHERE request_id IS NOT NULL)
                                           FROM leases WHERE tenant_id = ${tid}`);
    assert.deepEqual([Number(slices), Number(exact)], [2, 0]);
    await assertLedgerClean('after an account was freed and made again');
});

test('a lease ended behind the gateway\'s back: the batch goes through the stage instead, charged once, late', async (t) => {
    const name = `led-ended-${RUN}`;
    // a lease life far past the test: the lease the slow request holds is the one open lease below.
    // With the file's 5 s, the first lease was already asking for its successor (renew_before_ms
    // before its drain) by the time a sanitizer build got there, and the slow request could hold
    // the successor while the test ended the first
    const inst = await start(name, { billing: { lease_ttl_ms: 600000 } });
    const tid = await tenantId(name);
    await topUp(tid, 100000000, `ended-${RUN}`);
    const metric = async (m) => {
        const r = await req(inst.adminUrl, 'GET', '/metrics');
        const v = new RegExp(`^${m} (\\S+)$`, 'm').exec(r.text);
        return v ? Number(v[1]) : 0;
    };
    // a first answer settles the way fresh batches go: straight into usage_records
    const first = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(M.openai) });
    assert.equal(first.status, 200, first.text);
    await waitRecords(tid, 1);
    assert.equal(await metric('tollgate_ledger_direct_fallbacks_total'), 0, 'a fresh batch with an open lease needs no stage');
    // (whether a later request waits depends on where its lease is in its life: unit.lease shows
    // the renewal that keeps a busy account from waiting, with the clock in hand)
    assert.ok((await metric('tollgate_ledger_lease_waits_total')) >= 1, 'the tenant\'s first request waited for its first lease');
    // a slow answer, and meanwhile its lease ends in the database (as when a gateway stalls past the TTL)
    const f = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model: M.slow, latency_ms: 1500 } });
    assert.ok(f.status >= 200 && f.status < 300, `fault: ${f.status} ${f.text}`);
    const pending = req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chat(M.slow) });
    await waitFor(async () => ((await psql(`SELECT count(*) FROM leases WHERE tenant_id = ${tid} AND state = 'open'`))[0][0] === '1' ? true : null), { what: 'the open lease' });
    const [[ended]] = await psql(`SELECT count(tollgate_lease_end(id, 'expired')) FROM leases WHERE tenant_id = ${tid} AND state = 'open'`);
    assert.equal(ended, '1');
    const slow = await pending;
    assert.equal(slow.status, 200, slow.text);
    const cost = Number(slow.headers.get('x-tollgate-cost'));
    assert.ok(cost > 0);
    const recs = await waitRecords(tid, 2);
    await waitFor(async () => ((await metric('tollgate_ledger_direct_fallbacks_total')) >= 1 ? true : null), { what: 'the fallback to be counted' });
    const late = recs.find((r) => r.requestId === slow.headers.get('x-request-id')) || recs[1];
    assert.deepEqual([late.cost, late.charged], [cost, cost], 'charged its cost once, from what the wallet had available');
    const [[key]] = await psql(`SELECT charge_key FROM usage_records WHERE tenant_id = ${tid} AND request_id = ${lit(late.requestId)}`);
    assert.match(key, /^usage_charge\/late\//, 'a late charge entry of its own');
    assert.equal((await wallet(tid)).spent, recs.reduce((a, r) => a + r.charged, 0));
    t.diagnostic(`fallbacks: ${await metric('tollgate_ledger_direct_fallbacks_total')}`);
    await req(inst.simUrl, 'DELETE', '/_sim/faults');
    await assertLedgerClean('after a late charge through the stage');
});
