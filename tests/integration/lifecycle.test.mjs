// issue #2 item 3: the process life cycle of `tollgate serve`, on a gateway and a simulator of this
// file's own (lib/instance.mjs), so signals never reach the shared stack's gateway:
// whole-config validation at start, SIGTERM drain (and its grace bound), SIGHUP reload (good and
// bad file), readiness and liveness on both listeners.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stack } from './lib/stack.mjs';
import { SseRecorder } from './lib/sse.mjs';
import { waitFor } from './lib/wait.mjs';
import { startInstance, baseConfig, req, runCmd, assertNoSanitizerReport } from './lib/instance.mjs';

const MODELS = ['life-a', 'life-b'];

function lifeConfig(ctx, { extraModels = [], extra = {} } = {}) {
    const models = {};
    for (const m of [...MODELS, ...extraModels]) models[m] = { provider: 'sim-openai', upstream: m, context_window: 128000 };
    return baseConfig({
        ...ctx,
        providers: {
            'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile },
        },
        models,
        extra,
    });
}

function chatBody(model, extra = {}) {
    return { model, messages: [{ role: 'user', content: 'life cycle test' }], ...extra };
}

/** A per-model fault at the instance's own simulator. */
async function simFault(inst, model, fault) {
    const r = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model, ...fault } });
    assert.ok(r.status >= 200 && r.status < 300, `the simulator took the fault: ${r.status} ${r.text}`);
}

/**
 * Starts a stream and returns at once: {firstContent (resolves when the first content chunk
 * arrived), done (resolves to {status, sse, error} when the body ended or broke)}.
 */
function startStream(inst, model) {
    let firstResolve;
    const firstContent = new Promise((res) => (firstResolve = res));
    const done = (async () => {
        const sse = new SseRecorder();
        let status = 0;
        let error = null;
        try {
            const res = await fetch(`${inst.url}/v1/chat/completions`, {
                method: 'POST',
                headers: { 'content-type': 'application/json', authorization: `Bearer ${inst.key}` },
                body: JSON.stringify(chatBody(model, { stream: true })),
            });
            status = res.status;
            const dec = new TextDecoder();
            for await (const part of res.body) {
                sse.feed(dec.decode(part, { stream: true }));
                if (contentChunks(sse).length > 0) firstResolve(true);
            }
        } catch (e) {
            error = e;
        }
        sse.end();
        firstResolve(false);
        return { status, sse, error };
    })();
    return { firstContent, done };
}

function contentChunks(sse) {
    return sse.events.filter((e) => e.json && e.json.choices && e.json.choices[0] && e.json.choices[0].delta && e.json.choices[0].delta.content);
}

function assertLogClean(inst) {
    const out = inst.gateway.output;
    assert.ok(!out.includes(inst.key), 'the API key is not in the gateway output');
    assert.ok(!out.includes(readFileSync(inst.pepperFile, 'utf8').trim()), 'the pepper / provider key is not in the gateway output');
}

/** Resolves to 'refused' when a TCP connect to port is refused, 'connected' otherwise. */
function tryConnect(port) {
    return new Promise((res) => {
        const s = connect({ host: '127.0.0.1', port });
        s.once('connect', () => {
            s.destroy();
            res('connected');
        });
        s.once('error', (e) => res(e.code === 'ECONNREFUSED' ? 'refused' : `error ${e.code}`));
    });
}

/** A raw TCP connection that records everything it receives. */
async function rawConn(port) {
    const s = connect({ host: '127.0.0.1', port });
    await new Promise((res, rej) => {
        s.once('connect', res);
        s.once('error', rej);
    });
    const c = { text: '', closed: false, write: (t) => s.write(t), close: () => s.destroy() };
    s.setEncoding('utf8');
    s.on('data', (d) => (c.text += d));
    s.on('close', () => (c.closed = true));
    s.on('error', () => {});
    return c;
}

/** A raw HTTP/1.1 keep-alive connection: send(request text) resolves to the next whole response. */
async function keepAliveConn(port) {
    const s = connect({ host: '127.0.0.1', port });
    await new Promise((res, rej) => {
        s.once('connect', res);
        s.once('error', rej);
    });
    let buf = '';
    let waiter = null;
    let closed = false;
    s.setEncoding('utf8');
    const check = () => {
        if (!waiter) return;
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) {
            if (closed) waiter.rej(new Error(`connection closed before a response: ${JSON.stringify(buf)}`));
            return;
        }
        const head = buf.slice(0, end);
        const m = /content-length:\s*(\d+)/i.exec(head);
        const len = m ? Number(m[1]) : 0;
        if (buf.length < end + 4 + len) {
            if (closed) waiter.rej(new Error('connection closed inside a response'));
            return;
        }
        const status = Number(/^HTTP\/1\.\d (\d{3})/.exec(head)[1]);
        const body = buf.slice(end + 4, end + 4 + len);
        buf = buf.slice(end + 4 + len);
        const w = waiter;
        waiter = null;
        w.res({ status, head, body });
    };
    s.on('data', (d) => {
        buf += d;
        check();
    });
    s.on('close', () => {
        closed = true;
        check();
    });
    s.on('error', () => {});
    return {
        /** Writes text; resolves to the next whole response once it arrived. */
        send(text) {
            return new Promise((res, rej) => {
                waiter = { res, rej };
                s.write(text);
                check();
            });
        },
        /** Writes text without waiting for anything (a request in parts). */
        write(text) {
            s.write(text);
        },
        get closed() {
            return closed;
        },
        close() {
            s.destroy();
        },
    };
}

test('an invalid config is reported whole, by check and by serve, with no secret printed', async () => {
    const S = stack();
    const dir = mkdtempSync(join(tmpdir(), 'tg-life-bad-'));
    try {
        const providerKey = `sk-life-provider-${randomBytes(12).toString('hex')}`;
        const dbPassword = `dbpw${randomBytes(12).toString('hex')}`;
        const pepper = randomBytes(32).toString('hex');
        const bad = {
            listen: { data: 'not-an-address', admin: '127.0.0.1:1' },
            workers: 1,
            no_such_setting: true,
            database: { url: `postgresql://tollgate:${dbPassword}@127.0.0.1:1/tollgate` },
            secrets: { key_pepper_env: 'LIFE_TEST_PEPPER' },
            providers: {
                good: { kind: 'openai', base_url: 'http://127.0.0.1:1/openai/v1', api_key_env: 'LIFE_TEST_PROVIDER_KEY' },
                weird: { kind: 'nosuchkind', base_url: 'http://127.0.0.1:1/x', api_key_env: 'LIFE_TEST_PROVIDER_KEY' },
            },
            models: {
                ok: { provider: 'good', upstream: 'ok', context_window: 1000 },
                orphan: { provider: 'ghost-provider', upstream: 'orphan', context_window: 1000 },
            },
            chains: { broken: { targets: ['ok', 'missing-model'] } },
        };
        const file = join(dir, 'bad.json');
        writeFileSync(file, JSON.stringify(bad, null, 2));
        const env = { ...process.env, LIFE_TEST_PROVIDER_KEY: providerKey, LIFE_TEST_PEPPER: pepper };
        const expected = [
            [/no_such_setting.*unknown key/, 'the unknown key'],
            [/listen\.data.*not-an-address/, 'the bad listen address'],
            [/providers\.weird\.kind.*nosuchkind/, 'the bad kind'],
            [/models\.orphan\.provider.*ghost-provider/, 'the unknown provider of a model'],
            [/chains\.broken\.targets.*missing-model/, 'the chain naming a missing model'],
        ];
        for (const cmd of ['check', 'serve']) {
            const r = await runCmd(S.gatewayBin, [cmd, '-c', file], { env });
            const out = r.stdout + r.stderr;
            assert.equal(r.code, 1, `tollgate ${cmd} exits 1 on an invalid config; output:\n${out}`);
            for (const [re, what] of expected) assert.match(out, re, `tollgate ${cmd} reports ${what}`);
            assert.ok(!out.includes(providerKey), `tollgate ${cmd} does not print the provider key`);
            assert.ok(!out.includes(dbPassword), `tollgate ${cmd} does not print the database password`);
            assert.ok(!out.includes(pepper), `tollgate ${cmd} does not print the pepper`);
            assert.doesNotMatch(out, /AddressSanitizer|LeakSanitizer|runtime error:/, `tollgate ${cmd}: no sanitizer report`);
        }
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
});

test('readiness and liveness: /readyz and /healthz are 200 on both listeners; /readyz is 503 without a database', async () => {
    const inst = await startInstance((ctx) => lifeConfig(ctx));
    try {
        for (const base of [inst.url, inst.adminUrl]) {
            for (const path of ['/healthz', '/readyz']) {
                const r = await req(base, 'GET', path);
                assert.equal(r.status, 200, `GET ${base}${path}: ${r.text}`);
            }
        }
        const m = await req(inst.url, 'GET', '/v1/models', { key: inst.key });
        assert.equal(m.status, 200);
        assert.deepEqual(m.json.data.map((x) => x.id).sort(), [...MODELS].sort());
    } finally {
        inst.gateway.kill('SIGTERM');
        const exit = await inst.gateway.closed;
        assert.equal(exit.code, 0, 'the gateway exits 0 on SIGTERM');
        assertNoSanitizerReport(inst.gateway, 'the instance gateway');
        assertLogClean(inst);
        await inst.stop();
    }

    // The same config with a database nothing listens on (port 1): alive, but not ready.
    const down = await startInstance(
        (ctx) => {
            const c = lifeConfig(ctx);
            c.database.url = 'postgresql://tollgate@127.0.0.1:1/tollgate';
            return c;
        },
        { createKey: false, needReady: false }
    );
    try {
        for (const base of [down.url, down.adminUrl]) {
            const h = await req(base, 'GET', '/healthz');
            assert.equal(h.status, 200, `GET ${base}/healthz without a database: ${h.text}`);
            const r = await req(base, 'GET', '/readyz');
            assert.equal(r.status, 503, `GET ${base}/readyz without a database: ${r.text}`);
            assert.match(r.text, /database/, 'the readiness answer names the database');
        }
        down.gateway.kill('SIGTERM');
        const exit = await down.gateway.closed;
        assert.equal(exit.code, 0, 'the gateway exits 0 on SIGTERM');
        assertNoSanitizerReport(down.gateway, 'the instance gateway');
    } finally {
        await down.stop();
    }
});

test('SIGTERM drains: the in-flight stream completes, the listeners close, exit 0', async () => {
    const inst = await startInstance((ctx) => lifeConfig(ctx));
    let idle = null;
    let pipelined = null;
    try {
        const port = inst.ctx.dataPort;
        // Connections opened before the drain. gateway/README.md: the listeners close and new
        // requests on already open connections get 503 shutting_down. h2o closes a connection that
        // is idle between requests when the drain starts; a request pipelined behind one in flight
        // is read after the drain started and gets the 503 (with Connection: close).
        idle = await keepAliveConn(port);
        const first = await idle.send('GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n');
        assert.equal(first.status, 200, 'the kept-alive connection works before the drain');

        await simFault(inst, 'life-a', { chunk_delay_ms: 100, stream_chunks: 20 });
        const s = startStream(inst, 'life-a');
        assert.equal(await s.firstContent, true, 'the stream delivered its first content chunk');
        // A second stream, on a raw connection, with a request pipelined behind it.
        pipelined = await rawConn(port);
        const body = JSON.stringify(chatBody('life-a', { stream: true }));
        pipelined.write(
            `POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${inst.key}\r\n` +
                `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}` +
                `GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${inst.key}\r\n\r\n`
        );
        await waitFor(() => /"content":"[^"]/.test(pipelined.text), { what: 'the pipelined stream to start' });
        inst.gateway.kill('SIGTERM');

        // The listeners close: a new connection is refused (polled: the close runs on each worker's loop).
        await waitFor(async () => (await tryConnect(port)) === 'refused', { what: 'the data listener to refuse connections' });
        await waitFor(async () => (await tryConnect(inst.ctx.adminPort)) === 'refused', {
            what: 'the admin listener to refuse connections',
        });
        await waitFor(() => idle.closed, { what: 'the idle keep-alive connection to be closed by the gateway' });

        // The pipelined request, read once the stream ahead of it finished: 503 shutting_down.
        await waitFor(() => pipelined.closed, { what: 'the pipelined connection to finish' });
        const raw = pipelined.text;
        const done = raw.indexOf('data: [DONE]');
        const late = raw.indexOf('HTTP/1.1 503');
        assert.ok(done > 0, 'the pipelined stream completed with data: [DONE]');
        assert.ok(late > done, `then the pipelined request got 503:\n${raw.slice(-600)}`);
        const lateHead = raw.slice(late, raw.indexOf('\r\n\r\n', late));
        assert.match(lateHead, /connection: close/i, 'and the connection closes after it');
        const err = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n', late) + 4)).error;
        assert.equal(err.code, 'shutting_down');
        assert.equal(typeof err.message, 'string');

        const r = await s.done;
        assert.equal(r.error, null, `the stream was not broken: ${r.error}`);
        assert.equal(r.status, 200);
        assert.equal(r.sse.done, true, 'the in-flight stream ends with data: [DONE]');
        assert.equal(contentChunks(r.sse).length, 20, 'every content chunk arrived');
        assert.equal(r.sse.errors.length, 0, 'no error event');

        const exit = await inst.gateway.closed;
        assert.deepEqual(exit, { code: 0, signal: null }, 'the gateway exits 0 after the stream finished');
        const events = inst.gateway.logEvents().map((e) => e.event);
        assert.ok(events.includes('drain_started') && events.includes('server_stopped'), 'the drain is logged');
        assert.ok(!events.includes('drain_timeout'), 'the drain finished within the grace period');
        assertNoSanitizerReport(inst.gateway, 'the instance gateway');
        assertLogClean(inst);
    } finally {
        if (idle) idle.close();
        if (pipelined) pipelined.close();
        await inst.stop();
    }
});

test('SIGTERM: the grace period bounds the drain; a stream that runs longer is cut and the process exits 0', async () => {
    const inst = await startInstance((ctx) => lifeConfig(ctx, { extra: { shutdown_grace_ms: 300 } }));
    try {
        // 20 chunks 5 s apart: far longer than the grace period.
        await simFault(inst, 'life-b', { chunk_delay_ms: 5000, stream_chunks: 20 });
        const s = startStream(inst, 'life-b');
        assert.equal(await s.firstContent, true, 'the stream delivered its first content chunk');
        inst.gateway.kill('SIGTERM');
        const exit = await inst.gateway.closed;
        assert.deepEqual(exit, { code: 0, signal: null }, 'the gateway exits 0 once the grace period is over');
        const r = await s.done;
        assert.equal(r.sse.done, false, 'the cut stream has no [DONE]: no client takes it for a whole answer');
        assert.ok(contentChunks(r.sse).length < 20, 'the stream was cut before its end');
        const last = r.sse.events[r.sse.events.length - 1];
        assert.equal(
            last.json?.error?.code,
            'shutting_down',
            'the cut stream ends with an error event naming the drain'
        );
        const logged = inst.gateway.logEvents().filter((e) => e.event === 'request' && e.stream === 1);
        assert.equal(logged.length, 1, 'the cut stream still went through LOG, once');
        assert.equal(logged[0].mid_stream_failure, 1, 'its log line says it was cut');
        assert.ok(
            inst.gateway.logEvents().some((e) => e.event === 'drain_timeout'),
            'the gateway logs that the grace period ended the drain'
        );
        assertNoSanitizerReport(inst.gateway, 'the instance gateway');
        assertLogClean(inst);
    } finally {
        await inst.stop();
    }
});

test('SIGHUP reloads: a stream in flight completes, a new model appears; an invalid file is ignored and logged', async () => {
    const inst = await startInstance((ctx) => lifeConfig(ctx));
    try {
        // 20 chunks 250 ms apart: the stream outlives the reload by far.
        await simFault(inst, 'life-a', { chunk_delay_ms: 250, stream_chunks: 20 });
        const s = startStream(inst, 'life-a');
        assert.equal(await s.firstContent, true, 'the stream delivered its first content chunk');

        // Same file plus one model.
        let streamEnded = false;
        s.done.then(() => (streamEnded = true));
        inst.writeConfig(lifeConfig(inst.ctx, { extraModels: ['life-new'] }));
        inst.gateway.kill('SIGHUP');
        await waitFor(
            async () => {
                const m = await req(inst.url, 'GET', '/v1/models', { key: inst.key });
                return m.status === 200 && m.json.data.some((x) => x.id === 'life-new');
            },
            { what: 'GET /v1/models to list the new model' }
        );
        assert.equal(streamEnded, false, 'the stream was still in flight when the reload took effect');
        const n = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chatBody('life-new') });
        assert.equal(n.status, 200, `the new model answers: ${n.text}`);
        assert.equal(n.json.model, 'life-new');

        const r = await s.done;
        assert.equal(r.error, null, `the stream was not broken: ${r.error}`);
        assert.equal(r.status, 200);
        assert.equal(r.sse.done, true, 'the in-flight stream ends with data: [DONE]');
        assert.equal(contentChunks(r.sse).length, 20, 'every content chunk arrived');

        // An invalid file: unknown key and a model naming a missing provider.
        const bad = lifeConfig(inst.ctx, { extraModels: ['life-new'] });
        bad.reload_bogus = 1;
        bad.models['life-broken'] = { provider: 'no-such-provider', upstream: 'x', context_window: 1000 };
        inst.writeConfig(bad);
        inst.gateway.kill('SIGHUP');
        const failed = await waitFor(
            () => {
                const ev = inst.gateway.logEvents().filter((e) => e.event === 'config_reload_failed');
                return ev.length >= 2 ? ev : null;
            },
            { what: 'the gateway to log the reload errors' }
        );
        const lines = failed.map((e) => JSON.stringify(e)).join('\n');
        assert.match(lines, /reload_bogus/, 'the log names the unknown key');
        assert.match(lines, /no-such-provider/, 'the log names the unknown provider');

        // The previous config still serves: its models answer, the broken one is unknown.
        for (const m of [...MODELS, 'life-new']) {
            const a = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chatBody(m) });
            assert.equal(a.status, 200, `${m} still answers: ${a.text}`);
        }
        const listed = await req(inst.url, 'GET', '/v1/models', { key: inst.key });
        assert.deepEqual(listed.json.data.map((x) => x.id).sort(), [...MODELS, 'life-new'].sort(), 'the model list is unchanged');
        const b = await req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: chatBody('life-broken') });
        assert.equal(b.status, 404, 'the model of the rejected file is unknown');
        const ready = await req(inst.adminUrl, 'GET', '/readyz');
        assert.equal(ready.status, 200, 'still ready after a rejected reload');

        inst.gateway.kill('SIGTERM');
        const exit = await inst.gateway.closed;
        assert.deepEqual(exit, { code: 0, signal: null });
        assertNoSanitizerReport(inst.gateway, 'the instance gateway');
        assertLogClean(inst);
    } finally {
        await inst.stop();
    }
});
