// The spine (issue #2): the OpenAI-compatible data plane through the gateway, against the
// simulator, for every provider kind. Models are named in config.template.json ("<kind>-chat", ...).
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
    assertLogHasNoSecrets,
    assertOpenAIError,
    assertRouteHeaders,
    chat,
    chatBody,
    chatStream,
    gw,
    sim,
} from './lib/http.mjs';
import { freshStart, metricsText, parseMetrics, setFault, simModel } from './lib/control.mjs';
import { KINDS, stack } from './lib/stack.mjs';

const S = stack();
const PROMPT = 'Say hello to the test suite.';

/** The same one-message request in the provider's own wire format, straight to the simulator. */
async function simDirectUsage(kind, model) {
    if (kind === 'openai') {
        const r = await sim('POST', '/openai/v1/chat/completions', {
            headers: { authorization: 'Bearer sim-direct' },
            body: { model, messages: [{ role: 'user', content: PROMPT }] },
        });
        assert.equal(r.status, 200, `sim direct openai: ${r.text.slice(0, 200)}`);
        return { prompt: r.json.usage.prompt_tokens, completion: r.json.usage.completion_tokens };
    }
    if (kind === 'anthropic') {
        const r = await sim('POST', '/anthropic/v1/messages', {
            headers: { 'x-api-key': 'sim-direct', 'anthropic-version': '2023-06-01' },
            body: { model, max_tokens: 1024, messages: [{ role: 'user', content: PROMPT }] },
        });
        assert.equal(r.status, 200, `sim direct anthropic: ${r.text.slice(0, 200)}`);
        const u = r.json.usage;
        return {
            prompt: u.input_tokens + (u.cache_read_input_tokens || 0) + (u.cache_creation_input_tokens || 0),
            completion: u.output_tokens,
        };
    }
    const r = await sim('POST', `/gemini/v1beta/models/${model}:generateContent`, {
        headers: { 'x-goog-api-key': 'sim-direct' },
        body: { contents: [{ role: 'user', parts: [{ text: PROMPT }] }] },
    });
    assert.equal(r.status, 200, `sim direct gemini: ${r.text.slice(0, 200)}`);
    const u = r.json.usageMetadata;
    return { prompt: u.promptTokenCount, completion: u.candidatesTokenCount };
}

function assertCompletion(r, model) {
    assert.equal(r.status, 200, `status (body: ${r.text.slice(0, 300)})`);
    const j = r.json;
    assert.equal(j.object, 'chat.completion');
    assert.equal(typeof j.id, 'string');
    assert.equal(j.model, model);
    assert.equal(j.choices.length, 1);
    assert.equal(j.choices[0].index, 0);
    assert.equal(j.choices[0].message.role, 'assistant');
    assert.equal(typeof j.choices[0].message.content, 'string');
    assert.ok(j.choices[0].message.content.length > 0, 'non-empty answer');
    assert.equal(j.choices[0].finish_reason, 'stop');
    const u = j.usage;
    assert.ok(Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0, 'usage.prompt_tokens');
    assert.ok(Number.isInteger(u.completion_tokens) && u.completion_tokens > 0, 'usage.completion_tokens');
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
}

/** A stream that broke after it started: an error event, and no [DONE]. */
function assertBrokenStream(r) {
    if (r.status !== 200) {
        // Broke before the first byte reached the client: then it is a plain error answer.
        assertOpenAIError(r, r.status);
        assert.ok(r.status >= 500, `a broken upstream is a 5xx (got ${r.status})`);
        return 'before-first-byte';
    }
    assert.match(r.headers.get('content-type') || '', /text\/event-stream/);
    assert.equal(r.sse.done, false, 'no [DONE] after a broken stream');
    assert.ok(r.sse.errors.length >= 1, `an SSE error event ends the stream (body: ${r.text.slice(-300)})`);
    const last = r.sse.events[r.sse.events.length - 1];
    assert.ok(last.event === 'error' || (last.json && last.json.error), 'the error event is the last event');
    if (last.json && last.json.error) {
        const e = last.json.error;
        assert.equal(typeof e.message, 'string');
        assert.equal(typeof e.type, 'string');
    }
    return 'mid-stream';
}

before(async () => {
    const models = [];
    for (const k of KINDS) models.push(`${k}-chat`, `${k}-chat-2`, `${k}-faults`, `${k}-hang`, `${k}-dead`);
    await freshStart(models);
});

describe('listeners', () => {
    for (const [name, base] of [
        ['data', () => S.url],
        ['admin', () => S.adminUrl],
    ]) {
        test(`${name} listener answers /healthz and /readyz`, async () => {
            for (const path of ['/healthz', '/readyz']) {
                const r = await fetch(base() + path);
                await r.text();
                assert.equal(r.status, 200, `${name} ${path}`);
            }
        });
    }

    test('/metrics on the admin listener has every family of CONVENTIONS.md', async () => {
        // One answered request first, so the per-request families have a sample.
        assert.equal((await chat(chatBody('openai-chat'))).status, 200);
        const text = await metricsText();
        const samples = parseMetrics(text);
        for (const fam of [
            'tollgate_requests_total',
            'tollgate_failovers_total',
            'tollgate_breaker_state',
            'tollgate_attempt_duration_seconds',
            'tollgate_upstream_active',
            'tollgate_events_dropped_total',
        ]) {
            const declared = new RegExp(`^# TYPE ${fam} `, 'm').test(text);
            const sampled = samples.some((s) => s.name === fam || s.name.startsWith(fam + '_'));
            assert.ok(declared || sampled, `metric family ${fam} is exposed`);
        }
        assert.match(text, /^# TYPE tollgate_attempt_duration_seconds histogram/m);
        const req = samples.filter((s) => s.name === 'tollgate_requests_total');
        assert.ok(req.some((s) => s.labels.status === '200' && s.value >= 1), 'a 200 was counted');
    });

    test('the data listener does not serve /metrics', async () => {
        const r = await gw('GET', '/metrics');
        assert.notEqual(r.status, 200);
    });

    test('GET /v1/models lists every configured model', async () => {
        const r = await gw('GET', '/v1/models');
        assert.equal(r.status, 200);
        assert.equal(r.json.object, 'list');
        const ids = new Set(r.json.data.map((m) => m.id));
        for (const name of Object.keys(S.cfg.models)) assert.ok(ids.has(name), `model ${name} listed`);
        for (const m of r.json.data) assert.equal(m.object, 'model');
    });
});

for (const kind of KINDS) {
    describe(`${kind} kind: answers`, () => {
        const model = `${kind}-chat`;
        const provider = `sim-${kind}`;

        test('non-stream completion with usage and route headers', async () => {
            const r = await chat(chatBody(model));
            assertCompletion(r, model);
            assertRouteHeaders(r, { model, provider });
            assert.match(r.headers.get('content-type') || '', /application\/json/);
        });

        test('usage equals the simulator’s own answer to the same request', async () => {
            const r = await chat(chatBody(model));
            assertCompletion(r, model);
            const direct = await simDirectUsage(kind, model);
            assert.equal(r.json.usage.prompt_tokens, direct.prompt, 'prompt tokens');
            assert.equal(r.json.usage.completion_tokens, direct.completion, 'completion tokens');
        });

        test('a second model of the same kind answers under its own name', async () => {
            const r = await chat(chatBody(`${kind}-chat-2`));
            assertCompletion(r, `${kind}-chat-2`);
            assertRouteHeaders(r, { model: `${kind}-chat-2`, provider });
        });

        test('stream without include_usage: chunks, [DONE], no usage chunk', async () => {
            const r = await chatStream(chatBody(model));
            assert.equal(r.status, 200, r.text.slice(0, 300));
            assert.match(r.headers.get('content-type') || '', /text\/event-stream/);
            assertRouteHeaders(r, { model, provider });
            assert.ok(r.sse.chunks.length >= 2, 'several chunks');
            assert.equal(r.sse.done, true, '[DONE] came');
            assert.equal(r.sse.afterDone, 0, 'nothing after [DONE]');
            assert.equal(r.sse.errors.length, 0, 'no error event');
            assert.equal(r.sse.usageChunks.length, 0, 'no usage chunk when the client did not ask');
            assert.ok(r.sse.text.length > 0, 'content arrived');
            assert.deepEqual(r.sse.finishReasons, ['stop']);
            for (const c of r.sse.chunks) {
                assert.equal(c.json.model, model);
                assert.equal(c.json.id, r.sse.chunks[0].json.id, 'one id for the whole stream');
            }
        });

        test('stream with include_usage: one usage chunk, last, equal to the non-stream usage', async () => {
            const whole = await chat(chatBody(model));
            assertCompletion(whole, model);
            const r = await chatStream(chatBody(model, { stream_options: { include_usage: true } }));
            assert.equal(r.status, 200, r.text.slice(0, 300));
            assert.equal(r.sse.done, true);
            const uc = r.sse.usageChunks;
            assert.equal(uc.length, 1, 'exactly one usage chunk');
            assert.equal(uc[0], r.sse.chunks[r.sse.chunks.length - 1], 'the usage chunk is the last chunk');
            assert.deepEqual(uc[0].json.choices, [], 'the usage chunk has no choices');
            const u = uc[0].json.usage;
            assert.equal(u.prompt_tokens, whole.json.usage.prompt_tokens);
            assert.equal(u.completion_tokens, whole.json.usage.completion_tokens);
            assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
            assert.equal(r.sse.text, whole.json.choices[0].message.content, 'same text as the whole answer');
        });
    });
}

describe('request errors', () => {
    const good = chatBody('openai-chat');

    test('malformed JSON -> 400 invalid_json', async () => {
        const r = await chat('{"model": "openai-chat", "messages": [');
        assertOpenAIError(r, 400, { code: 'invalid_json', type: 'invalid_request_error' });
    });

    test('a body that is not an object -> 400', async () => {
        assertOpenAIError(await chat('[1,2,3]'), 400, { type: 'invalid_request_error' });
    });

    for (const [what, body, param] of [
        ['missing model', { messages: good.messages }, 'model'],
        ['missing messages', { model: 'openai-chat' }, 'messages'],
        ['model not a string', { ...good, model: 42 }, 'model'],
        ['messages not an array', { ...good, messages: 'hi' }, 'messages'],
        ['temperature not a number', { ...good, temperature: 'hot' }, 'temperature'],
        ['stream not a boolean', { ...good, stream: 'yes' }, 'stream'],
        ['max_tokens not an integer', { ...good, max_tokens: 'many' }, 'max_tokens'],
        ['a message role not a string', { ...good, messages: [{ role: 7, content: 'x' }] }, 'messages[0].role'],
    ]) {
        test(`${what} -> 400 naming param ${param}`, async () => {
            const r = await chat(body);
            assertOpenAIError(r, 400, { type: 'invalid_request_error', param });
        });
    }

    test('unknown model -> 404 model_not_found', async () => {
        const r = await chat(chatBody('no-such-model'));
        assertOpenAIError(r, 404, { code: 'model_not_found' });
    });

    test('body over limits.max_body_bytes -> 413', async () => {
        const limit = S.cfg.limits.max_body_bytes;
        const r = await chat(chatBody('openai-chat', { messages: [{ role: 'user', content: 'x'.repeat(limit + 1) }] }));
        assertOpenAIError(r, 413, { code: 'too_large' });
        // The limit is a limit, not an off-by-one: a body just under it is served.
        const fill = 'y'.repeat(limit - 200);
        const ok = await chat(chatBody('openai-chat', { messages: [{ role: 'user', content: fill }] }));
        assert.equal(ok.status, 200, `a body under the limit is served: ${ok.text.slice(0, 200)}`);
    });

    for (const [what, key] of [
        ['no key', null],
        ['a malformed key', 'not-a-tollgate-key'],
        ['an unknown well-formed key', 'tg_' + 'A'.repeat(43)],
        ['the right key with one character changed', null],
    ]) {
        test(`${what} -> 401 authentication_error`, async () => {
            let k = key;
            if (what.startsWith('the right key')) k = S.key.slice(0, -1) + (S.key.endsWith('A') ? 'B' : 'A');
            const r = await chat(good, { key: k });
            assertOpenAIError(r, 401, { type: 'authentication_error' });
            // twice: the negative cache answers the same
            assertOpenAIError(await chat(good, { key: k }), 401, { type: 'authentication_error' });
        });
    }

    test('a non-Bearer authorization header -> 401', async () => {
        const r = await chat(good, { key: null, headers: { authorization: `Basic ${S.key}` } });
        assertOpenAIError(r, 401, { type: 'authentication_error' });
    });
});

for (const kind of KINDS) {
    describe(`${kind} kind: upstream failures`, () => {
        const faults = `${kind}-faults`;

        test('upstream unreachable -> 502', async () => {
            const r = await chat(chatBody(`${kind}-dead`));
            assertOpenAIError(r, 502);
            // No model served it: only the request id is promised on an error answer.
            assert.ok(r.headers.get('x-tollgate-request-id'), 'x-tollgate-request-id on an error answer');
        });

        test('upstream hangs (non-stream) -> 504', async () => {
            await freshStart([`${kind}-hang`]);
            await setFault(`${kind}-hang`, { hang: true });
            const r = await chat(chatBody(`${kind}-hang`));
            assertOpenAIError(r, 504, { type: 'timeout_error' });
        });

        test('upstream hangs (stream) -> 504 before the first byte', async () => {
            await freshStart([`${kind}-hang`]);
            await setFault(`${kind}-hang`, { hang: true });
            const r = await chatStream(chatBody(`${kind}-hang`));
            assertOpenAIError(r, 504, { type: 'timeout_error' });
        });

        test('a stream that stalls past idle_ms ends with an error event, no [DONE]', async () => {
            await freshStart([`${kind}-hang`]);
            // The first chunk comes at once; the next ones only after far more than idle_ms (1500).
            await setFault(`${kind}-hang`, { chunk_delay_ms: 60000 });
            const r = await chatStream(chatBody(`${kind}-hang`));
            assertBrokenStream(r);
        });

        test('the caller’s own error upstream (400) -> 400 with a normalised body', async () => {
            await freshStart([faults]);
            await setFault(faults, { status: 400 });
            const r = await chat(chatBody(faults));
            const e = assertOpenAIError(r, 400, { type: 'invalid_request_error' });
            assert.doesNotMatch(JSON.stringify(r.json), /"type"\s*:\s*"error"|"status"\s*:\s*"INVALID_ARGUMENT"/,
                'the provider’s own error shape is not passed through');
            assert.ok(e.message.length < 1024);
        });

        // A chain of one whose only attempt failed: issue #4's rule for a failed chain applies
        // (503 naming the attempt), not a pass-through of the upstream status.
        for (const status of [429, 500, 502, 503, 504, 529]) {
            test(`upstream ${status} (single-model chain) -> 503 naming the attempt, OpenAI-shaped`, async () => {
                await freshStart([faults]);
                await setFault(faults, { status, retry_after_s: 1 });
                const before = await simModel(faults);
                const r = await chat(chatBody(faults));
                const e = assertOpenAIError(r, 503);
                assert.ok(e.message.includes(String(status)) || /rate_limited|overloaded/.test(e.message),
                    `the message names the upstream failure: ${e.message}`);
                assert.ok(!/<html|"type"\s*:\s*"error"/i.test(r.text), 'no provider body passed through');
                // A 429 with a short Retry-After (1 s) and no other target: one retry of the same
                // target after the wait (issue #4 item 2); every other status: one attempt.
                const n = status === 429 ? 2 : 1;
                assert.equal(r.headers.get('x-tollgate-attempts'), String(n));
                const after = await simModel(faults);
                assert.equal(after.requests - before.requests, n, `${n} attempt(s) reached the simulator`);
                assert.equal(
                    (after.by_status[String(status)] || 0) - (before.by_status[String(status)] || 0), n,
                    `the simulator answered ${status}`
                );
            });
        }

        test('upstream 429 with a long Retry-After -> no retry, 503', async () => {
            await freshStart([faults]);
            await setFault(faults, { status: 429, retry_after_s: 60 });
            const before = await simModel(faults);
            const r = await chat(chatBody(faults));
            assertOpenAIError(r, 503);
            assert.equal(r.headers.get('x-tollgate-attempts'), '1');
            assert.equal((await simModel(faults)).requests - before.requests, 1, 'no retry of the same target');
        });

        test('fail_first: 2 -> two failures, then served', async () => {
            await freshStart([faults]);
            await setFault(faults, { status: 503, fail_first: 2 });
            const before = await simModel(faults);
            assert.equal((await chat(chatBody(faults))).status, 503);
            assert.equal((await chat(chatBody(faults))).status, 503);
            const r = await chat(chatBody(faults));
            assertCompletion(r, faults);
            const after = await simModel(faults);
            assert.equal((after.by_status['503'] || 0) - (before.by_status['503'] || 0), 2);
            assert.equal((after.by_status['200'] || 0) - (before.by_status['200'] || 0), 1);
        });

        test('latency_ms and ttft_ms below the timeouts: served whole', async () => {
            await freshStart([faults]);
            await setFault(faults, { latency_ms: 200, ttft_ms: 200 });
            assertCompletion(await chat(chatBody(faults)), faults);
            const r = await chatStream(chatBody(faults, { stream_options: { include_usage: true } }));
            assert.equal(r.status, 200);
            assert.equal(r.sse.done, true);
            assert.equal(r.sse.usageChunks.length, 1);
        });

        test('chunk_delay_ms: the stream is relayed whole, chunk by chunk', async () => {
            await freshStart([faults]);
            const plain = await chatStream(chatBody(faults));
            await setFault(faults, { chunk_delay_ms: 30 });
            const r = await chatStream(chatBody(faults));
            assert.equal(r.status, 200);
            assert.equal(r.sse.done, true);
            assert.equal(r.sse.text, plain.sse.text, 'same content as without delays');
        });

        test('drop_after_chunks: 2 -> error event, no [DONE]', async () => {
            await freshStart([faults]);
            await setFault(faults, { drop_after_chunks: 2 });
            const r = await chatStream(chatBody(faults));
            assert.equal(r.status, 200, 'the stream had started');
            assertBrokenStream(r);
            assertRouteHeaders(r, { model: faults });
        });

        test('malformed upstream answer (non-stream) -> 502 upstream error', async () => {
            await freshStart([faults]);
            await setFault(faults, { malformed: true });
            const r = await chat(chatBody(faults));
            assertOpenAIError(r, 502);
        });

        test('malformed upstream stream -> error (before or after the first byte), never [DONE]', async () => {
            await freshStart([faults]);
            await setFault(faults, { malformed: true });
            const r = await chatStream(chatBody(faults));
            assertBrokenStream(r);
        });
    });
}

test('no secret in the gateway log', () => {
    const log = assertLogHasNoSecrets();
    assert.ok(log.length > 0, 'the gateway wrote a log');
});
