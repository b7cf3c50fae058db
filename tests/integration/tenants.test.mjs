// Issue #10 items 2, 5 (allowed models, max_tokens) and 6 (key lifecycle), on TWO gateway instances
// of the test's own sharing the stack's database and one pepper: keys made with the CLI work on
// both; a revocation, a suspension, a resumption and a policy change reach both within 1 s (the
// triggers of migration 0003 NOTIFY, keywatch.c clears each instance's key cache); expiry and
// rotation with a grace period answer 401 key_expired once due; allowed models filter
// GET /v1/models and refuse other models with a 403 naming them (the key's own list and the
// tenant's policy intersected; a chain only when all its models are allowed); last_used_at is
// written in batches (far fewer UPDATE statements than requests); every CLI command has --help
// (exit 0) and refuses bad input with exit 2 and a message.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { startInstance, baseConfig, runCmd, req, assertNoSanitizerReport } from './lib/instance.mjs';
import { stack } from './lib/stack.mjs';
import { psql, lit } from './lib/control.mjs';
import { waitFor } from './lib/wait.mjs';

const MODELS = ['t-a', 't-b', 't-c'];
// A change must show on both instances within 1 s: 20 polls 50 ms apart (each poll is a request
// on a local gateway, a millisecond or two).
const WITHIN_1S = { tries: 20, every: 50 };

let A = null;
let B = null;
const suffix = randomBytes(4).toString('hex');
const tenantName = (what) => `tenancy-${what}-${suffix}`;

function makeConfig(pepperFile) {
    return (ctx) =>
        baseConfig({
            ...ctx,
            pepperFile: pepperFile || ctx.pepperFile,
            providers: { sim: { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
            models: Object.fromEntries(MODELS.map((m) => [m, { provider: 'sim', upstream: m }])),
            chains: { 't-chain': { targets: ['t-a', 't-b'] } },
        });
}

before(async () => {
    A = await startInstance(makeConfig(null), { createKey: false });
    // B shares A's pepper: a key hashed by the CLI (with A's config) is the same key on both
    B = await startInstance(makeConfig(A.pepperFile), { createKey: false });
});

after(async () => {
    // B first: its config names A's pepper file, which A's stop removes
    for (const inst of [B, A]) {
        if (!inst) continue;
        await inst.stop();
        assertNoSanitizerReport(inst.gateway, 'instance gateway');
    }
});

/** Runs the CLI against A's config: {code, stdout, stderr}. */
function cli(...args) {
    return runCmd(stack().gatewayBin, args, { timeoutMs: 30000 });
}

async function cliOk(...args) {
    const r = await cli(...args);
    assert.equal(r.code, 0, `tollgate ${args.join(' ')}: ${r.stderr}`);
    return r;
}

/** `keys create --json` with extra options: {id, key, ...}. */
async function createKey(tenant, ...extra) {
    const r = await cliOk('keys', 'create', '-c', A.configPath, '--tenant', tenant, '--json', ...extra);
    const k = JSON.parse(r.stdout);
    assert.match(k.key, /^tg_[A-Za-z0-9_-]{43}$/);
    assert.ok(!r.stderr.includes(k.key), 'the key is on stdout only');
    return k;
}

function chat(inst, key, model, extra = {}) {
    return req(inst.url, 'POST', '/v1/chat/completions', {
        key,
        body: { model, messages: [{ role: 'user', content: 'hi' }], ...extra },
        signal: AbortSignal.timeout(10000),
    });
}

function models(inst, key) {
    return req(inst.url, 'GET', '/v1/models', { key, signal: AbortSignal.timeout(10000) });
}

/** Waits (within 1 s) until fn(inst) is true on both instances; returns the ms it took. */
async function onBoth(fn, what) {
    const t0 = performance.now();
    await Promise.all(
        [A, B].map((inst, i) =>
            waitFor(async () => fn(inst), { ...WITHIN_1S, what: `${what} on instance ${i === 0 ? 'A' : 'B'}` }),
        ),
    );
    return Math.round(performance.now() - t0);
}

function errCode(r) {
    return r.json && r.json.error ? r.json.error.code : null;
}

test('a key made with the CLI works on both instances; revoked, it gets 401 on both within 1 s', async (t) => {
    const tenant = tenantName('revoke');
    const k = await createKey(tenant, '--name', 'first');
    for (const inst of [A, B]) assert.equal((await models(inst, k.key)).status, 200, 'works (and is cached) at once');
    const other = await createKey(tenant);
    await cliOk('keys', 'revoke', '-c', A.configPath, '--id', String(k.id));
    const ms = await onBoth(async (inst) => (await models(inst, k.key)).status === 401, 'the revoked key refused');
    t.diagnostic(`revocation seen by both instances after ${ms} ms`);
    const r = await chat(A, k.key, 't-a');
    assert.equal(r.status, 401);
    assert.equal(r.json.error.type, 'authentication_error');
    for (const inst of [A, B]) assert.equal((await models(inst, other.key)).status, 200, "the tenant's other key works");
    // the listing shows it revoked, and never a secret
    const list = await cliOk('keys', 'list', '-c', A.configPath, '--tenant', tenant, '--all', '--json');
    const rows = JSON.parse(list.stdout).data;
    assert.equal(rows.length, 2);
    assert.ok(rows.find((x) => x.id === k.id).revoked_at, 'revoked_at is set');
    assert.equal(rows.find((x) => x.id === k.id).label, 'first');
    assert.ok(!list.stdout.includes(k.key) && !list.stdout.includes(other.key), 'no key in the listing');
    const active = JSON.parse((await cliOk('keys', 'list', '-c', A.configPath, '--tenant', tenant, '--json')).stdout).data;
    assert.deepEqual(
        active.map((x) => x.id),
        [other.id],
        'without --all only live keys',
    );
});

test('a key past its expiry gets 401 key_expired on both instances', async () => {
    const tenant = tenantName('expiry');
    const k = await createKey(tenant, '--expires', '+2s');
    assert.ok(k.expires_at, 'the expiry is returned');
    for (const inst of [A, B]) assert.equal((await models(inst, k.key)).status, 200, 'works before its expiry');
    for (const inst of [A, B]) {
        const r = await waitFor(
            async () => {
                const x = await models(inst, k.key);
                return x.status === 401 ? x : null;
            },
            { tries: 100, every: 50, what: 'the expired key refused' },
        );
        assert.equal(errCode(r), 'key_expired');
    }
    // an expiry in the past is refused at creation, naming the field
    const bad = await cli('keys', 'create', '-c', A.configPath, '--tenant', tenant, '--expires', '2001-01-01T00:00:00Z');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /expires_at: must be in the future/);
});

test('rotation: both keys work during the grace, then the old one gets 401 key_expired', async () => {
    const tenant = tenantName('rotate');
    const old = await createKey(tenant, '--models', 't-a,t-b');
    assert.equal((await chat(A, old.key, 't-a')).status, 200);
    const r = await cliOk('keys', 'rotate', '-c', A.configPath, '--id', String(old.id), '--grace', '3s', '--json');
    const neu = JSON.parse(r.stdout);
    assert.equal(neu.rotated_from, old.id);
    assert.notEqual(neu.key, old.key);
    for (const inst of [A, B]) {
        assert.equal((await chat(inst, old.key, 't-a')).status, 200, 'the old key works during the grace');
        assert.equal((await chat(inst, neu.key, 't-a')).status, 200, 'the new key works at once');
        // the new key inherited the old one's allowed models
        assert.equal(errCode(await chat(inst, neu.key, 't-c')), 'model_not_allowed');
    }
    for (const inst of [A, B]) {
        const x = await waitFor(
            async () => {
                const y = await chat(inst, old.key, 't-a');
                return y.status === 401 ? y : null;
            },
            { tries: 120, every: 50, what: 'the old key to stop after its grace' },
        );
        assert.equal(errCode(x), 'key_expired');
        assert.equal((await chat(inst, neu.key, 't-a')).status, 200, 'the new key still works');
    }
    const rows = await psql(`SELECT rotated_from FROM api_keys WHERE id = ${Number(neu.id)}`);
    assert.equal(rows[0][0], String(old.id));
    // a revoked key cannot be rotated
    await cliOk('keys', 'revoke', '-c', A.configPath, '--id', String(neu.id));
    const bad = await cli('keys', 'rotate', '-c', A.configPath, '--id', String(neu.id));
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /revoked/);
});

test("allowed models: the key's list and the tenant's policy intersected; a change reaches both within 1 s", async (t) => {
    const tenant = tenantName('models');
    const k = await createKey(tenant, '--models', 't-b,t-c');
    await cliOk('policy', 'set', '-c', A.configPath, '--tenant', tenant, '--models', 't-a,t-b');
    // effective: t-b only; the chain [t-a, t-b] is not allowed (t-a is not)
    for (const inst of [A, B]) {
        await waitFor(
            async () => {
                const m = await models(inst, k.key);
                return m.status === 200 && JSON.stringify(m.json.data.map((x) => x.id)) === JSON.stringify(['t-b']);
            },
            { ...WITHIN_1S, what: 'GET /v1/models to list t-b only' },
        );
        assert.equal((await chat(inst, k.key, 't-b')).status, 200);
        for (const [model, named] of [
            ['t-a', 't-a'],
            ['t-c', 't-c'],
            ['t-chain', 't-a'],
        ]) {
            const r = await chat(inst, k.key, model);
            assert.equal(r.status, 403, `${model} is refused`);
            assert.equal(r.json.error.code, 'model_not_allowed');
            assert.equal(r.json.error.type, 'permission_error');
            assert.match(r.json.error.message, new RegExp(`"${named}"`), 'the message names the model');
        }
        const list = await req(inst.url, 'POST', '/v1/chat/completions', {
            key: k.key,
            body: { models: ['t-b', 't-c'], messages: [{ role: 'user', content: 'hi' }] },
        });
        assert.equal(list.status, 403);
        assert.equal(list.json.error.param, 'models[1]');
    }
    // the tenant's list cleared back to "inherit": the key's own list (t-b, t-c) is what is left
    await cliOk('policy', 'set', '-c', A.configPath, '--tenant', tenant, '--clear', 'models');
    const ms = await onBoth(async (inst) => (await chat(inst, k.key, 't-c')).status === 200, 'the policy change');
    t.diagnostic(`policy change (models) seen by both instances after ${ms} ms`);
    for (const inst of [A, B]) {
        const m = await models(inst, k.key);
        assert.deepEqual(m.json.data.map((x) => x.id).sort(), ['t-b', 't-c']);
    }
    // a key without a list, under a tenant without one: every model and chain
    const free = await createKey(tenantName('free'));
    const all = await models(A, free.key);
    assert.deepEqual(all.json.data.map((x) => x.id).sort(), ['t-a', 't-b', 't-c', 't-chain']);
});

test('max_tokens above the policy limit is a 400 naming the limit; a change reaches both within 1 s', async (t) => {
    const tenant = tenantName('maxtok');
    const k = await createKey(tenant);
    for (const inst of [A, B]) assert.equal((await chat(inst, k.key, 't-a', { max_tokens: 500 })).status, 200);
    await cliOk('policy', 'set', '-c', A.configPath, '--tenant', tenant, '--max-tokens', '100');
    const ms = await onBoth(
        async (inst) => (await chat(inst, k.key, 't-a', { max_tokens: 500 })).status === 400,
        'the max_tokens limit',
    );
    t.diagnostic(`policy change (max_tokens) seen by both instances after ${ms} ms`);
    const r = await chat(B, k.key, 't-a', { max_completion_tokens: 101 });
    assert.equal(r.status, 400);
    assert.equal(r.json.error.param, 'max_completion_tokens');
    assert.match(r.json.error.message, /100/);
    assert.equal((await chat(A, k.key, 't-a', { max_tokens: 100 })).status, 200, 'at the limit is fine');
    // a request that names no limit gets the policy's, and the provider honours it (the simulator
    // cuts its answer to max_completion_tokens words: finish_reason "length")
    const free = await createKey(tenantName('maxtok-free'));
    const uncut = await chat(A, free.key, 't-a');
    assert.equal(uncut.json.choices[0].finish_reason, 'stop', 'without a limit the answer is whole');
    await cliOk('policy', 'set', '-c', A.configPath, '--tenant', tenant, '--max-tokens', '3');
    await onBoth(async (inst) => {
        const r = await chat(inst, k.key, 't-a');
        return r.status === 200 && r.json.choices[0].finish_reason === 'length';
    }, 'the limit applied to a request without max_tokens');
    const cut = await chat(B, k.key, 't-a');
    assert.ok(cut.json.choices[0].message.content.length < uncut.json.choices[0].message.content.length);
    await cliOk('policy', 'set', '-c', A.configPath, '--tenant', tenant, '--max-tokens', '100');
    // a key's override is tighter than its tenant's row
    await cliOk('policy', 'set', '-c', A.configPath, '--tenant', tenant, '--key', String(k.id), '--max-tokens', '10');
    await onBoth(async (inst) => (await chat(inst, k.key, 't-a', { max_tokens: 11 })).status === 400, 'the key override');
    await cliOk('policy', 'set', '-c', A.configPath, '--tenant', tenant, '--key', String(k.id), '--clear', 'max_tokens');
    await onBoth(async (inst) => (await chat(inst, k.key, 't-a', { max_tokens: 11 })).status === 200, 'the override cleared');
});

test('a suspended tenant gets 403 on every key, on both instances within 1 s; resume restores', async (t) => {
    const tenant = tenantName('suspend');
    const k1 = await createKey(tenant);
    const k2 = await createKey(tenant);
    for (const inst of [A, B]) for (const k of [k1, k2]) assert.equal((await models(inst, k.key)).status, 200);
    await cliOk('tenants', 'suspend', '-c', A.configPath, '--tenant', tenant);
    const ms = await onBoth(async (inst) => {
        const r = await Promise.all([k1, k2].map((k) => chat(inst, k.key, 't-a')));
        return r.every((x) => x.status === 403 && errCode(x) === 'tenant_suspended');
    }, 'the suspension');
    t.diagnostic(`suspension seen by both instances after ${ms} ms`);
    const listed = JSON.parse((await cliOk('tenants', 'list', '-c', A.configPath, '--json', '--limit', '1000')).stdout);
    assert.equal(listed.data.find((x) => x.name === tenant).status, 'suspended');
    await cliOk('tenants', 'resume', '-c', A.configPath, '--tenant', tenant);
    const ms2 = await onBoth(async (inst) => {
        const r = await Promise.all([k1, k2].map((k) => chat(inst, k.key, 't-a')));
        return r.every((x) => x.status === 200);
    }, 'the resumption');
    t.diagnostic(`resumption seen by both instances after ${ms2} ms`);
});

test('last_used_at is set after use, written in batches: N requests cost far fewer UPDATEs', async (t) => {
    const tenant = tenantName('lastused');
    const k = await createKey(tenant);
    // Every UPDATE statement on api_keys that touches this key is recorded by a statement-level
    // trigger of the test's own (dropped at the end).
    await psql(`CREATE TABLE IF NOT EXISTS tg_test_lastused (at timestamptz NOT NULL DEFAULT now(), ids bigint[])`);
    await psql(`CREATE OR REPLACE FUNCTION tg_test_lastused_count() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO tg_test_lastused (ids) SELECT array_agg(id) FROM new_rows; RETURN NULL; END $$`);
    await psql(`CREATE TRIGGER tg_test_lastused AFTER UPDATE ON api_keys REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION tg_test_lastused_count()`);
    try {
        const before = await psql(`SELECT last_used_at IS NULL FROM api_keys WHERE id = ${Number(k.id)}`);
        assert.equal(before[0][0], 't', 'never used yet');
        const statBefore = Number((await psql(`SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_keys'`))[0][0]);
        const N = 200;
        const t0 = performance.now();
        for (let i = 0; i < N / 20; i++) {
            const batch = [];
            for (let j = 0; j < 10; j++) for (const inst of [A, B]) batch.push(models(inst, k.key));
            for (const r of await Promise.all(batch)) assert.equal(r.status, 200);
        }
        const elapsedS = (performance.now() - t0) / 1000;
        const used = await waitFor(
            async () => {
                const r = await psql(`SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = ${Number(k.id)}`);
                return r[0][0] === 't';
            },
            { tries: 100, every: 50, what: 'last_used_at to be written' },
        );
        assert.ok(used);
        // Both instances' flushers have run past the burst once the count stays put for two periods.
        let writes = 0;
        let stable = 0;
        await waitFor(
            async () => {
                const n = Number(
                    (await psql(`SELECT count(*) FROM tg_test_lastused WHERE ${Number(k.id)} = ANY (ids)`))[0][0],
                );
                stable = n === writes ? stable + 1 : 0;
                writes = n;
                return stable >= 10;
            },
            { tries: 200, every: 250, what: 'the UPDATE count to settle' },
        );
        const statAfter = Number((await psql(`SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_keys'`))[0][0]);
        t.diagnostic(
            `${N} requests over ${elapsedS.toFixed(2)} s on 2 instances -> ${writes} UPDATE statements touching the key ` +
                `(pg_stat n_tup_upd +${statAfter - statBefore} for all of api_keys, reported with a lag)`,
        );
        assert.ok(writes >= 1, 'written at least once');
        // one UPDATE per instance per flush period (1 s) at most, however many requests
        assert.ok(writes <= 2 * (Math.ceil(elapsedS) + 2), `${writes} UPDATEs for ${N} requests in ${elapsedS} s`);
        assert.ok(writes * 10 <= N, `far fewer UPDATEs (${writes}) than requests (${N})`);
        // the flush moves the time forward only, and never clears a key cache (no NOTIFY on it)
        const listed = JSON.parse((await cliOk('keys', 'list', '-c', A.configPath, '--tenant', tenant, '--json')).stdout);
        assert.ok(listed.data[0].last_used_at, 'keys list shows last_used_at');
    } finally {
        await psql(`DROP TRIGGER IF EXISTS tg_test_lastused ON api_keys`);
        await psql(`DROP FUNCTION IF EXISTS tg_test_lastused_count()`);
        await psql(`DROP TABLE IF EXISTS tg_test_lastused`);
    }
});

test('every command has --help (exit 0); bad input exits 2 with a message', async () => {
    const helps = [
        ['--help'],
        ['tenants', '--help'],
        ['tenants', 'create', '--help'],
        ['tenants', 'suspend', '--help'],
        ['tenants', 'resume', '--help'],
        ['tenants', 'list', '--help'],
        ['keys', '--help'],
        ['keys', 'create', '--help'],
        ['keys', 'revoke', '--help'],
        ['keys', 'rotate', '--help'],
        ['keys', 'list', '--help'],
        ['policy', '--help'],
        ['policy', 'set', '--help'],
    ];
    for (const args of helps) {
        const r = await cli(...args);
        assert.equal(r.code, 0, `tollgate ${args.join(' ')} exits 0`);
        assert.match(r.stdout, /usage: tollgate/, `tollgate ${args.join(' ')} prints its usage on stdout`);
    }
    const tenant = tenantName('cli');
    await cliOk('tenants', 'create', '-c', A.configPath, '--name', tenant);
    const c = A.configPath;
    const bad = [
        [['tenants'], /unknown subcommand/],
        [['tenants', 'create', '-c', c], /--name NAME is required/],
        [['tenants', 'create', '-c', c, '--name', tenant, '--bogus'], /unknown argument "--bogus"/],
        [['tenants', 'create', '-c', c, '--name', 'a\u0001b'], /name: must be/],
        [['tenants', 'suspend', '-c', c], /--tenant NAME or --tenant-id ID is required/],
        [['tenants', 'list', '-c', c, '--limit', '5000'], /--limit must be/],
        [['keys', 'frobnicate'], /unknown subcommand/],
        [['keys', 'revoke', '-c', c, '--id', 'abc'], /--id KEY_ID is required/],
        [['keys', 'rotate', '-c', c, '--id', '1', '--grace', 'soon'], /--grace must be a duration/],
        [['keys', 'create', '-c', c, '--tenant', tenant, '--models', 't-a,nope,t-chain'], /models\[1\]: "nope" is not a configured model[\s\S]*models\[2\]: "t-chain" is a chain/],
        [['keys', 'create', '-c', c, '--tenant', tenant, '--expires', 'tomorrow'], /--expires must be/],
        [['policy', 'set', '-c', c, '--tenant', tenant], /names no field/],
        [['policy', 'set', '-c', c, '--tenant', tenant, '--max-tokens', '-5', '--rpm', 'x'], /--max-tokens must be[\s\S]*--rpm must be/],
        [['policy', 'set', '-c', c, '--tenant', tenant, '--rpm', '5', '--clear', 'rpm'], /both set and cleared/],
        [['policy', 'set', '-c', c, '--tenant', tenant, '--key', '1', '--tpm', '5', '--zero-retention', 'true'], /tpm: is a tenant setting[\s\S]*zero_retention: is a tenant setting/],
    ];
    for (const [args, re] of bad) {
        const r = await cli(...args);
        assert.equal(r.code, 2, `tollgate ${args.join(' ')} exits 2 (stderr: ${r.stderr})`);
        assert.match(r.stderr, re, `tollgate ${args.join(' ')} says why`);
        assert.equal(r.stdout, '', 'nothing on stdout');
    }
    // not found and conflicts are failures (1), not usage errors
    assert.equal((await cli('tenants', 'create', '-c', c, '--name', tenant)).code, 1);
    assert.equal((await cli('keys', 'revoke', '-c', c, '--id', '999999999')).code, 1);
});

test('no key or secret in either instance log', () => {
    for (const inst of [A, B]) {
        const log = inst.gateway.output;
        assert.ok(!/tg_[A-Za-z0-9_-]{43}/.test(log), 'no tollgate key in the log');
    }
});
