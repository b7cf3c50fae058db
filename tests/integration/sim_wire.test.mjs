// tollgate-sim wire formats: OpenAI, Anthropic and Gemini, non-stream and stream, usage, tool calls,
// tool results, model lists and --require-key. Run: node --test tests/integration/sim_wire.test.mjs
// The binary comes from TG_SIM_BIN (default build/gateway/tollgate-sim under the repository root).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.TG_SIM_BIN || path.join(ROOT, 'build', 'gateway', 'tollgate-sim');

async function startSim(extra = []) {
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0', ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    proc.on('error', reject);
    proc.on('exit', (code) => reject(new Error(`tollgate-sim exited with ${code}`)));
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
  });
  return { proc, url };
}

async function stopSim(sim) {
  if (!sim) return;
  const done = new Promise((r) => sim.proc.once('exit', r));
  sim.proc.kill('SIGTERM');
  const code = await done;
  assert.equal(code, 0, 'tollgate-sim exits 0 on SIGTERM');
}

let sim;
before(async () => {
  sim = await startSim();
});
after(async () => {
  await stopSim(sim);
});

const post = (p, body, headers = {}) =>
  fetch(sim.url + p, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

// SSE events: [{event, data}] split on blank lines (\n\n or \r\n\r\n).
function parseSSE(text) {
  return text
    .split(/\r?\n\r?\n/)
    .filter((b) => b.trim() !== '')
    .map((block) => {
      const ev = { event: null, data: '' };
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event: ')) ev.event = line.slice(7);
        else if (line.startsWith('data: ')) ev.data += line.slice(6);
      }
      return ev;
    });
}

const words = (s) => s.split(' ').filter((w) => w !== '').length;
const promptTokens = (...texts) => Math.ceil(texts.reduce((n, t) => n + Buffer.byteLength(t), 0) / 4);

const WEATHER_TOOL_SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string' },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    days: { type: 'integer' },
    detailed: { type: 'boolean' },
    tags: { type: 'array', items: { type: 'string' } },
    where: { type: 'object', properties: { lat: { type: 'number' } } },
  },
  required: ['city'],
};
const WEATHER_ARGS = { city: 'sample', unit: 'celsius', days: 1, detailed: true, tags: ['sample'], where: { lat: 1 } };

// ---------------------------------------------------------------- OpenAI

test('openai: non-stream answer is deterministic with exact usage', async () => {
  const body = {
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'What is the capital of France?' },
    ],
  };
  const r1 = await post('/openai/v1/chat/completions', body);
  assert.equal(r1.status, 200);
  const a = await r1.json();
  const b = await (await post('/v1/chat/completions', body)).json();
  assert.equal(a.object, 'chat.completion');
  assert.equal(a.model, 'gpt-4o-mini');
  const text = a.choices[0].message.content;
  assert.equal(text, b.choices[0].message.content, 'same request, same text (root mount too)');
  assert.match(text, /gpt-4o-mini/);
  assert.match(text, /What is the capital of France\?/);
  assert.equal(a.choices[0].finish_reason, 'stop');
  assert.equal(a.usage.prompt_tokens, promptTokens('Be brief.', 'What is the capital of France?'));
  assert.equal(a.usage.completion_tokens, words(text));
  assert.equal(a.usage.total_tokens, a.usage.prompt_tokens + a.usage.completion_tokens);
  assert.equal(a.usage.prompt_tokens_details.cached_tokens, 0);
});

test('openai: stream relays the same text, usage chunk only when asked, then [DONE]', async () => {
  const base = { model: 'gpt-4o', messages: [{ role: 'user', content: 'Stream me something' }] };
  const whole = await (await post('/openai/v1/chat/completions', base)).json();

  const r = await post('/openai/v1/chat/completions', { ...base, stream: true, stream_options: { include_usage: true } });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/event-stream/);
  const evs = parseSSE(await r.text());
  assert.equal(evs.at(-1).data, '[DONE]');
  const chunks = evs.slice(0, -1).map((e) => JSON.parse(e.data));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(content, whole.choices[0].message.content);
  assert.equal(chunks.filter((c) => c.choices[0]?.delta?.content).length, 8, 'default 8 content chunks');
  const usage = chunks.at(-1);
  assert.deepEqual(usage.choices, []);
  assert.deepEqual(usage.usage.prompt_tokens, whole.usage.prompt_tokens);
  assert.deepEqual(usage.usage.completion_tokens, whole.usage.completion_tokens);
  assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
  for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);

  const r2 = await post('/openai/v1/chat/completions', { ...base, stream: true });
  const evs2 = parseSSE(await r2.text());
  assert.equal(evs2.at(-1).data, '[DONE]');
  for (const e of evs2.slice(0, -1)) assert.equal(JSON.parse(e.data).usage, undefined, 'no usage unless asked');
});

test('openai: max_tokens cuts the answer with finish_reason length', async () => {
  const a = await (
    await post('/openai/v1/chat/completions', { model: 'm', max_tokens: 3, messages: [{ role: 'user', content: 'hello' }] })
  ).json();
  assert.equal(a.choices[0].finish_reason, 'length');
  assert.equal(a.usage.completion_tokens, 3);
  assert.equal(words(a.choices[0].message.content), 3);
});

test('openai: tool_choice required answers with a schema-built call, streamed in pieces', async () => {
  const body = {
    model: 'gpt-4o-mini',
    messages: [{ role: 'user', content: 'Weather in Paris?' }],
    tools: [
      { type: 'function', function: { name: 'other', parameters: { type: 'object', properties: {} } } },
      { type: 'function', function: { name: 'get_weather', parameters: WEATHER_TOOL_SCHEMA } },
    ],
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  };
  const a = await (await post('/openai/v1/chat/completions', body)).json();
  const call = a.choices[0].message.tool_calls[0];
  assert.equal(a.choices[0].finish_reason, 'tool_calls');
  assert.equal(a.choices[0].message.content, null);
  assert.match(call.id, /^call_/);
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), WEATHER_ARGS);

  const req2 = await post('/openai/v1/chat/completions', { ...body, tool_choice: 'required', stream: true });
  const chunks = parseSSE(await req2.text()).filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data));
  const deltas = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
  assert.equal(deltas[0].function.name, 'other', 'required without a name: the first tool');
  const argPieces = deltas.map((d) => d.function.arguments).filter((s) => s);
  assert.ok(argPieces.length >= 2, 'arguments split across at least two deltas');
  assert.deepEqual(JSON.parse(argPieces.join('')), {});
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'tool_calls');
});

test('openai: a tool result is echoed back in the answer', async () => {
  const a = await (
    await post('/openai/v1/chat/completions', {
      model: 'gpt-4o-mini',
      messages: [
        { role: 'user', content: 'Weather?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'w', arguments: '{}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '{"temp": 21}' },
      ],
    })
  ).json();
  assert.equal(a.choices[0].finish_reason, 'stop');
  assert.match(a.choices[0].message.content, /\{"temp": 21\}/);
});

test('openai: malformed JSON and missing fields give OpenAI-shaped 400', async () => {
  const r = await fetch(sim.url + '/v1/chat/completions', { method: 'POST', body: '{"model":' });
  assert.equal(r.status, 400);
  const e = await r.json();
  assert.equal(e.error.type, 'invalid_request_error');
  const r2 = await post('/v1/chat/completions', { model: 'x' });
  assert.equal(r2.status, 400);
  assert.equal((await r2.json()).error.param, 'messages');
});

// ---------------------------------------------------------------- Anthropic

test('anthropic: non-stream message with usage', async () => {
  const body = {
    model: 'claude-3-5-haiku-latest',
    max_tokens: 256,
    system: 'You are terse.',
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Tell me about Rome' }] }],
  };
  const r = await post('/anthropic/v1/messages', body);
  assert.equal(r.status, 200);
  const m = await r.json();
  assert.equal(m.type, 'message');
  assert.equal(m.role, 'assistant');
  assert.equal(m.model, 'claude-3-5-haiku-latest');
  assert.equal(m.stop_reason, 'end_turn');
  assert.match(m.content[0].text, /Tell me about Rome/);
  assert.equal(m.usage.input_tokens + m.usage.cache_read_input_tokens, promptTokens('You are terse.', 'Tell me about Rome'));
  assert.equal(m.usage.output_tokens, words(m.content[0].text));
});

test('anthropic: stream uses the real event names and usage split', async () => {
  const body = { model: 'claude-x', max_tokens: 100, messages: [{ role: 'user', content: 'Stream please' }] };
  const whole = await (await post('/anthropic/v1/messages', body)).json();
  const r = await post('/anthropic/v1/messages', { ...body, stream: true });
  const evs = parseSSE(await r.text());
  const names = evs.map((e) => e.event);
  assert.deepEqual(names.slice(0, 3), ['message_start', 'content_block_start', 'ping']);
  assert.deepEqual(names.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
  for (const e of evs) assert.equal(JSON.parse(e.data).type, e.event, 'data.type matches the event name');
  const start = JSON.parse(evs[0].data);
  assert.equal(start.message.usage.input_tokens, whole.usage.input_tokens);
  const text = evs
    .filter((e) => e.event === 'content_block_delta')
    .map((e) => JSON.parse(e.data).delta.text)
    .join('');
  assert.equal(text, whole.content[0].text);
  const delta = JSON.parse(evs.at(-2).data);
  assert.equal(delta.delta.stop_reason, 'end_turn');
  assert.equal(delta.usage.output_tokens, whole.usage.output_tokens);
});

test('anthropic: max_tokens is required', async () => {
  const r = await post('/anthropic/v1/messages', { model: 'c', messages: [{ role: 'user', content: 'x' }] });
  assert.equal(r.status, 400);
  const e = await r.json();
  assert.equal(e.type, 'error');
  assert.equal(e.error.type, 'invalid_request_error');
});

test('anthropic: tool_choice any gives a tool_use block, streamed as input_json_delta', async () => {
  const body = {
    model: 'claude-x',
    max_tokens: 100,
    tools: [{ name: 'get_weather', description: 'w', input_schema: WEATHER_TOOL_SCHEMA }],
    tool_choice: { type: 'any' },
    messages: [{ role: 'user', content: 'Weather?' }],
  };
  const m = await (await post('/anthropic/v1/messages', body)).json();
  assert.equal(m.stop_reason, 'tool_use');
  assert.equal(m.content[0].type, 'tool_use');
  assert.match(m.content[0].id, /^toolu_/);
  assert.equal(m.content[0].name, 'get_weather');
  assert.deepEqual(m.content[0].input, WEATHER_ARGS);

  const evs = parseSSE(await (await post('/anthropic/v1/messages', { ...body, tool_choice: { type: 'tool', name: 'get_weather' }, stream: true })).text());
  const start = JSON.parse(evs.find((e) => e.event === 'content_block_start').data);
  assert.equal(start.content_block.type, 'tool_use');
  const parts = evs.filter((e) => e.event === 'content_block_delta').map((e) => JSON.parse(e.data).delta);
  assert.ok(parts.length >= 2);
  for (const p of parts) assert.equal(p.type, 'input_json_delta');
  assert.deepEqual(JSON.parse(parts.map((p) => p.partial_json).join('')), WEATHER_ARGS);
  assert.equal(JSON.parse(evs.find((e) => e.event === 'message_delta').data).delta.stop_reason, 'tool_use');
});

test('anthropic: a tool_result block is echoed back', async () => {
  const m = await (
    await post('/anthropic/v1/messages', {
      model: 'claude-x',
      max_tokens: 100,
      messages: [
        { role: 'user', content: 'Weather?' },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'w', input: {} }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: 'sunny 25C' }] }] },
      ],
    })
  ).json();
  assert.equal(m.stop_reason, 'end_turn');
  assert.match(m.content[0].text, /sunny 25C/);
});

// ---------------------------------------------------------------- Gemini

test('gemini: generateContent with usageMetadata', async () => {
  const body = {
    systemInstruction: { parts: [{ text: 'Short answers.' }] },
    contents: [{ role: 'user', parts: [{ text: 'Hello Gemini' }] }],
  };
  const r = await post('/gemini/v1beta/models/gemini-1.5-flash:generateContent', body);
  assert.equal(r.status, 200);
  const g = await r.json();
  const text = g.candidates[0].content.parts[0].text;
  assert.equal(g.candidates[0].content.role, 'model');
  assert.equal(g.candidates[0].finishReason, 'STOP');
  assert.equal(g.modelVersion, 'gemini-1.5-flash');
  assert.match(text, /Hello Gemini/);
  assert.equal(g.usageMetadata.promptTokenCount, promptTokens('Short answers.', 'Hello Gemini'));
  assert.equal(g.usageMetadata.candidatesTokenCount, words(text));
  assert.equal(g.usageMetadata.totalTokenCount, g.usageMetadata.promptTokenCount + g.usageMetadata.candidatesTokenCount);
  assert.equal(g.usageMetadata.cachedContentTokenCount, 0);
});

test('gemini: streamGenerateContent?alt=sse, CRLF-separated, final chunk has finishReason and usage', async () => {
  const body = { contents: [{ role: 'user', parts: [{ text: 'Stream it' }] }], generationConfig: { maxOutputTokens: 100 } };
  const whole = await (await post('/gemini/v1beta/models/gemini-1.5-pro:generateContent', body)).json();
  const r = await post('/gemini/v1beta/models/gemini-1.5-pro:streamGenerateContent?alt=sse', body);
  assert.equal(r.status, 200);
  const raw = await r.text();
  assert.ok(raw.includes('\r\n\r\n'));
  const chunks = parseSSE(raw).map((e) => JSON.parse(e.data));
  assert.equal(chunks.length, 8);
  assert.equal(chunks.map((c) => c.candidates[0].content.parts[0].text).join(''), whole.candidates[0].content.parts[0].text);
  assert.equal(chunks.at(-1).candidates[0].finishReason, 'STOP');
  for (const c of chunks.slice(0, -1)) assert.equal(c.candidates[0].finishReason, undefined);
  assert.deepEqual(chunks.at(-1).usageMetadata, whole.usageMetadata);
  const r2 = await post('/gemini/v1beta/models/gemini-1.5-pro:streamGenerateContent', body);
  assert.equal(r2.status, 400, 'only alt=sse streams are served');
});

test('gemini: mode ANY calls the allowed function; functionResponse is echoed', async () => {
  const body = {
    contents: [{ role: 'user', parts: [{ text: 'Weather?' }] }],
    tools: [{ functionDeclarations: [{ name: 'a', parameters: { type: 'OBJECT', properties: { q: { type: 'STRING' } } } }, { name: 'get_weather', parameters: WEATHER_TOOL_SCHEMA }] }],
    toolConfig: { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['get_weather'] } },
  };
  const g = await (await post('/gemini/v1beta/models/gemini-1.5-flash:generateContent', body)).json();
  const fc = g.candidates[0].content.parts[0].functionCall;
  assert.equal(fc.name, 'get_weather');
  assert.deepEqual(fc.args, WEATHER_ARGS);

  const evs = parseSSE(await (await post('/gemini/v1beta/models/gemini-1.5-flash:streamGenerateContent?alt=sse', body)).text());
  assert.equal(JSON.parse(evs[0].data).candidates[0].content.parts[0].functionCall.name, 'get_weather');

  const g2 = await (
    await post('/gemini/v1beta/models/gemini-1.5-flash:generateContent', {
      contents: [
        { role: 'user', parts: [{ text: 'Weather?' }] },
        { role: 'model', parts: [{ functionCall: { name: 'get_weather', args: {} } }] },
        { role: 'user', parts: [{ functionResponse: { name: 'get_weather', response: { temp: 'warm' } } }] },
      ],
    })
  ).json();
  assert.match(g2.candidates[0].content.parts[0].text, /warm/);
});

// ---------------------------------------------------------------- models and keys

test('model lists answer on every mount', async () => {
  const o = await (await fetch(sim.url + '/openai/v1/models')).json();
  assert.equal(o.object, 'list');
  assert.ok(o.data.length >= 2);
  assert.equal((await (await fetch(sim.url + '/v1/models')).json()).object, 'list');
  const a = await (await fetch(sim.url + '/anthropic/v1/models')).json();
  assert.equal(a.data[0].type, 'model');
  const g = await (await fetch(sim.url + '/gemini/v1beta/models')).json();
  assert.match(g.models[0].name, /^models\//);
});

test('--require-key: each provider answers its own 401 without the key, 200 with it', async () => {
  const keyed = await startSim(['--require-key', 'sk-sim-secret']);
  try {
    const p = (u, body, headers) =>
      fetch(keyed.url + u, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    const oa = { model: 'm', messages: [{ role: 'user', content: 'x' }] };
    let r = await p('/openai/v1/chat/completions', oa, { authorization: 'Bearer wrong' });
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.code, 'invalid_api_key');
    r = await p('/openai/v1/chat/completions', oa, { authorization: 'Bearer sk-sim-secret' });
    assert.equal(r.status, 200);
    const an = { model: 'c', max_tokens: 5, messages: [{ role: 'user', content: 'x' }] };
    r = await p('/anthropic/v1/messages', an, {});
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.type, 'authentication_error');
    r = await p('/anthropic/v1/messages', an, { 'x-api-key': 'sk-sim-secret', 'anthropic-version': '2023-06-01' });
    assert.equal(r.status, 200);
    const ge = { contents: [{ parts: [{ text: 'x' }] }] };
    r = await p('/gemini/v1beta/models/g:generateContent', ge, { 'x-goog-api-key': 'nope' });
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.status, 'UNAUTHENTICATED');
    r = await p('/gemini/v1beta/models/g:generateContent', ge, { 'x-goog-api-key': 'sk-sim-secret' });
    assert.equal(r.status, 200);
  } finally {
    await stopSim(keyed);
  }
});
