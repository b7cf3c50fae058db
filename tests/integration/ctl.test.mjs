// Issue #12 item 4: tollgatectl (admin/ctl) against the stack: every command's --help, the common
// tasks end to end (tenant, key issue and revoke with the gateway refusing the revoked key, BYOK
// from stdin and from a file, policy, top-up idempotency, wallet, usage and its CSV, failover
// events), tables and --json, the API's errors shown with the documented exit codes, and the
// token and secrets never printed.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stack } from './lib/stack.mjs';
import { chat, gw } from './lib/http.mjs';
import { cleanupProviderKeys, someProvider, token, uniq } from './lib/adminapi.mjs';

after(cleanupProviderKeys);

const BIN = process.env.TG_CTL_BIN;

/** Runs tollgatectl; resolves { code, stdout, stderr } (never rejects on a non-zero exit). */
function ctl(args, { env = {}, input, tok = token('operator', undefined, { sub: 'ctl-test' }) } = {}) {
    const E = { PATH: process.env.PATH, TOLLGATE_ADMIN_URL: stack().adminUrl, TOLLGATE_ADMIN_TOKEN: tok, ...env };
    for (const [k, v] of Object.entries(E)) if (v === null) delete E[k];
    return new Promise((resolve) => {
        const child = execFile(BIN, args, { env: E, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
            const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
            for (const s of [stdout, stderr]) {
                assert.ok(!tok || !s.includes(tok), `tollgatectl ${args.join(' ')} printed the token`);
                for (const sec of stack().secrets) assert.ok(!s.includes(sec.value), `${sec.name} printed by tollgatectl`);
            }
            resolve({ code, stdout, stderr });
        });
        if (input !== undefined) child.stdin.end(input);
        else child.stdin.end();
    });
}

const json = async (args, opts) => {
    const r = await ctl(['--json', ...args], opts);
    assert.equal(r.code, 0, `tollgatectl ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    return JSON.parse(r.stdout);
};

test('tollgatectl is built', () => {
    assert.ok(BIN, 'TG_CTL_BIN names the tollgatectl binary (tests/integration/CMakeLists.txt)');
});

test('--help for the tool and every command exits 0 and shows the usage; bad command lines exit 2', async () => {
    const top = await ctl(['--help'], { env: { TOLLGATE_ADMIN_URL: null, TOLLGATE_ADMIN_TOKEN: null } });
    assert.equal(top.code, 0);
    assert.match(top.stdout, /Exit codes/);
    const commands = [...top.stdout.matchAll(/^ {2}([a-z-]+(?: [a-z-]+)?) [A-Z[]/gm)].map((m) => m[1].split(' '))
        .concat([['events']]);
    assert.ok(commands.length >= 15, `commands listed: ${commands.length}`);
    for (const c of commands) {
        const r = await ctl([...c, '--help'], { env: { TOLLGATE_ADMIN_URL: null, TOLLGATE_ADMIN_TOKEN: null } });
        assert.equal(r.code, 0, `${c.join(' ')} --help`);
        assert.match(r.stdout, new RegExp(`^usage: tollgatectl ${c.join(' ')}`), `${c.join(' ')} --help shows its usage`);
    }
    for (const bad of [['nope'], ['tenants'], ['tenants', 'create'], ['tenants', 'create', 'a', '--bogus', '1'],
        ['wallet', 'top-up', '1', 'ten'], ['tenants', 'create', 'a', '--credits', '1x'], ['keys', 'revoke', '1']]) {
        const r = await ctl(bad);
        assert.equal(r.code, 2, `${bad.join(' ')} exits 2: ${r.stderr}`);
        assert.match(r.stderr, /usage:|unknown|missing|must be/, `${bad.join(' ')} says why`);
    }
});

test('the environment: no URL or token exits 3 naming the variable; an unreachable server exits 3', async () => {
    let r = await ctl(['tenants', 'list'], { env: { TOLLGATE_ADMIN_URL: null } });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /TOLLGATE_ADMIN_URL/);
    r = await ctl(['tenants', 'list'], { tok: null, env: { TOLLGATE_ADMIN_TOKEN: null } });
    assert.equal(r.code, 3);
    assert.match(r.stderr, /TOLLGATE_ADMIN_TOKEN/);
    r = await ctl(['tenants', 'list'], { env: { TOLLGATE_ADMIN_URL: 'http://127.0.0.1:1' } });
    assert.equal(r.code, 3, r.stderr);
});

test('the common tasks end to end', async () => {
    const name = uniq('adm3-ctl');
    // tenant, with initial credits
    const t = await json(['tenants', 'create', name, '--credits', '2000000']);
    assert.ok(t.id > 0);
    const table = await ctl(['tenants', 'get', String(t.id)]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`^name\\s+${name}$`, 'm'), 'a plain "field  value" table');

    // a key: works on the gateway, listed without its secret, revoked: refused
    const k = await json(['keys', 'create', String(t.id), '--label', 'ctl']);
    assert.match(k.key, /^tg_/);
    assert.equal((await gw('GET', '/v1/models', { key: k.key })).status, 200, 'the new key works');
    const list = await ctl(['keys', 'list', String(t.id)]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^id\s+prefix/m, 'a table with a header line');
    assert.ok(!list.stdout.includes(k.key), 'keys list shows no secret');
    const rv = await ctl(['keys', 'revoke', String(t.id), String(k.id)]);
    assert.equal(rv.code, 0, rv.stderr);
    let st = 0;
    for (let i = 0; i < 50 && st !== 401; i++) st = (await gw('GET', '/v1/models', { key: k.key })).status;
    assert.equal(st, 401, 'the revoked key is refused');

    // BYOK from stdin and from a file: metadata shown, never the key
    const provider = someProvider();
    const secret1 = `sk-ctl-${uniq('stdin')}-abcd`;
    const set1 = await ctl(['byok', 'set', String(t.id), provider], { input: `${secret1}\n` });
    assert.equal(set1.code, 0, set1.stderr);
    const show = await json(['byok', 'show', String(t.id), provider]);
    assert.equal(show.provider, provider);
    assert.ok(!JSON.stringify(show).includes(secret1), 'no key in the metadata');
    const dir = mkdtempSync(join(tmpdir(), 'tollgatectl-'));
    const f = join(dir, 'key');
    const secret2 = `sk-ctl-${uniq('file')}-wxyz`;
    writeFileSync(f, secret2);
    chmodSync(f, 0o600);
    const set2 = await ctl(['byok', 'set', String(t.id), provider, '--file', f]);
    assert.equal(set2.code, 0, set2.stderr);
    assert.ok(!set2.stdout.includes(secret2));
    const empty = await ctl(['byok', 'set', String(t.id), provider], { input: '' });
    assert.equal(empty.code, 2, 'an empty key is refused before sending');
    const del = await ctl(['byok', 'delete', String(t.id), provider]);
    assert.equal(del.code, 0, del.stderr);

    // policy
    const pol = await json(['policy', 'set', String(t.id), '--max-tokens', '321']);
    assert.equal(pol.max_tokens, 321);
    const badPol = await ctl(['policy', 'set', String(t.id), '--max-tokens', '-5']);
    assert.equal(badPol.code, 1, 'the API refuses it: exit 1');
    assert.match(badPol.stderr, /^tollgatectl: 400 /m, 'the status and code of the API error are shown');

    // top-up: idempotent with the same key, refused with the same key and another amount
    const w0 = await json(['wallet', 'show', String(t.id)]);
    const up = await ctl(['wallet', 'top-up', String(t.id), '1000000']);
    assert.equal(up.code, 0, up.stderr);
    const idem = /^idempotency_key\s+(\S+)$/m.exec(up.stdout);
    assert.ok(idem, 'the generated Idempotency-Key is printed');
    const again = await ctl(['wallet', 'top-up', String(t.id), '1000000', '--idempotency-key', idem[1]]);
    assert.equal(again.code, 0, again.stderr);
    const w1 = await json(['wallet', 'show', String(t.id)]);
    assert.equal(w1.balance - w0.balance, 1000000, 'applied once');
    const reused = await ctl(['wallet', 'top-up', String(t.id), '5', '--idempotency-key', idem[1]]);
    assert.equal(reused.code, 1, 'the same key with another amount: exit 1');
    assert.match(reused.stderr, /422 idempotency_key_reused/);
    const ledger = await json(['wallet', 'ledger', String(t.id)]);
    assert.ok(Array.isArray(ledger.data) && ledger.data.length >= 1, 'the ledger lists the top-up');

    // usage (table, JSON, CSV) and failover events
    const k2 = await json(['keys', 'create', String(t.id)]);
    const served = await chat({ model: 'openai-chat', messages: [{ role: 'user', content: 'hi' }] }, { key: k2.key });
    assert.equal(served.status, 200, served.text);
    const usage = await ctl(['usage', 'list', String(t.id)]);
    assert.equal(usage.code, 0, usage.stderr);
    const csv = await ctl(['usage', 'list', String(t.id), '--csv']);
    assert.equal(csv.code, 0, csv.stderr);
    assert.match(csv.stdout.split('\n')[0], /,/, 'a CSV header line');
    const ev = await json(['events', '--limit', '5']);
    assert.ok(Array.isArray(ev.data));
    const evTable = await ctl(['events', '--limit', '5']);
    assert.equal(evTable.code, 0, evTable.stderr);
});

test("the API's refusals: exit 1 with its status, code and message; every bad field listed", async () => {
    const missing = await ctl(['tenants', 'get', '999999999999']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^tollgatectl: 404 not_found: /m);
    const auditor = await ctl(['tenants', 'create', uniq('adm3-ctl-aud')], { tok: token('auditor') });
    assert.equal(auditor.code, 1);
    assert.match(auditor.stderr, /^tollgatectl: 403 /m);
    const expired = await ctl(['tenants', 'list'], { tok: token('operator', undefined, { exp: 1000, nbf: 1, iat: 1 }) });
    assert.equal(expired.code, 1);
    assert.match(expired.stderr, /^tollgatectl: 401 /m);
    const t = await json(['tenants', 'create', uniq('adm3-ctl-pol')]);
    const two = await ctl(['policy', 'set', String(t.id), '--max-tokens', '0', '--rpm', '-1']);
    assert.equal(two.code, 1);
    assert.match(two.stderr, /max_tokens/);
    assert.match(two.stderr, /rpm/, 'both bad fields are listed');
});
