// Stream relaying under pressure (issue #2): a slow client pauses the upstream transfer and the
// gateway's memory stays bounded; clients that disconnect mid-stream free everything.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { before, describe, test } from 'node:test';
import { assertLogHasNoSecrets, assertNoSecrets, chat, chatBody, chatStream, gatewayLines } from './lib/http.mjs';
import { breakerOf, freshStart, gatewayRss, metricSum, setFault } from './lib/control.mjs';
import { SseRecorder } from './lib/sse.mjs';
import { KINDS, stack, targetOf } from './lib/stack.mjs';
import { waitFor, waitStable } from './lib/wait.mjs';

const S = stack();
const MiB = 1024 * 1024;
// 256 MiB of content: far more than every buffer between the simulator and the client
// (stream_buffer_bytes 64 KiB in the test config, plus a few MiB of socket buffers). The bytes
// that do flow before the pause take effect are bounded by those buffers, not by the stream, so
// the bound below holds in a sanitizer build too (ASan's quarantine keeps freed memory resident).
const BIG = { stream_chunks: 16384, chunk_bytes: 16384 };
const BIG_BYTES = BIG.stream_chunks * BIG.chunk_bytes;

/** Digests the concatenated content of choice 0 as the events arrive (nothing is kept). */
function contentDigester() {
    const h = createHash('sha256');
    const d = { bytes: 0, chunks: 0, digest: null };
    const sse = new SseRecorder({
        lean: true,
        onEvent: (ev) => {
            const c = ev.json;
            if (!c || c.object !== 'chat.completion.chunk') return;
            d.chunks++;
            const ch = c.choices && c.choices[0];
            const t = ch && ch.delta && ch.delta.content;
            if (typeof t === 'string') {
                h.update(t);
                d.bytes += Buffer.byteLength(t);
            }
        },
    });
    d.sse = sse;
    d.finish = () => {
        sse.end();
        d.digest = h.digest('hex');
        return d;
    };
    return d;
}

/** The simulator's own stream for the same fault, read straight from it (the reference). */
async function directDigest(model) {
    const fault = Object.entries(BIG)
        .map(([k, v]) => `${k}=${v}`)
        .join(',');
    const res = await fetch(`${S.simUrl}/openai/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer sim-direct', 'x-sim-fault': fault },
        body: JSON.stringify({ ...chatBody(model), stream: true }),
    });
    assert.equal(res.status, 200);
    const d = contentDigester();
    const dec = new TextDecoder();
    for await (const part of res.body) d.sse.feed(dec.decode(part, { stream: true }));
    d.finish();
    assert.equal(d.sse.done, true, 'the direct stream is whole');
    return d;
}

/** Starts a stream through the gateway with node:http and leaves the response paused. */
function startPausedStream(model) {
    const u = new URL(S.url + '/v1/chat/completions');
    const body = JSON.stringify({ ...chatBody(model), stream: true });
    return new Promise((resolve, reject) => {
        const req = http.request(
            {
                host: u.hostname,
                port: u.port,
                path: u.pathname,
                method: 'POST',
                headers: {
                    'content-type': 'application/json',
                    'content-length': Buffer.byteLength(body),
                    authorization: `Bearer ${S.key}`,
                },
                agent: false,
            },
            (res) => {
                res.pause();
                resolve({ req, res });
            }
        );
        req.on('error', reject);
        req.end(body);
    });
}

async function upstreamActive() {
    const v = await metricSum('tollgate_upstream_active');
    assert.notEqual(v, null, 'tollgate_upstream_active is exposed');
    return v;
}

before(async () => {
    await freshStart(KINDS.map((k) => `${k}-big`).concat(KINDS.map((k) => `${k}-chat`)));
});

describe('slow client backpressure', () => {
    test('a paused client pauses the upstream; memory stays bounded; every byte arrives in order', async () => {
        const model = 'openai-big';
        await setFault(model, BIG);
        const reference = await directDigest(model);
        assert.ok(reference.bytes >= BIG_BYTES, `the simulator produced the big stream (${reference.bytes} bytes)`);

        const rssBefore = gatewayRss();
        const { res } = await startPausedStream(model);
        try {
            assert.equal(res.statusCode, 200);
            assert.ok(res.headers['x-tollgate-request-id'], 'route headers came before the body');
            // Wait until nothing moves any more: the gateway paused the upstream and stopped buffering.
            const rssPaused = await waitStable(gatewayRss, {
                stable: 10,
                slack: 256 * 1024,
                what: 'the gateway RSS to settle while the client is paused',
            });
            assert.ok(await upstreamActive() >= 1, 'the upstream transfer is still open (paused, not finished)');
            const grown = rssPaused - rssBefore;
            assert.ok(
                grown < BIG_BYTES / 4,
                `gateway RSS grew by ${(grown / MiB).toFixed(1)} MiB while holding a paused ` +
                    `${BIG_BYTES / MiB} MiB stream: it must not buffer the stream`
            );

            // Resume: everything arrives, whole and in order.
            const got = contentDigester();
            res.setEncoding('utf8');
            for await (const part of res) got.sse.feed(part);
            got.finish();
            assertNoSecrets(got.sse.raw, 'the big stream');
            assert.equal(got.sse.done, true, '[DONE] came');
            assert.equal(got.sse.errors.length, 0, 'no error event');
            assert.equal(got.chunks, reference.chunks, 'every chunk arrived');
            assert.equal(got.bytes, reference.bytes, 'every byte arrived');
            assert.equal(got.digest, reference.digest, 'the bytes arrived in order, unchanged');
        } finally {
            // A failed assertion must not leave a paused stream holding the upstream open.
            res.destroy();
        }
        await waitFor(async () => (await upstreamActive()) === 0, { what: 'tollgate_upstream_active back to 0' });
    });
});

describe('client disconnects', () => {
    for (const kind of KINDS) {
        test(`${kind}: 15 clients leave mid-stream; nothing stays active; the gateway still serves`, async () => {
            const model = `${kind}-big`;
            // Slow and long, so every client is still mid-stream when it leaves.
            await setFault(model, { stream_chunks: 2000, chunk_bytes: 512, chunk_delay_ms: 5 });
            for (let i = 0; i < 15; i++) {
                const r = await chatStream(chatBody(model), {
                    onChunk: (sse) => (sse.chunks.length >= 2 ? 'abort' : undefined),
                });
                assert.equal(r.status, 200);
                assert.equal(r.aborted, true, 'the client left before the end');
                assert.equal(r.sse.done, false);
            }
            await waitFor(async () => (await upstreamActive()) === 0, {
                what: 'tollgate_upstream_active back to 0 after the disconnects',
            });
            const b = await breakerOf(model);
            assert.equal(b.state, 'closed', 'clients leaving do not open the provider’s breaker');
            assert.equal(b.consecutive_failures || 0, 0, 'a client that left is not a provider failure');
            const ok = await chat(chatBody(`${kind}-chat`));
            assert.equal(ok.status, 200, 'the gateway still serves');
        });
    }

    test('clients that leave before the first byte cancel the upstream attempt; nothing is counted', async () => {
        // A hanging upstream on the fast provider (first_byte_ms 1500): if the gateway kept the
        // attempt after the client left, it would end in a first-byte timeout, logged and counted
        // against the provider's breaker.
        const model = 'openai-hang';
        await freshStart([model]);
        await setFault(model, { hang: true });
        const timeouts = () =>
            gatewayLines()
                .filter((l) => l.includes(`"${targetOf(model)}"`) && l.includes('timeout')).length;
        const timeoutsBefore = timeouts();
        for (let i = 0; i < 3; i++) {
            const ac = new AbortController();
            const p = fetch(`${S.url}/v1/chat/completions`, {
                method: 'POST',
                headers: { 'content-type': 'application/json', authorization: `Bearer ${S.key}` },
                body: JSON.stringify({ ...chatBody(model), stream: true }),
                signal: ac.signal,
            }).catch((e) => e);
            // Leave once the gateway's upstream request is open.
            await waitFor(async () => (await upstreamActive()) >= 1, { what: 'the upstream request to open' });
            ac.abort();
            const r = await p;
            assert.ok(r instanceof Error, 'the request was aborted before any answer');
            await waitFor(async () => (await upstreamActive()) === 0, {
                what: 'tollgate_upstream_active back to 0 after an early disconnect',
            });
            const b = await breakerOf(model);
            assert.equal(b.state, 'closed');
            assert.equal(b.consecutive_failures || 0, 0, 'a client that left is not a provider failure');
        }
        assert.equal(timeouts() - timeoutsBefore, 0, 'no upstream timeout was logged for the abandoned attempts');
        await freshStart([model]);
        assert.equal((await chat(chatBody('openai-chat'))).status, 200, 'the gateway still serves');
    });
});

test('no secret in the gateway log', () => {
    assertLogHasNoSecrets();
});
