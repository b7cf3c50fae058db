// issue #11 item 6: the tenant sees its own money with its API key, on a gateway of this file's own
// (lib/instance.mjs) sharing the stack's database:
//   - GET /v1/wallet: balance, reserved and spent as integers, equal to the wallet row (the trial
//     credits of billing.trial_credits for a new tenant);
//   - GET /v1/usage: usage_records seeded with SQL (the cost computed by tollgate_cost, as the
//     table's CHECK wants) for two tenants; newest first, each record with its cost; pages of
//     `limit` through next_cursor cover every record once, in order, and end with null; from / to /
//     model filter; another tenant's records never appear; bad parameters are 400 naming them;
//   - both need a valid key (401), refuse other methods (405) and a suspended tenant (403).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { startInstance, baseConfig, req, runCmd, assertNoSanitizerReport } from './lib/instance.mjs';
import { stack } from './lib/stack.mjs';
import { waitFor } from './lib/wait.mjs';
import { insertUsage } from './lib/control.mjs';

const run = promisify(execFile);
const suffix = randomBytes(4).toString('hex');
const TENANT = `money-${suffix}`;
const OTHER = `money-other-${suffix}`;
const TRIAL = 2500000;

let inst = null;
let key = null;
let otherKey = null;
let tenantId = null;
let otherId = null;

async function psql(sql) {
    const { stdout } = await run('psql', [stack().databaseUrl, '-X', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
    return stdout.trim();
}

const lit = (s) => `'${String(s).replace(/'/g, "''")}'`;

function cli(...args) {
    return runCmd(stack().gatewayBin, args, { timeoutMs: 30000 });
}

// 30 records for the tenant, one a minute from 2026-11-02T10:00:00Z, models m-a and m-b in turn;
// 5 for the other tenant in the same minutes
const BASE = Date.parse('2026-11-02T10:00:00Z');
const N = 30;
function seedSql(tid, prefix, n) {
    return (
        `INSERT INTO usage_records (tenant_id, request_id, created_at, key_id, model, provider, input_tokens, ` +
        `output_tokens, cached_tokens, price_input, price_output, price_cached, cost, charged, status, latency_ms, attempts) ` +
        `SELECT ${tid}, ${lit(prefix)} || i, timestamptz '2026-11-02T10:00:00Z' + (i * interval '1 minute'), NULL, ` +
        `CASE WHEN i % 2 = 0 THEN 'm-a' ELSE 'm-b' END, 'sim', 100 + i, 10 * i, 0, 1000000, 3000000, 500000, ` +
        `tollgate_cost(100 + i, 0, 10 * i, 1000000, 500000, 3000000, false, 0), 0, 200, 5, 1 ` +
        `FROM generate_series(0, ${n - 1}) AS i`
    );
}

before(async () => {
    inst = await startInstance(
        (ctx) =>
            baseConfig({
                ...ctx,
                providers: { sim: { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
                models: { 'm-a': { provider: 'sim', upstream: 'm-a' } },
                extra: { billing: { trial_credits: TRIAL } },
            }),
        { tenant: TENANT }
    );
    key = inst.key;
    const o = await cli('keys', 'create', '-c', inst.configPath, '--tenant', OTHER);
    assert.equal(o.code, 0, o.stderr);
    otherKey = o.stdout.trim().split('\n').pop();
    tenantId = await psql(`SELECT id FROM tenants WHERE name = ${lit(TENANT)}`);
    otherId = await psql(`SELECT id FROM tenants WHERE name = ${lit(OTHER)}`);
    await insertUsage([tenantId], seedSql(tenantId, `req_money_${suffix}_`, N));
    await insertUsage([otherId], seedSql(otherId, `req_other_${suffix}_`, 5));
});

after(async () => {
    if (!inst) return;
    await inst.stop();
    assertNoSanitizerReport(inst.gateway, 'instance gateway');
});

const get = (path, k = key) => req(inst.url, 'GET', path, { key: k });

test('GET /v1/wallet: the wallet row in integer micro-credits', async () => {
    const r = await get('/v1/wallet');
    assert.equal(r.status, 200, r.text);
    const row = (await psql(`SELECT balance, reserved, spent FROM wallets WHERE tenant_id = ${tenantId}`)).split('\t').map(Number);
    assert.deepEqual([r.json.balance, r.json.reserved, r.json.spent], row);
    assert.equal(r.json.balance, TRIAL, 'a new tenant holds its trial credits');
    for (const f of ['balance', 'reserved', 'spent']) assert.ok(Number.isInteger(r.json[f]), f);
    assert.match(r.text, /"balance":\d+/, 'an integer in the text, not a float');
});

test('GET /v1/usage: newest first, each record with its cost, only the tenant\'s own', async () => {
    const r = await get('/v1/usage?limit=100');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    assert.equal(r.json.data.length, N);
    assert.equal(r.json.next_cursor, null);
    const times = r.json.data.map((x) => Date.parse(x.created_at));
    for (let i = 1; i < times.length; i++) assert.ok(times[i - 1] > times[i], 'newest first');
    assert.equal(r.json.data[0].request_id, `req_money_${suffix}_${N - 1}`);
    assert.equal(times[0], BASE + (N - 1) * 60000);
    for (const x of r.json.data) {
        assert.ok(x.request_id.startsWith(`req_money_${suffix}_`), 'never another tenant\'s record');
        const i = Number(x.request_id.split('_').pop());
        // (100+i) input at 1 credit/Mtok + 10i output at 3 credits/Mtok, in micro-credits, rounded up
        assert.equal(x.cost, Math.ceil(((100 + i) * 1000000 + 10 * i * 3000000) / 1000000));
        assert.equal(x.input_tokens, 100 + i);
        assert.equal(x.output_tokens, 10 * i);
        assert.equal(x.created, Math.floor(Date.parse(x.created_at) / 1000));
    }
    const other = await get('/v1/usage?limit=100', otherKey);
    assert.equal(other.status, 200);
    assert.equal(other.json.data.length, 5);
    assert.ok(other.json.data.every((x) => x.request_id.startsWith(`req_other_${suffix}_`)));
});

test('GET /v1/usage: pages through next_cursor cover every record once, in order', async () => {
    const seen = [];
    let cursor = null;
    let pages = 0;
    do {
        const r = await get(`/v1/usage?limit=7${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        assert.equal(r.status, 200, r.text);
        assert.ok(r.json.data.length <= 7);
        seen.push(...r.json.data.map((x) => x.request_id));
        cursor = r.json.next_cursor;
        pages++;
    } while (cursor !== null && pages < 20);
    assert.equal(pages, Math.ceil(N / 7));
    assert.deepEqual(seen, Array.from({ length: N }, (_, j) => `req_money_${suffix}_${N - 1 - j}`));
});

test('GET /v1/usage: from (inclusive), to (exclusive) and model filter', async () => {
    const from = new Date(BASE + 10 * 60000).toISOString(); // record 10
    const to = new Date(BASE + 20 * 60000).toISOString(); // record 20, excluded
    let r = await get(`/v1/usage?from=${from}&to=${to}&limit=100`);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(
        r.json.data.map((x) => Number(x.request_id.split('_').pop())),
        [19, 18, 17, 16, 15, 14, 13, 12, 11, 10]
    );
    // unix seconds and an offset (percent-encoded or plain) mean the same times
    const fromS = Math.floor((BASE + 10 * 60000) / 1000);
    r = await get(`/v1/usage?from=${fromS}&to=2026-11-02T11:20:00%2B01:00&limit=100`);
    assert.equal(r.json.data.length, 10);
    r = await get(`/v1/usage?from=${fromS}&to=2026-11-02T11:20:00+01:00&limit=100`);
    assert.equal(r.json.data.length, 10);
    r = await get('/v1/usage?model=m-b&limit=100');
    assert.equal(r.json.data.length, N / 2);
    assert.ok(r.json.data.every((x) => x.model === 'm-b'));
    r = await get(`/v1/usage?model=m-a&from=${from}&to=${to}&limit=2`);
    assert.deepEqual(r.json.data.map((x) => Number(x.request_id.split('_').pop())), [18, 16]);
    assert.notEqual(r.json.next_cursor, null);
});

test('bad parameters are 400 naming them', async () => {
    const cases = [
        ['limit=0', 'limit'],
        ['limit=101', 'limit'],
        ['limit=x', 'limit'],
        ['from=yesterday', 'from'],
        ['to=2026-02-30T00:00:00Z', 'to'],
        ['from=2026-11-02T10:00:00Z&to=2026-11-02T09:00:00Z', 'from'],
        ['cursor=not-a-cursor', 'cursor'],
        ['model=', 'model'],
        [`model=${'m'.repeat(201)}`, 'model'],
        ['limit=5&limit=6', 'limit'],
        ['page=2', 'page'],
        ['from=%zz', 'from'],
    ];
    for (const [q, param] of cases) {
        const r = await get(`/v1/usage?${q}`);
        assert.equal(r.status, 400, `${q}: ${r.text}`);
        assert.equal(r.json.error.param, param, q);
        assert.equal(r.json.error.type, 'invalid_request_error');
    }
});

test('both need a valid key, GET only, and refuse a suspended tenant', async () => {
    for (const path of ['/v1/wallet', '/v1/usage']) {
        assert.equal((await get(path, null)).status, 401, path);
        assert.equal((await get(path, 'tg_not_a_key')).status, 401, path);
        assert.equal((await req(inst.url, 'POST', path, { key, body: {} })).status, 405, path);
    }
    const s = await cli('tenants', 'suspend', '-c', inst.configPath, '--tenant', OTHER);
    assert.equal(s.code, 0, s.stderr);
    // the suspension reaches the key cache through NOTIFY
    const r = await waitFor(
        async () => {
            const x = await get('/v1/wallet', otherKey);
            return x.status === 403 ? x : null;
        },
        { what: 'the suspension to reach the gateway' }
    );
    assert.equal(r.json.error.code, 'tenant_suspended');
    assert.equal((await get('/v1/usage', otherKey)).status, 403);
});
