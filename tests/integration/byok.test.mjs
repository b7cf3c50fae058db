// issue #10 items 3 and 6 (BYOK), on a gateway and a simulator of this file's own: the simulator
// accepts the platform's key (position 0 of its keys file) and two tenants' own keys (1, 2) and
// counts requests per key, so a test can prove which key a request used. A tenant's request uses
// its own key; a wrong own key is that tenant's 400 (or a fallback to the platform's key when its
// policy allows) while the target's shared breaker stays closed; a sealed blob moved to another
// tenant does not open (422, naming no key); the master key is rotated under load with no failed
// request; health probes carry the platform's key only; a full pg_dump and every log hold no
// plaintext provider key.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

import { stack } from './lib/stack.mjs';
import { psql, lit } from './lib/control.mjs';
import { startInstance, runCmd, req, assertNoSanitizerReport } from './lib/instance.mjs';
import { waitFor } from './lib/wait.mjs';

const run = promisify(execFile);
const PROVIDER = 'byok-openai';
const MODEL = 'byok-chat';
const TARGET = `${PROVIDER}/gpt-4o-mini`;
const RUN = randomBytes(4).toString('hex');
const name = (t) => `byok-it-${t}-${RUN}`;

const secret = (tag) => `sk-${tag}-${randomBytes(24).toString('hex')}`;
const PLATFORM = secret('platform'); // sim key 0
const KEY_A = secret('tenant-a'); // sim key 1
const KEY_C = secret('tenant-c'); // sim key 2
const KEY_WRONG = secret('wrong'); // not accepted by the simulator
const PROVIDER_KEYS = [PLATFORM, KEY_A, KEY_C, KEY_WRONG];

let dir;
let inst;
const tenants = {}; // short name -> {name, id, key}
const cliOutput = []; // everything the CLI printed, for the leak check

function masterKeyFile(id) {
    const f = join(dir, `master-${id}`);
    writeFileSync(f, randomBytes(32), { mode: 0o600 }); // raw bytes
    return f;
}

function config(ctx, masterKeys) {
    return {
        listen: { data: `127.0.0.1:${ctx.dataPort}`, admin: `127.0.0.1:${ctx.adminPort}` },
        workers: 2,
        log_level: 'debug',
        database: { url: stack().databaseUrl, pool_size: 1 },
        secrets: { key_pepper_file: ctx.pepperFile, master_keys: masterKeys },
        billing: { enabled: false }, // this file is about keys, not credits
        timeouts: { connect_ms: 1000, first_byte_ms: 10000, idle_ms: 10000, total_ms: 60000 },
        key_cache_ttl_ms: 60000,
        providers: {
            [PROVIDER]: {
                kind: 'openai',
                base_url: `${ctx.simUrl}/openai/v1`,
                api_key_file: join(dir, 'platform-key'),
                breaker: { failure_threshold: 3, open_ms: 60000 },
                health: { enabled: true, interval_ms: 200, timeout_ms: 1000 },
            },
        },
        models: { [MODEL]: { provider: PROVIDER, upstream: 'gpt-4o-mini' } },
    };
}

async function cli(args, what) {
    const r = await runCmd(stack().gatewayBin, args);
    cliOutput.push(r.stdout, r.stderr);
    assert.equal(r.code, 0, `${what}: exit ${r.code}: ${r.stderr}`);
    return r;
}

async function addTenant(short, key = null) {
    const n = name(short);
    if (key === null) {
        const r = await cli(['keys', 'create', '-c', inst.configPath, '--tenant', n], 'keys create');
        key = r.stdout.trim();
    }
    const [[id]] = await psql(`SELECT id FROM tenants WHERE name = ${lit(n)}`);
    tenants[short] = { name: n, id: Number(id), key };
    return tenants[short];
}

/** `tollgate byok set`, the key on stdin (viaStdin) or in a file. */
async function byokSet(short, providerKey, { viaStdin = false } = {}) {
    const args = ['byok', 'set', '-c', inst.configPath, '--tenant', tenants[short].name, '--provider', PROVIDER];
    if (viaStdin) {
        const child = execFile(stack().gatewayBin, args);
        let out = '';
        child.stdout.on('data', (d) => (out += d));
        child.stderr.on('data', (d) => (out += d));
        child.stdin.end(providerKey + '\n');
        const code = await new Promise((res) => child.on('close', res));
        cliOutput.push(out);
        assert.equal(code, 0, `byok set (stdin): ${out}`);
        return;
    }
    const f = join(dir, `key-${short}`);
    writeFileSync(f, providerKey + '\n', { mode: 0o600 });
    await cli([...args, '--key-file', f], 'byok set');
    rmSync(f);
}

const chat = (key) =>
    req(inst.url, 'POST', '/v1/chat/completions', {
        key,
        body: { model: MODEL, messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 },
        signal: AbortSignal.timeout(30000),
    });

async function simKeys() {
    const r = await req(inst.simUrl, 'GET', '/_sim/stats');
    assert.equal(r.status, 200);
    const acc = r.json.keys.accepted;
    const get = (i) => acc[String(i)] || { chat: 0, models: 0 };
    return { key: [0, 1, 2].map(get), refused: r.json.keys.refused };
}

async function breakerList() {
    const r = await req(inst.adminUrl, 'GET', '/admin/v1/breakers');
    assert.equal(r.status, 200);
    return r.json.data || r.json;
}

function requestLines(tenantId) {
    return inst.gateway.logEvents().filter((e) => e.event === 'request' && e.tenant_id === tenantId);
}

/** The tenant's n-th access log line (1-based), once written (the LOG stage runs after the answer). */
async function requestLine(tenantId, n) {
    return waitFor(() => requestLines(tenantId)[n - 1], { what: `access log line ${n} of tenant ${tenantId}` });
}

async function reloads() {
    return inst.gateway.logEvents().filter((e) => e.event === 'config_reloaded').length;
}

/** Rewrites the config with these master keys and reloads the gateway (SIGHUP), waiting for it. */
async function reloadWith(masterKeys) {
    const n = await reloads();
    inst.writeConfig(config(inst.ctx, masterKeys));
    inst.gateway.kill('SIGHUP');
    await waitFor(async () => (await reloads()) > n, { tries: 200, what: 'config_reloaded' });
}

let mk1;

before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tg-byok-'));
    writeFileSync(join(dir, 'platform-key'), PLATFORM + '\n', { mode: 0o600 });
    writeFileSync(join(dir, 'sim-keys'), [PLATFORM, KEY_A, KEY_C].join('\n') + '\n', { mode: 0o600 });
    mk1 = { id: `mk1-${RUN}`, file: masterKeyFile('mk1') };
    inst = await startInstance((ctx) => config(ctx, [mk1]), {
        tenant: name('a'),
        simArgs: ['--keys-file', join(dir, 'sim-keys')],
    });
    await addTenant('a', inst.key);
    for (const t of ['plain', 'b', 'c', 'd', 'e']) await addTenant(t);
    // b and e may not fall back to the platform's key; d may (the default)
    for (const t of ['b', 'e']) await psql(`INSERT INTO policies (tenant_id, byok_fallback) VALUES (${tenants[t].id}, false)`);
    await byokSet('a', KEY_A, { viaStdin: true });
    await byokSet('b', KEY_WRONG);
    await byokSet('c', KEY_C);
    await byokSet('d', KEY_WRONG);
});

after(async () => {
    if (inst) {
        await psql(`DELETE FROM provider_credentials WHERE tenant_id IN (SELECT id FROM tenants WHERE name LIKE ${lit(`byok-it-%-${RUN}`)})`);
        await inst.stop();
        assertNoSanitizerReport(inst.gateway, 'the gateway');
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the database holds sealed blobs under the master key id and last4 at most', async () => {
    const rows = await psql(
        `SELECT t.name, c.master_key_id, octet_length(c.nonce), octet_length(c.sealed), c.last4 ` +
            `FROM provider_credentials c JOIN tenants t ON t.id = c.tenant_id WHERE t.name LIKE ${lit(`byok-it-%-${RUN}`)} ORDER BY t.name`
    );
    assert.equal(rows.length, 4);
    const keyOf = { [tenants.a.name]: KEY_A, [tenants.b.name]: KEY_WRONG, [tenants.c.name]: KEY_C, [tenants.d.name]: KEY_WRONG };
    for (const [tenant, kid, nonce, sealed, last4] of rows) {
        assert.equal(kid, mk1.id);
        assert.equal(Number(nonce), 24);
        assert.equal(Number(sealed), keyOf[tenant].length + 16, 'the key plus the 16-byte tag');
        assert.equal(last4, keyOf[tenant].slice(-4));
    }
    const list = await cli(['byok', 'list', '-c', inst.configPath, '--tenant', tenants.a.name], 'byok list');
    const meta = JSON.parse(list.stdout.trim());
    assert.equal(meta.provider, PROVIDER);
    assert.equal(meta.last4, KEY_A.slice(-4));
    assert.ok(!list.stdout.includes(KEY_A));
});

test("a tenant's request uses its own key; another tenant's the platform's", async () => {
    const s0 = await simKeys();
    const a = await chat(tenants.a.key);
    assert.equal(a.status, 200, a.text);
    const s1 = await simKeys();
    assert.equal(s1.key[1].chat - s0.key[1].chat, 1, "tenant a's own key reached the provider");
    assert.equal(s1.key[0].chat - s0.key[0].chat, 0, "the platform's key did not");
    const p = await chat(tenants.plain.key);
    assert.equal(p.status, 200, p.text);
    const s2 = await simKeys();
    assert.equal(s2.key[0].chat - s1.key[0].chat, 1, "a tenant without its own key uses the platform's");
    assert.equal(s2.key[1].chat - s1.key[1].chat, 0);
    // the access log line says which
    assert.equal((await requestLine(tenants.a.id, 1)).byok, 1);
    assert.equal((await requestLine(tenants.plain.id, 1)).byok, 0);
});

test('a wrong own key is the tenant\'s 400; the shared breaker stays closed while others are served', async () => {
    const s0 = await simKeys();
    for (let i = 0; i < 5; i++) {
        const [b, p] = await Promise.all([chat(tenants.b.key), chat(tenants.plain.key)]);
        assert.equal(b.status, 400, b.text);
        assert.equal(b.json.error.code, 'byok_key_rejected');
        for (const k of PROVIDER_KEYS) assert.ok(!b.text.includes(k), 'the error names no key');
        assert.equal(p.status, 200, `another tenant on the same target is served: ${p.text}`);
    }
    const s1 = await simKeys();
    assert.equal(s1.refused - s0.refused, 5, 'the wrong key reached the provider and was refused there');
    const list = await breakerList();
    const shared = list.find((x) => x.target === TARGET);
    assert.ok(shared, 'the shared breaker exists');
    assert.equal(String(shared.state).toLowerCase(), 'closed');
    assert.equal(shared.consecutive_failures, 0);
    assert.ok(list.some((x) => x.target === `${TARGET}#byok:${tenants.b.id}`), "b's attempts ran on a breaker of their own");
    const line = await requestLine(tenants.b.id, 5);
    assert.equal(line.status, 400);
    assert.equal(line.byok_attempts, 1);
});

test('with byok_fallback a wrong own key falls back to the platform key; only its own breaker opens', async () => {
    const s0 = await simKeys();
    const d = await chat(tenants.d.key);
    assert.equal(d.status, 200, d.text);
    const s1 = await simKeys();
    assert.equal(s1.refused - s0.refused, 1, 'its own key was tried first');
    assert.equal(s1.key[0].chat - s0.key[0].chat, 1, "then the platform's served");
    const line = await requestLine(tenants.d.id, 1);
    assert.equal(line.byok, 0, 'served on the platform key');
    assert.equal(line.byok_attempts, 1);
    const list = await breakerList();
    const own = list.find((x) => x.target === `${TARGET}#byok:${tenants.d.id}`);
    assert.equal(String(own.state).toLowerCase(), 'open', "a provider's 401 opens the credential's breaker");
    assert.equal(String(list.find((x) => x.target === TARGET).state).toLowerCase(), 'closed');
    // the failover event says byok
    await waitFor(async () => {
        const r = await req(inst.adminUrl, 'GET', `/admin/v1/failover-events?tenant=${tenants.d.id}`);
        const ev = (r.json && r.json.data) || [];
        return ev.some((e) => e.from_target === `${TARGET}#byok` && e.to_target === TARGET && e.reason === 'byok_key_rejected');
    }, { what: "d's failover event from the byok target" });
    // next request: its own breaker is open, the platform's key serves with no refused attempt
    const d2 = await chat(tenants.d.key);
    assert.equal(d2.status, 200);
    assert.equal((await simKeys()).refused, s1.refused);
});

test('a blob moved to another tenant does not open: a clear error naming no key', async () => {
    // c's sealed key, moved to e's row (e has none, and may not fall back)
    const s0 = await simKeys();
    await psql(`UPDATE provider_credentials SET tenant_id = ${tenants.e.id} WHERE tenant_id = ${tenants.c.id}`);
    const e = await waitFor(
        async () => {
            const r = await chat(tenants.e.key);
            return r.status !== 200 ? r : null; // the NOTIFY reaches the gateway's caches
        },
        { what: "e's request to fail" }
    );
    assert.equal(e.status, 422, e.text);
    assert.equal(e.json.error.code, 'byok_key_unusable');
    for (const k of PROVIDER_KEYS) assert.ok(!e.text.includes(k), 'the error names no key');
    const s1 = await simKeys();
    assert.equal(s1.key[2].chat, s0.key[2].chat, "c's key was never used for e");
    // the gateway logs before it answers, but its log reaches this process on a pipe of its own:
    // wait for the line rather than race the answer
    const warn = await waitFor(() => {
        const w = inst.gateway.logEvents().filter((l) => l.event === 'byok_key_unusable' && l.tenant_id === tenants.e.id);
        return w.length > 0 ? w : null;
    }, { what: 'the byok_key_unusable warning in the log' });
    assert.equal(warn[0].master_key_id, mk1.id);
    // c now has no key of its own: the platform's serves it
    const c = await chat(tenants.c.key);
    assert.equal(c.status, 200);
    await cli(['byok', 'delete', '-c', inst.configPath, '--tenant', tenants.e.name, '--provider', PROVIDER], 'byok delete');
    await byokSet('c', KEY_C);
    const c2 = await waitFor(async () => {
        const before = (await simKeys()).key[2].chat;
        const r = await chat(tenants.c.key);
        return r.status === 200 && (await simKeys()).key[2].chat === before + 1 ? r : null;
    }, { what: "c's own key to be used again" });
    assert.equal(c2.status, 200);
});

test('master key rotation under load: both ids open meanwhile, every request served', async (t) => {
    const mk2 = { id: `mk2-${RUN}`, file: masterKeyFile('mk2') };
    const statuses = [];
    let stop = false;
    const users = [tenants.a, tenants.c, tenants.plain];
    const loop = (async () => {
        while (!stop) {
            const rs = await Promise.all(users.map((t) => chat(t.key)));
            rs.forEach((r, i) => statuses.push({ t: users[i].name, status: r.status, body: r.status === 200 ? '' : r.text }));
        }
    })();
    try {
        await waitFor(() => statuses.length >= 30, { what: 'load before the rotation' });
        // 1. the new key first (it seals), the old one kept (it opens), every gateway reloaded
        await reloadWith([mk2, mk1]);
        await waitFor(() => statuses.length >= 60, { what: 'load after the first reload' });
        // 2. re-seal every blob under the new key while requests run
        const r = await cli(['rotate-master-key', '-c', inst.configPath, '--batch', '2'], 'rotate-master-key');
        const counts = JSON.parse(r.stdout.trim());
        t.diagnostic(`rotate-master-key: ${r.stdout.trim()}`);
        assert.equal(counts.active, mk2.id);
        assert.ok(counts.resealed >= 4, `resealed ${counts.resealed}`);
        assert.equal(counts.failed, 0);
        assert.equal(counts.remaining, 0);
        // idempotent: a second run has nothing to do
        const again = JSON.parse((await cli(['rotate-master-key', '-c', inst.configPath], 'rotate again')).stdout.trim());
        assert.equal(again.resealed, 0);
        assert.equal(again.remaining, 0);
        await waitFor(() => statuses.length >= 90, { what: 'load after the rotation' });
        // 3. the old key retired
        await reloadWith([mk2]);
        const n = statuses.length;
        await waitFor(() => statuses.length >= n + 30, { what: 'load after the old key is gone' });
    } finally {
        stop = true;
        await loop;
    }
    t.diagnostic(`${statuses.length} requests (tenants a, c on their own keys, plain on the platform's) during two reloads and the rotation`);
    const bad = statuses.filter((s) => s.status !== 200);
    assert.deepEqual(bad, [], 'no request failed');
    const rows = await psql(`SELECT DISTINCT master_key_id FROM provider_credentials c JOIN tenants t ON t.id = c.tenant_id WHERE t.name LIKE ${lit(`byok-it-%-${RUN}`)}`);
    assert.deepEqual(rows, [[mk2.id]]);
    // each tenant's own key still works under the new master key alone
    const s0 = await simKeys();
    assert.equal((await chat(tenants.a.key)).status, 200);
    assert.equal((await chat(tenants.c.key)).status, 200);
    const s1 = await simKeys();
    assert.equal(s1.key[1].chat - s0.key[1].chat, 1);
    assert.equal(s1.key[2].chat - s0.key[2].chat, 1);
});

test("health probes carry the platform's key only", async () => {
    await waitFor(async () => (await simKeys()).key[0].models >= 3, { what: 'health probes at the simulator' });
    const s = await simKeys();
    assert.equal(s.key[1].models, 0, "no probe with tenant a's key");
    assert.equal(s.key[2].models, 0, "no probe with tenant c's key");
});

test('no plaintext provider key in a full pg_dump nor in any log', async () => {
    const { stdout: dump } = await run('pg_dump', ['-d', stack().databaseUrl], { maxBuffer: 256 << 20 });
    assert.ok(dump.includes('provider_credentials'), 'the dump has the table');
    const logs = [
        ['the gateway', inst.gateway.output],
        ['the simulator', inst.sim.output],
        ['the CLI', cliOutput.join('\n')],
    ];
    const S = stack();
    if (S.gatewayLog && existsSync(S.gatewayLog)) logs.push(['the stack gateway', readFileSync(S.gatewayLog, 'utf8')]);
    for (const k of PROVIDER_KEYS) {
        const hex = Buffer.from(k).toString('hex');
        assert.ok(!dump.includes(k) && !dump.includes(hex), 'pg_dump holds no provider key');
        for (const [what, text] of logs) assert.ok(!text.includes(k) && !text.includes(hex), `${what}'s log holds no provider key`);
    }
});
