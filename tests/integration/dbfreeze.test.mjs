// Issue #9 item 3: a database path that cannot hang the gateway. PostgreSQL is frozen (SIGSTOP of
// the postmaster and every server process) for several seconds while the gateway serves:
//   - a key in the key cache is still served, and so are chains with a failing primary, whose
//     failover events queue up (never blocking a request);
//   - a key that is not cached gets 503 db_unavailable with Retry-After: with the database frozen
//     that answer can only come from the database job's deadline (database.job_timeout_ms); so
//     does the admin API's failover-events read, and /healthz stays 200;
//   - after SIGCONT everything recovers: the key that was refused and a key created afterwards are
//     authenticated, the queued events land in failover_events (or are counted as dropped), and
//     many requests over fresh connections (so on every worker) each reach the database again.
// The cluster, the simulator and the gateway are this file's own (lib/pgfreeze.mjs, lib/instance.mjs):
// the shared cluster is used by other tests running at the same time and must never be frozen.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { stack } from './lib/stack.mjs';
import { waitFor } from './lib/wait.mjs';
import { startInstance, baseConfig, req, runCmd, metricValue, assertNoSanitizerReport } from './lib/instance.mjs';
import { FreezableCluster } from './lib/pgfreeze.mjs';

const run = promisify(execFile);
const FREEZE_MS = 4000; // "several seconds": the scenario itself, the one fixed wait of this file
const JOB_TIMEOUT_MS = 1000;
const CHAIN_REQUESTS = 20;

const pg = new FreezableCluster('55433', 'tg-dbfreeze-');

after(async () => {
    await pg.stop();
});

const freeze = () => pg.freeze();
const thaw = () => pg.thaw();

/** A well-formed key that is in no database: authenticating it takes a lookup (then 401). */
function unknownKey() {
    return 'tg_' + randomBytes(32).toString('base64url');
}

/** GET /v1/models with `key` over a connection of its own (Connection: close); {status} or {error}. */
function freshRequest(base, key) {
    const u = new URL('/v1/models', base);
    return new Promise((res) => {
        const r = httpRequest(
            { host: u.hostname, port: u.port, path: u.pathname, agent: false, headers: { authorization: `Bearer ${key}`, connection: 'close' }, timeout: 20000 },
            (resp) => {
                resp.resume();
                resp.on('end', () => res({ status: resp.statusCode }));
            }
        );
        r.on('timeout', () => r.destroy(new Error('no answer within 20 s')));
        r.on('error', (e) => res({ error: e.message }));
        r.end();
    });
}

/**
 * POST /v1/chat/completions: {status, headers, text, json, ms}. A request that gets no answer within
 * 30 s fails the test (and so thaws the cluster) instead of hanging it: a gateway that waits on the
 * frozen database would wait until SIGCONT, which comes only after these requests.
 */
async function chat(inst, key, model) {
    const t = Date.now();
    const r = await req(inst.url, 'POST', '/v1/chat/completions', {
        key,
        body: { model, messages: [{ role: 'user', content: 'dbfreeze' }] },
        signal: AbortSignal.timeout(30000),
    });
    return { ...r, ms: Date.now() - t };
}

async function psqlRows(conninfo, sql) {
    const { stdout } = await run('psql', [conninfo, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
    return stdout.trim();
}

test('PostgreSQL frozen: cached keys served, uncached 503 db_unavailable with Retry-After, events kept or counted, full recovery', async (t) => {
    const S = stack();
    // A cluster of this file's own (lib/pgfreeze.mjs).
    const conninfo = await pg.start();

    const makeConfig = (ctx) =>
        baseConfig({
            ...ctx,
            providers: { 'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
            models: {
                'frz-a': { provider: 'sim-openai', upstream: 'frz-a' },
                'frz-primary': { provider: 'sim-openai', upstream: 'frz-primary' },
                'frz-fallback': { provider: 'sim-openai', upstream: 'frz-fallback' },
            },
            chains: { 'frz-chain': { targets: ['frz-primary', 'frz-fallback'] } },
            extra: { database: { url: conninfo, pool_size: 2, job_timeout_ms: JOB_TIMEOUT_MS } },
        });
    const inst = await startInstance(makeConfig, { tenant: 'dbfreeze', migrate: true });
    try {
        assert.equal(inst.cfg.workers, 2, 'two workers: both must come back');
        // keywatch clears the key cache when it (re)connects: let that happen before caching a key
        await inst.gateway.waitOutput(/"event":"keywatch_listening"/, 'keywatch to listen');
        const keyB = (await runCmd(S.gatewayBin, ['keys', 'create', '-c', inst.configPath, '--tenant', 'dbfreeze'])).stdout.trim();
        assert.match(keyB, /^tg_/);

        // Before: key A is authenticated once (and so cached), the chain fails over and its event lands.
        const a0 = await chat(inst, inst.key, 'frz-a');
        assert.equal(a0.status, 200, `key A before the freeze: ${a0.text}`);
        const f = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model: 'frz-primary', status: 503 } });
        assert.ok(f.status >= 200 && f.status < 300, 'the simulator took the fault');
        const c0 = await chat(inst, inst.key, 'frz-chain');
        assert.equal(c0.status, 200, `the chain falls back: ${c0.text}`);
        const rid0 = c0.headers.get('x-tollgate-request-id');
        await waitFor(async () => (await psqlRows(conninfo, `SELECT count(*) FROM failover_events WHERE request_id = '${rid0}'`)) === '1', {
            what: 'the event of the request before the freeze in failover_events',
        });
        const metrics = async () => (await req(inst.adminUrl, 'GET', '/metrics')).text;
        const dropped0 = metricValue(await metrics(), 'tollgate_events_dropped_total') ?? 0;

        // Frozen.
        const t0 = Date.now();
        assert.ok((await freeze()) >= 2, 'the postmaster and its server processes are stopped');

        // A cached key is served, and so is a chain whose failover events cannot be stored now.
        const a1 = await chat(inst, inst.key, 'frz-a');
        assert.equal(a1.status, 200, `the cached key while frozen: ${a1.text}`);
        const rids = [];
        for (let i = 0; i < CHAIN_REQUESTS; i++) {
            const c = await chat(inst, inst.key, 'frz-chain');
            assert.equal(c.status, 200, `chain request ${i} while frozen: ${c.text}`);
            rids.push(c.headers.get('x-tollgate-request-id'));
        }

        // A key that is not cached: 503 db_unavailable with Retry-After, while the database is still
        // frozen (so from the job's deadline, or from a pool whose connections that deadline reset).
        for (let i = 0; i < 3; i++) {
            const b = await chat(inst, keyB, 'frz-a');
            t.diagnostic(`uncached key ${i} while frozen: ${b.status} after ${b.ms} ms (job deadline ${JOB_TIMEOUT_MS} ms)`);
            assert.equal(b.status, 503, `uncached key ${i} while frozen: ${b.text}`);
            assert.equal(b.json.error.code, 'db_unavailable');
            assert.equal(b.json.error.type, 'service_unavailable');
            assert.match(b.headers.get('retry-after') || '', /^[1-9]\d*$/, 'Retry-After in whole seconds');
        }
        await inst.gateway.waitOutput(/"event":"db_job_timeout"/, 'the log to say a database job reached its deadline');
        const m = (await req(inst.adminUrl, 'GET', '/metrics')).text;
        assert.ok(metricValue(m, 'tollgate_db_jobs_failed_total', { reason: 'timeout' }) >= 1, 'the deadline is counted in /metrics');
        // The admin API's database reads take the same path; liveness does not depend on the database.
        const ev = await fetch(`${inst.adminUrl}/admin/v1/failover-events?limit=1`, { signal: AbortSignal.timeout(30000) });
        const evBody = await ev.json();
        assert.equal(ev.status, 503, `failover events while frozen: ${JSON.stringify(evBody)}`);
        assert.equal(evBody.error.code, 'db_unavailable');
        assert.match(ev.headers.get('retry-after') || '', /^[1-9]\d*$/);
        const live = await fetch(`${inst.url}/healthz`, { signal: AbortSignal.timeout(30000) });
        await live.arrayBuffer();
        assert.equal(live.status, 200, '/healthz while frozen');

        // The rest of "several seconds", then the database comes back.
        const left = FREEZE_MS - (Date.now() - t0);
        if (left > 0) await delay(left);
        thaw();
        const t1 = Date.now();

        // Key B, refused while frozen, is authenticated; so is a key created after the freeze.
        await waitFor(async () => (await chat(inst, keyB, 'frz-a')).status === 200, { tries: 300, every: 100, what: 'key B to be authenticated after SIGCONT' });
        const keyC = (await runCmd(S.gatewayBin, ['keys', 'create', '-c', inst.configPath, '--tenant', 'dbfreeze'])).stdout.trim();
        await waitFor(async () => (await chat(inst, keyC, 'frz-a')).status === 200, { tries: 300, every: 100, what: 'a key created after the freeze to be authenticated' });

        // Every worker reaches the database again: unknown keys over fresh connections (spread over
        // the workers by SO_REUSEPORT) each take a lookup, and each gets 401, never 503 or no answer.
        await waitFor(
            async () => {
                const answers = await Promise.all(Array.from({ length: 32 }, () => freshRequest(inst.url, unknownKey())));
                return answers.every((x) => x.status === 401) ? answers : null;
            },
            { tries: 100, every: 100, what: '32 lookups over fresh connections to all get 401' }
        );
        t.diagnostic(`frozen ${t1 - t0} ms; every worker back ${Date.now() - t1} ms after SIGCONT`);

        // The events emitted while frozen: stored, or dropped and counted; none lost silently.
        const ids = rids.map((r) => `'${r}'`).join(',');
        const settled = await waitFor(
            async () => {
                const stored = Number(await psqlRows(conninfo, `SELECT count(DISTINCT request_id) FROM failover_events WHERE request_id IN (${ids})`));
                const dropped = (metricValue(await metrics(), 'tollgate_events_dropped_total') ?? 0) - dropped0;
                return stored + dropped >= CHAIN_REQUESTS ? { stored, dropped } : null;
            },
            { tries: 200, every: 100, what: 'the events of the freeze to be stored or counted as dropped' }
        );
        assert.equal(settled.stored + settled.dropped, CHAIN_REQUESTS);
    } finally {
        thaw();
        await inst.stop();
    }
    assert.equal(inst.gateway.exit.code, 0, `exit 0 after SIGTERM:\n${inst.gateway.output.slice(-2000)}`);
    assertNoSanitizerReport(inst.gateway, 'gateway');
});

test('SIGTERM while PostgreSQL is frozen: the drain is bounded and the process exits 0', async () => {
    // the cluster of the test above, still running (after() stops it)
    const conninfo = await pg.start();
    const inst = await startInstance(
        (ctx) =>
            baseConfig({
                ...ctx,
                providers: { 'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
                models: {
                    'frz-primary': { provider: 'sim-openai', upstream: 'frz-primary' },
                    'frz-fallback': { provider: 'sim-openai', upstream: 'frz-fallback' },
                },
                chains: { 'frz-chain': { targets: ['frz-primary', 'frz-fallback'] } },
                extra: { database: { url: conninfo, pool_size: 2, job_timeout_ms: JOB_TIMEOUT_MS } },
            }),
        { tenant: 'dbfreeze-stop', migrate: true }
    );
    try {
        const f = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model: 'frz-primary', status: 503 } });
        assert.ok(f.status >= 200 && f.status < 300, 'the simulator took the fault');
        const c0 = await chat(inst, inst.key, 'frz-chain'); // caches the key, connects the event writer
        assert.equal(c0.status, 200, `the chain falls back: ${c0.text}`);
        const rid0 = c0.headers.get('x-tollgate-request-id');
        await waitFor(async () => (await psqlRows(conninfo, `SELECT count(*) FROM failover_events WHERE request_id = '${rid0}'`)) === '1', {
            what: 'the event writer to have written once',
        });
        await freeze();
        // an event the writer must try to store at stop, against the frozen database
        const c1 = await chat(inst, inst.key, 'frz-chain');
        assert.equal(c1.status, 200, `the cached key's chain while frozen: ${c1.text}`);
        inst.gateway.kill('SIGTERM');
        const exit = await Promise.race([
            inst.gateway.closed,
            delay(30000).then(() => 'still running 30 s after SIGTERM'),
        ]);
        assert.deepEqual(exit, { code: 0, signal: null }, 'the gateway exits 0 while the database is still frozen');
        const events = inst.gateway.logEvents().map((e) => e.event);
        assert.ok(events.includes('server_stopped'), 'the drain ran to its end');
        assert.ok(events.includes('events_stop_timeout'), 'the writer stuck on the frozen database was left behind, and said so');
    } finally {
        thaw();
        await inst.stop();
    }
});

