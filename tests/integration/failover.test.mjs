// The failover engine (issue #4, item 9) through the gateway and the simulator, for every provider
// kind. Each scenario has its own chain "<kind>-chain-<scenario>" whose primary "<kind>-fo<scenario>"
// runs on the kind under test and whose fallback "<kind>-fo<scenario>-fb" runs on the next kind
// (openai -> anthropic -> gemini -> openai), so every chain is also a cross-provider chain.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import {
    assertLogHasNoSecrets,
    assertOpenAIError,
    assertRouteHeaders,
    chat,
    chatBody,
    chatStream,
} from './lib/http.mjs';
import {
    breakerOf,
    clearFaults,
    failoverEvents,
    freshStart,
    lit,
    metricSum,
    psql,
    setFault,
    simModel,
    waitBreaker,
} from './lib/control.mjs';
import { KINDS, providerOf, stack, targetOf } from './lib/stack.mjs';
import { waitFor, waitStable } from './lib/wait.mjs';

const S = stack();

// x-tollgate-fallback-reason names the first attempt's failure: its outcome class
// ("server_error") or its precise reason ("http_503"); either is accepted, nothing else.
const REASON = {
    server_error: /^(server_error|http_50[0-9]|http_529|overloaded|unavailable)$/,
    timeout: /^timeout(_first_byte)?$/,
    rate_limited: /^(rate_limited|resource_exhausted)$/,
    misconfigured: /^(misconfigured|unauthorized)$/,
    context_length: /^context_length(_exceeded)?$/,
};

/** Runs fn and returns how many requests each model's simulator endpoint saw meanwhile. */
async function simDelta(models, fn) {
    const before = {};
    for (const m of models) before[m] = await simModel(m);
    const result = await fn();
    const delta = {};
    for (const m of models) {
        const a = await simModel(m);
        delta[m] = { requests: a.requests - before[m].requests, by_status: {} };
        for (const [st, n] of Object.entries(a.by_status)) {
            const d = n - (before[m].by_status[st] || 0);
            if (d) delta[m].by_status[st] = d;
        }
    }
    return { result, delta };
}

function assertServedBy(r, model, { attempts, reason } = {}) {
    assert.equal(r.status, 200, `served (body: ${r.text.slice(0, 300)})`);
    assertRouteHeaders(r, { model, provider: providerOf(model) });
    if (attempts !== undefined) assert.equal(r.headers.get('x-tollgate-attempts'), String(attempts), 'x-tollgate-attempts');
    const got = r.headers.get('x-tollgate-fallback-reason');
    if (reason === null) assert.equal(got, null, 'no fallback reason');
    else if (reason !== undefined) assert.match(got || '', REASON[reason], 'x-tollgate-fallback-reason');
}

/**
 * The failover events of one answer (by its x-tollgate-request-id) through the admin API, oldest
 * first, once at least `n` have arrived and their number has held still for a few writer periods
 * (so a row written after the others, such as a summary row, would be seen).
 */
async function eventsOf(r, sinceMs, n) {
    const id = r.headers.get('x-tollgate-request-id');
    assert.ok(id, 'x-tollgate-request-id');
    const rows = async () =>
        (await failoverEvents({ since: String(sinceMs), limit: 1000 })).list.filter((e) => e.request_id === id);
    await waitFor(async () => (await rows()).length >= n, { what: `${n} failover event(s) of request ${id}` });
    await waitStable(async () => (await rows()).length, { stable: 4, every: 60, what: `the events of ${id}` });
    return { id, list: await rows() };
}

/** [kind, from, to, status, served] of each event, for deepEqual. */
const hops = (list) => list.map((e) => [e.kind, e.from_target, e.to_target, e.status, e.served]);

function allModels() {
    return Object.keys(S.cfg.models).filter((m) => /-(fo|down|flaky)/.test(m));
}

before(async () => {
    await freshStart(allModels());
});

for (const kind of KINDS) {
    const m = (s) => `${kind}-fo${s}`;
    const fb = (s) => `${kind}-fo${s}-fb`;
    const chain = (s) => `${kind}-chain-${s}`;

    describe(`${kind} primary`, () => {
        test('503 -> served by the fallback', async () => {
            await freshStart([m('503'), fb('503')]);
            await setFault(m('503'), { status: 503 });
            const { result: r, delta } = await simDelta([m('503'), fb('503')], () => chat(chatBody(chain('503'))));
            assertServedBy(r, fb('503'), { attempts: 2, reason: 'server_error' });
            assert.equal(r.json.choices[0].message.role, 'assistant');
            assert.deepEqual(delta[m('503')], { requests: 1, by_status: { 503: 1 } });
            assert.deepEqual(delta[fb('503')], { requests: 1, by_status: { 200: 1 } });
            assert.equal((await breakerOf(m('503'))).state, 'closed', 'one failure does not open the breaker');
        });

        test('the failover is one event row, flagged served: admin API, PostgreSQL, tollgate_failovers_total', async () => {
            await freshStart([m('503'), fb('503')]);
            await setFault(m('503'), { status: 503 });
            const from = targetOf(m('503'));
            const to = targetOf(fb('503'));
            const since = Date.now() - 1000;
            const before = (await metricSum('tollgate_failovers_total', { from, to })) || 0;
            const r = await chat(chatBody(chain('503')));
            assertServedBy(r, fb('503'), { attempts: 2, reason: 'server_error' });
            // One row per hop and no summary row: the hop into the fallback is the fallback event.
            const { id, list } = await eventsOf(r, since, 1);
            assert.deepEqual(hops(list), [['failed', from, to, 503, true]], JSON.stringify(list));
            const [ev] = list;
            assert.equal(ev.chain, chain('503'));
            assert.ok(ev.reason, 'the event names a reason');
            assert.equal(typeof ev.added_latency_us, 'number');
            assert.ok(ev.added_latency_us > 0, 'the failed attempt took time');
            const rows = await psql(
                `select kind, from_target, to_target, status, served, added_latency_us, chain ` +
                    `from failover_events where request_id = ${lit(id)} order by id`
            );
            assert.deepEqual(rows, [['failed', from, to, '503', 't', String(ev.added_latency_us), chain('503')]]);
            const n = await metricSum('tollgate_failovers_total', { from, to });
            assert.equal(n, before + 1, `tollgate_failovers_total{from="${from}",to="${to}"} counted once`);
        });

        test('429 with a short Retry-After and nothing else to try -> the wait is part of the served hop', async () => {
            // A model on its own (a chain of one): the planner waits out the Retry-After and retries.
            await freshStart([m('429')]);
            await setFault(m('429'), { status: 429, retry_after_s: 1, fail_first: 1 });
            const since = Date.now() - 1000;
            let tookMs = 0;
            const { result: r, delta } = await simDelta([m('429')], async () => {
                const t0 = performance.now();
                const res = await chat(chatBody(m('429')));
                tookMs = performance.now() - t0;
                return res;
            });
            assertServedBy(r, m('429'), { attempts: 2, reason: 'rate_limited' });
            assert.equal(delta[m('429')].requests, 2, 'the same target, retried once');
            const t = targetOf(m('429'));
            const { list } = await eventsOf(r, since, 1);
            assert.deepEqual(hops(list), [['failed', t, t, 429, true]], JSON.stringify(list));
            const added = list[0].added_latency_us;
            assert.ok(added >= 1_000_000, `the 1 s wait counts in the hop's added latency (${added} µs)`);
            assert.ok(added <= tookMs * 1000 + 5000, `no more than the request took (${added} µs, ${tookMs} ms)`);
        });

        test('a per-request "models" list is a chain', async () => {
            await freshStart([m('req'), fb('req')]);
            await setFault(m('req'), { status: 503 });
            const r = await chat(chatBody(m('req'), { models: [m('req'), fb('req')] }));
            assertServedBy(r, fb('req'), { attempts: 2 });
        });

        test('hang -> first-byte timeout -> served by the fallback', async () => {
            await freshStart([m('hang'), fb('hang')]);
            await setFault(m('hang'), { hang: true });
            const { result: r, delta } = await simDelta([fb('hang')], () => chat(chatBody(chain('hang'))));
            assertServedBy(r, fb('hang'), { attempts: 2, reason: 'timeout' });
            assert.equal(delta[fb('hang')].requests, 1);
        });

        test('hang on a stream -> first-byte timeout -> the fallback streams', async () => {
            await freshStart([m('hang'), fb('hang')]);
            await setFault(m('hang'), { hang: true });
            const r = await chatStream(chatBody(chain('hang')));
            assertServedBy(r, fb('hang'), { attempts: 2, reason: 'timeout' });
            assert.equal(r.sse.done, true);
            assert.equal(r.sse.errors.length, 0);
        });

        test('429 with a long Retry-After -> served by the fallback', async () => {
            await freshStart([m('429'), fb('429')]);
            await setFault(m('429'), { status: 429, retry_after_s: 30 });
            const { result: r, delta } = await simDelta([m('429'), fb('429')], () => chat(chatBody(chain('429'))));
            assertServedBy(r, fb('429'), { attempts: 2, reason: 'rate_limited' });
            assert.equal(delta[m('429')].requests, 1, 'the primary was not retried');
        });

        test('529 (overloaded) -> served by the fallback', async () => {
            await freshStart([m('529'), fb('529')]);
            await setFault(m('529'), { status: 529 });
            const r = await chat(chatBody(chain('529')));
            assertServedBy(r, fb('529'), { attempts: 2, reason: 'server_error' });
        });

        test('401 on the primary -> served by the fallback, and its breaker opens at once', async () => {
            await freshStart([m('401'), fb('401')]);
            await setFault(m('401'), { status: 401 });
            const r = await chat(chatBody(chain('401')));
            assertServedBy(r, fb('401'), { attempts: 2, reason: 'misconfigured' });
            const b = await breakerOf(m('401'));
            assert.equal(b.state, 'open', `breaker of ${targetOf(m('401'))} is open after one 401`);
            // And it is skipped with no I/O now: one event row, the skip, flagged served.
            const since = Date.now() - 1000;
            const { result: r2, delta } = await simDelta([m('401')], () => chat(chatBody(chain('401'))));
            assertServedBy(r2, fb('401'));
            assert.equal(delta[m('401')].requests, 0, 'an open breaker is skipped without a request');
            const { list } = await eventsOf(r2, since, 1);
            assert.deepEqual(
                hops(list),
                [['skipped', targetOf(m('401')), targetOf(fb('401')), null, true]],
                JSON.stringify(list)
            );
            assert.equal(list[0].reason, 'breaker_open');
            assert.equal(list[0].added_latency_us, 0, 'a skip adds no latency');
        });

        test('context length exceeded -> the larger-context fallback only', async () => {
            await freshStart([m('ctx'), fb('ctx'), `${kind}-foctx-big`]);
            await setFault(m('ctx'), { status: 400, error: 'context_length' });
            const { result: r, delta } = await simDelta([m('ctx'), fb('ctx'), `${kind}-foctx-big`], () =>
                chat(chatBody(chain('ctx')))
            );
            assertServedBy(r, `${kind}-foctx-big`, { reason: 'context_length' });
            assert.equal(delta[fb('ctx')].requests, 0, 'the ordinary fallback was not tried');
            assert.equal(delta[`${kind}-foctx-big`].requests, 1);
            assert.equal((await breakerOf(m('ctx'))).state, 'closed', 'context length does not count');
        });

        test('a caller’s 400 -> returned as is, no failover', async () => {
            await freshStart([m('400'), fb('400')]);
            await setFault(m('400'), { status: 400 });
            const { result: r, delta } = await simDelta([m('400'), fb('400')], () => chat(chatBody(chain('400'))));
            assertOpenAIError(r, 400, { type: 'invalid_request_error' });
            assert.equal(delta[m('400')].requests, 1);
            assert.equal(delta[fb('400')].requests, 0, 'the fallback was not touched');
            assert.equal((await breakerOf(m('400'))).state, 'closed', 'a caller error does not count');
        });

        test('everything down -> 503 naming each attempt; Retry-After once every breaker is open', async () => {
            const a = `${kind}-down-a`;
            const b = `${kind}-down-b`;
            await freshStart([a, b]);
            await setFault(a, { status: 503 });
            await setFault(b, { status: 500 });
            const since = Date.now() - 1000;
            const first = await chat(chatBody(`${kind}-chain-down`));
            const e = assertOpenAIError(first, 503);
            assert.match(e.message, /503|server_error/, 'the message names the primary’s reason');
            assert.match(e.message, /500|server_error/, 'the message names the fallback’s reason');
            // One row per failed attempt, none served; the last names no next target.
            const { list } = await eventsOf(first, since, 2);
            assert.deepEqual(
                hops(list),
                [
                    ['failed', targetOf(a), targetOf(b), 503, false],
                    ['failed', targetOf(b), null, 500, false],
                ],
                JSON.stringify(list)
            );
            assert.ok(list.every((x) => x.added_latency_us > 0), 'each failed attempt took time');
            // Each failed request counts once against both breakers: after 3 both are open.
            const last = await waitFor(
                async () => {
                    const r = await chat(chatBody(`${kind}-chain-down`));
                    assertOpenAIError(r, 503);
                    return r.headers.get('retry-after') ? r : null;
                },
                { tries: 6, what: 'a 503 with Retry-After' }
            );
            assert.ok(Number(last.headers.get('retry-after')) >= 1, 'Retry-After is a positive number of seconds');
            assert.equal((await breakerOf(a)).state, 'open');
            assert.equal((await breakerOf(b)).state, 'open');
            const { delta } = await simDelta([a, b], () => chat(chatBody(`${kind}-chain-down`)));
            assert.deepEqual([delta[a].requests, delta[b].requests], [0, 0], 'open breakers cost no I/O');
        });

        test('breaker: 3 failures open it; no primary traffic until the half-open probe; recovery closes', async () => {
            const p = `${kind}-flaky`;
            const f = `${kind}-flaky-fb`;
            await freshStart([p, f]);
            await setFault(p, { status: 503 });
            const { delta } = await simDelta([p], async () => {
                for (let i = 0; i < 3; i++) assertServedBy(await chat(chatBody(`${kind}-chain-flaky`)), f);
            });
            assert.equal(delta[p].requests, 3);
            assert.equal((await breakerOf(p)).state, 'open', 'open after 3 consecutive failures');

            // While open (open_ms 2500 in the test config) the primary sees nothing.
            const { result: r1, delta: d1 } = await simDelta([p], () => chat(chatBody(`${kind}-chain-flaky`)));
            const stillOpen = (await breakerOf(p)).state === 'open';
            assertServedBy(r1, f, { attempts: 1 });
            if (stillOpen) assert.equal(d1[p].requests, 0, 'no primary traffic while the breaker is open');

            // The primary recovers; once half-open, exactly one request probes it and closes the breaker.
            await clearFaults();
            await waitBreaker(p, 'half_open', { what: `breaker of ${p} to turn half-open` });
            const { result: r2, delta: d2 } = await simDelta([p, f], () => chat(chatBody(`${kind}-chain-flaky`)));
            assertServedBy(r2, p, { attempts: 1, reason: null });
            assert.equal(d2[p].requests, 1, 'one probe');
            assert.equal(d2[f].requests, 0);
            assert.equal((await breakerOf(p)).state, 'closed', 'a successful probe closes the breaker');
        });

        test('a stream cut mid-way -> an error event, no [DONE], no failover', async () => {
            await freshStart([m('cut'), fb('cut')]);
            await setFault(m('cut'), { drop_after_chunks: 2 });
            const { result: r, delta } = await simDelta([fb('cut')], () => chatStream(chatBody(chain('cut'))));
            assert.equal(r.status, 200);
            assertRouteHeaders(r, { model: m('cut'), provider: providerOf(m('cut')) });
            assert.ok(r.sse.chunks.length >= 1, 'content had reached the client');
            assert.equal(r.sse.done, false, 'no [DONE]');
            assert.ok(r.sse.errors.length >= 1, `an error event (tail: ${r.text.slice(-300)})`);
            assert.equal(delta[fb('cut')].requests, 0, 'no failover after the first byte');
        });

        test('route events: trying / failed / served comments before the first chunk', async () => {
            await freshStart([m('ev'), fb('ev')]);
            await setFault(m('ev'), { status: 503 });
            const r = await chatStream(chatBody(chain('ev')), { headers: { 'x-tollgate-route-events': 'true' } });
            assertServedBy(r, fb('ev'), { attempts: 2, reason: 'server_error' });
            const firstData = r.sse.items.findIndex((i) => i.type === 'data');
            assert.ok(firstData > 0, 'comments came before the first data event');
            const before = r.sse.items.slice(0, firstData).map((i) => i.text);
            const find = (re) => before.findIndex((t) => re.test(t));
            const trying = find(/trying/i);
            const failed = find(/fail/i);
            const served = find(/serv/i);
            assert.ok(trying >= 0 && failed >= 0 && served >= 0, `trying/failed/served in ${JSON.stringify(before)}`);
            assert.ok(trying < failed && failed < served, 'in the order they happened');
            assert.ok(before.some((t) => t.includes(targetOf(m('ev'))) || t.includes(m('ev'))), 'names the primary');
            assert.equal(r.sse.done, true);

            const plain = await chatStream(chatBody(chain('ev')));
            assert.equal(plain.sse.comments.length, 0, 'no route comments unless asked');
        });
    });
}

test('breaker states are exported as tollgate_breaker_state', async () => {
    const b = `${KINDS[0]}-fo401`;
    const v = await metricSum('tollgate_breaker_state', { target: targetOf(b) });
    assert.notEqual(v, null, `tollgate_breaker_state{target="${targetOf(b)}"} exists`);
});

test('no secret in the gateway log', () => {
    assertLogHasNoSecrets();
});
