// The admin API as the contract tests see it: tokens for every role and every broken-token case
// (jwt.mjs), raw requests (any bytes in the path or body), the route list (admin_routes.mjs), a
// world of two tenants with a resource of each kind, and for every route a request that succeeds
// on that world. openapi, admin_badinput, admin_isolation and ctl tests share it.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { stack } from './stack.mjs';
import { assertNoSecrets } from './http.mjs';
import { claimsFor, forge, mint } from './jwt.mjs';
import { psql } from './control.mjs';

/* ---------------------------------------------------------------- tokens */

let authCache = null;

/** The stack's admin_auth: issuer, audience, the HS256 secret and the ES256 key pair. */
export function auth() {
    if (authCache) return authCache;
    const S = stack();
    const a = S.cfg.admin_auth;
    if (!a) throw new Error('the stack config has no admin_auth block');
    const read = (f) => (f ? readFileSync(f) : null);
    const es256Public = read(a.es256_public_key_file);
    const es256PrivFile = S.env.TG_ADMIN_ES256_PRIVATE_KEY || (a.es256_public_key_file || '').replace(/\.pub(\.pem)?$/, '.pem');
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
export function token(role, tenant, over = {}) {
    const A = auth();
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
    return out;
}

/* ---------------------------------------------------------------- requests */

/**
 * A raw request to the admin listener: `path` is sent byte for byte (no URL normalisation), body a
 * string, Buffer or object (JSON). Returns { status, headers (lower-case object), text, json }.
 */
export function raw(method, path, { token: tok, body, headers = {} } = {}) {
    const S = stack();
    const u = new URL(S.adminUrl);
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

/** The server's routes: [{ method, pattern, access, name }] (admin_routes.mjs, from the route table). */
export async function routes() {
    const m = await import('./admin_routes.mjs');
    const list = m.ADMIN_ROUTES || m.routes || m.default;
    assert.ok(Array.isArray(list) && list.length > 0, 'lib/admin_routes.mjs lists the routes');
    return list.map((r) => ({ method: r.method, pattern: r.pattern || r.path, access: r.access, name: r.name, public: !!(r.public || (r.access && String(r.access).includes('public'))) }));
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

/** One tenant with a key, a provider key, a chain and a policy; returns its ids. */
export async function makeTenant(prefix = 'adm3') {
    const t = await must(await op('POST', '/admin/v1/tenants', { body: { name: uniq(prefix) } }), 'create a tenant', 201);
    const id = t.id;
    const k = await must(await op('POST', `/admin/v1/tenants/${id}/keys`, { body: { label: 'contract' } }), 'create a key', 201);
    const provider = someProvider();
    await must(await op('PUT', `/admin/v1/tenants/${id}/provider-keys/${provider}`, { body: { api_key: `sk-test-${randomBytes(12).toString('hex')}` } }), 'set a provider key', 200, 201);
    return { id, name: t.name, keyId: k.id, key: k.key, provider };
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
        target: encodeURIComponent(`${someProvider()}/none`),
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
        'PATCH /admin/v1/tenants/{id}': () => ({ name: uniq('adm3-renamed') }),
        'POST /admin/v1/tenants/{id}/keys': () => ({ label: 'sample' }),
        'POST /admin/v1/tenants/{id}/keys/{key_id}/rotate': () => ({}),
        'PUT /admin/v1/tenants/{id}/provider-keys/{provider}': () => ({ api_key: `sk-test-${randomBytes(12).toString('hex')}` }),
        'PUT /admin/v1/tenants/{id}/policy': () => ({ max_tokens: 4096 }),
        'PUT /admin/v1/tenants/{id}/chains/{name}': () => ({ targets: models }),
        'POST /admin/v1/tenants/{id}/chains': () => ({ name: uniq('chain'), targets: models }),
        'POST /admin/v1/tenants/{id}/wallet/top-ups': () => ({ amount: 1000 }),
        'POST /admin/v1/prices': () => ({ model: models[0], input_per_mtok: 100, output_per_mtok: 200 }),
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

/** Row counts of every table the admin API writes (to show that bad input wrote nothing). */
export async function counts() {
    const rows = await psql(`SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind IN ('r','p') AND NOT c.relispartition
          AND c.relname NOT IN ('failover_events','stored_requests','schema_migrations') ORDER BY 1`);
    const q = rows.map(([t]) => `SELECT '${t}', count(*) FROM ${t}`).join(' UNION ALL ');
    const out = {};
    for (const [t, n] of await psql(q)) out[t] = Number(n);
    return out;
}
