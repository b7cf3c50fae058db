// issue #4 item 6: active health checks, on a gateway and a simulator of this file's own
// (lib/instance.mjs): a failing probe opens the breakers of the provider's targets without any chat
// traffic and without calling the chat endpoint; a passing probe brings the half-open probe forward;
// the probe counts show in /metrics; with two workers a provider is probed once per interval, not
// once per worker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { waitFor } from './lib/wait.mjs';
import { startInstance, baseConfig, req, metricValue, assertNoSanitizerReport } from './lib/instance.mjs';

const PROVIDER = 'sim-health';
const MODELS = ['health-a', 'health-b'];
// The simulator counts the OpenAI models list under this stats key (gateway/sim/README.md).
const MODELS_KEY = '_models/openai';

function healthConfig(ctx, { workers = 2 } = {}) {
    const models = {};
    for (const m of MODELS) models[m] = { provider: PROVIDER, upstream: m, context_window: 128000 };
    return baseConfig({
        ...ctx,
        providers: {
            [PROVIDER]: {
                kind: 'openai',
                base_url: `${ctx.simUrl}/openai/v1`,
                api_key_file: ctx.pepperFile,
                // open_ms far longer than the test: only a passing probe can bring the half-open probe forward.
                breaker: { failure_threshold: 3, open_ms: 600000, half_open_probes: 1 },
                health: { enabled: true, interval_ms: 200, timeout_ms: 500 },
            },
        },
        models,
        extra: { workers },
    });
}

async function breakerStates(inst) {
    const r = await req(inst.adminUrl, 'GET', '/admin/v1/breakers');
    assert.equal(r.status, 200, `GET /admin/v1/breakers: ${r.text}`);
    const list = Array.isArray(r.json) ? r.json : r.json.breakers || r.json.data || [];
    const out = {};
    for (const b of list) out[b.target] = String(b.state).toLowerCase().replace('-', '_');
    return out;
}

async function waitStates(inst, state, models) {
    return waitFor(
        async () => {
            const s = await breakerStates(inst);
            return models.every((m) => s[`${PROVIDER}/${m}`] === state) ? s : null;
        },
        { tries: 400, what: `the breakers of ${models.join(', ')} to be ${state}` }
    );
}

async function simStats(inst) {
    const r = await req(inst.simUrl, 'GET', '/_sim/stats');
    assert.equal(r.status, 200);
    return r.json.models || {};
}

async function setFault(inst, model, fault) {
    const r = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model, ...fault } });
    assert.ok(r.status >= 200 && r.status < 300, `the simulator took the fault: ${r.status} ${r.text}`);
}

async function metrics(inst) {
    const r = await req(inst.adminUrl, 'GET', '/metrics');
    assert.equal(r.status, 200);
    return r.text;
}

async function stopClean(inst) {
    inst.gateway.kill('SIGTERM');
    const exit = await inst.gateway.closed;
    assert.deepEqual(exit, { code: 0, signal: null }, 'the gateway exits 0 on SIGTERM');
    assertNoSanitizerReport(inst.gateway, 'the instance gateway');
    const out = inst.gateway.output;
    assert.ok(!out.includes(inst.key), 'the API key is not in the gateway output');
    assert.ok(!out.includes(readFileSync(inst.pepperFile, 'utf8').trim()), 'the pepper / provider key is not in the gateway output');
}

test('failing probes open the breakers with no chat traffic; a passing probe brings the half-open probe forward', async () => {
    const inst = await startInstance((ctx) => healthConfig(ctx), { tenant: 'health-test' });
    try {
        await setFault(inst, MODELS_KEY, { status: 503 });
        const open = await waitStates(inst, 'open', MODELS);
        assert.equal(open[`${PROVIDER}/${MODELS[0]}`], 'open');

        // Probes never call the chat endpoint (they spend no tenant credits).
        const st = await simStats(inst);
        for (const m of MODELS) assert.equal(st[m], undefined, `the simulator saw no chat request for ${m}: ${JSON.stringify(st[m])}`);
        assert.ok(st[MODELS_KEY] && st[MODELS_KEY].by_status['503'] >= 3, `the probes hit the models list: ${JSON.stringify(st[MODELS_KEY])}`);

        // An open breaker is skipped with no I/O: a chat request fails fast without reaching the simulator.
        const skipped = await req(inst.url, 'POST', '/v1/chat/completions', {
            key: inst.key,
            body: { model: MODELS[0], messages: [{ role: 'user', content: 'hi' }] },
        });
        assert.equal(skipped.status, 503, `an open breaker answers 503: ${skipped.text}`);
        assert.equal((await simStats(inst))[MODELS[0]], undefined, 'the open breaker sent nothing upstream');

        const text = await metrics(inst);
        assert.ok(metricValue(text, 'tollgate_health_probes_total', { provider: PROVIDER, result: 'fail' }) >= 3, 'failed probes are counted');

        // The provider recovers: a passing probe brings the half-open probe forward (open_ms is 10 minutes).
        const r = await req(inst.simUrl, 'DELETE', '/_sim/faults');
        assert.ok(r.status >= 200 && r.status < 300);
        await waitStates(inst, 'half_open', MODELS);
        const okProbes = await waitFor(
            async () => metricValue(await metrics(inst), 'tollgate_health_probes_total', { provider: PROVIDER, result: 'ok' }),
            { what: 'a passing probe in /metrics' }
        );
        assert.ok(okProbes >= 1);

        // One chat request is the half-open probe; its success closes that target's breaker.
        const served = await req(inst.url, 'POST', '/v1/chat/completions', {
            key: inst.key,
            body: { model: MODELS[0], messages: [{ role: 'user', content: 'hi' }] },
        });
        assert.equal(served.status, 200, `the half-open probe request is served: ${served.text}`);
        await waitStates(inst, 'closed', [MODELS[0]]);
        assert.equal((await simStats(inst))[MODELS[0]].requests, 1, 'exactly one chat request reached the simulator');

        await stopClean(inst);
    } finally {
        await inst.stop();
    }
});

test('with two workers a provider is probed once per interval, not once per worker', async () => {
    const inst = await startInstance((ctx) => healthConfig(ctx, { workers: 2 }), { tenant: 'health-test' });
    try {
        const gwProbes = async () =>
            metricValue(await metrics(inst), 'tollgate_health_probes_total', { provider: PROVIDER }) || 0;
        const simProbes = async () => {
            const s = (await simStats(inst))[MODELS_KEY];
            return s ? s.requests : 0;
        };
        await waitFor(async () => (await gwProbes()) >= 10, { tries: 400, what: '10 health probes' });
        // Both counts keep moving: read the gateway's before and after the simulator's. A probe
        // the simulator has answered but whose result the gateway has not recorded yet is the only
        // possible difference (at most one in flight per provider); a second worker probing too
        // would double the simulator's count.
        const before = await gwProbes();
        const seen = await simProbes();
        const after = await gwProbes();
        assert.ok(seen >= before, `the simulator saw every probe the gateway counted (${seen} >= ${before})`);
        assert.ok(seen <= after + 1, `no duplicate probes: simulator ${seen}, gateway ${after}`);
        assert.ok(seen < 2 * before, `not one probe per worker: simulator ${seen}, gateway ${before}`);

        // A reload replaces the probe slots: still one probe per interval afterwards. The probe in
        // flight at the reload is cancelled (the simulator may have counted it, the gateway does not).
        inst.gateway.kill('SIGHUP');
        await waitFor(() => inst.gateway.logEvents().some((e) => e.event === 'config_reloaded'), {
            what: 'the reload to be logged',
        });
        const base = await gwProbes();
        await waitFor(async () => (await gwProbes()) >= base + 10, { tries: 400, what: '10 more health probes' });
        const before2 = await gwProbes();
        const seen2 = await simProbes();
        const after2 = await gwProbes();
        assert.ok(seen2 >= before2, `the simulator saw every probe the gateway counted (${seen2} >= ${before2})`);
        assert.ok(seen2 <= after2 + 2, `no duplicate probes after a reload: simulator ${seen2}, gateway ${after2}`);

        const st = await simStats(inst);
        for (const m of MODELS) assert.equal(st[m], undefined, `no chat request for ${m}`);
        await stopClean(inst);
    } finally {
        await inst.stop();
    }
});

test('a probe that times out (the models list hangs) counts as a failure', async () => {
    const inst = await startInstance((ctx) => healthConfig(ctx, { workers: 1 }), { tenant: 'health-test' });
    try {
        await setFault(inst, MODELS_KEY, { hang: true });
        await waitStates(inst, 'open', MODELS);
        const count = async (result) =>
            metricValue(await metrics(inst), 'tollgate_health_probes_total', { provider: PROVIDER, result }) || 0;
        // Probes before the fault was set may have passed; from now on none does.
        const ok1 = await count('ok');
        const fail1 = await count('fail');
        assert.ok(fail1 >= 3, 'timed-out probes are counted as failures');
        await waitFor(async () => (await count('fail')) >= fail1 + 2, { what: 'two more failed probes' });
        assert.equal(await count('ok'), ok1, 'no probe passed while the models list hangs');
        const st = await simStats(inst);
        for (const m of MODELS) assert.equal(st[m], undefined, `no chat request for ${m}`);
        // The gateway gave up on every hanging probe: the simulator holds no call for it.
        await waitFor(async () => {
            const r = await req(inst.simUrl, 'GET', '/_sim/stats');
            return r.json.live_calls <= 1; // at most the probe of the current interval
        }, { what: 'timed-out probes to be released at the simulator' });
        await stopClean(inst);
        // After the gateway exited, its last probe is released too.
        await waitFor(async () => (await req(inst.simUrl, 'GET', '/_sim/stats')).json.live_calls === 0, {
            what: 'the simulator to hold no call',
        });
    } finally {
        await inst.stop();
    }
});
