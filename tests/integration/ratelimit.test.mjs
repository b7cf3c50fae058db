// Issue #10 items 5 and 6: rate limits per key and per tenant, requests and tokens per window,
// shared by every instance on the database (gateway/src/limit.c, ratelimit.c, ratelease.c).
//   - a burst of 40 parallel requests against key_rpm 10 admits exactly 10, on one instance and
//     split across two instances on one database; a tenant-wide limit holds across two keys;
//   - tokens are counted at admission (prompt estimate + max_tokens): parallel requests with a
//     large max_tokens are refused before they reach the provider; two instances together stay
//     within the limit; the actual usage replaces the count afterwards, and a request that served
//     nothing gives its tokens back;
//   - x-ratelimit-* headers on answers (streams too) and on the 429, whose Retry-After is the
//     window's end; none without a limit; the access log names the limit that refused;
//   - refill in the next window (a 2 s window, waiting for the reset the headers announce), and
//     old windows are swept;
//   - PostgreSQL frozen: the limits fail open to each instance's own count (429 past the limit,
//     never 503), and what was admitted meanwhile still counts in the window.
// Policies are set with SQL. Bursts wait until their window has enough time left, so that a
// window's edge never splits them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { stack } from './lib/stack.mjs';
import { gw, admin, chat, chatStream, chatBody, assertOpenAIError, gatewayLines } from './lib/http.mjs';
import { psql, lit, resetSimStats, simModel, setFault, clearFaults } from './lib/control.mjs';
import { waitFor } from './lib/wait.mjs';
import { startInstance, baseConfig, req, runCmd, assertNoSanitizerReport, metricValue } from './lib/instance.mjs';
import { FreezableCluster } from './lib/pgfreeze.mjs';

const MINUTE = 60000;
const RUN = Date.now().toString(36); // tenants of this run: policies never collide with an earlier run's

/* ------------------------------------------------------------------------------ helpers */

/** Creates a key (and its tenant) through `tollgate keys create` with config cfg; {key, keyId, tenantId}. */
async function newKey(tenant, cfg = stack().config, db = psql) {
    const r = await runCmd(stack().gatewayBin, ['keys', 'create', '-c', cfg, '--tenant', tenant]);
    assert.equal(r.code, 0, `keys create: ${r.stderr}`);
    const key = r.stdout.trim().split('\n').pop();
    assert.match(key, /^tg_/);
    const rows = await db(`SELECT id, tenant_id FROM api_keys WHERE prefix = ${lit(key.slice(0, 10))} ORDER BY id DESC LIMIT 1`);
    return { key, keyId: rows[0][0], tenantId: rows[0][1] };
}

/** The tenant's policy row (key_id NULL), or a key's override row; limits is {rpm, tpm, key_rpm, key_tpm}. */
async function setPolicy(tenantId, keyId, limits, db = psql) {
    const cols = Object.keys(limits);
    const vals = cols.map((c) => String(limits[c]));
    await db(
        `INSERT INTO policies (tenant_id, key_id, ${cols.join(', ')}) VALUES (${tenantId}, ${keyId ?? 'NULL'}, ${vals.join(', ')}) ` +
            `ON CONFLICT (tenant_id, key_id) DO UPDATE SET ${cols.map((c) => `${c} = EXCLUDED.${c}`).join(', ')}`,
    );
}

/** Waits until the current window (aligned on the epoch, like the gateway's) has at least needMs left. */
async function roomInWindow(windowMs, needMs) {
    await waitFor(() => windowMs - (Date.now() % windowMs) >= needMs, {
        tries: Math.ceil((needMs + 1000) / 50) + 20,
        every: 50,
        what: `${needMs} ms left in the rate window`,
    });
}

/** Seconds of OpenAI's duration format ("250ms", "42.15s", "6m0s", "1h0m0s"). */
function durationS(s) {
    assert.match(s, /^(\d+h)?(\d+m)?(\d+(\.\d+)?(ms|s))$/, `an OpenAI duration: ${s}`);
    let t = 0;
    for (const [, n, u] of s.matchAll(/(\d+(?:\.\d+)?)(h|ms|m|s)/g)) t += Number(n) * { h: 3600, m: 60, s: 1, ms: 0.001 }[u];
    return t;
}

function limitHeaders(r) {
    const h = (n) => r.headers.get(n);
    return {
        limitReq: h('x-ratelimit-limit-requests'),
        remainingReq: h('x-ratelimit-remaining-requests'),
        resetReq: h('x-ratelimit-reset-requests'),
        limitTok: h('x-ratelimit-limit-tokens'),
        remainingTok: h('x-ratelimit-remaining-tokens'),
        resetTok: h('x-ratelimit-reset-tokens'),
    };
}

function counts(rs) {
    const c = {};
    for (const r of rs) c[r.status] = (c[r.status] || 0) + 1;
    return c;
}

/** The request's access log line, once written: LOG runs after SETTLE, so from then on the next
 *  request sees this one's actual usage (the answer itself may reach the client first). */
async function logLine(r) {
    const rid = r.headers.get('x-tollgate-request-id');
    assert.ok(rid, 'the answer names its request id');
    const mark = `"event":"request","request_id":"${rid}"`;
    const line = await waitFor(() => gatewayLines().find((l) => l.includes(mark)), { what: `the access log line of ${rid}` });
    return JSON.parse(line);
}

/** A chat call on the stack's gateway that returns once the call is settled. */
async function chatSettled(b, opts) {
    const r = await chat(b, opts);
    await logLine(r);
    return r;
}

const body = (extra = {}) => chatBody('openai-chat', { messages: [{ role: 'user', content: 'rate limit test' }], ...extra });

/** tollgate_rate_limited_total{limit} of the stack's gateway (0 before its first limited call). */
async function refusals(limit) {
    const r = await admin('GET', '/metrics');
    assert.equal(r.status, 200);
    const v = metricValue(r.text, 'tollgate_rate_limited_total', { limit });
    return Number.isFinite(v) ? v : 0;
}

/* ---------------------------------------------------------------------- one instance */

test('a burst of 40 against key_rpm 10 admits exactly 10; the rest get 429 with Retry-After and the headers', async () => {
    const k = await newKey(`rl-burst-${RUN}`);
    await setPolicy(k.tenantId, k.keyId, { key_rpm: 10 });
    await roomInWindow(MINUTE, 10000);
    const refusedBefore = await refusals('key_requests');
    const rs = await Promise.all(Array.from({ length: 40 }, () => chat(body(), { key: k.key })));
    assert.deepEqual(counts(rs), { 200: 10, 429: 30 });
    assert.equal((await refusals('key_requests')) - refusedBefore, 30, 'tollgate_rate_limited_total counts each refusal');
    for (const r of rs) {
        const h = limitHeaders(r);
        assert.equal(h.limitReq, '10');
        assert.equal(h.limitTok, null, 'no token limit: no token headers');
        if (r.status === 200) continue;
        const e = assertOpenAIError(r, 429, { code: 'rate_limited', type: 'rate_limit_error' });
        assert.match(e.message, /this API key.*10 requests per minute/);
        assert.equal(h.remainingReq, '0');
        const reset = durationS(h.resetReq);
        assert.ok(reset > 0 && reset <= 60, `reset within the window: ${h.resetReq}`);
        assert.equal(Number(r.headers.get('retry-after')), Math.max(1, Math.ceil(reset)), 'Retry-After: the window end, in seconds');
    }
    // the ten answers counted down 9..0, each once
    const left = rs.filter((r) => r.status === 200).map((r) => Number(limitHeaders(r).remainingReq));
    assert.deepEqual(left.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('a tenant-wide limit holds across two keys of the tenant', async () => {
    const tenant = `rl-tenant-${RUN}`;
    const a = await newKey(tenant);
    const b = await newKey(tenant);
    assert.equal(a.tenantId, b.tenantId);
    await setPolicy(a.tenantId, null, { rpm: 6 });
    await roomInWindow(MINUTE, 10000);
    const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => chat(body(), { key: i % 2 ? a.key : b.key })));
    assert.deepEqual(counts(rs), { 200: 6, 429: 14 });
    const refused = rs.find((r) => r.status === 429);
    assert.match(refused.json.error.message, /this tenant/);
    assert.equal(limitHeaders(refused).limitReq, '6');
    // the access log names the limit that refused
    const ev = await logLine(refused);
    assert.equal(ev.status, 429);
    assert.equal(ev.rate_limited, 'tenant_requests');
    assert.equal(ev.attempts, 0, 'refused before any provider was tried');
});

test('tokens are counted at admission: parallel requests with a large max_tokens are refused before they run', async () => {
    const k = await newKey(`rl-tokens-${RUN}`);
    await setPolicy(k.tenantId, k.keyId, { key_tpm: 10000 });
    // the provider answers after a second: every request is admitted or refused while the first
    // ones still run (an answer would otherwise give back what it did not use, making room)
    await setFault('openai-chat-2', { latency_ms: 1000 });
    let rs;
    try {
        await resetSimStats();
        await roomInWindow(MINUTE, 10000);
        // each counts its prompt estimate plus 3000: three fit in 10000, the fourth does not
        rs = await Promise.all(Array.from({ length: 8 }, () => chat(body({ model: 'openai-chat-2', max_tokens: 3000 }), { key: k.key })));
    } finally {
        await clearFaults();
    }
    assert.deepEqual(counts(rs), { 200: 3, 429: 5 });
    assert.equal((await simModel('openai-chat-2')).requests, 3, 'the refused ones never reached the provider');
    for (const r of rs.filter((x) => x.status === 429)) {
        assertOpenAIError(r, 429, { code: 'rate_limited' });
        assert.match(r.json.error.message, /10000 tokens per minute/);
        assert.equal(limitHeaders(r).limitTok, '10000');
    }
    // a request larger than the limit itself is refused as such, with no Retry-After (waiting won't help)
    const big = await chat(body({ max_tokens: 4000, n: 3 }), { key: k.key });
    assertOpenAIError(big, 429, { code: 'rate_limited' });
    assert.match(big.json.error.message, /more than the limit/);
    assert.equal(big.headers.get('retry-after'), null);
    // the access log carries the tokens counted at admission
    const ev = await logLine(rs.find((r) => r.status === 200));
    assert.ok(ev.rate_tokens > 3000 && ev.rate_tokens < 3100, `tokens counted: ${ev.rate_tokens}`);
    assert.equal(ev.rate_limited, '-');
});

test('the actual usage replaces the count: tokens come back after each answer, and all of them after a failure', async () => {
    const k = await newKey(`rl-correct-${RUN}`);
    await setPolicy(k.tenantId, k.keyId, { key_tpm: 10000 });
    await roomInWindow(MINUTE, 15000);
    // counted at 4000 + the prompt each, three in a row would not fit: the correction makes room
    const rs = [];
    for (let i = 0; i < 5; i++) rs.push(await chatSettled(body({ max_tokens: 4000 }), { key: k.key }));
    assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 200, 200]);
    // each answer's remaining tokens drop by exactly the previous answer's actual usage
    for (let i = 1; i < rs.length; i++) {
        const before = Number(limitHeaders(rs[i - 1]).remainingTok);
        const now = Number(limitHeaders(rs[i]).remainingTok);
        assert.equal(before - now, rs[i - 1].json.usage.total_tokens, `request ${i}: remaining ${before} -> ${now}`);
    }
    // a request the provider refuses (a caller's 400) served nothing: its tokens all come back
    await setFault('openai-faults', { status: 400 });
    try {
        const k2 = await newKey(`rl-failed-${RUN}`);
        await setPolicy(k2.tenantId, k2.keyId, { key_tpm: 10000 });
        const fs = [];
        for (let i = 0; i < 4; i++) fs.push(await chatSettled(chatBody('openai-faults', { max_tokens: 4000 }), { key: k2.key }));
        assert.deepEqual(fs.map((r) => r.status), [400, 400, 400, 400], 'none refused by the limit');
        assert.equal(limitHeaders(fs[3]).remainingTok, limitHeaders(fs[0]).remainingTok, 'nothing kept of the failures');
    } finally {
        await clearFaults();
    }
});

test('headers on answers (streams too) with the right values; none without a limit', async () => {
    const k = await newKey(`rl-headers-${RUN}`);
    await setPolicy(k.tenantId, k.keyId, { key_rpm: 5, key_tpm: 50000 });
    await roomInWindow(MINUTE, 15000);
    const rs = [];
    for (let i = 0; i < 4; i++) rs.push(await chatSettled(body({ max_tokens: 100 }), { key: k.key }));
    const s = await chatStream(body({ max_tokens: 100 }), { key: k.key });
    assert.equal(s.status, 200);
    assert.ok(s.sse.done, 'the stream ended with [DONE]');
    await logLine(s);
    rs.push(s);
    const last = await chat(body({ max_tokens: 100 }), { key: k.key });
    assertOpenAIError(last, 429, { code: 'rate_limited' });
    let prevTok = 50000;
    rs.forEach((r, i) => {
        const h = limitHeaders(r);
        assert.equal(h.limitReq, '5');
        assert.equal(h.remainingReq, String(4 - i));
        assert.equal(h.limitTok, '50000');
        const tok = Number(h.remainingTok);
        assert.ok(tok < prevTok && tok > 50000 - 5 * 200, `remaining tokens fall with each request: ${prevTok} -> ${tok}`);
        prevTok = tok;
        assert.equal(h.resetReq, h.resetTok, 'one window for both');
        const reset = durationS(h.resetReq);
        assert.ok(reset > 0 && reset <= 60, `reset within a minute: ${h.resetReq}`);
    });
    const h = limitHeaders(last);
    assert.equal(h.remainingReq, '0');
    assert.equal(h.limitTok, '50000');
    assert.equal(Number(last.headers.get('retry-after')), Math.max(1, Math.ceil(durationS(h.resetReq))));
    // the stack's own key has no policy: no limit, no header
    const free = await chat(body());
    assert.equal(free.status, 200);
    for (const v of Object.values(limitHeaders(free))) assert.equal(v, null);
});

/* --------------------------------------------------------------------- two instances */

const twoConfig = (pepperFile, extra = {}) => (ctx) =>
    baseConfig({
        ...ctx,
        providers: { 'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
        models: { 'rl-chat': { provider: 'sim-openai', upstream: 'rl-chat' } },
        // the second instance hashes keys with the first one's pepper: one key works on both
        extra: pepperFile ? { secrets: { key_pepper_file: pepperFile }, ...extra } : extra,
    });

test('two instances on one database admit together exactly the request limit, and the token limit', async (t) => {
    const A = await startInstance(twoConfig(null), { tenant: `rl-two-${RUN}` });
    let B = null;
    try {
        B = await startInstance(twoConfig(A.pepperFile), { createKey: false });
        const rows = await psql(`SELECT id, tenant_id FROM api_keys WHERE prefix = ${lit(A.key.slice(0, 10))}`);
        const [keyId, tenantId] = rows[0];
        // the policy before the key's first use: each instance loads it with the key
        await setPolicy(tenantId, keyId, { key_rpm: 10 });
        const call = (inst, key, extra = {}) =>
            req(inst.url, 'POST', '/v1/chat/completions', {
                key,
                body: { model: 'rl-chat', messages: [{ role: 'user', content: 'rate limit test' }], ...extra },
                signal: AbortSignal.timeout(30000),
            });
        await roomInWindow(MINUTE, 15000);
        const rs = await Promise.all(Array.from({ length: 40 }, (_, i) => call(i % 2 ? B : A, A.key)));
        assert.deepEqual(counts(rs), { 200: 10, 429: 30 }, 'exactly the limit across both');
        const servedBy = (inst) => rs.filter((r, i) => r.status === 200 && (i % 2 ? B : A) === inst).length;
        t.diagnostic(`admitted by A: ${servedBy(A)}, by B: ${servedBy(B)}`);
        const rows2 = await psql(
            `SELECT requests FROM rate_windows WHERE scope = 'key' AND scope_id = ${keyId} AND window_ms = ${MINUTE} ` +
                `AND window_start = ${Math.floor(Date.now() / MINUTE) * MINUTE}`,
        );
        assert.equal(rows2[0][0], '10', 'the database leased exactly the limit');

        // tokens: a second key of the tenant, 20000 per window, requests counting about 3011 each
        const k2 = await newKey(`rl-two-${RUN}`, A.configPath);
        await setPolicy(tenantId, k2.keyId, { key_tpm: 20000 });
        // answers after a second: the whole burst is admitted or refused before any usage is known
        for (const inst of [A, B]) {
            const f = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model: 'rl-chat', latency_ms: 1000 } });
            assert.ok(f.status >= 200 && f.status < 300, 'the simulator took the fault');
        }
        await roomInWindow(MINUTE, 15000);
        const ts = await Promise.all(Array.from({ length: 16 }, (_, i) => call(i % 2 ? B : A, k2.key, { max_tokens: 3000 })));
        const ok = ts.filter((r) => r.status === 200);
        const counted = [...A.gateway.logEvents(), ...B.gateway.logEvents()].filter((e) => e.event === 'request' && e.rate_tokens > 0);
        const each = counted[0].rate_tokens;
        assert.ok(each > 3000 && counted.every((e) => e.rate_tokens === each), 'every request counts the same');
        assert.equal(ok.length, Math.floor(20000 / each), 'as many as fit in the limit, on two instances');
        // the slack: what actual usage exceeds the admission estimate (none here: the simulator's
        // prompt count, bytes / 4, is below the estimate)
        const used = ok.reduce((n, r) => n + r.json.usage.total_tokens, 0);
        assert.ok(used <= 20000, `actual usage ${used} within the limit`);
        for (const r of ts.filter((x) => x.status !== 200)) assert.equal(r.status, 429);
    } finally {
        if (B) await B.stop();
        await A.stop();
    }
    for (const inst of [A, B]) {
        assert.equal(inst.gateway.exit.code, 0);
        assertNoSanitizerReport(inst.gateway, 'gateway');
    }
});

/* --------------------------------------------------------------- refill, old windows */

test('refill in the next window (2 s windows), and old windows are swept', async () => {
    const WINDOW = 2000;
    const inst = await startInstance(twoConfig(null, { limits: { rate_window_ms: WINDOW } }), { tenant: `rl-refill-${RUN}` });
    try {
        const rows = await psql(`SELECT id, tenant_id FROM api_keys WHERE prefix = ${lit(inst.key.slice(0, 10))}`);
        const [keyId, tenantId] = rows[0];
        await setPolicy(tenantId, keyId, { key_rpm: 2 });
        // a window that ended long ago, which the first lease's sweep deletes
        await psql(
            `INSERT INTO rate_windows (scope, scope_id, window_start, window_ms, window_end, requests) ` +
                `VALUES ('key', ${keyId}, 0, ${WINDOW}, ${WINDOW}, 1)`,
        );
        const call = () =>
            req(inst.url, 'POST', '/v1/chat/completions', {
                key: inst.key,
                body: { model: 'rl-chat', messages: [{ role: 'user', content: 'refill' }] },
                signal: AbortSignal.timeout(30000),
            });
        await roomInWindow(WINDOW, 1200);
        assert.equal((await call()).status, 200);
        assert.equal((await call()).status, 200);
        const refused = await call();
        const seen = Date.now(); // after the answer: the window's end is no earlier than seen + reset
        assertOpenAIError(refused, 429, { code: 'rate_limited' });
        assert.match(refused.json.error.message, /2 requests per 2000 ms/);
        const reset = durationS(limitHeaders(refused).resetReq);
        assert.ok(reset > 0 && reset <= WINDOW / 1000, `reset within the 2 s window: ${reset}`);
        assert.ok(Number(refused.headers.get('retry-after')) >= 1);
        // the reset time announced, not a fixed sleep
        await waitFor(() => Date.now() >= seen + reset * 1000, { tries: 100, every: 50, what: 'the announced reset' });
        const again = await call();
        assert.equal(again.status, 200, `refilled: ${again.text}`);
        assert.equal(limitHeaders(again).remainingReq, '1');
        await waitFor(async () => (await psql(`SELECT count(*) FROM rate_windows WHERE window_start = 0 AND scope_id = ${keyId}`))[0][0] === '0', {
            what: 'the old window to be swept',
        });
    } finally {
        await inst.stop();
    }
    assert.equal(inst.gateway.exit.code, 0);
    assertNoSanitizerReport(inst.gateway, 'gateway');
});

/* ----------------------------------------------------------------- database frozen */

const pg = new FreezableCluster('55434', 'tg-rl-frozen-');
after(async () => {
    await pg.stop();
});

test('PostgreSQL frozen: limits fail open to each instance\'s own count (429 past it, never 503)', async (t) => {
    const conninfo = await pg.start();
    const JOB_TIMEOUT_MS = 1000;
    const inst = await startInstance(
        twoConfig(null, { database: { url: conninfo, pool_size: 1, job_timeout_ms: JOB_TIMEOUT_MS } }),
        { tenant: `rl-frozen-${RUN}`, migrate: true },
    );
    try {
        await inst.gateway.waitOutput(/"event":"keywatch_listening"/, 'keywatch to listen');
        const [keyId, tenantId] = (await pg.sql(`SELECT id, tenant_id FROM api_keys WHERE prefix = ${lit(inst.key.slice(0, 10))}`)).split('|');
        // the policy's NOTIFY clears the key cache: let that happen before the key is cached, or the
        // cached key would be dropped during the freeze (and its lookup be a 503)
        const cleared = () => inst.gateway.logEvents().filter((e) => e.event === 'key_cache_cleared').length;
        const before = cleared();
        await pg.sql(`INSERT INTO policies (tenant_id, key_id, key_rpm) VALUES (${tenantId}, ${keyId}, 4)`);
        await waitFor(() => cleared() > before, { what: 'the policy change to reach the key cache' });
        const call = () =>
            req(inst.url, 'POST', '/v1/chat/completions', {
                key: inst.key,
                body: { model: 'rl-chat', messages: [{ role: 'user', content: 'frozen' }] },
                signal: AbortSignal.timeout(30000),
            });
        await roomInWindow(MINUTE, 25000);
        // the key and its policy cached, one request leased from the database
        const first = await call();
        assert.equal(first.status, 200, `before the freeze: ${first.text}`);
        assert.equal(limitHeaders(first).remainingReq, '3');
        await pg.freeze();
        const rs = [];
        for (let i = 0; i < 6; i++) rs.push(await call());
        pg.thaw();
        t.diagnostic(`while frozen: ${rs.map((r) => r.status).join(' ')}`);
        assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 429, 429, 429], 'the limit kept locally; never 503');
        for (const r of rs.slice(3)) {
            assertOpenAIError(r, 429, { code: 'rate_limited' });
            assert.equal(limitHeaders(r).remainingReq, '0');
        }
        await inst.gateway.waitOutput(/"event":"rate_limits_local"/, 'the log to say the limits went local');
        // the access log is written by its own thread: wait for the third line rather than read at once
        const localLines = () => inst.gateway.logEvents().filter((e) => e.event === 'request' && e.rate_local === 1);
        await waitFor(() => localLines().length >= 3, { what: 'the access log lines of the three admitted while frozen' }).catch(() => null);
        const local = localLines();
        assert.equal(local.length, 3, 'three admitted without the database, and logged so');
        // back: what was admitted while frozen still counts in this window
        const later = await call();
        assert.equal(later.status, 429, `the window is spent: ${later.text}`);
    } finally {
        pg.thaw();
        await inst.stop();
    }
    assert.equal(inst.gateway.exit.code, 0);
    assertNoSanitizerReport(inst.gateway, 'gateway');
});
