// Streams that end without the provider's own end, for each provider kind:
//   - cut by the provider after two content events: the request's log line counts what reached the
//     client (completion_tokens from the delivered characters, marked as an estimate), because the
//     ledger will charge on it;
//   - ended by the provider's own in-stream error event, after content or before any: the
//     provider's words are logged (upstream_stream_error), the client gets the error table's.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { assertLogHasNoSecrets, chatBody, chatStream, gatewayEvents } from './lib/http.mjs';
import { clearFaults, freshStart, resetBreakers, setFault } from './lib/control.mjs';
import { waitFor } from './lib/wait.mjs';

const KINDS = ['openai', 'anthropic', 'gemini'];
const PROVIDER_WORDS = {
    openai: 'The server had an error',
    anthropic: 'Overloaded',
    gemini: 'The model is overloaded',
};

after(async () => {
    await clearFaults();
    await resetBreakers(KINDS.map((k) => `${k}-chat`));
});

/** The gateway's log events (one JSON object a line) that satisfy pred, once at least one does. */
async function logged(pred, what) {
    let found = [];
    await waitFor(
        () => {
            found = gatewayEvents().filter(pred);
            return found.length > 0;
        },
        { what }
    );
    return found;
}

/** Characters of content and tool arguments the client received. */
function deliveredChars(sse) {
    let n = 0;
    for (const c of sse.chunks)
        for (const ch of c.json.choices || []) {
            if (typeof ch.delta?.content === 'string') n += ch.delta.content.length;
            for (const tc of ch.delta?.tool_calls || [])
                if (typeof tc.function?.arguments === 'string') n += tc.function.arguments.length;
        }
    return n;
}

for (const kind of KINDS) {
    const model = `${kind}-chat`;

    test(`${kind}: a stream cut after two content events is charged for what reached the client`, async () => {
        await freshStart([model]);
        await setFault(model, { drop_after_chunks: 2, stream_chunks: 8 });
        const r = await chatStream(chatBody(model));
        assert.equal(r.status, 200, 'the stream had started');
        assert.equal(r.sse.done, false, 'no [DONE] after a cut');
        assert.ok(r.sse.chunks.length >= 1, 'content reached the client before the cut');
        const chars = deliveredChars(r.sse);
        assert.ok(chars > 0, 'the delivered chunks carry content');
        const id = r.headers.get('x-tollgate-request-id');
        const [line] = await logged((e) => e.event === 'request' && e.request_id === id, `the log line of ${id}`);
        assert.equal(line.mid_stream_failure, 1, 'logged as cut');
        assert.equal(line.usage_estimated, 1, 'the provider reported no final usage: the count is an estimate');
        assert.ok(
            line.completion_tokens >= Math.ceil(chars / 4),
            `completion_tokens ${line.completion_tokens} covers the ${chars} delivered characters`
        );
    });

    test(`${kind}: the provider's in-stream error after content is logged with its own words`, async () => {
        await freshStart([model]);
        await setFault(model, { error_after_chunks: 2, stream_chunks: 8 });
        const r = await chatStream(chatBody(model));
        assert.equal(r.status, 200, 'the stream had started');
        assert.equal(r.sse.done, false, 'no [DONE] after an error');
        const last = r.sse.events[r.sse.events.length - 1];
        assert.equal(last.json?.error?.code, 'stream_broken', 'the client gets the error table\'s event');
        const id = r.headers.get('x-tollgate-request-id');
        const [ev] = await logged(
            (e) => e.event === 'upstream_stream_error' && e.request_id === id,
            `upstream_stream_error for ${id}`
        );
        assert.ok(ev.message.includes(PROVIDER_WORDS[kind]), `the provider's message is logged: ${ev.message}`);
        assert.equal(ev.committed, 1);
    });

    test(`${kind}: the provider's in-stream error before any content is logged too`, async () => {
        await freshStart([model]);
        await setFault(model, { error_after_chunks: 0 });
        const r = await chatStream(chatBody(model));
        // One rule for every kind: opening chunks that carry nothing for the client (OpenAI's role
        // chunk, Anthropic's message_start) do not commit the stream, so an error before the first
        // content fails the attempt, and the plan's 503 names it.
        assert.equal(r.status, 503, `nothing was committed: the plan's answer (body: ${r.text.slice(0, 300)})`);
        assert.match(r.text, /stream_error/, 'the attempts name the in-stream error');
        const id = r.headers.get('x-tollgate-request-id');
        const [ev] = await logged(
            (e) => e.event === 'upstream_stream_error' && e.request_id === id,
            `upstream_stream_error for ${id}`
        );
        assert.ok(ev.message.includes(PROVIDER_WORDS[kind]), `the provider's message is logged: ${ev.message}`);
        assert.equal(ev.committed, 0);
    });
}

test('no secret in the gateway log', () => {
    assertLogHasNoSecrets();
});
