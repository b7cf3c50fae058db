// The running stack under test: read once from the KEY=VALUE file named by TG_STACK_ENV
// (written by tests/integration/stack.sh), plus the secrets the leak checks look for.
//
// The stack bills as production does (config.template.json), so every test file that runs on it
// ends with the ledger's invariants checked over the stack's database (tollgate_ledger_check(),
// lib/ledger.mjs): a hook registered here, when the file first imports the stack, after its tests.
import { readFileSync } from 'node:fs';
import { after } from 'node:test';

if (process.env.TG_STACK_ENV)
    after(async () => {
        const { assertLedgerClean } = await import('./ledger.mjs');
        const file = process.argv[process.argv.length - 1];
        await assertLedgerClean(`the stack's database after ${file}`);
        console.log(`the ledger's invariants hold on the stack's database after ${file.split('/').pop()}`);
    });

let cached = null;

function parseEnvFile(text) {
    const out = {};
    for (const line of text.split('\n')) {
        const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
        if (!m) continue;
        let v = m[2].trim();
        if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) v = v.slice(1, -1);
        out[m[1]] = v;
    }
    return out;
}

/** Secrets that must never show up in a response body or in the gateway log. */
function collectSecrets(env) {
    const secrets = [];
    if (env.TG_KEY) secrets.push({ name: 'tollgate API key', value: env.TG_KEY });
    if (env.TG_ADMIN_TOKEN) secrets.push({ name: 'admin token', value: env.TG_ADMIN_TOKEN });
    // The test config uses the pepper file as the providers' key file too (see config.template.json),
    // so one value stands for both the pepper and the key the simulator receives.
    try {
        const cfg = JSON.parse(readFileSync(env.TG_CONFIG, 'utf8'));
        const files = new Set();
        if (cfg.secrets && cfg.secrets.key_pepper_file) files.add(cfg.secrets.key_pepper_file);
        if (cfg.admin_auth && cfg.admin_auth.hs256_secret_file) files.add(cfg.admin_auth.hs256_secret_file);
        for (const mk of (cfg.secrets && cfg.secrets.master_keys) || []) files.add(mk.file);
        for (const p of Object.values(cfg.providers || {})) if (p.api_key_file) files.add(p.api_key_file);
        for (const f of files) {
            const v = readFileSync(f, 'utf8').trim();
            if (v.length >= 8) secrets.push({ name: `secret file ${f}`, value: v });
        }
        for (const p of Object.values(cfg.providers || {})) {
            const v = p.api_key_env && process.env[p.api_key_env];
            if (v && v.length >= 8) secrets.push({ name: `provider key $${p.api_key_env}`, value: v });
        }
    } catch (e) {
        throw new Error(`cannot read the gateway config TG_CONFIG=${env.TG_CONFIG}: ${e.message}`);
    }
    const extra = env.TG_SIM_KEY || process.env.TG_SIM_KEY;
    if (extra) secrets.push({ name: 'simulator key', value: extra });
    return secrets;
}

export function stack() {
    if (cached) return cached;
    const file = process.env.TG_STACK_ENV;
    if (!file) throw new Error('TG_STACK_ENV is not set: run these tests through ctest (tests/integration/stack.sh)');
    const env = parseEnvFile(readFileSync(file, 'utf8'));
    for (const k of ['TG_URL', 'TG_ADMIN_URL', 'TG_SIM_URL', 'TG_KEY', 'TG_CONFIG']) {
        if (!env[k]) throw new Error(`${file} lacks ${k}`);
    }
    cached = {
        url: env.TG_URL.replace(/\/$/, ''),
        adminUrl: env.TG_ADMIN_URL.replace(/\/$/, ''),
        simUrl: env.TG_SIM_URL.replace(/\/$/, ''),
        key: env.TG_KEY,
        adminToken: env.TG_ADMIN_TOKEN, // an operator token of the admin API (stack.sh, `tollgate token`)
        databaseUrl: env.TG_DATABASE_URL,
        config: env.TG_CONFIG,
        gatewayPid: env.TG_GATEWAY_PID ? Number(env.TG_GATEWAY_PID) : 0,
        gatewayLog: env.TG_GATEWAY_LOG,
        simBin: env.TG_SIM_BIN,
        gatewayBin: env.TG_GATEWAY_BIN,
        env,
    };
    cached.secrets = collectSecrets(env);
    cached.cfg = JSON.parse(readFileSync(env.TG_CONFIG, 'utf8'));
    return cached;
}

/** The breaker key of a configured model: "<provider>/<upstream>" (config.h, tg_model_cfg_t.target_key). */
export function targetOf(model) {
    const m = stack().cfg.models[model];
    if (!m) throw new Error(`model ${model} is not in the test config`);
    return `${m.provider}/${m.upstream}`;
}

export function providerOf(model) {
    const m = stack().cfg.models[model];
    if (!m) throw new Error(`model ${model} is not in the test config`);
    return m.provider;
}

export function kindOf(model) {
    return stack().cfg.providers[providerOf(model)].kind;
}

export const KINDS = ['openai', 'anthropic', 'gemini'];
