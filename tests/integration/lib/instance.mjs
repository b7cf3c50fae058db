// A gateway and a simulator of a test's own, beside the shared stack: tests that signal the gateway
// (SIGTERM, SIGHUP) or need their own config (health checks) must not disturb the stack's gateway.
// The instance uses the stack's database (migrations are applied) and its own pepper file, config
// file, ports, API key and logs, in a temp dir removed by stop().
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { stack } from './stack.mjs';
import { waitFor } from './wait.mjs';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const SANITIZER = /AddressSanitizer|LeakSanitizer|runtime error:/;

/** A port nothing listens on right now (the kernel picks it; another process may still take it). */
export function freePort() {
    return new Promise((res, rej) => {
        const s = createServer();
        s.once('error', rej);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => res(port));
        });
    });
}

/**
 * Runs a command to completion: {code, stdout, stderr} (never throws on a non-zero exit). With
 * timeoutMs, a command still running then is killed (SIGKILL; code -1, killed true): for commands
 * that must exit by themselves, so that a test fails instead of hanging when one does not.
 */
export function runCmd(bin, args, { env = process.env, cwd = SRC, timeoutMs = 0 } = {}) {
    return new Promise((res) => {
        execFile(bin, args, { env, cwd, maxBuffer: 16 << 20, timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
            const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
            res({ code, stdout: String(stdout), stderr: String(stderr), killed: Boolean(err && err.killed) });
        });
    });
}

/** A child process whose output is collected, whose exit can be awaited and whose lines can be waited for. */
export class Proc {
    constructor(bin, args, { env = process.env, cwd = SRC } = {}) {
        this.out = '';
        this.err = '';
        this.exit = null; // {code, signal} once exited
        this.child = spawn(bin, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
        this.child.stdout.setEncoding('utf8');
        this.child.stderr.setEncoding('utf8');
        this.child.stdout.on('data', (d) => (this.out += d));
        this.child.stderr.on('data', (d) => (this.err += d));
        this.exited = new Promise((res) => {
            this.child.on('exit', (code, signal) => {
                this.exit = { code, signal };
                res(this.exit);
            });
        });
        // 'close' comes after both pipes are drained: the full output is then in out/err.
        this.closed = new Promise((res) => this.child.on('close', () => res(this.exit)));
    }

    get pid() {
        return this.child.pid;
    }

    get output() {
        return this.out + this.err;
    }

    kill(sig) {
        if (this.exit === null) this.child.kill(sig);
    }

    /** Waits until the output matches re (or the process exits first: throws). */
    async waitOutput(re, what) {
        return waitFor(
            () => {
                const m = re.exec(this.output);
                if (m) return m;
                if (this.exit !== null) throw new Error(`${what}: the process exited (${JSON.stringify(this.exit)}) first:\n${this.output.slice(-2000)}`);
                return null;
            },
            { tries: 600, every: 50, what }
        );
    }

    /** The gateway's JSON log lines (one object per line), skipping anything else. */
    logEvents() {
        const out = [];
        for (const line of this.output.split('\n')) {
            if (!line.startsWith('{')) continue;
            try {
                out.push(JSON.parse(line));
            } catch {
                /* a partial line at the end of the buffer */
            }
        }
        return out;
    }
}

/** Fails when the process's output holds a sanitizer report. */
export function assertNoSanitizerReport(proc, what) {
    const m = SANITIZER.exec(proc.output);
    if (m) assert.fail(`${what}: sanitizer report in its output:\n${proc.output.slice(Math.max(0, m.index - 200), m.index + 3000)}`);
}

/** Starts `tollgate-sim --listen 127.0.0.1:0` (plus `args`, e.g. `--keys-file F`) and waits for its
 *  "listening on" line. */
export async function startSim({ threads = 1, args = [] } = {}) {
    const S = stack();
    const proc = new Proc(S.simBin, ['--listen', '127.0.0.1:0', '--threads', String(threads), ...args]);
    const m = await proc.waitOutput(/tollgate-sim listening on (http:\/\/[0-9.]+:\d+)/, 'the simulator to listen');
    proc.url = m[1];
    return proc;
}

/* Admin URL of an instance -> its operator token (req() sends it when no key is given). */
const adminTokens = new Map();

/* Every instance's config gets admin_auth (a secret in the instance's directory) unless it has one:
 * the admin API answers no request without a token. */
function withAdminAuth(cfg, dir) {
    if (!cfg || typeof cfg !== 'object' || cfg.admin_auth) return cfg;
    const file = join(dir, 'admin-secret');
    if (!existsSync(file)) writeFileSync(file, randomBytes(32).toString('hex'), { mode: 0o600 });
    return { ...cfg, admin_auth: { issuer: 'tollgate-test', audience: 'tollgate-admin', hs256_secret_file: file } };
}

/**
 * The base config of an instance: the given providers, models and chains, the stack's database and
 * the instance's pepper file; `extra` overrides top-level fields.
 */
export function baseConfig({ dataPort, adminPort, pepperFile, providers, models, chains = {}, extra = {} }) {
    return {
        listen: { data: `127.0.0.1:${dataPort}`, admin: `127.0.0.1:${adminPort}` },
        workers: 2,
        log_level: 'debug',
        database: { url: stack().databaseUrl, pool_size: 1 },
        secrets: { key_pepper_file: pepperFile },
        timeouts: { connect_ms: 1000, first_byte_ms: 10000, idle_ms: 10000, total_ms: 120000 },
        shutdown_grace_ms: 10000,
        key_cache_ttl_ms: 60000,
        providers,
        models,
        chains,
        ...extra,
        // billing off unless a test turns it on (extra.billing.enabled; its own journal then: one per
        // process); a billing block without `enabled` (trial credits) keeps it off
        billing: { enabled: false, ...(extra.billing || {}) },
    };
}

/**
 * A gateway of the test's own. make(ctx) returns the config object, where ctx = {simUrl, dataPort,
 * adminPort, pepperFile, dir}. Returns an object with the URLs, the key, the processes and helpers.
 * Options: tenant (of the key it creates), simThreads, createKey (false: no key, for a config whose
 * database is down), needReady (false: wait for /healthz only instead of /readyz), migrate (true:
 * `tollgate migrate` first, for a config with a database of its own), simArgs (more arguments of
 * the simulator, e.g. the keys it accepts).
 */
export async function startInstance(make, { tenant = 'lifecycle-test', simThreads = 1, createKey = true, needReady = true, migrate = false, simArgs = [] } = {}) {
    const S = stack();
    assert.ok(S.gatewayBin && S.simBin, 'TG_GATEWAY_BIN and TG_SIM_BIN are in the stack env');
    assert.ok(S.databaseUrl, 'TG_DATABASE_URL is in the stack env');
    const dir = mkdtempSync(join(tmpdir(), 'tg-instance-'));
    const pepperFile = join(dir, 'pepper');
    writeFileSync(pepperFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    const configPath = join(dir, 'tollgate.json');
    const sim = await startSim({ threads: simThreads, args: simArgs });

    const inst = {
        dir,
        configPath,
        pepperFile,
        sim,
        simUrl: sim.url,
        gateway: null,
        writeConfig(cfg) {
            writeFileSync(configPath, typeof cfg === 'string' ? cfg : JSON.stringify(withAdminAuth(cfg, dir), null, 2) + '\n');
        },
        async stop() {
            if (this.gateway && this.gateway.exit === null) {
                this.gateway.kill('SIGTERM');
                await this.gateway.closed;
            }
            sim.kill('SIGTERM');
            await sim.closed;
            rmSync(dir, { recursive: true, force: true });
        },
    };

    // Ports picked by the kernel can be taken by someone else before the gateway binds them: retry.
    let lastErr = null;
    for (let attempt = 0; attempt < 3; attempt++) {
        const dataPort = await freePort();
        const adminPort = await freePort();
        if (dataPort === adminPort) continue;
        inst.ctx = { simUrl: sim.url, dataPort, adminPort, pepperFile, dir };
        inst.cfg = make(inst.ctx);
        inst.writeConfig(inst.cfg);
        inst.url = `http://127.0.0.1:${dataPort}`;
        inst.adminUrl = `http://127.0.0.1:${adminPort}`;
        if (migrate && attempt === 0) {
            const m = await runCmd(S.gatewayBin, ['migrate', '-c', configPath]);
            assert.equal(m.code, 0, `tollgate migrate: ${m.stderr}`);
        }
        if (inst.cfg && typeof inst.cfg === 'object' && !inst.adminToken) {
            // an operator token of the instance's admin API: req() sends it to inst.adminUrl
            const t = await runCmd(S.gatewayBin, ['token', '-c', configPath, '--role', 'operator', '--ttl', '24h', '--sub', 'integration-instance']);
            assert.equal(t.code, 0, `tollgate token: ${t.stderr}`);
            inst.adminToken = t.stdout.trim();
        }
        if (inst.adminToken) adminTokens.set(inst.adminUrl, inst.adminToken);
        if (createKey && !inst.key) {
            const k = await runCmd(S.gatewayBin, ['keys', 'create', '-c', configPath, '--tenant', tenant]);
            assert.equal(k.code, 0, `tollgate keys create: ${k.stderr}`);
            inst.key = k.stdout.trim().split('\n').pop();
            assert.match(inst.key, /^tg_/, 'keys create printed a key');
        }
        const gw = new Proc(S.gatewayBin, ['serve', '-c', configPath]);
        inst.gateway = gw;
        try {
            await waitFor(
                async () => {
                    if (gw.exit !== null) throw new Error(`gateway exited: ${JSON.stringify(gw.exit)}\n${gw.output.slice(-2000)}`);
                    try {
                        // Without needReady (a config whose database is down on purpose) liveness is enough.
                        const a = await fetch(`${inst.adminUrl}/${needReady ? 'readyz' : 'healthz'}`);
                        await a.arrayBuffer();
                        const d = await fetch(`${inst.url}/healthz`);
                        await d.arrayBuffer();
                        return a.status === 200 && d.status === 200;
                    } catch {
                        return false;
                    }
                },
                { tries: 600, every: 50, what: 'the instance gateway to be ready' }
            );
            return inst;
        } catch (e) {
            lastErr = e;
            gw.kill('SIGTERM');
            await gw.closed;
        }
    }
    await inst.stop();
    throw lastErr || new Error('could not start the instance');
}

/** fetch against an instance: {status, headers, text, json}. path is relative to base; signal bounds
 *  the wait (AbortSignal.timeout) where a test must fail rather than hang. */
export async function req(base, method, path, { body, key, headers = {}, signal } = {}) {
    const h = { ...headers };
    if (key) h.authorization = `Bearer ${key}`;
    else if (key === undefined && adminTokens.has(base) && !h.authorization) h.authorization = `Bearer ${adminTokens.get(base)}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await fetch(base + path, {
        method,
        headers: h,
        ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
        signal,
    });
    const text = await res.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        json = null;
    }
    return { status: res.status, headers: res.headers, text, json };
}

/** Sum of a Prometheus metric's samples (labels including `match`) in a /metrics text; null when absent. */
export function metricValue(text, name, match = {}) {
    let sum = 0;
    let seen = false;
    for (const line of text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
        if (!m || m[1] !== name) continue;
        const labels = {};
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
        let l;
        while (m[3] && (l = re.exec(m[3]))) labels[l[1]] = l[2];
        if (Object.entries(match).every(([k, v]) => labels[k] === v)) {
            sum += Number(m[4]);
            seen = true;
        }
    }
    return seen ? sum : null;
}
