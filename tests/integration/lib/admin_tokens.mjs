// Admin API tokens for tests, signed here with the stack's own keys (stack.sh: the HS256 secret
// file and an ES256 key pair whose public half the config names), so a test can make any token:
// valid ones of each role, and each attack admin/README.md "Auth" refuses (expired, not yet valid,
// wrong audience, wrong issuer, alg none, HS256 keyed with the ES256 public key, forged signature,
// a foreign ES256 key, an unpinned algorithm).
import { createHmac, createSign, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { stack } from './stack.mjs';

const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

function auth() {
    const a = stack().cfg.admin_auth;
    if (!a) throw new Error('the stack config has no admin_auth');
    return a;
}

function hsSecret() {
    return readFileSync(auth().hs256_secret_file, 'utf8').trim();
}

/** Signs claims with alg over header+payload: HS256/HS384 with key (a string), ES256 with a PEM. */
export function signJwt(claims, { alg = 'HS256', key, header = {} } = {}) {
    const h = b64({ alg, typ: 'JWT', ...header });
    const p = b64(claims);
    const input = `${h}.${p}`;
    let sig;
    if (alg === 'HS256' || alg === 'HS384') {
        sig = createHmac(alg === 'HS256' ? 'sha256' : 'sha384', key ?? hsSecret()).update(input).digest('base64url');
    } else if (alg === 'ES256') {
        sig = createSign('SHA256').update(input).sign({ key: key ?? readFileSync(stack().env.TG_ADMIN_ES256_KEY, 'utf8'), dsaEncoding: 'ieee-p1363' }).toString('base64url');
    } else if (alg === 'none') {
        sig = '';
    } else throw new Error(`signJwt: no ${alg}`);
    return `${input}.${sig}`;
}

/** The claims of a valid token: role operator|tenant_admin|auditor, tenant for tenant_admin. */
export function claimsFor(role, { tenant, sub = `test-${role}`, ttlS = 3600, now = Math.floor(Date.now() / 1000) } = {}) {
    const a = auth();
    const c = { iss: a.issuer, aud: a.audience, sub, role, iat: now, nbf: now, exp: now + ttlS };
    if (tenant !== undefined) c.tenant = tenant;
    return c;
}

/** A valid token (HS256, or ES256 with {alg: 'ES256'}). */
export function tokenFor(role, opts = {}) {
    return signJwt(claimsFor(role, opts), { alg: opts.alg || 'HS256' });
}

/** Tokens every route must refuse with 401, by name: each is an operator's claims gone wrong. */
export function badTokens() {
    const now = Math.floor(Date.now() / 1000);
    const skew = auth().skew_s ?? 60;
    const ok = claimsFor('operator', { now });
    const pub = readFileSync(auth().es256_public_key_file, 'utf8');
    const foreign = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const good = signJwt(ok);
    const [h, , s] = good.split('.');
    return {
        none: null, // no Authorization header
        expired: signJwt({ ...ok, exp: now - skew - 60 }),
        not_yet_valid: signJwt({ ...ok, nbf: now + skew + 60 }),
        wrong_audience: signJwt({ ...ok, aud: 'someone-else' }),
        wrong_issuer: signJwt({ ...ok, iss: 'https://evil.example' }),
        alg_none: signJwt(ok, { alg: 'none' }),
        alg_confusion: signJwt(ok, { alg: 'HS256', key: pub }), // HMAC keyed with the ES256 public key
        forged_signature: `${h}.${b64({ ...ok, sub: 'mallory' })}.${s}`,
        foreign_es256: signJwt(ok, { alg: 'ES256', key: foreign }),
        unpinned_alg: signJwt(ok, { alg: 'HS384' }),
    };
}
