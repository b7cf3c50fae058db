// issue #4 item 5: latency spikes. On a gateway and a simulator of this file's own
// (lib/instance.mjs): a target whose recent latency (time to first token for streams) exceeds its
// provider's latency_threshold_ms is marked degraded and tried after the healthy targets of a
// chain; once its mark lapses and its latency has recovered, it serves again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { waitFor } from './lib/wait.mjs';
import { startInstance, baseConfig, req, assertNoSanitizerReport } from './lib/instance.mjs';

const SLOW = 'lat-slow';
const FAST = 'lat-fast';
const CHAIN = 'lat-chain';

function latencyConfig(ctx) {
    const provider = (threshold) => ({
        kind: 'openai',
        base_url: `${ctx.simUrl}/openai/v1`,
        api_key_file: ctx.pepperFile,
        // open_ms also bounds how long a degraded mark lasts without a confirming sample
        breaker: { failure_threshold: 3, open_ms: 3000, half_open_probes: 1 },
        latency_threshold_ms: threshold,
    });
    return baseConfig({
        ...ctx,
        providers: { 'sim-lat-a': provider(100), 'sim-lat-b': provider(100) },
        models: {
            [SLOW]: { provider: 'sim-lat-a', upstream: SLOW, context_window: 128000 },
            [FAST]: { provider: 'sim-lat-b', upstream: FAST, context_window: 128000 },
        },
        chains: { [CHAIN]: { targets: [SLOW, FAST] } },
    });
}

async function breakerOf(inst, target) {
    const r = await req(inst.adminUrl, 'GET', '/admin/v1/breakers');
    assert.equal(r.status, 200, r.text);
    const list = Array.isArray(r.json) ? r.json : r.json.data || [];
    return list.find((b) => b.target === target) || null;
}

async function simCount(inst, model) {
    const r = await req(inst.simUrl, 'GET', '/_sim/stats');
    return r.json?.models?.[model]?.requests ?? 0;
}

function ask(inst, extra = {}) {
    return req(inst.url, 'POST', '/v1/chat/completions', {
        key: inst.key,
        body: { model: CHAIN, messages: [{ role: 'user', content: 'latency?' }], ...extra },
    });
}

test('a slow target is marked degraded, tried after the healthy one, and restored when it recovers', async () => {
    const inst = await startInstance((ctx) => latencyConfig(ctx), { tenant: 'latency-test' });
    try {
        // The first target of the chain answers slowly (3x its provider's threshold), but answers.
        const f = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model: SLOW, latency_ms: 300 } });
        assert.equal(f.status < 300, true, f.text);

        const first = await ask(inst);
        assert.equal(first.status, 200, first.text);
        assert.equal(first.headers.get('x-tollgate-model'), SLOW, 'a slow answer is still an answer');

        const b = await waitFor(async () => {
            const x = await breakerOf(inst, `sim-lat-a/${SLOW}`);
            return x && x.degraded === true ? x : null;
        }, { tries: 100, what: 'the slow target to be marked degraded' });
        assert.equal(b.state, 'closed', 'degraded is not open: the target is still usable');

        // Now the healthy target serves first, and the slow one sees no traffic from it.
        const before = await simCount(inst, SLOW);
        const second = await ask(inst);
        assert.equal(second.status, 200, second.text);
        assert.equal(second.headers.get('x-tollgate-model'), FAST);
        assert.equal(second.headers.get('x-tollgate-attempts'), '1', 'no failed attempt: an ordering, not a failover');
        const st = await ask(inst, { stream: true });
        assert.equal(st.status, 200);
        assert.equal(st.headers.get('x-tollgate-model'), FAST, 'streams follow the same order');
        assert.equal(await simCount(inst, SLOW), before, 'the degraded target was not called');

        // It recovers: the fault goes, the mark lapses, the next answer measures it fast again.
        await req(inst.simUrl, 'DELETE', '/_sim/faults');
        await waitFor(async () => {
            const x = await breakerOf(inst, `sim-lat-a/${SLOW}`);
            return x && x.degraded === false;
        }, { tries: 200, what: 'the degraded mark to lapse' });
        const back = await ask(inst);
        assert.equal(back.status, 200, back.text);
        assert.equal(back.headers.get('x-tollgate-model'), SLOW, 'the first target serves again');
        const after = await breakerOf(inst, `sim-lat-a/${SLOW}`);
        assert.equal(after.degraded, false, 'a fast answer keeps it restored');
    } finally {
        await inst.stop();
        assertNoSanitizerReport(inst.gateway, 'the latency-test gateway');
    }
});

test('time to first token decides for streams', async () => {
    const inst = await startInstance((ctx) => latencyConfig(ctx), { tenant: 'latency-test' });
    try {
        // Headers come at once but the first chunk is slow: TTFT, not header time, is measured.
        await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model: SLOW, ttft_ms: 300 } });
        const first = await ask(inst, { stream: true });
        assert.equal(first.status, 200);
        assert.equal(first.headers.get('x-tollgate-model'), SLOW);
        await waitFor(async () => {
            const x = await breakerOf(inst, `sim-lat-a/${SLOW}`);
            return x && x.degraded === true;
        }, { tries: 100, what: 'a slow first token to mark the target degraded' });
        const next = await ask(inst, { stream: true });
        assert.equal(next.headers.get('x-tollgate-model'), FAST);
    } finally {
        await inst.stop();
        assertNoSanitizerReport(inst.gateway, 'the latency-test gateway');
    }
});
