// issue #9 item 5, a request has a deadline, on a gateway and a simulator of this file's own
// (lib/instance.mjs): with both targets of a chain hanging, the chain moves on within the request's
// first-byte budget (here the chain's own `request_first_byte_ms`) and the client gets an answer
// naming both targets; a half-open probe that hangs is cut by its breaker's `probe_timeout_ms`, so
// the breaker re-opens and the request is served by the fallback instead of waiting a whole
// first-byte timeout. And (issue #9 item 7) a healthy fallback whose breaker is half-open with its
// probe out serves a request whose primary failed, as an extra probe, instead of a 503. Nothing
// here measures time: the assertions are the answers, the attempts they
// name and the breaker states, each waited for as a condition.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from './lib/wait.mjs';
import { startInstance, baseConfig, req, assertNoSanitizerReport } from './lib/instance.mjs';

const HANG_A = 'dl-hang-a';
const HANG_B = 'dl-hang-b';
const PROBE = 'dl-probe';
const FALLBACK = 'dl-fallback';
const PRIMARY = 'dl-primary';
const HALF = 'dl-half';

function deadlineConfig(ctx) {
    const provider = (kind, path, extra = {}) => ({ kind, base_url: `${ctx.simUrl}/${path}`, api_key_file: ctx.pepperFile, ...extra });
    return baseConfig({
        ...ctx,
        providers: {
            // The first target times out on its own; the second would wait a minute: only the
            // request's budget can end it.
            'dl-openai': provider('openai', 'openai/v1', { timeouts: { first_byte_ms: 1500 } }),
            'dl-anthropic': provider('anthropic', 'anthropic', { timeouts: { first_byte_ms: 60000 } }),
            // A target whose first-byte timeout is a whole minute: only the probe timeout can cut its
            // probe. open_ms leaves time to look at the re-opened breaker before it turns half-open.
            'dl-flaky': provider('openai', 'openai/v1', {
                timeouts: { first_byte_ms: 60000 },
                breaker: { failure_threshold: 1, open_ms: 1500, half_open_probes: 1, probe_timeout_ms: 300 },
            }),
            'dl-healthy': provider('anthropic', 'anthropic'),
            // The fallback of the half-open test: opens on one failure, half-open after 300 ms, and
            // a probe that may hang for the whole test (probe timeout one minute).
            'dl-half': provider('gemini', 'gemini', {
                timeouts: { first_byte_ms: 60000 },
                breaker: { failure_threshold: 1, open_ms: 300, half_open_probes: 1, probe_timeout_ms: 60000 },
            }),
        },
        models: {
            [HANG_A]: { provider: 'dl-openai', upstream: HANG_A, context_window: 128000 },
            [HANG_B]: { provider: 'dl-anthropic', upstream: HANG_B, context_window: 128000 },
            [PROBE]: { provider: 'dl-flaky', upstream: PROBE, context_window: 128000 },
            [FALLBACK]: { provider: 'dl-healthy', upstream: FALLBACK, context_window: 128000 },
            [PRIMARY]: { provider: 'dl-openai', upstream: PRIMARY, context_window: 128000 },
            [HALF]: { provider: 'dl-half', upstream: HALF, context_window: 128000 },
        },
        chains: {
            // 1500 ms for the first target leaves 1500 ms of the 3000 ms budget for the second.
            'dl-chain-hang': { targets: [HANG_A, HANG_B], request_first_byte_ms: 3000 },
            'dl-chain-probe': { targets: [PROBE, FALLBACK] },
            'dl-chain-half': { targets: [PRIMARY, HALF] },
        },
    });
}

async function setFault(inst, model, fault) {
    const r = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model, ...fault } });
    assert.ok(r.status >= 200 && r.status < 300, `the simulator took the fault: ${r.status} ${r.text}`);
}

async function breakerState(inst, model) {
    const r = await req(inst.adminUrl, 'GET', '/admin/v1/breakers');
    assert.equal(r.status, 200, `GET /admin/v1/breakers: ${r.text}`);
    const list = Array.isArray(r.json) ? r.json : r.json.breakers || r.json.data || [];
    const b = list.find((x) => x.target.endsWith(`/${model}`));
    return b ? String(b.state).toLowerCase().replace('-', '_') : 'none';
}

async function waitState(inst, model, state) {
    return waitFor(async () => ((await breakerState(inst, model)) === state ? state : null), {
        tries: 400,
        what: `the breaker of ${model} to be ${state}`,
    });
}

const chat = (inst, model, extra = {}) =>
    req(inst.url, 'POST', '/v1/chat/completions', { key: inst.key, body: { model, messages: [{ role: 'user', content: 'hi' }], ...extra } });

test('both targets hanging: the answer comes within the request budget and names both targets', async () => {
    const inst = await startInstance(deadlineConfig, { tenant: 'deadline-test' });
    try {
        await setFault(inst, HANG_A, { hang: true });
        await setFault(inst, HANG_B, { hang: true });
        for (const stream of [false, true]) {
            const r = await chat(inst, 'dl-chain-hang', stream ? { stream: true } : {});
            assert.equal(r.status, 503, `every target failed (stream ${stream}): ${r.text}`);
            assert.ok(r.json && r.json.error, `an OpenAI-shaped error: ${r.text}`);
            assert.equal(r.json.error.code, 'no_target_available');
            const attempts = r.json.error.attempts.map((a) => [a.target, a.reason, a.skipped]);
            assert.equal(r.headers.get('x-tollgate-attempts'), '2', `both targets were tried: ${JSON.stringify(attempts)}`);
            // The first target used its own first-byte timeout; the second had only what was left of
            // the budget, and the budget, not the provider, ended it.
            assert.deepEqual(attempts, [
                [`dl-openai/${HANG_A}`, 'timeout_first_byte', false],
                [`dl-anthropic/${HANG_B}`, 'timeout_request_budget', false],
            ]);
            assert.match(r.json.error.message, /request first-byte budget of 3000 ms spent/);
        }
        // A budget cut is not the provider's fault: the second target's breaker did not count it.
        assert.equal(await breakerState(inst, HANG_B), 'closed');
        // The simulator's hung calls are freed once the gateway gives up on them.
        await waitFor(async () => (await req(inst.simUrl, 'GET', '/_sim/stats')).json.live_calls === 0, {
            what: 'the hung upstream calls to be released',
        });
        inst.gateway.kill('SIGTERM');
        assert.deepEqual(await inst.gateway.closed, { code: 0, signal: null });
        assertNoSanitizerReport(inst.gateway, 'the instance gateway');
    } finally {
        await inst.stop();
    }
});

test('a hanging half-open probe re-opens its breaker after probe_timeout_ms; the fallback serves', async () => {
    const inst = await startInstance(deadlineConfig, { tenant: 'deadline-test' });
    try {
        // One 503 opens the breaker (threshold 1); the fallback serves that request.
        await setFault(inst, PROBE, { status: 503 });
        const first = await chat(inst, 'dl-chain-probe');
        assert.equal(first.status, 200, first.text);
        assert.equal(await breakerState(inst, PROBE), 'open');

        // Now the target hangs. Once half-open, the next request is its probe.
        await setFault(inst, PROBE, { hang: true });
        await waitState(inst, PROBE, 'half_open');
        const pending = chat(inst, 'dl-chain-probe');
        // The probe's first-byte timeout is 300 ms, not the provider's minute: the probe fails and
        // the breaker re-opens (before: half-open for a whole first-byte timeout, every other
        // request skipping the target meanwhile).
        await waitState(inst, PROBE, 'open');
        const r = await pending;
        assert.equal(r.status, 200, `the fallback served the probe's request: ${r.text}`);
        assert.equal(r.headers.get('x-tollgate-model'), FALLBACK);
        assert.equal(r.headers.get('x-tollgate-attempts'), '2');
        assert.match(r.headers.get('x-tollgate-fallback-reason') || '', /timeout_first_byte/);

        inst.gateway.kill('SIGTERM');
        assert.deepEqual(await inst.gateway.closed, { code: 0, signal: null });
        assertNoSanitizerReport(inst.gateway, 'the instance gateway');
    } finally {
        await inst.stop();
    }
});

test('a half-open fallback whose probe is out serves a request whose primary failed (extra probe)', async () => {
    const inst = await startInstance(deadlineConfig, { tenant: 'deadline-test' });
    const probeClient = new AbortController();
    let probe = null;
    try {
        // An old fault opens the fallback's breaker (threshold 1); it turns half-open.
        await setFault(inst, HALF, { status: 503, fail_first: 1 });
        const down = await chat(inst, HALF);
        assert.equal(down.status, 503, `the fallback's own 503: ${down.text}`);
        await waitState(inst, HALF, 'half_open');

        // A request to the fallback alone is its probe, and hangs there: the probe is out.
        await setFault(inst, HALF, { hang: true, fail_first: 1 });
        probe = fetch(`${inst.url}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${inst.key}`, 'content-type': 'application/json' },
            body: JSON.stringify({ model: HALF, messages: [{ role: 'user', content: 'hi' }] }),
            signal: probeClient.signal,
        }).catch(() => null);
        await waitFor(async () => (await req(inst.simUrl, 'GET', '/_sim/stats')).json.live_calls === 1, {
            what: 'the probe to hang in the simulator',
        });
        assert.equal(await breakerState(inst, HALF), 'half_open');

        // Now the primary fails. Its fallback is the last usable target: the request becomes an
        // extra probe of it (before: 503 all targets failed, the fallback skipped).
        await setFault(inst, PRIMARY, { status: 503 });
        const r = await chat(inst, 'dl-chain-half');
        assert.equal(r.status, 200, `served by the half-open fallback: ${r.text}`);
        assert.equal(r.headers.get('x-tollgate-model'), HALF);
        assert.equal(r.headers.get('x-tollgate-attempts'), '2');
        // Its success proved the fallback healthy: the breaker closes.
        await waitState(inst, HALF, 'closed');
    } finally {
        probeClient.abort();
        if (probe) await probe;
        await inst.stop();
    }
});
