// API keys: a key created with `tollgate keys create` works at once; revoking it in the database
// stops it promptly (the key cache is cleared by LISTEN/NOTIFY, not left to its 60 s TTL); the
// key itself is never stored.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { stack } from './lib/stack.mjs';
import { gw, admin, assertOpenAIError, assertLogHasNoSecrets } from './lib/http.mjs';
import { metricValue } from './lib/instance.mjs';
import { psql, lit } from './lib/control.mjs';
import { waitFor } from './lib/wait.mjs';

const run = promisify(execFile);

async function createKey(tenant) {
    const S = stack();
    const { stdout } = await run(S.gatewayBin, ['keys', 'create', '-c', S.config, '--tenant', tenant]);
    const key = stdout.trim();
    assert.match(key, /^tg_[A-Za-z0-9_-]{43}$/, 'keys create prints only the key');
    return key;
}

test('a new key works at once; the database holds its hash and prefix, never the key', async () => {
    const key = await createKey('keys-test');
    const r = await gw('GET', '/v1/models', { key });
    assert.equal(r.status, 200);
    const rows = await psql(
        `SELECT encode(key_hash, 'hex'), prefix FROM api_keys WHERE prefix = ${lit(key.slice(0, 10))}`,
    );
    assert.equal(rows.length, 1);
    assert.equal(rows[0][0].length, 64, 'a 32-byte hash');
    assert.ok(!rows[0][0].includes(Buffer.from(key).toString('hex')), 'the key is not stored');
    const dump = await psql(`SELECT row_to_json(k)::text FROM api_keys k`);
    for (const [row] of dump) assert.ok(!row.includes(key), 'no row holds the key');
});

test('a revoked key is refused promptly (cache cleared by NOTIFY)', async () => {
    const key = await createKey('keys-test');
    assert.equal((await gw('GET', '/v1/models', { key })).status, 200, 'cached as valid now');
    await psql(`UPDATE api_keys SET revoked_at = now() WHERE prefix = ${lit(key.slice(0, 10))}`);
    // Without the LISTEN/NOTIFY watcher the cached entry would keep answering 200 for the cache
    // TTL (60 s in this config); the wait below is bounded far under that.
    const r = await waitFor(
        async () => {
            const x = await gw('GET', '/v1/models', { key });
            return x.status === 401 ? x : null;
        },
        { tries: 100, every: 50, what: 'the revoked key to be refused' },
    );
    assertOpenAIError(r, 401, { type: 'authentication_error' });
    // the stack's own key is unaffected
    assert.equal((await gw('GET', '/v1/models')).status, 200);
});

async function queriesSent() {
    const r = await admin('GET', '/metrics');
    assert.equal(r.status, 200);
    const v = metricValue(r.text, 'tollgate_db_queries_total');
    assert.ok(Number.isFinite(v), 'tollgate_db_queries_total is exported');
    return v;
}

test('a key-cache miss costs one query (key, tenant, policy and BYOK providers together); a hit costs none', async () => {
    const key = await createKey('keys-test');
    const before = await queriesSent();
    assert.equal((await gw('GET', '/v1/models', { key })).status, 200);
    const afterMiss = await queriesSent();
    assert.equal(afterMiss - before, 1, 'one query for the miss');
    for (let i = 0; i < 5; i++) assert.equal((await gw('GET', '/v1/models', { key })).status, 200);
    // The stack gateway has several workers: each request may land on another one, but the cache is
    // process-wide, so none of these asks the database again.
    assert.equal((await queriesSent()) - afterMiss, 0, 'cached afterwards');
});

test('no secret in the gateway log', () => {
    assertLogHasNoSecrets();
});
