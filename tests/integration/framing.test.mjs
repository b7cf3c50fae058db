// Issue #9 item 6: HTTP/1 request framing that cannot be smuggled (RFC 9112, section 6.3), over
// raw sockets. A head whose body length is ambiguous (two Content-Length, Content-Length with
// Transfer-Encoding, a Transfer-Encoding other than one `chunked`) gets 400 with the OpenAI error
// shape and the connection closed, so a request hidden after the body is never answered. Each
// hidden request carries `Connection: close`, so the server closes the connection whether or not
// it serves it: a test always ends, and fails by counting two answers.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { stack } from './lib/stack.mjs';

const S = stack();
const HIDDEN = 'GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n';

/** Writes `bytes` in one write and collects everything until the server closes the connection. */
function exchange(base, bytes) {
    const u = new URL(base);
    return new Promise((resolve, reject) => {
        const chunks = [];
        let error = null;
        const sock = net.connect({ host: u.hostname, port: Number(u.port) }, () => sock.write(bytes));
        sock.on('data', (d) => chunks.push(d));
        sock.on('error', (e) => {
            error = e;
        });
        sock.on('close', () => {
            const text = Buffer.concat(chunks).toString('latin1');
            try {
                resolve({ responses: parseResponses(text), text, error });
            } catch (e) {
                reject(e);
            }
        });
    });
}

/** Splits a byte stream into HTTP/1.1 responses (every answer of the gateway has Content-Length). */
function parseResponses(text) {
    const out = [];
    let rest = text;
    while (rest.length > 0) {
        const end = rest.indexOf('\r\n\r\n');
        assert.ok(end > 0, `a response head: ${JSON.stringify(rest.slice(0, 200))}`);
        const lines = rest.slice(0, end).split('\r\n');
        const m = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]);
        assert.ok(m, `a status line: ${JSON.stringify(lines[0])}`);
        const headers = {};
        for (const l of lines.slice(1)) {
            const i = l.indexOf(':');
            headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        const len = Number(headers['content-length']);
        assert.ok(Number.isInteger(len), `content-length in ${JSON.stringify(lines)}`);
        const body = rest.slice(end + 4, end + 4 + len);
        out.push({ status: Number(m[1]), headers, body });
        rest = rest.slice(end + 4 + len);
    }
    return out;
}

/** Exactly one answer: 400 in the OpenAI shape, `Connection: close`; the connection then closed. */
function assertRefusedAndClosed(r, what) {
    assert.equal(r.responses.length, 1, `${what}: one answer, the hidden request not served:\n${r.text}`);
    const [res] = r.responses;
    assert.equal(res.status, 400, `${what}: ${res.body}`);
    assert.equal(res.headers.connection, 'close', what);
    assert.match(res.headers['content-type'] || '', /^application\/json/, what);
    const e = JSON.parse(res.body).error;
    assert.equal(e.type, 'invalid_request_error', what);
    assert.equal(e.code, 'invalid_request', what);
    assert.equal(typeof e.message, 'string');
    assert.ok('param' in e);
    return e;
}

const post = (path, headerLines, body) =>
    `POST ${path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n${headerLines.join('\r\n')}\r\n\r\n${body}`;

test('Content-Length with Transfer-Encoding: chunked is refused and the hidden request is not served', async () => {
    for (const order of [
        ['Content-Length: 5', 'Transfer-Encoding: chunked'],
        ['Transfer-Encoding: chunked', 'Content-Length: 5'],
    ]) {
        const r = await exchange(S.url, post('/v1/chat/completions', order, '0\r\n\r\n') + HIDDEN);
        const e = assertRefusedAndClosed(r, order.join(' + '));
        assert.match(e.message, /Content-Length and Transfer-Encoding/);
    }
});

test('two different Content-Length headers are refused and the hidden request is not served', async () => {
    // h2o reads the first (2 bytes), so the hidden request starts right after "{}"
    const r = await exchange(S.url, post('/v1/chat/completions', ['Content-Length: 2', 'Content-Length: 60'], '{}') + HIDDEN);
    const e = assertRefusedAndClosed(r, 'Content-Length 2 and 60');
    assert.match(e.message, /more than one Content-Length/);
});

test('a repeated identical Content-Length is refused too', async () => {
    const r = await exchange(S.url, post('/v1/chat/completions', ['Content-Length: 2', 'Content-Length: 2'], '{}') + HIDDEN);
    assertRefusedAndClosed(r, 'Content-Length 2 twice');
});

test('a Transfer-Encoding other than one chunked is refused', async () => {
    // two headers, `chunked` last: h2o alone would read the body as chunked and serve what follows
    let r = await exchange(
        S.url,
        post('/v1/chat/completions', ['Transfer-Encoding: gzip', 'Transfer-Encoding: chunked'], '0\r\n\r\n') + HIDDEN,
    );
    assert.match(assertRefusedAndClosed(r, 'gzip then chunked').message, /more than one Transfer-Encoding/);
    // one header with another coding: h2o's own 400, rewritten to the same JSON shape
    r = await exchange(S.url, post('/v1/chat/completions', ['Transfer-Encoding: gzip, chunked'], '0\r\n\r\n') + HIDDEN);
    assertRefusedAndClosed(r, 'gzip, chunked');
    // HTTP/1.0 has no Transfer-Encoding
    r = await exchange(
        S.url,
        'POST /v1/chat/completions HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' + HIDDEN,
    );
    assertRefusedAndClosed(r, 'HTTP/1.0 chunked');
});

test('the admin listener refuses ambiguous framing the same way', async () => {
    const r = await exchange(
        S.adminUrl,
        `POST /admin/v1/breakers/x/reset HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n` +
            HIDDEN,
    );
    assertRefusedAndClosed(r, 'admin CL + TE');
});

test('well-framed keep-alive requests are still served one after the other on one connection', async () => {
    const chunked = post('/v1/chat/completions', ['Transfer-Encoding: chunked'], '2\r\n{}\r\n0\r\n\r\n');
    const sized = post('/v1/chat/completions', ['Content-Length: 2'], '{}');
    const r = await exchange(S.url, chunked + sized + 'GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n' + HIDDEN);
    assert.deepEqual(
        r.responses.map((x) => x.status),
        [401, 401, 200, 200], // no key on the chat calls: each is answered, and the connection kept
        r.text,
    );
    assert.deepEqual(
        r.responses.map((x) => x.headers.connection),
        ['keep-alive', 'keep-alive', 'keep-alive', 'close'],
    );
});

test("h2o's own refusals of a body are rewritten to the OpenAI shape, with the connection closed", async () => {
    // gateway/README.md lists them: h2o answers through its error helpers, server.c's filter rewrites
    const cases = [
        ['a Content-Length that is not a number', post('/v1/chat/completions', ['Content-Length: 2x'], '{}'), 400],
        ['a broken chunked body', post('/v1/chat/completions', ['Transfer-Encoding: chunked'], 'zz\r\n{}\r\n0\r\n\r\n'), 400],
        ['an Expect other than 100-continue', post('/v1/chat/completions', ['Content-Length: 2', 'Expect: 200-ok'], '{}'), 417],
    ];
    for (const [what, bytes, status] of cases) {
        const r = await exchange(S.url, bytes + HIDDEN);
        assert.equal(r.responses.length, 1, `${what}: one answer:\n${r.text}`);
        const [res] = r.responses;
        assert.equal(res.status, status, what);
        assert.equal(res.headers.connection, 'close', what);
        assert.match(res.headers['content-type'] || '', /^application\/json/, what);
        const e = JSON.parse(res.body).error;
        assert.equal(e.type, 'invalid_request_error', what);
        assert.equal(e.code, 'invalid_request', what);
    }
});

test("h2o's own parser refusals: a malformed header line gets h2o's plain-text 400 and a closed connection", async () => {
    // documented in gateway/README.md: h2o 2.2.5 writes this answer itself, before any filter
    const r = await exchange(S.url, 'GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n' + HIDDEN);
    assert.equal(r.responses.length, 1, r.text);
    assert.equal(r.responses[0].status, 400);
    assert.equal(r.responses[0].headers.connection, 'close');
});
