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
import { waitFor } from './lib/wait.mjs';

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

        test('the failover is an event: admin API, PostgreSQL and tollgate_failovers_total', async () => {
            const from = targetOf(m('503'));
            const to = targetOf(fb('503'));
            const ev = await waitFor(
                async () => {
                    const { list } = await failoverEvents({ limit: 500 });
                    return list.find((e) => e.from_target === from && e.to_target === to);
                },
                { what: `a failover event from ${from} in GET /admin/v1/failover-events` }
            );
            assert.equal(ev.status, 503);
            assert.equal(typeof ev.request_id, 'string');
            assert.equal(ev.chain, chain('503'));
            assert.ok(ev.reason, 'the event names a reason');
            const rows = await psql(
                `select count(*), max(status), max(chain) from failover_events where from_target = ${lit(from)}`
            );
            assert.ok(Number(rows[0][0]) >= 1, 'the event is in PostgreSQL');
            assert.equal(rows[0][1], '503');
            assert.equal(rows[0][2], chain('503'));
            const n = await metricSum('tollgate_failovers_total', { from, to });
            assert.ok(n >= 1, `tollgate_failovers_total{from="${from}",to="${to}"} counted (${n})`);
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
            // And it is skipped with no I/O now.
            const { result: r2, delta } = await simDelta([m('401')], () => chat(chatBody(chain('401'))));
            assertServedBy(r2, fb('401'));
            assert.equal(delta[m('401')].requests, 0, 'an open breaker is skipped without a request');
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
            const first = await chat(chatBody(`${kind}-chain-down`));
            const e = assertOpenAIError(first, 503);
            assert.match(e.message, /503|server_error/, 'the message names the primary’s reason');
            assert.match(e.message, /500|server_error/, 'the message names the fallback’s reason');
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
