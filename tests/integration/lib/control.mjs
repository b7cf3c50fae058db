// Control of the simulator (faults, stats) and of the gateway's admin listener (breakers,
// metrics, failover events), plus direct database queries through psql.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { admin, sim } from './http.mjs';
import { stack, targetOf } from './stack.mjs';
import { waitFor } from './wait.mjs';

const run = promisify(execFile);

/* ---- simulator ---- */

/** POST /_sim/faults: a per-model fault ({status, retry_after_s, fail_first, ...}). */
export async function setFault(model, fault) {
    const r = await sim('POST', '/_sim/faults', { body: { model, ...fault } });
    assert.ok(r.status >= 200 && r.status < 300, `sim accepted the fault for ${model}: ${r.status} ${r.text}`);
}

export async function clearFaults() {
    const r = await sim('DELETE', '/_sim/faults');
    assert.ok(r.status >= 200 && r.status < 300, `sim cleared its faults: ${r.status}`);
}

export async function simStats() {
    const r = await sim('GET', '/_sim/stats');
    assert.equal(r.status, 200, 'GET /_sim/stats');
    return r.json;
}

export async function resetSimStats() {
    const r = await sim('DELETE', '/_sim/stats');
    assert.ok(r.status >= 200 && r.status < 300, `sim reset its stats: ${r.status}`);
}

/** {requests, by_status} of one upstream model at the simulator (zeros when it saw none). */
export async function simModel(model) {
    const s = await simStats();
    const m = (s && s.models && s.models[model]) || {};
    return { requests: m.requests || 0, by_status: m.by_status || {}, ...m };
}

/* ---- admin listener ---- */

function normState(s) {
    return String(s).toLowerCase().replace('-', '_');
}

export async function breakers() {
    const r = await admin('GET', '/admin/v1/breakers');
    assert.equal(r.status, 200, `GET /admin/v1/breakers: ${r.text.slice(0, 200)}`);
    const list = Array.isArray(r.json) ? r.json : r.json.breakers || r.json.data || [];
    return list.map((b) => ({ ...b, state: normState(b.state) }));
}

/** The breaker of a model's target, or a closed stand-in when it was never used. */
export async function breakerOf(model) {
    const key = targetOf(model);
    const b = (await breakers()).find((x) => x.target === key);
    return b || { target: key, state: 'closed', missing: true };
}

export async function resetBreaker(model) {
    const r = await admin('POST', `/admin/v1/breakers/${encodeURIComponent(targetOf(model))}/reset`);
    // A breaker that was never created has nothing to reset; 404 is fine then.
    assert.ok((r.status >= 200 && r.status < 300) || r.status === 404, `breaker reset: ${r.status} ${r.text}`);
}

export async function resetBreakers(models) {
    for (const m of models) await resetBreaker(m);
}

export async function waitBreaker(model, state, opts = {}) {
    return waitFor(
        async () => {
            const b = await breakerOf(model);
            return b.state === state ? b : null;
        },
        { what: `breaker of ${model} to be ${state}`, ...opts }
    );
}

export async function metricsText() {
    const r = await admin('GET', '/metrics');
    assert.equal(r.status, 200, 'GET /metrics');
    return r.text;
}

/** Parses Prometheus text into [{name, labels:{}, value}]. */
export function parseMetrics(text) {
    const out = [];
    for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
        if (!m) continue;
        const labels = {};
        if (m[3]) {
            const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
            let l;
            while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        }
        out.push({ name: m[1], labels, value: Number(m[4]) });
    }
    return out;
}

/** Sum of a metric's samples whose labels include `match`. */
export async function metricSum(name, match = {}) {
    const all = parseMetrics(await metricsText());
    let sum = 0;
    let seen = false;
    for (const s of all) {
        if (s.name !== name) continue;
        if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) {
            sum += s.value;
            seen = true;
        }
    }
    return seen ? sum : null;
}

export async function failoverEvents(query = {}) {
    const qs = new URLSearchParams(query).toString();
    const r = await admin('GET', `/admin/v1/failover-events${qs ? '?' + qs : ''}`);
    assert.equal(r.status, 200, `GET /admin/v1/failover-events: ${r.text.slice(0, 200)}`);
    const list = Array.isArray(r.json) ? r.json : r.json.events || r.json.data || [];
    return { list, body: r.json };
}

/* ---- database ---- */

/** Runs one SQL statement through psql; returns rows as arrays of strings (unaligned, tab-separated). */
export async function psql(sql) {
    const { stdout } = await run('psql', [stack().databaseUrl, '-X', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
    return stdout
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => l.split('\t'));
}

/** Runs `insertSql`, an INSERT of test usage records, the way migration 0014 asks of a writer other
 *  than the settlement: in a transaction that says it keeps the rollup, then rebuilds the rollup of
 *  each tenant in `tenantIds` from its records (tollgate_ledger_check compares the two). */
export async function insertUsage(tenantIds, insertSql) {
    const rebuild = tenantIds.map((t) => `SELECT tollgate_usage_daily_rebuild(${Number(t)});`).join(' ');
    return psql(`BEGIN; SET LOCAL tollgate.usage_rollup = 'caller'; ${insertSql}; ${rebuild} COMMIT;`);
}

/** SQL string literal (psql -c has no parameters; test-controlled values only). */
export function lit(s) {
    return `'${String(s).replace(/'/g, "''")}'`;
}

/* ---- the gateway process ---- */

/** VmRSS of the gateway in bytes (from /proc). */
export function gatewayRss() {
    const pid = stack().gatewayPid;
    assert.ok(pid > 0, 'TG_GATEWAY_PID is set');
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(st);
    assert.ok(m, 'VmRSS in /proc/PID/status');
    return Number(m[1]) * 1024;
}

/** Test-start hygiene: clear every simulator fault and reset the breakers of `models`. */
export async function freshStart(models = []) {
    await clearFaults();
    await resetBreakers(models);
}
