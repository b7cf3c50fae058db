// The stack that tests/integration/stack.sh starts: both listeners answer, readiness means the
// database is reachable, the admin listener serves metrics, keys are required, and the secrets
// the harness generated do not leak into the gateway's log.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { stack } from './lib/stack.mjs';

const s = stack();

test('data and admin listeners answer healthz and readyz', async () => {
    for (const base of [s.url, s.adminUrl]) {
        for (const path of ['/healthz', '/readyz']) {
            const r = await fetch(base + path);
            assert.equal(r.status, 200, `${base}${path}`);
            await r.arrayBuffer();
        }
    }
});

test('the admin listener serves Prometheus text at /metrics', async () => {
    const r = await fetch(s.adminUrl + '/metrics');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') || '', /^text\/plain/);
    const body = await r.text();
    assert.match(body, /^# (HELP|TYPE) tollgate_/m);
});

test('the data plane wants a key that is in the database', async () => {
    const none = await fetch(s.url + '/v1/models');
    assert.equal(none.status, 401);
    const bad = await fetch(s.url + '/v1/models', { headers: { authorization: 'Bearer tg_not_a_real_key' } });
    assert.equal(bad.status, 401);
    const err = await bad.json();
    assert.equal(typeof err.error?.message, 'string');

    const ok = await fetch(s.url + '/v1/models', { headers: { authorization: `Bearer ${s.key}` } });
    assert.equal(ok.status, 200);
    const list = await ok.json();
    assert.equal(list.object, 'list');
    const ids = list.data.map((m) => m.id);
    for (const name of Object.keys(s.cfg.models)) assert.ok(ids.includes(name), `model ${name} listed`);
});

test('no generated secret appears in the gateway log', () => {
    const log = readFileSync(s.gatewayLog, 'utf8');
    for (const { name, value } of s.secrets) assert.ok(!log.includes(value), `${name} found in ${s.gatewayLog}`);
});
