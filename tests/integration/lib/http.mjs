// fetch wrappers for the gateway, its admin listener and the simulator. Every body read through
// them is checked for leaked secrets, so each scenario doubles as a leak test.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { stack } from './stack.mjs';
import { SseRecorder } from './sse.mjs';

/** Fails when any secret of the stack occurs in text (names the secret, never prints it). */
export function assertNoSecrets(text, where) {
    for (const s of stack().secrets) {
        if (text.includes(s.value)) assert.fail(`${s.name} leaked into ${where}`);
    }
}

async function doFetch(url, init) {
    const res = await fetch(url, init);
    const text = await res.text();
    assertNoSecrets(text, `the response body of ${init.method || 'GET'} ${url}`);
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        json = null;
    }
    return { status: res.status, headers: res.headers, text, json };
}

function bodyInit(body) {
    if (body === undefined) return {};
    return { body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body) };
}

/** A request to the gateway's data listener. key: string, null for none (default: TG_KEY). */
export function gw(method, path, { body, key, headers = {} } = {}) {
    const S = stack();
    const h = { ...headers };
    const k = key === undefined ? S.key : key;
    if (k !== null) h.authorization = `Bearer ${k}`;
    if (body !== undefined && !h['content-type']) h['content-type'] = 'application/json';
    return doFetch(S.url + path, { method, headers: h, ...bodyInit(body) });
}

export function chat(body, opts = {}) {
    return gw('POST', '/v1/chat/completions', { ...opts, body });
}

/** A request to the admin listener. token: the bearer token (default: the stack's operator token,
 *  TG_ADMIN_TOKEN), null for none. */
export function admin(method, path, { body, headers = {}, token } = {}) {
    const h = { ...headers };
    const t = token === undefined ? stack().adminToken : token;
    if (t !== null && t !== undefined && !h.authorization) h.authorization = `Bearer ${t}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    return doFetch(stack().adminUrl + path, { method, headers: h, ...bodyInit(body) });
}

/** A request straight to the simulator. */
export function sim(method, path, { body, headers = {} } = {}) {
    const h = { ...headers };
    if (body !== undefined) h['content-type'] = 'application/json';
    return doFetch(stack().simUrl + path, { method, headers: h, ...bodyInit(body) });
}

/**
 * A streaming chat call: reads the body chunk by chunk into an SseRecorder.
 * Returns {status, headers, sse, text (raw body), json (for non-SSE error answers)}.
 * onChunk(recorder) may be given to observe progress; returning 'abort' cancels the read.
 */
export async function chatStream(body, { key, headers = {}, onChunk } = {}) {
    const S = stack();
    const h = { 'content-type': 'application/json', ...headers };
    const k = key === undefined ? S.key : key;
    if (k !== null) h.authorization = `Bearer ${k}`;
    const ac = new AbortController();
    const res = await fetch(S.url + '/v1/chat/completions', {
        method: 'POST',
        headers: h,
        body: JSON.stringify({ ...body, stream: true }),
        signal: ac.signal,
    });
    const sse = new SseRecorder();
    const decoder = new TextDecoder();
    let aborted = false;
    try {
        for await (const part of res.body) {
            sse.feed(decoder.decode(part, { stream: true }));
            if (onChunk && (await onChunk(sse)) === 'abort') {
                aborted = true;
                ac.abort();
                break;
            }
        }
    } catch (e) {
        if (!aborted) throw e;
    }
    sse.end();
    assertNoSecrets(sse.raw, 'a streamed response body');
    let json = null;
    try {
        json = JSON.parse(sse.raw);
    } catch {
        json = null;
    }
    return { status: res.status, headers: res.headers, sse, text: sse.raw, json, aborted };
}

/** Asserts the OpenAI error shape {"error":{"message","type","code","param"}} and returns error. */
export function assertOpenAIError(r, status, { code, type, param } = {}) {
    assert.equal(r.status, status, `status (body: ${r.text.slice(0, 300)})`);
    assert.ok(r.json && typeof r.json === 'object', `error body is JSON: ${r.text.slice(0, 200)}`);
    const e = r.json.error;
    assert.ok(e && typeof e === 'object', 'body has an "error" object');
    for (const f of ['message', 'type', 'code', 'param']) assert.ok(f in e, `error.${f} is present`);
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0, 'error.message is not empty');
    assert.equal(typeof e.type, 'string');
    assert.ok(e.code === null || typeof e.code === 'string', 'error.code is a string or null');
    assert.ok(e.param === null || typeof e.param === 'string', 'error.param is a string or null');
    if (code !== undefined) assert.equal(e.code, code, 'error.code');
    if (type !== undefined) assert.equal(e.type, type, 'error.type');
    if (param !== undefined) assert.equal(e.param, param, 'error.param');
    assert.match(r.headers.get('content-type') || '', /application\/json/);
    return e;
}

/** The x-tollgate-* headers every chat answer carries. */
export function assertRouteHeaders(r, { model, provider } = {}) {
    const id = r.headers.get('x-tollgate-request-id');
    assert.ok(id && id.length >= 8, `x-tollgate-request-id present (got ${id})`);
    const m = r.headers.get('x-tollgate-model');
    const p = r.headers.get('x-tollgate-provider');
    assert.ok(m, 'x-tollgate-model present');
    assert.ok(p, 'x-tollgate-provider present');
    if (model !== undefined) assert.equal(m, model, 'x-tollgate-model');
    if (provider !== undefined) assert.equal(p, provider, 'x-tollgate-provider');
    return { id, model: m, provider: p };
}

/** Reads the gateway's log file (for leak checks). */
export function gatewayLog() {
    const f = stack().gatewayLog;
    if (!f) return '';
    return readFileSync(f, 'utf8');
}

/** The gateway's complete log lines: the writer may be mid-line at the end of the file, so only
 *  what precedes the last newline counts. */
export function gatewayLines() {
    const log = gatewayLog();
    return log.slice(0, log.lastIndexOf('\n') + 1).split('\n');
}

/** The gateway's JSON log events (one object a line), complete lines only. */
export function gatewayEvents() {
    return gatewayLines()
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l));
}

export function assertLogHasNoSecrets() {
    const log = gatewayLog();
    assertNoSecrets(log, `the gateway log ${stack().gatewayLog}`);
    return log;
}

/** A minimal valid chat body. */
export function chatBody(model, extra = {}) {
    return { model, messages: [{ role: 'user', content: 'Say hello to the test suite.' }], ...extra };
}
