// Issue #9 item 7: `tollgate serve` refuses to start against a schema older than the binary (it
// would run and lose every failover event batch), naming `tollgate migrate`; a schema newer than
// the binary is accepted with a warning (migrations only add; an older gateway keeps running during
// a rolling upgrade). On a database of this file's own in the stack's cluster, and gateways of its
// own (lib/instance.mjs).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { stack } from './lib/stack.mjs';
import { startInstance, baseConfig, runCmd, freePort, assertNoSanitizerReport } from './lib/instance.mjs';

const run = promisify(execFile);
const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DB = `tollgate_schema_${process.pid}`;

/** The stack's database URL with another database name. */
function dbUrl(name) {
    const u = stack().databaseUrl;
    assert.match(u, /^postgresql:\/\/\/[^?]+\?/, 'the stack database URL names a socket directory');
    return u.replace(/^postgresql:\/\/\/[^?]+\?/, `postgresql:///${name}?`);
}

async function psqlOn(url, args) {
    const { stdout } = await run('psql', [url, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', ...args], {
        env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' },
    });
    return stdout.trim();
}

async function dropDb() {
    await psqlOn(stack().databaseUrl, ['-c', `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`]);
}

after(dropDb);

function config(ctx) {
    return baseConfig({
        ...ctx,
        providers: { 'sim-openai': { kind: 'openai', base_url: `${ctx.simUrl}/openai/v1`, api_key_file: ctx.pepperFile } },
        models: { 'schema-a': { provider: 'sim-openai', upstream: 'schema-a' } },
        extra: { database: { url: dbUrl(DB), pool_size: 1 } },
    });
}

test('serve refuses an older schema, naming tollgate migrate; starts once migrated; warns on a newer one', async () => {
    const S = stack();
    await dropDb();
    await psqlOn(S.databaseUrl, ['-c', `CREATE DATABASE ${DB}`]);
    // The schema as the first release left it: migration 0001 only.
    await psqlOn(dbUrl(DB), ['-f', join(SRC, 'migrations/0001_init.sql')]);
    await psqlOn(dbUrl(DB), ['-c', 'INSERT INTO schema_migrations (version) VALUES (1)']);

    const dir = mkdtempSync(join(tmpdir(), 'tg-schema-'));
    try {
        const pepperFile = join(dir, 'pepper');
        writeFileSync(pepperFile, randomBytes(32).toString('hex'), { mode: 0o600 });
        const cfgPath = join(dir, 'tollgate.json');
        const [dataPort, adminPort] = [await freePort(), await freePort()];
        writeFileSync(cfgPath, JSON.stringify(config({ simUrl: 'http://127.0.0.1:9', dataPort, adminPort, pepperFile })));
        // Before the fix `serve` ran (and was killed here after the bound): this must exit on its own.
        const r = await runCmd(S.gatewayBin, ['serve', '-c', cfgPath], { timeoutMs: 30000 });
        assert.equal(r.killed, false, `serve did not stop by itself:\n${(r.stdout + r.stderr).slice(-2000)}`);
        assert.equal(r.code, 1, `serve exits 1 on an older schema:\n${r.stderr}`);
        const lines = r.stderr.split('\n').filter((l) => /schema/.test(l));
        assert.equal(lines.length, 1, `one line says why:\n${r.stderr}`);
        assert.match(lines[0], /migration 0002_failover_served is not applied/);
        assert.match(lines[0], new RegExp(`run \`tollgate migrate -c ${cfgPath.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\``));
        assert.ok(!r.stderr.includes(readFileSync(pepperFile, 'utf8')), 'no secret in the output');
        assert.ok(!/server_started/.test(r.stderr), 'no worker started');

        // A database with no schema at all is refused the same way.
        await psqlOn(dbUrl(DB), ['-c', 'DROP TABLE schema_migrations']);
        const r0 = await runCmd(S.gatewayBin, ['serve', '-c', cfgPath], { timeoutMs: 30000 });
        assert.equal(r0.code, 1, `serve exits 1 without a schema:\n${r0.stderr}`);
        assert.match(r0.stderr, /no schema_migrations table.*run `tollgate migrate -c /);
        await psqlOn(dbUrl(DB), ['-c', 'CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO schema_migrations (version) VALUES (1)']);
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }

    // Migrated (startInstance runs `tollgate migrate`), it starts and serves.
    let inst = await startInstance(config, { tenant: 'schema-test', migrate: true });
    try {
        const res = await fetch(`${inst.url}/v1/models`, { headers: { authorization: `Bearer ${inst.key}` } });
        await res.arrayBuffer();
        assert.equal(res.status, 200, 'the migrated gateway serves');
        assert.ok(!inst.gateway.logEvents().some((e) => e.event === 'schema_newer'), 'no warning on an up-to-date schema');
    } finally {
        await inst.stop();
    }
    assert.equal(inst.gateway.exit.code, 0, 'exit 0 after SIGTERM');
    assertNoSanitizerReport(inst.gateway, 'gateway');

    // A migration this binary does not know: accepted, with a warning naming both versions.
    await psqlOn(dbUrl(DB), ['-c', 'INSERT INTO schema_migrations (version) VALUES (9999)']);
    inst = await startInstance(config, { tenant: 'schema-test' });
    try {
        const w = inst.gateway.logEvents().find((e) => e.event === 'schema_newer');
        assert.ok(w, `a schema_newer warning:\n${inst.gateway.output.slice(-2000)}`);
        assert.equal(w.database_version, 9999);
        assert.ok(w.binary_version >= 2 && w.binary_version < 9999);
    } finally {
        await inst.stop();
    }
    assert.equal(inst.gateway.exit.code, 0, 'exit 0 after SIGTERM');
    assertNoSanitizerReport(inst.gateway, 'gateway');
});
