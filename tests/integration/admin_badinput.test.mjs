// Issue #12 item 5: bad input on every admin route (from the server's route table,
// lib/admin_routes.mjs), as the operator (the role that may do most): malformed JSON, wrong types,
// huge values, unknown fields, SQL metacharacters, invalid UTF-8, NUL bytes, odd path segments
// (`..`, `%2f`, very long, non-numeric, negative, out of int64 range), bad query parameters. Each
// gets a 4xx with an OpenAI-shaped error and a message, never a 5xx, and writes nothing: the row
// count of every table the admin API writes (the audit log included) is the same after as before.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Checker } from './lib/openapi.mjs';
import { chat, chatBody } from './lib/http.mjs';
import { cleanupProviderKeys, counts, fill, isWrite, makeTenant, op, routes, sampleBody, sampleHeaders } from './lib/adminapi.mjs';

after(cleanupProviderKeys);

const LONG = 'a'.repeat(5000);
/* odd segments for any parameter; the numeric ones only for ids ({id}, {key_id}): "abc" or "-1" is
 * a valid chain or provider name */
const SEGMENTS = {
    dotdot: '..',
    dot: '.',
    encoded_slash: 'x%2fy',
    encoded_dotdot: '%2e%2e',
    very_long: LONG,
    non_numeric: 'abc',
    negative: '-1',
    zero: '0',
    leading_zero: '007',
    int64_overflow: '9223372036854775808',
    huge: '99999999999999999999999999',
    float: '1.5',
    sql: "1'%20OR%20'1'='1",
    sql_comment: '1;--',
    nul: '1%00',
    invalid_utf8: '%ff%fe',
    space: '%20',
};

/**
 * Bodies that are wrong for the route: [case, raw body (string or Buffer)]. `schema` is the
 * route's request body schema in admin/openapi.json: a null is bad only where it does not allow
 * null, an empty object only where it requires a field (the document says what is valid, so a
 * server more lenient than its document fails here).
 */
function badBodies(sample, schema = {}) {
    const props = schema.properties || {};
    const nullable = (k) => [].concat(props[k]?.type || []).includes('null');
    const out = [
        ['malformed JSON', '{"a":'],
        ['not JSON', 'hello'],
        ['trailing garbage', '{} x'],
        ['an array', '[]'],
        ['a string', '"x"'],
        ['invalid UTF-8', Buffer.concat([Buffer.from('{"name":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')])],
        ['raw NUL byte', Buffer.from('{"name":"a\u0000b"}'.replace('\\u0000', '\u0000'))],
        ['escaped NUL', '{"name":"a\\u0000b","label":"a\\u0000b","api_key":"a\\u0000b"}'],
        ['deep nesting', '['.repeat(10000) + ']'.repeat(10000)],
        ['duplicate keys', '{"a":1,"a":2}'],
        ['unknown field', JSON.stringify({ ...(sample || {}), zz_unknown_field: 1 })],
        ['huge body', JSON.stringify({ ...(sample || {}), pad: 'x'.repeat(200 * 1024) })],
    ];
    if (sample && typeof sample === 'object') {
        for (const [k, v] of Object.entries(sample)) {
            const wrong = typeof v === 'string' ? 12345 : typeof v === 'number' ? 'not a number' : typeof v === 'boolean' ? 'yes' : Array.isArray(v) ? { a: 1 } : 'x';
            out.push([`wrong type of ${k}`, JSON.stringify({ ...sample, [k]: wrong })]);
            if (!nullable(k)) out.push([`null ${k}`, JSON.stringify({ ...sample, [k]: null })]);
            if (typeof v === 'number') {
                out.push([`huge ${k}`, JSON.stringify({ ...sample, [k]: 1e300 })]);
                out.push([`int64 overflow ${k}`, `{${Object.entries(sample).map(([kk, vv]) => `${JSON.stringify(kk)}:${kk === k ? '9223372036854775808' : JSON.stringify(vv)}`).join(',')}}`]);
                out.push([`negative ${k}`, JSON.stringify({ ...sample, [k]: -1 })]);
                out.push([`fraction ${k}`, JSON.stringify({ ...sample, [k]: 1.5 })]);
                out.push([`SQL in ${k}`, JSON.stringify({ ...sample, [k]: "1; DROP TABLE tenants; --" })]);
            }
            if (typeof v === 'string') {
                out.push([`huge ${k}`, JSON.stringify({ ...sample, [k]: 'x'.repeat(60 * 1024) })]);
                out.push([`empty ${k}`, JSON.stringify({ ...sample, [k]: '' })]);
                out.push([`control character in ${k}`, JSON.stringify({ ...sample, [k]: 'a\u001bb' })]);
            }
        }
        if ((schema.required || []).length > 0) out.push(['empty object', '{}']);
    }
    return out;
}

const QUERIES = ['limit=-1', 'limit=0', 'limit=abc', 'limit=1001', 'limit=99999999999999999999', 'cursor=%ff%fe',
    'cursor=..', "cursor=1'%20OR%201=1", 'cursor=' + 'A'.repeat(5000), 'from=yesterday', 'to=%00', 'since=never',
    'tenant=-1', 'tenant=abc', 'since=yesterday', 'until=%00', 'since=2026-13-45T00:00:00Z', 'key=abc', 'key=-1',
    'status=abc', 'status=999', 'model=' + 'm'.repeat(5000), 'from=2026-02-30', 'to=nope'];
const ID_ONLY = new Set(['non_numeric', 'negative', 'zero', 'leading_zero', 'int64_overflow', 'huge', 'float']);

function judge(failures, r, kase, res) {
    const where = `${r.method} ${r.pattern} [${kase}]`;
    if (res.status >= 500) failures.push(`${where}: ${res.status} (a 5xx) ${res.text.slice(0, 200)}`);
    else if (res.status < 400) failures.push(`${where}: accepted with ${res.status} ${res.text.slice(0, 200)}`);
    else if (!res.json || !res.json.error || typeof res.json.error.message !== 'string' || res.json.error.message.length === 0)
        failures.push(`${where}: ${res.status} without an OpenAI-shaped error message: ${res.text.slice(0, 200)}`);
}

test('bad input on every route: a clear 4xx, never a 5xx, nothing written, nothing audited', async () => {
    // the breaker that {target} names exists only once its target has been used: use it, so that
    // the reset route is fed its bad bodies whatever ran before (a reset is audited when made)
    assert.equal((await chat(chatBody('openai-chat'))).status, 200, 'a call through openai-chat');
    const list = (await routes()).filter((r) => !r.public);
    const t = await makeTenant('adm3-bad');
    const failures = [];
    let n = 0;
    for (const r of list) {
        const before = await counts();
        // odd path segments, one parameter at a time
        const params = [...r.pattern.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
        for (const p of params) {
            for (const [kase, seg] of Object.entries(SEGMENTS)) {
                if (ID_ONLY.has(kase) && !p.endsWith('id')) continue;
                const path = fill(r.pattern, t, { [p]: seg });
                const res = await op(r.method, path, { body: sampleBody(r.method, r.pattern), headers: sampleHeaders(r.method, r.pattern) });
                judge(failures, r, `{${p}} = ${kase}`, res);
                n++;
            }
        }
        // bodies
        if (['POST', 'PUT', 'PATCH'].includes(r.method)) {
            const sample = sampleBody(r.method, r.pattern);
            // a route without a body of its own ignores one; it must still refuse broken JSON or take none
            const o = checker.find(r.method, r.pattern);
            const schema = o?.op.requestBody ? checker.resolve(o.op.requestBody.content['application/json'].schema) : {};
            const cases = sample === undefined ? badBodies(undefined).slice(0, 9) : badBodies(sample, schema);
            for (const [kase, body] of cases) {
                const res = await op(r.method, fill(r.pattern, t), { body, headers: sampleHeaders(r.method, r.pattern) });
                if (sample === undefined && res.status < 300) continue; // ignores its body: nothing to refuse
                judge(failures, r, `body: ${kase}`, res);
                n++;
            }
        }
        // queries of reads
        if (r.method === 'GET') {
            for (const q of QUERIES) {
                const name = q.split('=')[0];
                const res = await op('GET', `${fill(r.pattern, t)}?${q}`);
                // a route without that parameter may ignore it (200); one that takes it must refuse it
                if (res.status < 300 && !knownQuery(r, name)) continue;
                judge(failures, r, `query ${q.slice(0, 40)}`, res);
                n++;
            }
        }
        const after = await counts();
        for (const tb of Object.keys(after))
            if (after[tb] !== before[tb]) failures.push(`${r.method} ${r.pattern}: bad input wrote ${after[tb] - before[tb]} row(s) to ${tb}`);
    }
    assert.deepEqual(failures, [], `${failures.length} of ${n} bad requests were not refused cleanly:\n${failures.join('\n')}`);
    console.log(`# bad input: ${list.length} routes, ${n} requests refused with a 4xx, row counts of every table (the audit log included) unchanged`);
});

/** The query parameters a route documents (admin/openapi.json): those must refuse bad values. */
const checker = new Checker();
function knownQuery(r, name) {
    const o = checker.find(r.method, r.pattern);
    if (!o) return false;
    return (o.op.parameters || []).map((p) => checker.resolve(p)).some((p) => p.in === 'query' && p.name === name);
}

test('SQL metacharacters in free text are stored as text, not run', async () => {
    const name = `o'hara"; DROP TABLE tenants; -- ${Date.now()}`;
    const res = await op('POST', '/admin/v1/tenants', { body: { name } });
    assert.equal(res.status, 201, res.text);
    const got = await op('GET', `/admin/v1/tenants/${res.json.id}`);
    assert.equal(got.status, 200, got.text);
    assert.equal(got.json.name, name, 'the name round-trips byte for byte');
    const list = await op('GET', '/admin/v1/tenants?limit=1');
    assert.equal(list.status, 200, 'the tenants table is still there');
});
