// Streams that break after content reached the client count as failures of their target: three
// cut streams open a breaker whose failure_threshold is 3, and the next request is refused with 503
// without reaching the simulator. The model "openai-midstream" has a provider of its own
// ("sim-openai-midstream", breaker threshold 3, open for 10 minutes so it cannot turn half-open
// while the test looks at it), so no other test shares its fault or its breaker.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { assertLogHasNoSecrets, assertOpenAIError, assertRouteHeaders, chat, chatBody, chatStream } from './lib/http.mjs';
import { breakerOf, clearFaults, failoverEvents, freshStart, resetBreaker, setFault, simModel, waitBreaker } from './lib/control.mjs';
import { KINDS, providerOf, targetOf } from './lib/stack.mjs';
import { waitFor, waitStable } from './lib/wait.mjs';

const MODEL = 'openai-midstream';
const THRESHOLD = 3;

before(async () => {
    await freshStart([MODEL]);
    await setFault(MODEL, { drop_after_chunks: 2 });
});

after(async () => {
    await clearFaults();
    await resetBreaker(MODEL);
});

/** A stream that started (200, content reached the client) and was then cut: error event, no [DONE]. */
function assertCutStream(r, n) {
    assert.equal(r.status, 200, `stream ${n}: the stream had started (body: ${r.text.slice(0, 300)})`);
    assertRouteHeaders(r, { model: MODEL, provider: providerOf(MODEL) });
    assert.match(r.headers.get('content-type') || '', /text\/event-stream/);
    assert.ok(r.sse.chunks.length >= 1, `stream ${n}: content reached the client before the cut`);
    assert.equal(r.sse.done, false, `stream ${n}: no [DONE] after a cut`);
    assert.ok(r.sse.errors.length >= 1, `stream ${n}: an SSE error event (tail: ${r.text.slice(-300)})`);
    const last = r.sse.events[r.sse.events.length - 1];
    assert.ok(last.event === 'error' || (last.json && last.json.error), `stream ${n}: the error event is the last`);
    assert.equal(r.sse.afterDone, 0);
}

test('three streams cut mid-way open the breaker; the next request gets 503 without reaching the simulator', async () => {
    const start = await simModel(MODEL);
    const sinceMs = Date.now() - 1000;
    const ids = [];
    for (let n = 1; n <= THRESHOLD; n++) {
        if (n < THRESHOLD) {
            // below the threshold the target stays usable, or the next stream would not reach it
            const b = await breakerOf(MODEL);
            assert.notEqual(b.state, 'open', `breaker still closed before stream ${n}: ${JSON.stringify(b)}`);
        }
        const r = await chatStream(chatBody(MODEL));
        assertCutStream(r, n);
        ids.push(r.headers.get('x-tollgate-request-id'));
        // each stream really went upstream (the fault fired there, the gateway did not invent it)
        await waitFor(async () => (await simModel(MODEL)).requests >= start.requests + n, {
            what: `the simulator to have seen stream ${n}`,
        });
    }

    // Each cut is one `failed` row naming what happened: the provider closed the connection after
    // the head and two chunks. That is not a connect error (issue #9 saw `mid_stream:connect_error`).
    const rows = async () =>
        (await failoverEvents({ since: String(sinceMs), limit: 1000 })).list.filter((e) => ids.includes(e.request_id));
    await waitFor(async () => (await rows()).length >= THRESHOLD, { what: `a failover event per cut stream` });
    await waitStable(async () => (await rows()).length, { stable: 4, every: 60, what: 'the events of the cut streams' });
    for (const e of await rows()) {
        assert.equal(e.kind, 'failed');
        assert.equal(e.from_target, targetOf(MODEL));
        assert.equal(e.reason, 'mid_stream:upstream_closed', `the real reason of the cut: ${JSON.stringify(e)}`);
    }
    assert.equal((await rows()).length, THRESHOLD, 'one row per cut stream');

    // The failure is recorded when the upstream transfer ends, which may trail the client's last byte.
    const b = await waitBreaker(MODEL, 'open', { what: `breaker of ${targetOf(MODEL)} to open after ${THRESHOLD} cut streams` });
    assert.equal(b.target, targetOf(MODEL));

    const seen = (await simModel(MODEL)).requests;
    assert.equal(seen, start.requests + THRESHOLD, 'exactly one upstream request per stream (no retry after the first byte)');

    const r = await chat(chatBody(MODEL));
    assertOpenAIError(r, 503, { code: 'no_target_available' });
    const rs = await chatStream(chatBody(MODEL));
    assert.equal(rs.status, 503, `a stream request is refused the same way (body: ${rs.text.slice(0, 300)})`);
    assert.equal((await simModel(MODEL)).requests, seen, 'an open breaker keeps requests away from the simulator');
    assert.equal((await breakerOf(MODEL)).state, 'open');
});

test('a reset closes the breaker and the target serves again', async () => {
    await clearFaults();
    await resetBreaker(MODEL);
    await waitBreaker(MODEL, 'closed', { what: `breaker of ${targetOf(MODEL)} to close after a reset` });
    const before = (await simModel(MODEL)).requests;
    const r = await chatStream(chatBody(MODEL));
    assert.equal(r.status, 200);
    assert.equal(r.sse.done, true, 'a whole stream once the fault is gone');
    assert.equal(r.sse.errors.length, 0);
    assert.equal((await simModel(MODEL)).requests, before + 1);
});

// One rule for an SSE event over limits.max_sse_event_bytes (64 KiB in the test config), whatever the
// provider kind: the simulator pads every content piece past it, so the first content event is
// oversized. Nothing of the answer has reached the client then, so the attempt fails like any other
// unreadable answer (`stream_event_too_large`): a chain of one answers 502 upstream_protocol.
// OpenAI and Anthropic streams used to commit on their role-only opening chunk and end with an
// in-stream "upstream stream ended before completion" instead, while Gemini (no such chunk) got
// the 502: the relay now holds opening chunks until the first chunk with something for the client
// (FAILOVER.md, "Streams: the first byte").
for (const kind of KINDS) {
    test(`${kind}: an oversized first content event fails the attempt before the first byte`, async () => {
        const model = `${kind}-faults`;
        await freshStart([model]);
        await setFault(model, { chunk_bytes: 70000, stream_chunks: 2 });
        const r = await chatStream(chatBody(model));
        await clearFaults();
        assertOpenAIError(r, 502, { code: 'upstream_protocol' });
        assert.match(r.json.error.message, /stream_event_too_large/);
    });
}

test('no secret in the gateway log', () => {
    assertLogHasNoSecrets();
});
