// Issue #12 item 3: admin/openapi.json is a valid OpenAPI 3.1 document, GET /admin/v1/openapi.json
// serves it byte for byte, it lists exactly the server's admin routes (lib/admin_routes.mjs, from the
// route table), and the running server's answers on every route (successes, the errors each route
// can give, their headers) and on the data plane match it. So the document cannot drift: a route
// added or changed on either side fails here.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Checker, DOC_PATH, loadDoc, operations, shape } from './lib/openapi.mjs';
import { cleanupProviderKeys, fill, isWrite, makeTenant, raw, routes, sampleBody, sampleHeaders, token, op as opCall } from './lib/adminapi.mjs';
import { chat, gw } from './lib/http.mjs';

after(cleanupProviderKeys);

const doc = loadDoc();
const checker = new Checker(doc);

test('admin/openapi.json is a valid OpenAPI 3.1 document', async () => {
    const v = new Validator();
    const r = await v.validate(loadDoc());
    assert.ok(r.valid, `schema errors: ${String(JSON.stringify(r.errors, null, 2)).slice(0, 2000)}`);
    assert.equal(v.version, '3.1');
    // every operation names its success and its errors through the one error schema
    for (const o of operations(doc)) {
        assert.ok(o.op.operationId, `${o.method} ${o.path} has an operationId`);
        assert.ok(Object.keys(o.op.responses).some((s) => /^2/.test(s)), `${o.method} ${o.path} documents a success`);
    }
});

test('GET /admin/v1/openapi.json serves the repository file as is, without a token', async () => {
    const res = await raw('GET', '/admin/v1/openapi.json');
    assert.equal(res.status, 200, res.text.slice(0, 200));
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(res.text, readFileSync(DOC_PATH, 'utf8'), 'byte for byte the file of the repository');
});

test('the document and the server list the same admin routes', async () => {
    const server = new Set((await routes()).map((r) => `${r.method} ${shape(r.pattern)}`));
    const documented = new Set(operations(doc).filter((o) => o.path.startsWith('/admin/')).map((o) => `${o.method} ${shape(o.path)}`));
    const notDocumented = [...server].filter((k) => !documented.has(k));
    const notServed = [...documented].filter((k) => !server.has(k));
    assert.deepEqual(notDocumented, [], `routes of the server missing from admin/openapi.json: ${notDocumented.join(', ')}`);
    assert.deepEqual(notServed, [], `operations of admin/openapi.json the server does not have: ${notServed.join(', ')}`);
});

test('the document and the data listener list the same /v1 routes', () => {
    // the data plane's routes are the path_is("/v1/...") branches of gateway/src/server.c
    const server = readFileSync(new URL('../../gateway/src/server.c', import.meta.url), 'utf8');
    const served = new Set([...server.matchAll(/path_is\(req, "(\/v1\/[^"]+)"\)/g)].map((m) => m[1]));
    const documented = new Set(Object.keys(doc.paths).filter((p) => p.startsWith('/v1/')));
    assert.ok(served.size >= 2, `data routes found in server.c: ${[...served]}`);
    assert.deepEqual([...documented].sort(), [...served].sort(), 'admin/openapi.json documents exactly the data routes of server.c');
});

test("every admin route's answers match the document", async () => {
    const list = await routes();
    await chat({ model: 'openai-chat', messages: [{ role: 'user', content: 'hi' }] }); // a breaker to reset
    const other = await makeTenant('adm3-oa-other');
    const problems = [];
    const seen = {};
    const check = (r, res, what) => {
        const p = checker.check(r.method, r.pattern, res);
        for (const x of p) problems.push(`${x} [${what}]`);
        (seen[`${r.method} ${r.pattern}`] ||= new Set()).add(res.status);
    };
    for (const r of list) {
        const t = await makeTenant('adm3-oa');
        const body = () => sampleBody(r.method, r.pattern);
        const hdrs = () => sampleHeaders(r.method, r.pattern);
        // the success
        const okRes = await raw(r.method, fill(r.pattern, t), { token: r.public ? undefined : token('operator'), body: body(), headers: hdrs() });
        if (okRes.status >= 300) problems.push(`${r.method} ${r.pattern}: the sample request failed: ${okRes.status} ${okRes.text.slice(0, 200)}`);
        check(r, okRes, 'success');
        if (r.public) continue;
        // errors: 401, 403 (auditor writing / tenant admin on an operator route), 404, 400, 405
        check(r, await raw(r.method, fill(r.pattern, t), { body: body(), headers: hdrs() }), 'no token');
        if (isWrite(r)) check(r, await raw(r.method, fill(r.pattern, t), { token: token('auditor'), body: body(), headers: hdrs() }), 'auditor writing');
        if (/\{id\}/.test(r.pattern)) check(r, await raw(r.method, fill(r.pattern, t), { token: token('tenant_admin', other.id), body: body(), headers: hdrs() }), "another tenant's admin");
        if (['POST', 'PUT', 'PATCH'].includes(r.method) && body() !== undefined)
            check(r, await opCall(r.method, fill(r.pattern, t), { body: '{"x":', headers: hdrs() }), 'malformed JSON');
        if (r.method === 'GET' && checker.find('GET', r.pattern)?.op.parameters?.some((p) => checker.resolve(p).name === 'limit'))
            check(r, await opCall('GET', `${fill(r.pattern, t)}?limit=0`), 'bad limit');
        if (r.method === 'GET' && /\/usage$/.test(r.pattern)) {
            const csv = await opCall('GET', fill(r.pattern, t), { headers: { accept: 'text/csv' } });
            check(r, csv, 'CSV export');
        }
    }
    // the conditional errors: a taken name (409), a stale If-Match (412), a reused Idempotency-Key (422),
    // a replayed top-up (201 again, replayed)
    const byName = (m, p) => list.find((r) => r.method === m && r.pattern === p);
    const t = await makeTenant('adm3-oa-cond');
    const created = byName('POST', '/admin/v1/tenants');
    check(created, await opCall('POST', '/admin/v1/tenants', { body: { name: t.name } }), 'a taken name');
    const patch = byName('PATCH', '/admin/v1/tenants/{id}');
    check(patch, await opCall('PATCH', `/admin/v1/tenants/${t.id}`, { body: { zero_retention: true }, headers: { 'if-match': '"0000"' } }), 'stale If-Match');
    const topUp = byName('POST', '/admin/v1/tenants/{id}/wallet/top-ups');
    if (topUp) {
        const idem = { 'idempotency-key': `oa-${t.id}` };
        const first = await opCall('POST', `/admin/v1/tenants/${t.id}/wallet/top-ups`, { body: { amount: 5 }, headers: idem });
        const again = await opCall('POST', `/admin/v1/tenants/${t.id}/wallet/top-ups`, { body: { amount: 5 }, headers: idem });
        check(topUp, again, 'replayed top-up');
        assert.deepEqual({ ...again.json, replayed: false }, first.json, 'a replay answers the same entry');
        assert.equal(again.json.replayed, true);
        check(topUp, await opCall('POST', `/admin/v1/tenants/${t.id}/wallet/top-ups`, { body: { amount: 6 }, headers: idem }), 'reused key');
        check(topUp, await opCall('POST', `/admin/v1/tenants/${t.id}/wallet/top-ups`, { body: { amount: 6 } }), 'no Idempotency-Key');
    }
    assert.deepEqual(problems, [], `${problems.length} answers do not match admin/openapi.json:\n${problems.join('\n')}`);
    console.log(`# openapi: ${list.length} routes, statuses seen: ${Object.entries(seen).map(([k, v]) => `${k} ${[...v].join('/')}`).join('; ')}`);
});

test('the data plane answers match the document', async () => {
    const problems = [];
    const check = (m, p, res, what) => problems.push(...checker.check(m, p, { ...res, body: res.text }).map((x) => `${x} [${what}]`));
    check('GET', '/v1/models', await gw('GET', '/v1/models'), 'list');
    check('GET', '/v1/models', await gw('GET', '/v1/models', { key: null }), 'no key');
    check('POST', '/v1/chat/completions', await chat({ model: 'openai-chat', messages: [{ role: 'user', content: 'hi' }] }), 'answer');
    check('POST', '/v1/chat/completions', await chat({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }), 'unknown model');
    check('POST', '/v1/chat/completions', await gw('POST', '/v1/chat/completions', { body: '{"model":' }), 'malformed JSON');
    check('POST', '/v1/chat/completions', await chat({ model: 'openai-chat', messages: [{ role: 'user', content: 'hi' }] }, { key: 'tg_wrong' }), 'bad key');
    for (const extra of ['/v1/wallet', '/v1/usage']) {
        if (!doc.paths[extra]) continue;
        check('GET', extra, await gw('GET', extra), 'read');
        check('GET', extra, await gw('GET', extra, { key: null }), 'no key');
    }
    const stream = await fetch(new URL('/v1/chat/completions', (await import('./lib/stack.mjs')).stack().url), {
        method: 'POST', headers: { authorization: `Bearer ${(await import('./lib/stack.mjs')).stack().key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openai-chat', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const text = await stream.text();
    check('POST', '/v1/chat/completions', { status: stream.status, headers: stream.headers, text }, 'stream');
    assert.match(text, /data: \[DONE\]/);
    assert.deepEqual(problems, [], problems.join('\n'));
});
