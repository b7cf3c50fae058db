// The admin API as the contract tests see it: tokens for every role and every broken-token case
// (jwt.mjs), raw requests (any bytes in the path or body), the route list (admin_routes.mjs), a
// world of two tenants with a resource of each kind, and for every route a request that succeeds
// on that world. openapi, admin_badinput, admin_isolation and ctl tests share it.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { stack, targetOf } from './stack.mjs';
import { assertNoSecrets } from './http.mjs';
import { claimsFor, forge, mint } from './jwt.mjs';
import { psql } from './control.mjs';

/* ---------------------------------------------------------------- tokens */

let authCache = null;
let target = null; // { url, auth }: another gateway's admin listener (useAdmin), else the stack's

/**
 * Sends raw() and the tokens to another gateway's admin listener with its own admin_auth (the
 * isolation matrix runs on an instance whose config has both an HS256 secret and an ES256 key).
 * auth: { issuer, audience, hs256 (Buffer), es256Public (PEM), es256Private (PEM) }. null: the stack.
 */
export function useAdmin(t) {
    target = t;
}

/** The stack's admin_auth: issuer, audience, the HS256 secret and the ES256 key pair. */
export function auth() {
    if (target) return target.auth;
    if (authCache) return authCache;
    const S = stack();
    const a = S.cfg.admin_auth;
    if (!a) throw new Error('the stack config has no admin_auth block');
    const read = (f) => (f ? readFileSync(f) : null);
    const es256Public = read(a.es256_public_key_file);
    const es256PrivFile = S.env.TG_ADMIN_ES256_KEY || (a.es256_public_key_file || '').replace(/\.pub(\.pem)?$/, '.pem');
    let es256Private = null;
    try {
        es256Private = readFileSync(es256PrivFile);
    } catch {
        es256Private = null;
    }
    authCache = {
        issuer: a.issuer,
        audience: a.audience,
        hs256: read(a.hs256_secret_file),
        es256Public,
        es256Private,
    };
    return authCache;
}

/** A valid HS256 token: role 'operator' | 'tenant_admin' | 'auditor', tenant for a tenant admin. */
export function token(role, tenant, over = {}, alg = 'HS256') {
    const A = auth();
    if (alg === 'ES256') return mint(claimsFor(A, role, tenant, over), { alg: 'ES256', key: A.es256Private });
    const secret = A.hs256 ? A.hs256.toString('utf8').trim() : null;
    if (secret) return mint(claimsFor(A, role, tenant, over), { alg: 'HS256', key: secret });
    return mint(claimsFor(A, role, tenant, over), { alg: 'ES256', key: A.es256Private });
}

/**
 * The broken tokens of the matrix, each for an operator (the strongest role: a broken token must
 * give it nothing). Cases whose key material is not configured are left out (named in `skipped`).
 */
export function brokenTokens() {
    const A = auth();
    const out = {};
    out.expired = token('operator', undefined, { exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200, nbf: Math.floor(Date.now() / 1000) - 7200 });
    out.wrong_audience = token('operator', undefined, { aud: `${A.audience}-other` });
    out.wrong_issuer = token('operator', undefined, { iss: `${A.issuer}-other` });
    out.alg_none = mint(claimsFor(A, 'operator'), { alg: 'none' });
    out.forged_signature = forge(token('operator'));
    if (A.es256Public) {
        // algorithm confusion: HS256 keyed with the ES256 public key's PEM text
        out.alg_confusion = mint(claimsFor(A, 'operator'), { alg: 'HS256', key: A.es256Public });
    }
    if (A.es256Private && A.hs256) {
        // a valid ES256 signature under a header that names HS256, and the reverse
        const es = mint(claimsFor(A, 'operator'), { alg: 'ES256', key: A.es256Private }).split('.');
        out.es256_signed_as_hs256 = [Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url'), es[1], es[2]].join('.');
        const hs = mint(claimsFor(A, 'operator'), { alg: 'HS256', key: A.hs256.toString('utf8').trim() }).split('.');
        out.hs256_signed_as_es256 = [Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'JWT' })).toString('base64url'), hs[1], hs[2]].join('.');
    }
    return out;
}

/* ---------------------------------------------------------------- requests */

/**
 * A raw request to the admin listener: `path` is sent byte for byte (no URL normalisation), body a
 * string, Buffer or object (JSON). Returns { status, headers (lower-case object), text, json }.
 */
export function raw(method, path, { token: tok, body, headers = {} } = {}) {
    const u = new URL(target ? target.url : stack().adminUrl);
    const h = { ...headers };
    if (tok) h.authorization = `Bearer ${tok}`;
    let payload = null;
    if (body !== undefined) {
        payload = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
        if (!h['content-type']) h['content-type'] = 'application/json';
        h['content-length'] = String(payload.length);
    }
    return new Promise((resolve, reject) => {
        const rq = http.request({ host: u.hostname, port: u.port, method, path, headers: h, insecureHTTPParser: false }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                assertNoSecrets(text, `the response body of ${method} ${path}`);
                let json = null;
                try {
                    json = JSON.parse(text);
                } catch {
                    json = null;
                }
                resolve({ status: res.statusCode, headers: res.headers, text, json });
            });
        });
        rq.on('error', reject);
        if (payload) rq.write(payload);
        rq.end();
    });
}

/** The same with the operator's token unless told. */
export const op = (method, path, opts = {}) => raw(method, path, { token: token('operator'), ...opts });

/* ---------------------------------------------------------------- routes */

const ADMIN_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'admin');
const FLAG = { TG_ADM_READ: 'read', TG_ADM_WRITE: 'write', TG_ADM_OPERATOR: 'operator', TG_ADM_TENANT: 'tenant', TG_ADM_PUBLIC: 'public' };

/**
 * The server's routes, read from its route tables: the tables router.c lists (`tables[]`), each
 * defined in an admin/*.c file as `const tg_adm_route_t NAME[] = {{"METHOD", "PATTERN", FLAGS, fn,
 * "name"}, ...}`, plus the routes router.c declares itself (the breaker reset, cut from the raw
 * path). [{ method, pattern, access: ['read'|'write'|'operator'|'tenant'|'public'], name, public }]
 */
export function routes() {
    const router = readFileSync(join(ADMIN_DIR, 'router.c'), 'utf8');
    const listed = /tables\[\]\s*=\s*\{([^}]*)\}/.exec(router);
    assert.ok(listed, 'admin/router.c has its tables[]');
    const names = listed[1].replace(/\/\*[\s\S]*?\*\//g, '').split(',').map((x) => x.trim()).filter(Boolean);
    const entry = /\{\s*"([A-Z]+)",\s*"([^"]+)",\s*([A-Z_| \n]+?),\s*\w+,\s*"([^"]+)"\s*\}/g;
    const parse = (text) => [...text.matchAll(entry)].map((m) => {
        const access = m[3].split('|').map((f) => FLAG[f.trim()]).filter(Boolean);
        return { method: m[1], pattern: m[2], access, name: m[4], public: access.includes('public') };
    });
    const out = parse(router); // routes router.c handles itself
    const sources = readdirSync(ADMIN_DIR).filter((f) => f.endsWith('.c')).map((f) => readFileSync(join(ADMIN_DIR, f), 'utf8'));
    for (const n of names) {
        const def = new RegExp(`const tg_adm_route_t ${n}\\[\\]\\s*=\\s*\\{([\\s\\S]*?)\\n\\};`);
        const src = sources.map((t) => def.exec(t)).find(Boolean);
        assert.ok(src, `the route table ${n} (listed in admin/router.c) is defined in an admin/*.c file`);
        out.push(...parse(src[1]));
    }
    assert.ok(out.length > 0, 'routes found in the route tables');
    return out;
}

export const isWrite = (r) => !['GET', 'HEAD'].includes(r.method);

/* ---------------------------------------------------------------- a world to call routes on */

export const uniq = (p) => `${p}-${randomBytes(4).toString('hex')}`;

/** A provider of the test config (BYOK targets) and a model of the catalog. */
export function someProvider() {
    return Object.keys(stack().cfg.providers).find((p) => p.startsWith('sim-openai')) || Object.keys(stack().cfg.providers)[0];
}
export function someModels() {
    return Object.keys(stack().cfg.models).filter((m) => m.startsWith('openai-chat') || m.endsWith('-chat')).slice(0, 2);
}

async function must(r, what, ...ok) {
    assert.ok(ok.includes(r.status), `${what}: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json;
}

/** Whether the server has a route (method and pattern). */
export const hasRoute = (method, pattern) => routes().some((r) => r.method === method && r.pattern === pattern);

/**
 * One tenant with, where the server has the routes, a key and a BYOK provider key; returns its ids.
 */
export async function makeTenant(prefix = 'adm3') {
    const t = await must(await op('POST', '/admin/v1/tenants', { body: { name: uniq(prefix) } }), 'create a tenant', 201);
    const out = { id: t.id, name: t.name, keyId: 0, key: null, provider: someProvider() };
    if (hasRoute('POST', '/admin/v1/tenants/{id}/keys')) {
        const k = await must(await op('POST', `/admin/v1/tenants/${t.id}/keys`, { body: { label: 'contract' } }), 'create a key', 201);
        out.keyId = k.id;
        out.key = k.key;
    }
    if (hasRoute('PUT', '/admin/v1/tenants/{id}/provider-keys/{provider}'))
        await must(await op('PUT', `/admin/v1/tenants/${t.id}/provider-keys/${out.provider}`, { body: { api_key: `sk-test-${randomBytes(12).toString('hex')}` } }), 'set a provider key', 200, 201);
    if (hasRoute('PUT', '/admin/v1/tenants/{id}/chains/{name}'))
        await must(await op('PUT', `/admin/v1/tenants/${t.id}/chains/contract-chain`, { body: { targets: someModels() } }), 'put a chain', 200, 201);
    return out;
}

/**
 * Fills a route pattern for a tenant of the world: {id} its id, {key_id} its key, {provider} its
 * BYOK provider, {name} a chain name, {target} a breaker key.
 */
export function fill(pattern, t, over = {}) {
    const v = {
        id: t.id,
        key_id: t.keyId,
        provider: t.provider,
        name: 'contract-chain',
        chain: 'contract-chain',
        target: encodeURIComponent(targetOf('openai-chat')),
        price_id: 1,
        ...over,
    };
    return pattern.replace(/\{([^}]+)\}/g, (_, n) => {
        if (!(n in v)) throw new Error(`no sample value for {${n}} of ${pattern}`);
        return String(v[n]);
    });
}

/**
 * A body that the route accepts (undefined: none). Keyed by method and pattern. Unknown routes
 * fail here, naming the route: the contract tests must know every route.
 */
export function sampleBody(method, pattern) {
    const models = someModels();
    const B = {
        'POST /admin/v1/tenants': () => ({ name: uniq('adm3-new') }),
        'PATCH /admin/v1/tenants/{id}': () => ({ zero_retention: false }),
        'POST /admin/v1/tenants/{id}/keys': () => ({ label: 'sample' }),
        'POST /admin/v1/tenants/{id}/keys/{key_id}/rotate': () => ({}),
        'PUT /admin/v1/tenants/{id}/provider-keys/{provider}': () => ({ api_key: `sk-test-${randomBytes(12).toString('hex')}` }),
        'PUT /admin/v1/tenants/{id}/policy': () => ({ max_tokens: 4096 }),
        'PUT /admin/v1/tenants/{id}/keys/{key_id}/policy': () => ({ max_tokens: 2048 }),
        'PUT /admin/v1/tenants/{id}/chains/{name}': () => ({ targets: models }),
        'POST /admin/v1/tenants/{id}/chains': () => ({ name: uniq('chain'), targets: models }),
        'POST /admin/v1/prices': () => ({ model: models[0], input_per_mtok: 100, output_per_mtok: 200 }),
        'POST /admin/v1/tenants/{id}/wallet/top-ups': () => ({ amount: 1000, note: 'contract test' }),
    };
    const f = B[`${method} ${pattern}`];
    return f ? f() : undefined;
}

/** Extra headers a route needs (an Idempotency-Key for a top-up). */
export function sampleHeaders(method, pattern) {
    if (/top-ups$/.test(pattern)) return { 'idempotency-key': uniq('idem') };
    return {};
}

/* ---------------------------------------------------------------- database counts */

/** Row counts of every table the admin API writes (to show that bad input wrote nothing). Not
 *  counted: what the stack's gateway writes by itself while a test runs, on its own timers: the
 *  request path's tables (expired rate windows and idempotency keys are swept; the settlement
 *  writer commits usage records, their rollup, lease charges and closes a moment after the calls),
 *  events and stored requests; of the ledger's entries only the kinds the admin API writes count. */
export async function counts() {
    const rows = await psql(`SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r','p') AND NOT c.relispartition
          AND c.relname NOT IN ('failover_events','stored_requests','schema_migrations','rate_windows',
                                'idempotency_keys','usage_records','usage_daily','leases') ORDER BY 1`);
    const q = rows
        .map(([t]) =>
            t === 'ledger_entries'
                ? `SELECT '${t}', count(*) FROM ${t} WHERE kind NOT IN ('lease', 'lease_release', 'usage_charge')`
                : `SELECT '${t}', count(*) FROM ${t}`
        )
        .join(' UNION ALL ');
    const out = {};
    for (const [t, n] of await psql(q)) out[t] = Number(n);
    return out;
}

/** The audit entries of an actor (every page of GET /admin/v1/audit, optionally one tenant's). */
export async function auditOf(actor, tenant) {
    const found = [];
    let cursor = null;
    for (let page = 0; page < 100; page++) {
        const q = new URLSearchParams({ limit: '1000' });
        if (tenant) q.set('tenant', String(tenant));
        if (cursor) q.set('cursor', cursor);
        const r = await raw('GET', `/admin/v1/audit?${q}`, { token: token('auditor') });
        assert.equal(r.status, 200, `GET /admin/v1/audit: ${r.text.slice(0, 200)}`);
        found.push(...r.json.data.filter((e) => e.actor === actor));
        cursor = r.json.next_cursor;
        if (!cursor) break;
    }
    return found;
}

/**
 * A gateway of the test's own (lib/instance.mjs) on the stack's database and config, whose
 * admin_auth has both an HS256 secret and an ES256 public key (made here), so that the
 * algorithm-confusion cases mean something; useAdmin() points raw() and token() at it.
 */
export async function startDualKeyInstance() {
    const { startInstance } = await import('./instance.mjs');
    const { generateKeyPairSync } = await import('node:crypto');
    const { writeFileSync } = await import('node:fs');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const es256Private = privateKey.export({ type: 'pkcs8', format: 'pem' });
    const es256Public = publicKey.export({ type: 'spki', format: 'pem' });
    const hs256 = Buffer.from(randomBytes(32).toString('hex'));
    const A = { issuer: 'tollgate-matrix', audience: 'tollgate-matrix-admin', hs256, es256Public: Buffer.from(es256Public), es256Private };
    const inst = await startInstance((ctx) => {
        const hsFile = join(ctx.dir, 'admin-hs256');
        const esFile = join(ctx.dir, 'admin-es256.pub.pem');
        writeFileSync(hsFile, hs256, { mode: 0o600 });
        writeFileSync(esFile, es256Public, { mode: 0o600 });
        const cfg = JSON.parse(JSON.stringify(stack().cfg));
        cfg.listen = { data: `127.0.0.1:${ctx.dataPort}`, admin: `127.0.0.1:${ctx.adminPort}` };
        cfg.admin_auth = { issuer: A.issuer, audience: A.audience, hs256_secret_file: hsFile, es256_public_key_file: esFile, skew_s: 30 };
        // a journal of its own: the stack's gateway holds the stack's (one process per journal)
        if (cfg.billing) cfg.billing = { ...cfg.billing, journal_path: join(ctx.dir, 'ledger.journal') };
        return cfg;
    }, { createKey: false });
    useAdmin({ url: inst.adminUrl, auth: A });
    return inst;
}

/**
 * Deletes the BYOK rows of this suite's tenants (names from uniq('adm3-...')). They are sealed
 * under the stack's master key: left behind, they would be rows that another test's gateway (with
 * master keys of its own, integration.byok's rotation) cannot open. Each file calls it in after().
 */
export async function cleanupProviderKeys() {
    await psql(`DELETE FROM provider_credentials WHERE tenant_id IN (SELECT id FROM tenants WHERE name LIKE 'adm3-%')`);
}
