// issue #11 item 5: Idempotency-Key on POST /v1/chat/completions, on four gateways of this file's
// own sharing the stack's database and one pepper (lib/instance.mjs), all sending to A's simulator,
// whose per-model request count shows how often a call really ran:
//   - the same key again returns the recorded answer (status, body, the route headers) with
//     `idempotent-replayed: true` and the first request id, and the simulator saw one request; the
//     key written as a structured-field string and the body with other spacing and key order are
//     the same request; nothing of the replay is charged (no usage record for its request id);
//   - a retry while the first is still running gets 409 idempotency_key_in_progress;
//   - the same key with a different body gets 422 idempotency_key_reused naming the header;
//   - a zero-retention tenant's retry after the end gets 409 idempotency_key_not_replayable saying
//     nothing is stored; the row holds no body and no prompt;
//   - twelve requests with one key raced over two gateways: exactly one runs;
//   - an error answer (the provider's 400) is replayed too;
//   - a stream's retry gets 409 saying a stream is not stored;
//   - a bad key is 400 naming the header, and takes nothing;
//   - an answer above idempotency.max_answer_bytes is not stored: 409 saying so, one run;
//   - keys expire: the claim's expiry is idempotency.ttl_ms after it (C: 5 s), an expired key runs again,
//     the purge deletes expired rows;
//   - a gateway killed (SIGKILL) in the middle of a keyed call: once the running lease has passed a
//     retry on another gateway gets 409 (interrupted), never a second run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { startInstance, baseConfig, req, runCmd, assertNoSanitizerReport } from './lib/instance.mjs';
import { stack } from './lib/stack.mjs';
import { waitFor } from './lib/wait.mjs';

const run = promisify(execFile);
const suffix = randomBytes(4).toString('hex');
const TENANT = `idem-${suffix}`;
const ZR_TENANT = `idem-zr-${suffix}`;

// one upstream model per scenario: its simulator count is that scenario's
const MODELS = ['i-replay', 'i-slow', 'i-mismatch', 'i-zr', 'i-race', 'i-err', 'i-stream', 'i-ttl', 'i-crash', 'i-bad', 'i-big'];

let A = null; // ttl 60 s
let B = null; // same database, pepper and simulator as A
let C = null; // ttl 5 s, answers up to 650 bytes stored (the simulator's short answers are 602 bytes, its echo of a long prompt 701): expiry, size cap
let D = null; // running lease 1 s: the crash
let key = null;
let zrKey = null;

async function psql(sql) {
    const { stdout } = await run('psql', [stack().databaseUrl, '-X', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
    return stdout.trim();
}

const lit = (s) => `'${String(s).replace(/'/g, "''")}'`;

function makeConfig({ pepperFile, simUrl, idempotency }) {
    return (ctx) =>
        baseConfig({
            ...ctx,
            pepperFile: pepperFile || ctx.pepperFile,
            providers: {
                sim: { kind: 'openai', base_url: `${simUrl || ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile, zero_retention: true },
            },
            models: Object.fromEntries(MODELS.map((m) => [m, { provider: 'sim', upstream: m, context_window: 128000 }])),
            extra: { idempotency, billing: { trial_credits: 1000000000 } },
        });
}

async function simCount(model) {
    const r = await req(A.simUrl, 'GET', '/_sim/stats');
    assert.equal(r.status, 200);
    const m = (r.json.models || {})[model] || {};
    return m.requests || 0;
}

async function fault(model, f) {
    const r = await req(A.simUrl, 'POST', '/_sim/faults', { body: { model, ...f } });
    assert.ok(r.status >= 200 && r.status < 300, `fault for ${model}: ${r.status} ${r.text}`);
}

function body(model, extra = {}) {
    return { model, messages: [{ role: 'user', content: `idempotency ${model} ${suffix}` }], max_tokens: 16, ...extra };
}

function chat(inst, b, idemKey, { k = key, headers = {} } = {}) {
    const h = { ...headers };
    if (idemKey !== undefined) h['idempotency-key'] = idemKey;
    return req(inst.url, 'POST', '/v1/chat/completions', { body: b, key: k, headers: h });
}

async function row(idemKey) {
    const out = await psql(
        `SELECT state, coalesce(status::text, ''), coalesce(no_answer, ''), body IS NULL, request_id FROM idempotency_keys ` +
            `WHERE idem_key = ${lit(idemKey)}`
    );
    if (!out) return null;
    const [state, status, noAnswer, bodyNull, requestId] = out.split('\t');
    return { state, status, noAnswer, bodyNull: bodyNull === 't', requestId };
}

function cli(...args) {
    return runCmd(stack().gatewayBin, args, { timeoutMs: 30000 });
}

before(async () => {
    A = await startInstance(makeConfig({ idempotency: { ttl_ms: 60000, purge_interval_ms: 200 } }), { tenant: TENANT });
    key = A.key;
    B = await startInstance(makeConfig({ pepperFile: A.pepperFile, simUrl: A.simUrl, idempotency: { ttl_ms: 60000 } }), { createKey: false });
    C = await startInstance(
        makeConfig({
            pepperFile: A.pepperFile,
            simUrl: A.simUrl,
            idempotency: { ttl_ms: 5000, max_answer_bytes: 650 },
        }),
        { createKey: false }
    );
    D = await startInstance(
        makeConfig({ pepperFile: A.pepperFile, simUrl: A.simUrl, idempotency: { ttl_ms: 60000, running_lease_ms: 1000 } }),
        { createKey: false }
    );
    const z = await cli('keys', 'create', '-c', A.configPath, '--tenant', ZR_TENANT);
    assert.equal(z.code, 0, z.stderr);
    zrKey = z.stdout.trim().split('\n').pop();
    const p = await cli('policy', 'set', '-c', A.configPath, '--tenant', ZR_TENANT, '--zero-retention', 'true');
    assert.equal(p.code, 0, p.stderr);
});

after(async () => {
    // D, C and B name A's pepper file, which A's stop removes
    for (const inst of [D, C, B, A]) {
        if (!inst) continue;
        await inst.stop();
        if (inst.gateway.exit && inst.gateway.exit.signal !== 'SIGKILL') assertNoSanitizerReport(inst.gateway, 'instance gateway');
    }
});

test('the same key returns the recorded answer; the request ran once and the replay is not charged', async () => {
    const k = `replay-${suffix}`;
    const b = body('i-replay');
    const first = await chat(A, b, k);
    assert.equal(first.status, 200, first.text);
    assert.equal(first.headers.get('idempotent-replayed'), null);
    const firstId = first.headers.get('x-tollgate-request-id');

    const again = await chat(A, b, k);
    assert.equal(again.status, 200, again.text);
    assert.equal(again.text, first.text, 'the same body byte for byte');
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(again.headers.get('x-tollgate-replay-of'), firstId);
    assert.notEqual(again.headers.get('x-tollgate-request-id'), firstId, 'the replay has its own request id');
    for (const h of ['x-tollgate-model', 'x-tollgate-provider', 'x-tollgate-attempts'])
        assert.equal(again.headers.get(h), first.headers.get(h), h);

    // the draft's structured-field form of the same key, and the same body spelled differently
    const reordered = `{ "max_tokens": 16,\n "messages": ${JSON.stringify(b.messages)}, "model": "i-replay" }`;
    const third = await chat(A, reordered, `"${k}"`);
    assert.equal(third.status, 200, third.text);
    assert.equal(third.headers.get('idempotent-replayed'), 'true');
    assert.equal(third.text, first.text);

    // the other gateway replays it too
    const onB = await chat(B, b, k);
    assert.equal(onB.status, 200, onB.text);
    assert.equal(onB.headers.get('idempotent-replayed'), 'true');

    assert.equal(await simCount('i-replay'), 1, 'the provider saw one request');
    const r = await row(k);
    assert.deepEqual([r.state, r.status, r.bodyNull, r.requestId], ['done', '200', false, firstId]);
    // charged at most once: no usage record names a replay (once the ledger writes records, at most
    // the first one does)
    const ids = [again, third, onB].map((x) => lit(x.headers.get('x-tollgate-request-id'))).join(',');
    assert.equal(await psql(`SELECT count(*) FROM usage_records WHERE request_id IN (${ids})`), '0');
    assert.ok(Number(await psql(`SELECT count(*) FROM usage_records WHERE request_id = ${lit(firstId)}`)) <= 1);
    const e = await psql(`SELECT count(*) FROM ledger_entries WHERE idempotency_key LIKE ${lit(`%${again.headers.get('x-tollgate-request-id')}%`)}`);
    assert.equal(e, '0', 'no ledger entry names the replay');
});

test('a retry while the first is still running gets 409; after it, the answer', async () => {
    await fault('i-slow', { latency_ms: 1500 });
    const k = `slow-${suffix}`;
    const b = body('i-slow');
    const first = chat(A, b, k);
    await waitFor(async () => ((await row(k)) || {}).state === 'running', { what: 'the key to be claimed' });
    const during = await chat(B, b, k);
    assert.equal(during.status, 409, during.text);
    assert.equal(during.json.error.code, 'idempotency_key_in_progress');
    const f = await first;
    assert.equal(f.status, 200, f.text);
    const after = await chat(A, b, k);
    assert.equal(after.status, 200);
    assert.equal(after.headers.get('idempotent-replayed'), 'true');
    assert.equal(after.text, f.text);
    assert.equal(await simCount('i-slow'), 1);
});

test('the same key with a different body gets 422 idempotency_key_reused', async () => {
    const k = `mismatch-${suffix}`;
    const first = await chat(A, body('i-mismatch'), k);
    assert.equal(first.status, 200, first.text);
    const other = await chat(A, body('i-mismatch', { max_tokens: 17 }), k);
    assert.equal(other.status, 422, other.text);
    assert.equal(other.json.error.code, 'idempotency_key_reused');
    assert.equal(other.json.error.param, 'Idempotency-Key');
    const stream = await chat(A, body('i-mismatch', { stream: true }), k);
    assert.equal(stream.status, 422, 'stream or not is part of the request');
    assert.equal(await simCount('i-mismatch'), 1);
});

test('keys are scoped to the tenant: another tenant with the same key runs its own request', async () => {
    const k = `mismatch-${suffix}`; // the key of the test above, another tenant
    const r = await chat(A, body('i-zr'), k, { k: zrKey });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('idempotent-replayed'), null);
});

test('zero retention: a retry after the end gets 409 saying nothing is stored; the provider saw one request', async () => {
    const k = `zr-${suffix}`;
    const canary = `canary-${randomBytes(6).toString('hex')}`;
    const b = { model: 'i-zr', messages: [{ role: 'user', content: `remember ${canary}` }], max_tokens: 16 };
    const before = await simCount('i-zr');
    const first = await chat(A, b, k, { k: zrKey });
    assert.equal(first.status, 200, first.text);
    const again = await chat(A, b, k, { k: zrKey });
    assert.equal(again.status, 409, again.text);
    assert.equal(again.json.error.code, 'idempotency_key_not_replayable');
    assert.match(again.json.error.message, /zero retention/);
    assert.match(again.json.error.message, /not run or charged again/);
    assert.equal(await simCount('i-zr'), before + 1);
    const r = await row(k);
    assert.deepEqual([r.state, r.noAnswer, r.bodyNull], ['done', 'zero_retention', true]);
    const text = await psql(`SELECT idempotency_keys::text FROM idempotency_keys WHERE idem_key = ${lit(k)}`);
    assert.ok(!text.includes(canary), 'the row holds nothing of the prompt');
    // a normal tenant asking for zero retention by header is treated the same way
    const kh = `zr-header-${suffix}`;
    const h1 = await chat(A, body('i-zr', { max_tokens: 15 }), kh, { headers: { 'x-tollgate-zero-retention': 'true' } });
    assert.equal(h1.status, 200, h1.text);
    const h2 = await chat(A, body('i-zr', { max_tokens: 15 }), kh, { headers: { 'x-tollgate-zero-retention': 'true' } });
    assert.equal(h2.status, 409);
    assert.equal(h2.json.error.code, 'idempotency_key_not_replayable');
});

test('two gateways racing one key: exactly one request runs', async () => {
    await fault('i-race', { latency_ms: 400 });
    const k = `race-${suffix}`;
    const b = body('i-race');
    const all = await Promise.all(Array.from({ length: 12 }, (_, i) => chat(i % 2 ? B : A, b, k)));
    // one ran; every other one found it running (409) or, arriving after its end, replayed it
    const ran = all.filter((r) => r.status === 200 && r.headers.get('idempotent-replayed') === null);
    const replayed = all.filter((r) => r.status === 200 && r.headers.get('idempotent-replayed') === 'true');
    const busy = all.filter((r) => r.status === 409);
    const statuses = all.map((r) => r.status).join(',');
    assert.equal(ran.length, 1, `exactly one ran: ${statuses}`);
    assert.equal(ran.length + replayed.length + busy.length, 12, statuses);
    for (const r of busy) assert.equal(r.json.error.code, 'idempotency_key_in_progress');
    for (const r of replayed) assert.equal(r.text, ran[0].text);
    console.log(`# race: ${busy.length} in progress, ${replayed.length} replayed`);
    assert.equal(await simCount('i-race'), 1);
    const ok = ran;
    for (const inst of [A, B]) {
        const again = await chat(inst, b, k);
        assert.equal(again.status, 200);
        assert.equal(again.text, ok[0].text);
    }
});

test('an error answer is recorded and replayed', async () => {
    await fault('i-err', { status: 400 });
    const k = `err-${suffix}`;
    const b = body('i-err');
    const first = await chat(A, b, k);
    assert.equal(first.status, 400, first.text);
    const again = await chat(B, b, k);
    assert.equal(again.status, 400);
    assert.equal(again.text, first.text);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(await simCount('i-err'), 1);
    assert.equal((await row(k)).status, '400');
});

test('a stream is not replayed: its retry gets 409 saying so, and it ran once', async () => {
    const k = `stream-${suffix}`;
    const b = body('i-stream', { stream: true });
    const first = await chat(A, b, k);
    assert.equal(first.status, 200);
    assert.match(first.text, /\[DONE\]/);
    await waitFor(async () => ((await row(k)) || {}).state === 'done', { what: 'the stream key to be done' });
    const again = await chat(A, b, k);
    assert.equal(again.status, 409, again.text);
    assert.equal(again.json.error.code, 'idempotency_key_not_replayable');
    assert.match(again.json.error.message, /stream/);
    assert.equal((await row(k)).noAnswer, 'stream');
    assert.equal(await simCount('i-stream'), 1);
});

test('a bad key is 400 naming the header and takes nothing', async () => {
    for (const bad of ['a'.repeat(201), 'has space', 'é', '""']) {
        const r = await chat(A, body('i-bad'), bad);
        assert.equal(r.status, 400, `${JSON.stringify(bad)}: ${r.text}`);
        assert.equal(r.json.error.param, 'Idempotency-Key');
    }
    const longest = 'k'.repeat(200);
    const r = await chat(A, body('i-bad'), longest);
    assert.equal(r.status, 200, '200 bytes is allowed');
    assert.equal(await simCount('i-bad'), 1);
    assert.equal(await psql(`SELECT count(*) FROM idempotency_keys WHERE idem_key = 'has space'`), '0');
});

test('an answer above idempotency.max_answer_bytes is not stored: its retry gets 409 saying so, and it ran once', async () => {
    const k = `big-${suffix}`;
    // the simulator echoes the prompt: its echo makes an answer above C's 650-byte cap
    const b = { model: 'i-big', messages: [{ role: 'user', content: 'word '.repeat(400) }] };
    const first = await chat(C, b, k);
    assert.equal(first.status, 200, first.text);
    assert.ok(first.text.length > 650, `the answer is ${first.text.length} bytes`);
    const again = await chat(C, b, k);
    assert.equal(again.status, 409, again.text);
    assert.equal(again.json.error.code, 'idempotency_key_not_replayable');
    assert.match(again.json.error.message, /larger than the gateway stores/);
    const r = await row(k);
    assert.deepEqual([r.state, r.noAnswer, r.bodyNull], ['done', 'too_large', true]);
    assert.equal(await simCount('i-big'), 1);
});

test('keys expire after idempotency.ttl_ms and then run again; expired rows are purged', async () => {
    const k = `ttl-${suffix}`;
    const b = body('i-ttl', { max_tokens: 4 }); // a short answer: within C's 650-byte cap
    const first = await chat(C, b, k);
    assert.equal(first.status, 200, first.text);
    const ttl = await psql(
        `SELECT round(extract(epoch FROM expires_at - created_at) * 1000) FROM idempotency_keys WHERE idem_key = ${lit(k)}`
    );
    assert.equal(ttl, '5000', 'C writes its own idempotency.ttl_ms');
    const replay = await chat(C, b, k);
    assert.equal(replay.headers.get('idempotent-replayed'), 'true', `${first.text.length} bytes: ${replay.text}`);
    // expired, or already purged by A (its purge runs every 200 ms)
    await waitFor(async () => (await psql(`SELECT count(*) FROM idempotency_keys WHERE idem_key = ${lit(k)} AND expires_at > now()`)) === '0', {
        tries: 400,
        what: 'the key to expire',
    });
    const later = await chat(C, b, k);
    assert.equal(later.status, 200);
    assert.equal(later.headers.get('idempotent-replayed'), null, 'an expired key is a new request');
    assert.equal(await simCount('i-ttl'), 2);

    // the purge (A's purge_interval_ms 200) deletes an expired row
    const gone = `purge-${suffix}`;
    assert.equal((await chat(A, body('i-ttl', { max_tokens: 3 }), gone)).status, 200);
    await psql(`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE idem_key = ${lit(gone)}`);
    await waitFor(async () => (await psql(`SELECT count(*) FROM idempotency_keys WHERE idem_key = ${lit(gone)}`)) === '0', {
        what: 'the purge to delete the expired row',
    });
});

test('a gateway killed mid-call: after the running lease a retry gets 409 (interrupted), never a second run', async () => {
    await fault('i-crash', { hang: true }); // counted by the simulator when it arrives
    const k = `crash-${suffix}`;
    const b = body('i-crash');
    const first = chat(D, b, k).catch((e) => e); // the connection dies with the gateway
    await waitFor(async () => ((await row(k)) || {}).state === 'running', { what: 'the key to be claimed on D' });
    await waitFor(async () => (await simCount('i-crash')) === 1, { what: 'the call to reach the provider' });
    D.gateway.kill('SIGKILL');
    await D.gateway.closed;
    await first;
    // D's running lease is 1 s, its ttl 60 s
    await waitFor(async () => (await psql(`SELECT lease_until <= now() FROM idempotency_keys WHERE idem_key = ${lit(k)}`)) === 't', {
        what: 'the running lease to pass',
    });
    const state = await psql(`SELECT state, now() - created_at, expires_at > now() FROM idempotency_keys WHERE idem_key = ${lit(k)}`);
    const r = await chat(A, b, k);
    assert.equal(r.status, 409, `${r.text} (row before: ${state})`);
    assert.equal(r.json.error.code, 'idempotency_key_not_replayable');
    assert.match(r.json.error.message, /interrupted/);
    assert.equal(await simCount('i-crash'), 1, 'not run again');
});
