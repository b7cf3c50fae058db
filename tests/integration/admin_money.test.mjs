// Issue #12, the admin API's money and catalog routes, on TWO gateway instances of the test's own
// sharing the stack's database and one pepper (lib/instance.mjs), each with an operator token:
//   - wallet and top-ups: the same Idempotency-Key twice makes one entry (201 then 200 replayed),
//     another amount under it is 422 idempotency_key_reused, a missing key 400, bad bodies 400
//     naming every field; each created top-up is in admin_audit with its actor, a replay is not;
//   - the ledger in keyset pages equals the table, entry by entry;
//   - usage: every filter (time range, key, model, provider, status) against SQL's own count, a
//     page walk that sees every record once and in order, bad parameters listed in one 400, the
//     summary equal to the usage_daily rollup and to the records' own aggregate;
//   - the CSV export of 100 000 records (seeded by one INSERT) streamed to a client that pauses:
//     every line arrives, and the gateway's peak RSS (VmHWM, reset just before) grows by far less
//     than the export's size;
//   - models (the config's catalog with the price in effect) and prices (a change with an effective
//     time, the history kept, a past time or an unknown model refused);
//   - a tenant's chains: validated against the catalog (400 naming each bad field, nothing
//     written), used by the gateway (the tenant's chain first, shadowing the config's of the same
//     name for that tenant only), and a change used by both instances within 1 s; If-Match; audit.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';

import { startInstance, baseConfig, runCmd, req, assertNoSanitizerReport } from './lib/instance.mjs';
import { stack } from './lib/stack.mjs';
import { psql, lit, insertUsage } from './lib/control.mjs';
import { waitFor, waitStable } from './lib/wait.mjs';

const MODELS = ['mo-a', 'mo-b', 'mo-c'];
const WITHIN_1S = { tries: 20, every: 50 };
const suffix = randomBytes(4).toString('hex');

let A = null;
let B = null;

function makeConfig(pepperFile) {
    return (ctx) =>
        baseConfig({
            ...ctx,
            pepperFile: pepperFile || ctx.pepperFile,
            providers: { sim: { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
            models: Object.fromEntries(MODELS.map((m, i) => [m, { provider: 'sim', upstream: m, context_window: 8000 * (i + 1), max_output_tokens: 1000 + i }])),
            chains: { shared: { targets: ['mo-a'] } },
            // dumpable, so that the test may reset and read the peak RSS (/proc/PID/clear_refs)
            extra: { log_level: 'info', retention: { allow_core_dumps: true } },
        });
}

before(async () => {
    A = await startInstance(makeConfig(null), { createKey: false });
    B = await startInstance(makeConfig(A.pepperFile), { createKey: false });
});

after(async () => {
    for (const inst of [B, A]) {
        if (!inst) continue;
        await inst.stop();
        assertNoSanitizerReport(inst.gateway, 'instance gateway');
    }
});

const adm = (method, path, opts = {}) => req(A.adminUrl, method, path, { ...opts, signal: AbortSignal.timeout(30000) });

function assertFields(r, status, fields) {
    assert.equal(r.status, status, r.text);
    assert.ok(r.json && r.json.error, `an OpenAI-shaped error: ${r.text}`);
    const got = (r.json.error.fields || []).map((f) => f.field);
    for (const f of fields) assert.ok(got.includes(f) || r.json.error.param === f, `field ${f} named in ${r.text}`);
}

async function newTenant(what) {
    const r = await adm('POST', '/admin/v1/tenants', { body: { name: `money-${what}-${suffix}` } });
    assert.equal(r.status, 201, r.text);
    return r.json.id;
}

async function newKey(tenantId) {
    const k = await runCmd(stack().gatewayBin, ['keys', 'create', '-c', A.configPath, '--tenant-id', String(tenantId), '--json'], { timeoutMs: 30000 });
    assert.equal(k.code, 0, k.stderr);
    return JSON.parse(k.stdout);
}

async function auditRows(tenantId, action) {
    return psql(`SELECT actor, role, resource_id, before IS NOT NULL, after IS NOT NULL FROM admin_audit WHERE tenant_id ${tenantId === null ? 'IS NULL' : '= ' + Number(tenantId)} AND action = ${lit(action)} ORDER BY id`);
}

// ------------------------------------------------------------------------------- wallet, top-ups

test('wallet: top-ups are idempotent on Idempotency-Key, audited once, and refused with every bad field named', async () => {
    const t = await newTenant('wallet');
    const w0 = await adm('GET', `/admin/v1/tenants/${t}/wallet`);
    assert.equal(w0.status, 200, w0.text);
    for (const f of ['balance', 'reserved', 'available', 'spent']) assert.equal(typeof w0.json[f], 'number', f);
    assert.equal(w0.json.available, w0.json.balance - w0.json.reserved);
    const b0 = w0.json.balance;
    const entries = async () => Number((await psql(`SELECT count(*) FROM ledger_entries WHERE tenant_id = ${t}`))[0][0]);
    const n0 = await entries();

    // no key: 400 naming the header, nothing written
    let r = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount: 5000000 } });
    assertFields(r, 400, ['Idempotency-Key']);
    r = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount: 5000000 }, headers: { 'idempotency-key': 'has space' } });
    assertFields(r, 400, ['Idempotency-Key']);
    // bad bodies: each field named, all at once
    r = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount: -1, extra: 1 }, headers: { 'idempotency-key': `k-${suffix}` } });
    assertFields(r, 400, ['amount', 'extra']);
    for (const amount of [0, '5', 1.5, 1e16, null]) {
        r = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount }, headers: { 'idempotency-key': `k-${suffix}` } });
        assertFields(r, 400, ['amount']);
    }
    assert.equal(await entries(), n0, 'refused top-ups wrote nothing');

    const key = `top-up-${suffix}`;
    const first = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount: 5000000, note: 'invoice 1' }, headers: { 'idempotency-key': key } });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.json.replayed, false);
    assert.equal(first.json.amount, 5000000);
    assert.equal(first.json.balance_after, b0 + 5000000);
    const again = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount: 5000000, note: 'invoice 1' }, headers: { 'idempotency-key': key } });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.json.replayed, true);
    assert.equal(again.json.id, first.json.id, 'the replay answers the same entry');
    // times are RFC 3339 in UTC, as on every other admin resource, and the same on the ledger page
    assert.match(first.json.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, 'created_at in RFC 3339');
    assert.equal(again.json.created_at, first.json.created_at, 'the replay answers the same time');
    const page = await adm('GET', `/admin/v1/tenants/${t}/wallet/ledger?limit=1000`);
    assert.equal(page.json.data.find((e) => e.id === first.json.id)?.created_at, first.json.created_at, 'the ledger page says the same time');
    const other = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount: 6000000 }, headers: { 'idempotency-key': key } });
    assert.equal(other.status, 422, other.text);
    assert.equal(other.json.error.code, 'idempotency_key_reused');
    assert.equal(await entries(), n0 + 1, 'one entry for the key');

    const w1 = await adm('GET', `/admin/v1/tenants/${t}/wallet`);
    assert.equal(w1.json.balance, b0 + 5000000);
    assert.equal(w1.json.spent, 0);
    // audited once (the replay and the refusals wrote nothing), with the token's subject
    const audit = await auditRows(t, 'wallet.top_up');
    assert.equal(audit.length, 1, JSON.stringify(audit));
    assert.equal(audit[0][0], 'integration-instance');
    assert.equal(audit[0][2], String(first.json.id));
    assert.deepEqual((await psql('SELECT count(*) FROM tollgate_ledger_check()'))[0], ['0']);

    // another tenant's wallet that does not exist: 404
    r = await adm('GET', '/admin/v1/tenants/999999999/wallet');
    assert.equal(r.status, 404, r.text);
    r = await adm('POST', '/admin/v1/tenants/999999999/wallet/top-ups', { body: { amount: 1 }, headers: { 'idempotency-key': key } });
    assert.equal(r.status, 404, r.text);
});

test('ledger: keyset pages walk every entry once, in seq order, equal to the table', async () => {
    const t = await newTenant('ledger');
    for (let i = 0; i < 7; i++) {
        const r = await adm('POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { body: { amount: 1000 + i }, headers: { 'idempotency-key': `l-${i}` } });
        assert.equal(r.status, 201, r.text);
    }
    const seen = [];
    let cursor = null;
    let pages = 0;
    do {
        const r = await adm('GET', `/admin/v1/tenants/${t}/wallet/ledger?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(r.status, 200, r.text);
        assert.ok(r.json.data.length <= 3);
        seen.push(...r.json.data);
        cursor = r.json.next_cursor;
        pages++;
        assert.ok(pages < 20, 'the walk ends');
    } while (cursor);
    const rows = await psql(`SELECT id, seq, kind, amount, balance_after FROM ledger_entries WHERE tenant_id = ${t} ORDER BY seq`);
    assert.equal(seen.length, rows.length);
    seen.forEach((e, i) => {
        assert.deepEqual([String(e.id), String(e.seq), e.kind, String(e.amount), String(e.balance_after)], rows[i]);
        assert.ok(!('idempotency_key' in e), 'entries do not show their idempotency keys');
    });
    const r = await adm('GET', `/admin/v1/tenants/${t}/wallet/ledger?limit=0&cursor=zz!`);
    assertFields(r, 400, ['limit', 'cursor']);
});

// ------------------------------------------------------------------------------------------ usage

/** Seeds n usage records for tenant t with one INSERT: keys k1/k2/none, the three models, statuses
 *  200/429/500, every 10 minutes from two days back (UTC), unless `at` names the time expression. */
async function seedUsage(t, n, { k1 = 0, k2 = 0, at = null, fat = false } = {}) {
    const when = at || `(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') - interval '2 days' + i * interval '10 minutes'`;
    await insertUsage([t], `INSERT INTO usage_records (tenant_id, request_id, created_at, key_id, model, provider, input_tokens,
        output_tokens, cached_tokens, price_input, price_output, price_cached, billed, cost, charged, latency_ms,
        attempts, status, error)
      SELECT ${t}, 'req_' || lpad(i::text, 9, '0') || ${fat ? "repeat('r', 44)" : "''"}, ${when},
             CASE i % 3 WHEN 0 THEN ${k1 || 'NULL'} WHEN 1 THEN ${k2 || 'NULL'} ELSE NULL END::bigint,
             (ARRAY['mo-a','mo-b','mo-c'])[1 + (i / 7) % 3], CASE WHEN i % 5 = 0 THEN 'sim-2' ELSE 'sim' END,
             inp, outp, 0, 1000000, 2000000, 500000, true, tollgate_cost(inp, 0, outp, 1000000, 500000, 2000000, false, 0),
             0, 100 + i % 900, 1, (ARRAY[200, 200, 429, 500])[1 + i % 4],
             ${fat ? "'upstream_error_' || repeat('e', 48)" : "CASE WHEN i % 4 >= 2 THEN 'upstream_error' END"}
        FROM (SELECT i, 100 + i % 50 AS inp, 10 + i % 20 AS outp FROM generate_series(1, ${n}) i) s`);
}

async function walkUsage(t, query, limit) {
    const seen = [];
    let cursor = null;
    for (let pages = 0; ; pages++) {
        assert.ok(pages < 1000, 'the walk ends');
        const r = await adm('GET', `/admin/v1/tenants/${t}/usage?limit=${limit}${query ? '&' + query : ''}${cursor ? `&cursor=${cursor}` : ''}`);
        assert.equal(r.status, 200, r.text);
        seen.push(...r.json.data);
        cursor = r.json.next_cursor;
        if (!cursor) return seen;
    }
}

test('usage: filters against SQL, a cursor walk that sees every record once in order, every bad parameter named', async () => {
    const t = await newTenant('usage');
    const k1 = (await newKey(t)).id;
    const k2 = (await newKey(t)).id;
    await seedUsage(t, 300, { k1, k2 });
    const count = async (where) => Number((await psql(`SELECT count(*) FROM usage_records WHERE tenant_id = ${t} ${where}`))[0][0]);

    const all = await walkUsage(t, '', 37);
    assert.equal(all.length, 300);
    const ids = (await psql(`SELECT request_id FROM usage_records WHERE tenant_id = ${t} ORDER BY created_at, request_id`)).map((r) => r[0]);
    assert.deepEqual(all.map((r) => r.request_id), ids, 'oldest first, each once');
    const one = all[0];
    for (const f of ['created_at', 'key_id', 'model', 'provider', 'status', 'input_tokens', 'output_tokens', 'cost', 'charged']) assert.ok(f in one, f);

    const mid = all[150].created_at;
    const cases = [
        [`model=mo-b`, `AND model = 'mo-b'`],
        [`provider=sim-2`, `AND provider = 'sim-2'`],
        [`status=500`, `AND status = 500`],
        [`key=${k1}`, `AND key_id = ${k1}`],
        [`since=${encodeURIComponent(mid)}`, `AND created_at >= ${lit(mid)}`],
        [`until=${encodeURIComponent(mid)}`, `AND created_at < ${lit(mid)}`],
        [`model=mo-a&status=200&key=${k2}`, `AND model = 'mo-a' AND status = 200 AND key_id = ${k2}`],
    ];
    for (const [q, where] of cases) {
        const got = await walkUsage(t, q, 100);
        const want = await count(where);
        assert.ok(want > 0, `the seed has rows for ${q}`);
        assert.equal(got.length, want, q);
    }
    // SQL metacharacters are values, never SQL
    assert.equal((await walkUsage(t, `model=${encodeURIComponent("mo-a'OR'1'='1';--")}`, 100)).length, 0);
    assert.equal((await adm('GET', `/admin/v1/tenants/${t}/usage?model=${encodeURIComponent("x' OR 1=1")}`)).status, 400, 'a space is no model name');

    // invalid UTF-8, a NUL, a forged cursor: 400s naming the parameter, never a 5xx
    for (const q of ['model=%FF%FE', 'provider=a%00b', 'model=', `cursor=${Buffer.from('1.\xff').toString('base64url')}`]) {
        const r = await adm('GET', `/admin/v1/tenants/${t}/usage?${q}`);
        assert.equal(r.status, 400, `${q}: ${r.text}`);
    }
    const forged = Buffer.from('2024-01-01.\u00ff\u0000x', 'latin1').toString('base64url');
    assert.equal((await adm('GET', `/admin/v1/tenants/${t}/usage/summary?cursor=${forged}`)).status, 400);
    assert.equal((await adm('GET', `/admin/v1/prices?model=%C3%28`)).status, 400);
    const bad = await adm('GET', `/admin/v1/tenants/${t}/usage?since=yesterday&status=99&limit=5000&key=x&cursor=%%%`);
    assertFields(bad, 400, ['since', 'status', 'limit', 'key']);
    assert.ok(bad.json.error.fields.length >= 4, bad.text);

    // the summary is the rollup, which is the records' own aggregate
    const s = await adm('GET', `/admin/v1/tenants/${t}/usage/summary?limit=4`);
    assert.equal(s.status, 200, s.text);
    let rows = [...s.json.data];
    let cursor = s.json.next_cursor;
    while (cursor) {
        const p = await adm('GET', `/admin/v1/tenants/${t}/usage/summary?limit=4&cursor=${cursor}`);
        assert.equal(p.status, 200, p.text);
        rows.push(...p.json.data);
        cursor = p.json.next_cursor;
    }
    const rollup = await psql(`SELECT day, model, requests, errors, input_tokens, output_tokens, cost FROM usage_daily WHERE tenant_id = ${t} ORDER BY day, model`);
    const agg = await psql(`SELECT (created_at AT TIME ZONE 'UTC')::date, model, count(*), count(*) FILTER (WHERE status >= 400),
        sum(input_tokens), sum(output_tokens), sum(cost) FROM usage_records WHERE tenant_id = ${t} GROUP BY 1, 2 ORDER BY 1, 2`);
    assert.deepEqual(rollup, agg, 'the rollup equals the records');
    assert.deepEqual(rows.map((r) => [r.day, r.model, r.requests, r.errors, r.input_tokens, r.output_tokens, r.cost].map(String)), rollup);
    const day = rollup[0][0];
    const oneDay = await adm('GET', `/admin/v1/tenants/${t}/usage/summary?from=${day}&to=${day}&model=mo-a`);
    assert.deepEqual(oneDay.json.data.map((r) => r.day + r.model), rollup.filter((r) => r[0] === day && r[1] === 'mo-a').map((r) => r[0] + r[1]));
    const badSum = await adm('GET', `/admin/v1/tenants/${t}/usage/summary?from=2024-02-30&to=x`);
    assertFields(badSum, 400, ['from', 'to']);
});

// ------------------------------------------------------------------------------------ CSV export

function procStatus(pid, field) {
    const m = new RegExp(`${field}:\\s+(\\d+)\\s+kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    assert.ok(m, `${field} in /proc/${pid}/status`);
    return Number(m[1]) * 1024;
}

test('usage CSV: 100 000 records stream to a pausing client in bounded memory, every line once', async () => {
    const N = 100000;
    const t = await newTenant('export');
    await seedUsage(t, N, { at: `now() - interval '1 hour' + i * interval '1 millisecond'`, fat: true });
    const pid = A.gateway.pid;
    const idle = procStatus(pid, 'VmRSS');
    writeFileSync(`/proc/${pid}/clear_refs`, '5'); // VmHWM := VmRSS: the export's peak is what we read

    const url = new URL(`${A.adminUrl}/admin/v1/tenants/${t}/usage`);
    const got = await new Promise((resolve, reject) => {
        const h = { accept: 'text/csv' };
        const auth = A.adminToken;
        if (auth) h.authorization = `Bearer ${auth}`;
        const rq = http.get(url, { headers: h }, (res) => {
            let bytes = 0;
            let lines = 0;
            let tail = '';
            let first = null;
            let paused = false;
            res.on('data', (chunk) => {
                bytes += chunk.length;
                const text = tail + chunk.toString('utf8');
                const parts = text.split('\r\n');
                tail = parts.pop();
                if (first === null && parts.length > 0) first = parts.slice(0, 2);
                lines += parts.length;
                if (!paused && bytes > 1 << 20) {
                    // a slow client: stop reading until the gateway's memory holds still, then go on
                    paused = true;
                    res.pause();
                    waitStable(() => procStatus(pid, 'VmRSS'), { stable: 6, slack: 256 * 1024, every: 50, what: 'the gateway RSS while the client pauses' })
                        .then(() => res.resume(), reject);
                }
            });
            res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], bytes, lines, tail, first, complete: res.complete }));
            res.on('error', reject);
        });
        rq.on('error', reject);
        rq.setTimeout(120000, () => rq.destroy(new Error('export timed out')));
    });
    assert.equal(got.status, 200);
    assert.match(got.type, /^text\/csv/);
    assert.ok(got.complete, 'the response ended normally');
    assert.equal(got.tail, '', 'the file ends with CRLF');
    assert.equal(got.lines, N + 1, 'the header and one line per record');
    assert.match(got.first[0], /^created_at,request_id,key_id,model,provider,/);
    assert.match(got.first[1], /,req_000000001r+,/);
    const peak = procStatus(pid, 'VmHWM');
    const grew = peak - idle;
    console.log(`# export: ${got.lines} lines, ${(got.bytes / 2 ** 20).toFixed(1)} MiB; gateway RSS idle ${(idle / 2 ** 20).toFixed(1)} MiB, peak +${(grew / 2 ** 20).toFixed(1)} MiB`);
    assert.ok(got.bytes > 15 * 2 ** 20, `the export is large (${got.bytes} bytes)`);
    // ASan's allocator keeps freed memory in quarantine (hundreds of MiB): the peak then says nothing
    // of what the export holds, as in integration.memory
    if (/libasan|libtsan/.test(readFileSync(`/proc/${pid}/maps`, 'utf8'))) return;
    assert.ok(grew < got.bytes / 4, `peak RSS grew by ${grew} bytes for a ${got.bytes}-byte export`);
});

// ---------------------------------------------------------------------------- models and prices

test('models and prices: the catalog with the price in effect; a change with an effective time keeps the history', async () => {
    const m = await adm('GET', '/admin/v1/models');
    assert.equal(m.status, 200, m.text);
    const byId = Object.fromEntries(m.json.data.map((x) => [x.id, x]));
    for (const [i, name] of MODELS.entries()) {
        assert.ok(byId[name], name);
        assert.equal(byId[name].provider, 'sim');
        assert.equal(byId[name].context_window, 8000 * (i + 1));
        assert.equal(byId[name].max_output_tokens, 1000 + i);
    }
    const model = 'mo-c';
    const now = await adm('POST', '/admin/v1/prices', { body: { model, input_per_mtok: 1500000, output_per_mtok: 6000000 } });
    assert.equal(now.status, 201, now.text);
    assert.equal(now.json.in_effect, true);
    assert.equal(now.json.cached_input_per_mtok, 1500000, 'cached input defaults to the input price');
    const later = new Date(Date.now() + 3600 * 1000).toISOString();
    const next = await adm('POST', '/admin/v1/prices', { body: { model, input_per_mtok: 2000000, output_per_mtok: 8000000, effective_from: later } });
    assert.equal(next.status, 201, next.text);
    assert.equal(next.json.in_effect, false, 'a future price is not in effect yet');

    const m2 = await adm('GET', '/admin/v1/models');
    const cur = m2.json.data.find((x) => x.id === model).price;
    assert.equal(cur.id, now.json.id, 'the catalog shows the price in effect now');
    const hist = await adm('GET', `/admin/v1/prices?model=${model}`);
    assert.equal(hist.status, 200, hist.text);
    assert.deepEqual(hist.json.data.map((p) => p.id).slice(-2), [now.json.id, next.json.id], 'both rows kept');

    const past = await adm('POST', '/admin/v1/prices', { body: { model, input_per_mtok: 1, output_per_mtok: 1, effective_from: '2020-01-01T00:00:00Z' } });
    assertFields(past, 400, ['effective_from']);
    const unknown = await adm('POST', '/admin/v1/prices', { body: { model: 'no-such-model', input_per_mtok: -1, output_per_mtok: 1 } });
    assertFields(unknown, 400, ['model', 'input_per_mtok']);
    const twice = await adm('POST', '/admin/v1/prices', { body: { model, input_per_mtok: 1, output_per_mtok: 1, effective_from: later } });
    assert.equal(twice.status, 409, twice.text);
    assert.equal((await psql(`SELECT count(*) FROM prices WHERE model = ${lit(model)} AND input_per_mtok = 1`))[0][0], '0', 'refusals wrote nothing');
    assert.equal((await auditRows(null, 'prices.create')).filter((r) => r[2] === String(next.json.id)).length, 1);
});

// ----------------------------------------------------------------------------------------- chains

test('chains: validated against the catalog; the tenant chain first; a change used by both instances within 1 s', async () => {
    const t = await newTenant('chains');
    const other = await newTenant('chains-other');
    const key = (await newKey(t)).key;
    const otherKey = (await newKey(other)).key;
    const chat = (inst, k, model) =>
        req(inst.url, 'POST', '/v1/chat/completions', { key: k, body: { model, messages: [{ role: 'user', content: 'hi' }] }, signal: AbortSignal.timeout(10000) });
    const servedBy = async (inst, k, model) => {
        const r = await chat(inst, k, model);
        return r.status === 200 ? r.headers.get('x-tollgate-model') : `status ${r.status}`;
    };
    const chains = () => psql(`SELECT count(*) FROM tenant_chains WHERE tenant_id = ${t}`);

    // every bad field named at once, nothing written
    let r = await adm('PUT', `/admin/v1/tenants/${t}/chains/mine`, { body: { targets: ['mo-a', 'nope', 'mo-a'], context_fallback: 'gone', request_first_byte_ms: 0, extra: true } });
    assertFields(r, 400, ['targets[1]', 'targets[2]', 'context_fallback', 'request_first_byte_ms', 'extra']);
    r = await adm('PUT', `/admin/v1/tenants/${t}/chains/mo-a`, { body: { targets: ['mo-b'] } });
    assertFields(r, 400, ['name']);
    r = await adm('PUT', `/admin/v1/tenants/${t}/chains/mine`, { body: { targets: [] } });
    assertFields(r, 400, ['targets']);
    assert.deepEqual(await chains(), [['0']]);
    assert.equal((await chat(A, key, 'mine')).status, 404, 'no such chain yet');

    r = await adm('PUT', `/admin/v1/tenants/${t}/chains/mine`, { body: { targets: ['mo-b'], context_fallback: 'mo-c' } });
    assert.equal(r.status, 201, r.text);
    const etag = r.headers.get('etag');
    assert.ok(etag);
    await waitFor(async () => (await servedBy(A, key, 'mine')) === 'mo-b' && (await servedBy(B, key, 'mine')) === 'mo-b', { ...WITHIN_1S, what: 'the new chain on both instances' });

    // a change: used by both within 1 s (polls bounded to 1 s)
    r = await adm('PUT', `/admin/v1/tenants/${t}/chains/mine`, { body: { targets: ['mo-c'] }, headers: { 'if-match': etag } });
    assert.equal(r.status, 200, r.text);
    const t0 = performance.now();
    await waitFor(async () => (await servedBy(A, key, 'mine')) === 'mo-c' && (await servedBy(B, key, 'mine')) === 'mo-c', { ...WITHIN_1S, what: 'the changed chain on both instances within 1 s' });
    console.log(`# chain change used by both instances after ${(performance.now() - t0).toFixed(0)} ms`);
    // a stale If-Match is 412, nothing changes
    r = await adm('PUT', `/admin/v1/tenants/${t}/chains/mine`, { body: { targets: ['mo-a'] }, headers: { 'if-match': etag } });
    assert.equal(r.status, 412, r.text);
    const got = await adm('GET', `/admin/v1/tenants/${t}/chains/mine`);
    assert.deepEqual(got.json.targets, ['mo-c']);
    assert.equal(got.json.version, 2);

    // the tenant's chain shadows the config's of the same name, for that tenant only
    r = await adm('PUT', `/admin/v1/tenants/${t}/chains/shared`, { body: { targets: ['mo-b'] } });
    assert.equal(r.status, 201, r.text);
    await waitFor(async () => (await servedBy(A, key, 'shared')) === 'mo-b' && (await servedBy(B, key, 'shared')) === 'mo-b', { ...WITHIN_1S, what: 'the shadowing chain' });
    assert.equal(await servedBy(A, otherKey, 'shared'), 'mo-a', "another tenant still gets the config's chain");
    assert.equal(await servedBy(A, key, 'mo-a'), 'mo-a', 'a model name is the model');
    // GET /v1/models lists the tenant's chains (owned by the tenant), a shadowed config chain once
    const listed = async (k) => (await req(A.url, 'GET', '/v1/models', { key: k, signal: AbortSignal.timeout(10000) })).json.data;
    const mineList = await listed(key);
    assert.ok(mineList.some((x) => x.id === 'mine' && x.owned_by === `money-chains-${suffix}`), JSON.stringify(mineList));
    assert.deepEqual(mineList.filter((x) => x.id === 'shared').map((x) => x.owned_by), [`money-chains-${suffix}`]);
    const otherList = await listed(otherKey);
    assert.ok(!otherList.some((x) => x.id === 'mine'), "another tenant's listing has no trace of it");
    assert.deepEqual(otherList.filter((x) => x.id === 'shared').map((x) => x.owned_by), ['tollgate']);

    const list = await adm('GET', `/admin/v1/tenants/${t}/chains`);
    assert.deepEqual(list.json.data.map((c) => c.name), ['mine', 'shared']);
    assert.equal(list.json.next_cursor, null);

    // delete: gone within 1 s on both
    r = await adm('DELETE', `/admin/v1/tenants/${t}/chains/mine`);
    assert.equal(r.status, 204, r.text);
    await waitFor(async () => (await chat(A, key, 'mine')).status === 404 && (await chat(B, key, 'mine')).status === 404, { ...WITHIN_1S, what: 'the deleted chain gone on both' });
    r = await adm('DELETE', `/admin/v1/tenants/${t}/chains/mine`);
    assert.equal(r.status, 404, r.text);

    // every write is audited with its actor and its before/after
    const audit = await psql(`SELECT action, actor, before IS NOT NULL, after IS NOT NULL FROM admin_audit WHERE tenant_id = ${t} AND resource = 'chain' ORDER BY id`);
    assert.deepEqual(audit, [
        ['chains.create', 'integration-instance', 'f', 't'],
        ['chains.replace', 'integration-instance', 't', 't'],
        ['chains.create', 'integration-instance', 'f', 't'],
        ['chains.delete', 'integration-instance', 't', 'f'],
    ]);
});

// ------------------------------------------------------------------------------------------ roles

test('roles: a tenant admin reads its own money and chains only, never tops up or prices; an auditor only reads', async () => {
    const t = await newTenant('roles');
    const u = await newTenant('roles-other');
    const token = async (...args) => {
        const r = await runCmd(stack().gatewayBin, ['token', '-c', A.configPath, '--ttl', '1h', ...args], { timeoutMs: 30000 });
        assert.equal(r.code, 0, r.stderr);
        return r.stdout.trim();
    };
    const mine = await token('--role', 'tenant_admin', '--tenant', String(t), '--sub', 'roles-admin');
    const auditor = await token('--role', 'auditor', '--sub', 'roles-auditor');
    const as = (tok, method, path, body, headers = {}) =>
        req(A.adminUrl, method, path, { body, headers: { ...headers, authorization: `Bearer ${tok}` }, signal: AbortSignal.timeout(10000) });
    const reads = ['wallet', 'wallet/ledger', 'usage', 'usage/summary', 'chains'];
    for (const p of reads) {
        assert.equal((await as(mine, 'GET', `/admin/v1/tenants/${t}/${p}`)).status, 200, `own ${p}`);
        const other = await as(mine, 'GET', `/admin/v1/tenants/${u}/${p}`);
        assert.equal(other.status, 404, `another tenant's ${p} is a 404: ${other.text}`);
        assert.equal((await as(auditor, 'GET', `/admin/v1/tenants/${u}/${p}`)).status, 200, `auditor reads ${p}`);
    }
    const csv = await as(mine, 'GET', `/admin/v1/tenants/${u}/usage`, undefined, { accept: 'text/csv' });
    assert.equal(csv.status, 404, 'nor its CSV');
    // money and prices are the operator's
    const top = await as(mine, 'POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { amount: 1 }, { 'idempotency-key': 'roles' });
    assert.equal(top.status, 403, top.text);
    assert.equal((await as(mine, 'POST', '/admin/v1/prices', { model: 'mo-a', input_per_mtok: 1, output_per_mtok: 1 })).status, 403);
    assert.equal((await as(mine, 'GET', '/admin/v1/prices')).status, 403);
    assert.equal((await as(mine, 'GET', '/admin/v1/models')).status, 200);
    // a tenant admin manages its own chains; an auditor writes nothing
    assert.equal((await as(mine, 'PUT', `/admin/v1/tenants/${t}/chains/own`, { targets: ['mo-a'] })).status, 201);
    assert.equal((await as(mine, 'PUT', `/admin/v1/tenants/${u}/chains/own`, { targets: ['mo-a'] })).status, 404);
    assert.equal((await as(auditor, 'PUT', `/admin/v1/tenants/${t}/chains/own`, { targets: ['mo-b'] })).status, 403);
    assert.equal((await as(auditor, 'POST', `/admin/v1/tenants/${t}/wallet/top-ups`, { amount: 1 }, { 'idempotency-key': 'roles' })).status, 403);
    assert.equal((await as(auditor, 'GET', '/admin/v1/prices')).status, 200);
    assert.deepEqual(await psql(`SELECT count(*) FROM tenant_chains WHERE tenant_id = ${u}`), [['0']]);
    assert.deepEqual(await psql(`SELECT actor, role FROM admin_audit WHERE tenant_id = ${t} AND action = 'chains.create'`), [['roles-admin', 'tenant_admin']]);
});
