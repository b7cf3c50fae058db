// End to end with the official `openai` npm SDK against the running gateway (issue #2 item 6,
// issue #3 item 6): for each provider kind behind the OpenAI API, non-stream, stream with usage,
// a tool-call round trip (streamed too), and the SDK's typed errors for 400, 401 and 404.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { assertNoSecrets } from '../integration/lib/http.mjs';
import { clearFaults } from '../integration/lib/control.mjs';
import { KINDS, stack } from '../integration/lib/stack.mjs';

const S = stack();
const client = new OpenAI({ baseURL: `${S.url}/v1`, apiKey: S.key, maxRetries: 0, timeout: 30000 });

const WEATHER_TOOL = {
    type: 'function',
    function: {
        name: 'get_weather',
        description: 'Current weather of a city',
        parameters: {
            type: 'object',
            properties: {
                city: { type: 'string', description: 'City name' },
                unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
                days: { type: 'integer' },
            },
            required: ['city', 'unit'],
        },
    },
};

const PROMPT = [{ role: 'user', content: 'What is the weather in Paris?' }];

async function collect(stream) {
    const out = { text: '', chunks: 0, usage: null, finish: [], tools: new Map(), ids: new Set() };
    for await (const chunk of stream) {
        out.chunks++;
        out.ids.add(chunk.id);
        assertNoSecrets(JSON.stringify(chunk), 'an SDK stream chunk');
        if (chunk.usage) out.usage = chunk.usage;
        for (const ch of chunk.choices || []) {
            if (ch.delta && typeof ch.delta.content === 'string') out.text += ch.delta.content;
            if (ch.finish_reason) out.finish.push(ch.finish_reason);
            for (const tc of (ch.delta && ch.delta.tool_calls) || []) {
                const t = out.tools.get(tc.index) || { id: '', name: '', args: '' };
                if (tc.id) t.id = tc.id;
                if (tc.function && tc.function.name) t.name += tc.function.name;
                if (tc.function && tc.function.arguments) t.args += tc.function.arguments;
                out.tools.set(tc.index, t);
            }
        }
    }
    return out;
}

function assertUsage(u) {
    assert.ok(u, 'usage present');
    assert.ok(Number.isInteger(u.prompt_tokens) && u.prompt_tokens > 0, 'prompt_tokens');
    assert.ok(Number.isInteger(u.completion_tokens) && u.completion_tokens > 0, 'completion_tokens');
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens, 'total_tokens');
}

function assertWeatherArgs(text) {
    const args = JSON.parse(text);
    assert.equal(typeof args.city, 'string', 'arguments.city is a string, from the schema');
    assert.ok(['celsius', 'fahrenheit'].includes(args.unit), `arguments.unit is one of the enum (${args.unit})`);
    return args;
}

before(async () => {
    await clearFaults();
});

for (const kind of KINDS) {
    const model = `${kind}-e2e`;

    describe(`${kind} kind through the openai SDK`, () => {
        test('non-stream completion', async () => {
            const r = await client.chat.completions.create({ model, messages: PROMPT });
            assert.equal(r.object, 'chat.completion');
            assert.equal(r.model, model);
            assert.equal(r.choices[0].message.role, 'assistant');
            assert.ok(r.choices[0].message.content.includes('Paris'), 'the answer echoes the prompt (simulator)');
            assert.equal(r.choices[0].finish_reason, 'stop');
            assertUsage(r.usage);
        });

        test('headers: request id, model and provider', async () => {
            const { data, response } = await client.chat.completions
                .create({ model, messages: PROMPT })
                .withResponse();
            assert.ok(data.id);
            assert.ok(response.headers.get('x-tollgate-request-id'));
            assert.equal(response.headers.get('x-tollgate-model'), model);
            assert.equal(response.headers.get('x-tollgate-provider'), `sim-${kind}`);
        });

        test('stream with usage equals the non-stream answer', async () => {
            const whole = await client.chat.completions.create({ model, messages: PROMPT });
            const s = await collect(
                await client.chat.completions.create({
                    model,
                    messages: PROMPT,
                    stream: true,
                    stream_options: { include_usage: true },
                })
            );
            assert.ok(s.chunks >= 2);
            assert.equal(s.ids.size, 1, 'one id for the whole stream');
            assert.equal(s.text, whole.choices[0].message.content);
            assert.deepEqual(s.finish, ['stop']);
            assertUsage(s.usage);
            assert.equal(s.usage.prompt_tokens, whole.usage.prompt_tokens);
            assert.equal(s.usage.completion_tokens, whole.usage.completion_tokens);
        });

        test('stream without include_usage carries no usage', async () => {
            const s = await collect(await client.chat.completions.create({ model, messages: PROMPT, stream: true }));
            assert.equal(s.usage, null);
            assert.ok(s.text.length > 0);
        });

        test('tool call round trip: required tool -> tool_calls -> tool result -> final text', async () => {
            const first = await client.chat.completions.create({
                model,
                messages: PROMPT,
                tools: [WEATHER_TOOL],
                tool_choice: 'required',
            });
            const msg = first.choices[0].message;
            assert.equal(first.choices[0].finish_reason, 'tool_calls');
            assert.equal(msg.tool_calls.length, 1);
            const call = msg.tool_calls[0];
            assert.equal(call.type, 'function');
            assert.equal(call.function.name, 'get_weather');
            assert.ok(call.id, 'the call has an id');
            assertWeatherArgs(call.function.arguments);
            assertUsage(first.usage);

            const result = 'Sunny, 21 degrees, light wind';
            const second = await client.chat.completions.create({
                model,
                messages: [
                    ...PROMPT,
                    { role: 'assistant', content: null, tool_calls: msg.tool_calls },
                    { role: 'tool', tool_call_id: call.id, content: result },
                ],
                tools: [WEATHER_TOOL],
            });
            assert.equal(second.choices[0].finish_reason, 'stop');
            const text = second.choices[0].message.content;
            assert.ok(text.includes(result), `the final answer uses the tool result: ${text}`);
            assertUsage(second.usage);
        });

        test('a named tool_choice, streamed: tool-call deltas add up to the same call', async () => {
            const named = { type: 'function', function: { name: 'get_weather' } };
            const whole = await client.chat.completions.create({
                model,
                messages: PROMPT,
                tools: [WEATHER_TOOL],
                tool_choice: named,
            });
            const s = await collect(
                await client.chat.completions.create({
                    model,
                    messages: PROMPT,
                    tools: [WEATHER_TOOL],
                    tool_choice: named,
                    stream: true,
                    stream_options: { include_usage: true },
                })
            );
            assert.deepEqual(s.finish, ['tool_calls']);
            assert.equal(s.tools.size, 1);
            const t = s.tools.get(0);
            assert.equal(t.name, 'get_weather');
            assert.ok(t.id);
            assert.deepEqual(assertWeatherArgs(t.args), JSON.parse(whole.choices[0].message.tool_calls[0].function.arguments));
            assertUsage(s.usage);
        });
    });
}

describe('typed errors', () => {
    test('400 -> BadRequestError', async () => {
        await assert.rejects(
            client.chat.completions.create({ model: 'openai-e2e', messages: PROMPT, temperature: 'hot' }),
            (e) => {
                assert.ok(e instanceof OpenAI.BadRequestError, `BadRequestError, got ${e && e.constructor.name}`);
                assert.equal(e.status, 400);
                assert.equal(e.param, 'temperature');
                return true;
            }
        );
    });

    test('401 -> AuthenticationError', async () => {
        const bad = new OpenAI({ baseURL: `${S.url}/v1`, apiKey: 'tg_' + 'x'.repeat(43), maxRetries: 0 });
        await assert.rejects(bad.chat.completions.create({ model: 'openai-e2e', messages: PROMPT }), (e) => {
            assert.ok(e instanceof OpenAI.AuthenticationError, `AuthenticationError, got ${e && e.constructor.name}`);
            assert.equal(e.status, 401);
            return true;
        });
    });

    test('404 -> NotFoundError', async () => {
        await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages: PROMPT }), (e) => {
            assert.ok(e instanceof OpenAI.NotFoundError, `NotFoundError, got ${e && e.constructor.name}`);
            assert.equal(e.status, 404);
            assert.equal(e.code, 'model_not_found');
            return true;
        });
    });

    test('models.list() through the SDK', async () => {
        const ids = [];
        for await (const m of client.models.list()) ids.push(m.id);
        for (const k of KINDS) assert.ok(ids.includes(`${k}-e2e`), `${k}-e2e listed`);
    });
});

// The credit ledger through the SDK (issue #11 item 7): a gateway of this file's own with billing
// on; the SDK reads x-tollgate-credits-remaining from each answer, and the drop between two answers
// is exactly the cost recorded for the second request.
describe('credits through the SDK', () => {
    let inst = null;
    let tid = 0;
    const model = `e2e-ledger-${process.pid}`;

    before(async () => {
        const { startInstance, baseConfig } = await import('../integration/lib/instance.mjs');
        const { billingOn, setPrice, tenantId, topUp } = await import('../integration/lib/ledger.mjs');
        await setPrice(model, { input: 1500000, output: 6000000, cached: 750000 });
        inst = await startInstance(
            (ctx) =>
                baseConfig({
                    ...ctx,
                    providers: { 'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
                    models: { [model]: { provider: 'sim-openai', upstream: 'openai-e2e', context_window: 128000 } },
                    extra: { billing: billingOn(ctx.dir) },
                }),
            { tenant: `e2e-ledger-${process.pid}` }
        );
        tid = await tenantId(`e2e-ledger-${process.pid}`);
        await topUp(tid, 20000000, `e2e-${process.pid}`);
    });

    test('x-tollgate-credits-remaining drops by exactly the recorded cost', async (t) => {
        t.after(async () => inst && (await inst.stop()));
        const { records, waitRecords, assertLedgerClean } = await import('../integration/lib/ledger.mjs');
        const sdk = new OpenAI({ baseURL: `${inst.url}/v1`, apiKey: inst.key, maxRetries: 0, timeout: 30000 });
        const first = await sdk.chat.completions.create({ model, messages: PROMPT }).withResponse();
        const rem1 = Number(first.response.headers.get('x-tollgate-credits-remaining'));
        assert.ok(rem1 > 0, 'the first answer carries the credits');
        const second = await sdk.chat.completions
            .create({ model, messages: [{ role: 'user', content: 'And in Lyon, with the forecast for the week?' }] })
            .withResponse();
        const rem2 = Number(second.response.headers.get('x-tollgate-credits-remaining'));
        const rid = second.response.headers.get('x-tollgate-request-id');
        await waitRecords(tid, 2);
        const rec = (await records(tid)).find((r) => r.requestId === rid);
        assert.ok(rec, 'the second request is recorded');
        assert.ok(rec.cost > 0);
        assert.equal(rem1 - rem2, rec.cost, 'the credits dropped by exactly the recorded cost');
        assert.equal(Number(second.response.headers.get('x-tollgate-cost')), rec.cost);

        // a stream: the SDK hands over the usage chunk's cost as the gateway wrote it
        const stream = await sdk.chat.completions.create({ model, messages: PROMPT, stream: true, stream_options: { include_usage: true } });
        const got = await collect(stream);
        assertUsage(got.usage);
        assert.ok(Number.isInteger(got.usage.cost) && got.usage.cost > 0, `the usage chunk has a cost: ${JSON.stringify(got.usage)}`);
        await waitRecords(tid, 3);
        assert.equal((await records(tid)).at(-1).cost, got.usage.cost);
        await assertLedgerClean('after the SDK test');
    });
});
