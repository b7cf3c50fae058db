// tollgate-sim faults: statuses with each provider's body and Retry-After, context_length, fail_first,
// the x-sim-fault header, latency/ttft, drop_after_chunks, malformed, hang (and that an abandoned
// hang frees its call), backpressure on a big stream, stats and reset.
// Run: node --test tests/integration/sim_faults.test.mjs (binary: TG_SIM_BIN, default build/gateway/tollgate-sim)
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = process.env.TG_SIM_BIN || path.join(ROOT, 'build', 'gateway', 'tollgate-sim');

let sim;
before(async () => {
  const proc = spawn(BIN, ['--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  sim = { proc, url };
});
after(async () => {
  const done = new Promise((r) => sim.proc.once('exit', r));
  sim.proc.kill('SIGTERM');
  assert.equal(await done, 0);
});
beforeEach(async () => {
  await fetch(sim.url + '/_sim/faults', { method: 'DELETE' });
  await fetch(sim.url + '/_sim/stats', { method: 'DELETE' });
});

const WIRES = {
  openai: {
    path: () => '/openai/v1/chat/completions',
    body: (model, extra = {}) => ({ model, messages: [{ role: 'user', content: 'hi' }], ...extra }),
    stream: (b) => ({ ...b, stream: true }),
  },
  anthropic: {
    path: () => '/anthropic/v1/messages',
    body: (model, extra = {}) => ({ model, max_tokens: 50, messages: [{ role: 'user', content: 'hi' }], ...extra }),
    stream: (b) => ({ ...b, stream: true }),
  },
  gemini: {
    path: (model, stream) =>
      `/gemini/v1beta/models/${model}:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`,
    body: () => ({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
    stream: (b) => b,
  },
};

function call(kind, model, { stream = false, headers = {}, signal } = {}) {
  const w = WIRES[kind];
  const body = stream ? w.stream(w.body(model)) : w.body(model);
  return fetch(sim.url + w.path(model, stream), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
    signal,
  });
}

const setFault = async (f) => {
  const r = await fetch(sim.url + '/_sim/faults', { method: 'POST', body: JSON.stringify(f) });
  assert.equal(r.status, 200, await r.clone().text());
};
const stats = async () => (await fetch(sim.url + '/_sim/stats')).json();

async function waitFor(cond, what) {
  // polls a condition on the sim; the test runner's timeout bounds it
  for (;;) {
    if (await cond()) return;
    await new Promise((r) => setImmediate(r));
  }
}

const ANTHROPIC_TYPES = {
  400: 'invalid_request_error', 401: 'authentication_error', 403: 'permission_error', 404: 'not_found_error',
  429: 'rate_limit_error', 500: 'api_error', 502: 'api_error', 503: 'api_error', 504: 'api_error', 529: 'overloaded_error',
};
const GEMINI_STATUS = {
  400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND', 429: 'RESOURCE_EXHAUSTED',
  500: 'INTERNAL', 502: 'UNAVAILABLE', 503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED', 529: 'UNAVAILABLE',
};

for (const kind of Object.keys(WIRES)) {
  test(`${kind}: every error status comes with the provider's body and Retry-After where due`, async () => {
    for (const status of [400, 401, 403, 404, 429, 500, 502, 503, 504, 529]) {
      for (const stream of [false, true]) {
        const r = await call(kind, 'err-model', { stream, headers: { 'x-sim-fault': `status=${status}` } });
        assert.equal(r.status, status);
        assert.match(r.headers.get('content-type'), /application\/json/);
        const e = await r.json();
        if (kind === 'openai') {
          assert.equal(typeof e.error.message, 'string');
          assert.ok('type' in e.error && 'param' in e.error && 'code' in e.error);
        } else if (kind === 'anthropic') {
          assert.equal(e.type, 'error');
          assert.equal(e.error.type, ANTHROPIC_TYPES[status]);
        } else {
          assert.equal(e.error.code, status);
          assert.equal(e.error.status, GEMINI_STATUS[status]);
        }
        assert.equal(r.headers.get('retry-after'), status === 429 ? '1' : null, `retry-after for ${status}`);
      }
    }
    for (const status of [429, 503, 529]) {
      const r = await call(kind, 'err-model', { headers: { 'x-sim-fault': `status=${status},retry_after_s=7` } });
      assert.equal(r.status, status);
      assert.equal(r.headers.get('retry-after'), '7');
      await r.arrayBuffer();
    }
    const st = await stats();
    assert.equal(st.models['err-model'].requests, 23);
    assert.equal(st.models['err-model'].by_status['429'], 3);
  });

  test(`${kind}: context_length error`, async () => {
    const r = await call(kind, 'cl-model', { headers: { 'x-sim-fault': 'error=context_length' } });
    assert.equal(r.status, 400);
    const e = await r.json();
    if (kind === 'openai') assert.equal(e.error.code, 'context_length_exceeded');
    if (kind === 'anthropic') assert.match(e.error.message, /prompt is too long/);
    if (kind === 'gemini') {
      assert.equal(e.error.status, 'INVALID_ARGUMENT');
      assert.match(e.error.message, /exceeds the maximum number of tokens/);
    }
  });

  test(`${kind}: fail_first applies to the next N requests of that model only`, async () => {
    await setFault({ model: 'ff-model', status: 503, fail_first: 2 });
    const listed = await (await fetch(sim.url + '/_sim/faults')).json();
    assert.equal(listed.faults['ff-model'].status, 503);
    const other = await call(kind, 'unrelated-model');
    assert.equal(other.status, 200, 'other models are not affected');
    await other.arrayBuffer();
    const codes = [];
    for (let i = 0; i < 3; i++) {
      const r = await call(kind, 'ff-model');
      codes.push(r.status);
      await r.arrayBuffer();
    }
    assert.deepEqual(codes, [503, 503, 200]);
    assert.deepEqual((await (await fetch(sim.url + '/_sim/faults')).json()).faults, {});
    const st = await stats();
    assert.deepEqual(st.models['ff-model'], { requests: 3, store_false: 0, by_status: { 503: 2, 200: 1 } });
  });

  test(`${kind}: drop_after_chunks aborts the stream with no terminator`, async () => {
    await setFault({ model: 'drop-model', drop_after_chunks: 2 });
    const r = await call(kind, 'drop-model', { stream: true });
    assert.equal(r.status, 200);
    let text = '';
    const dec = new TextDecoder();
    await assert.rejects(async () => {
      for await (const chunk of r.body) text += dec.decode(chunk);
    });
    const isContent = { openai: /"delta":\{"content":"/, anthropic: /text_delta/, gemini: /"parts":\[\{"text":"/ }[kind];
    const contentEvents = text.split(/\r?\n\r?\n/).filter((b) => isContent.test(b));
    assert.equal(contentEvents.length, 2);
    assert.ok(!text.includes('[DONE]') && !text.includes('message_stop') && !text.includes('finishReason'));
  });

  test(`${kind}: malformed gives invalid JSON (non-stream) and a broken data line (stream)`, async () => {
    await setFault({ model: 'bad-model', malformed: true });
    const r = await call(kind, 'bad-model');
    assert.equal(r.status, 200);
    assert.throws(() => JSON.parse(r.body ? '' : ''));
    const body = await r.text();
    assert.throws(() => JSON.parse(body));
    const s = await call(kind, 'bad-model', { stream: true });
    const lines = (await s.text()).split(/\r?\n/).filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]');
    const broken = lines.filter((l) => {
      try {
        JSON.parse(l.slice(6));
        return false;
      } catch {
        return true;
      }
    });
    assert.equal(broken.length, 1);
  });
}

test('per-request header wins over the per-model fault and does not use up fail_first', async () => {
  await setFault({ model: 'hm', status: 500, fail_first: 1 });
  const r = await call('openai', 'hm', { headers: { 'x-sim-fault': 'status=429, retry_after_s=3' } });
  assert.equal(r.status, 429);
  assert.equal(r.headers.get('retry-after'), '3');
  const r2 = await call('openai', 'hm');
  assert.equal(r2.status, 500, 'the model fault is still there');
  const r3 = await call('openai', 'hm');
  assert.equal(r3.status, 200);
});

test('bad fault definitions are rejected', async () => {
  let r = await fetch(sim.url + '/_sim/faults', { method: 'POST', body: JSON.stringify({ status: 503 }) });
  assert.equal(r.status, 400);
  r = await fetch(sim.url + '/_sim/faults', { method: 'POST', body: JSON.stringify({ model: 'x', statsu: 503 }) });
  assert.equal(r.status, 400);
  assert.match((await r.json()).error, /statsu/);
  r = await fetch(sim.url + '/_sim/faults', { method: 'POST', body: JSON.stringify({ model: 'x', status: 'bad' }) });
  assert.equal(r.status, 400);
  r = await call('openai', 'x', { headers: { 'x-sim-fault': 'status' } });
  assert.equal(r.status, 400);
});

test('latency_ms delays the answer; ttft_ms delays the first event after the headers', async () => {
  await setFault({ model: 'slow', latency_ms: 150 });
  let t0 = performance.now();
  const r = await call('openai', 'slow');
  assert.equal(r.status, 200);
  await r.json();
  assert.ok(performance.now() - t0 >= 140, 'a delay never answers early');

  await setFault({ model: 'ttft', ttft_ms: 150, chunk_delay_ms: 5 });
  t0 = performance.now();
  const s = await call('anthropic', 'ttft', { stream: true });
  const tHeaders = performance.now();
  assert.equal(s.status, 200);
  const reader = s.body.getReader();
  const first = await reader.read();
  assert.ok(!first.done);
  assert.ok(performance.now() - t0 >= 140, 'first event waits for ttft');
  assert.ok(tHeaders - t0 < performance.now() - t0, 'headers came before the first event');
  let rest = new TextDecoder().decode(first.value);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += new TextDecoder().decode(value);
  }
  assert.ok(rest.includes('message_stop'));
});

test('hang never answers, and an abandoned hang frees its call', async () => {
  await setFault({ model: 'hung', hang: true });
  const ac = new AbortController();
  const pending = call('gemini', 'hung', { signal: ac.signal }).catch((e) => e);
  await waitFor(async () => ((await stats()).models.hung?.by_status?.['0'] ?? 0) === 1);
  ac.abort();
  const err = await pending;
  assert.equal(err.name, 'AbortError');
  await waitFor(async () => (await stats()).live_calls === 0);
  const ok = await call('gemini', 'other');
  assert.equal(ok.status, 200);
});

test('client disconnect mid-stream frees the call', async () => {
  await setFault({ model: 'slowstream', chunk_delay_ms: 50, stream_chunks: 50 });
  const ac = new AbortController();
  const r = await call('openai', 'slowstream', { stream: true, signal: ac.signal });
  const reader = r.body.getReader();
  await reader.read();
  ac.abort();
  await waitFor(async () => (await stats()).live_calls === 0);
});

test('a big stream to a slow reader is produced under backpressure (bounded sim memory)', async () => {
  const rss = () => Number(readFileSync(`/proc/${sim.proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) * 1024;
  const before = rss();
  // 2000 chunks x 64 KiB = 125 MiB of content
  const r = await call('openai', 'big', { stream: true, headers: { 'x-sim-fault': 'stream_chunks=2000,chunk_bytes=65536' } });
  let bytes = 0;
  let peak = 0;
  let n = 0;
  for await (const chunk of r.body) {
    bytes += chunk.length;
    if (++n % 64 === 0) {
      peak = Math.max(peak, rss());
      await new Promise((res) => setImmediate(res)); // a slow consumer
    }
  }
  assert.ok(bytes > 2000 * 65536, `got ${bytes} bytes`);
  assert.ok(peak - before < 48 * 1024 * 1024, `sim RSS grew by ${(peak - before) >> 20} MiB`);
});

test('models endpoint faults use the key _models/<wire>', async () => {
  await setFault({ model: '_models/anthropic', status: 503, fail_first: 1 });
  const r = await fetch(sim.url + '/anthropic/v1/models');
  assert.equal(r.status, 503);
  assert.equal((await r.json()).error.type, 'api_error');
  assert.equal((await fetch(sim.url + '/anthropic/v1/models')).status, 200);
});

test('stats count by status and reset', async () => {
  const r = await call('openai', 's1');
  await r.arrayBuffer();
  const s = await call('openai', 's1', { stream: true });
  await s.arrayBuffer();
  const e = await call('openai', 's1', { headers: { 'x-sim-fault': 'status=502' } });
  await e.arrayBuffer();
  const st = await stats();
  assert.deepEqual(st.models.s1, { requests: 3, store_false: 0, by_status: { 200: 2, 502: 1 } });
  await fetch(sim.url + '/_sim/stats', { method: 'DELETE' });
  assert.deepEqual((await stats()).models, {});
});
