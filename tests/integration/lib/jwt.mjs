// JWTs minted by the tests with Node's crypto: HS256 (a shared secret) and ES256 (a P-256 private
// key, signatures in JOSE's r||s form), plus the broken tokens of the isolation matrix: `alg: none`,
// algorithm confusion (an HS256 token whose secret is the ES256 public key's PEM), a forged
// signature, and claims out of range (expired, wrong audience, wrong issuer).
import { createHmac, createPrivateKey, sign as cryptoSign } from 'node:crypto';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const enc = (obj) => b64url(JSON.stringify(obj));

/**
 * Signs `claims` with `alg` ('HS256' with key a secret Buffer/string, 'ES256' with key a PEM private
 * key, 'none' unsigned). `header` adds to or overrides the JOSE header.
 */
export function mint(claims, { alg, key, header = {} }) {
    const head = enc({ alg, typ: 'JWT', ...header });
    const input = `${head}.${enc(claims)}`;
    if (alg === 'none') return `${input}.`;
    if (alg === 'HS256') return `${input}.${b64url(createHmac('sha256', key).update(input).digest())}`;
    if (alg === 'ES256') {
        const sig = cryptoSign('sha256', Buffer.from(input), {
            key: createPrivateKey(key),
            dsaEncoding: 'ieee-p1363',
        });
        return `${input}.${b64url(sig)}`;
    }
    throw new Error(`mint: unsupported alg ${alg}`);
}

/** The same token with its signature's bytes changed (same length): a forgery. */
export function forge(token) {
    const [h, p, s] = token.split('.');
    const sig = Buffer.from(s, 'base64url');
    for (let i = 0; i < sig.length; i++) sig[i] ^= 0x5a;
    return `${h}.${p}.${b64url(sig)}`;
}

export const now = () => Math.floor(Date.now() / 1000);

/**
 * Claims of a valid token for a role: { iss, aud, sub, role, tenant?, iat, nbf, exp }.
 * `over` replaces or adds claims (undefined values are dropped).
 */
export function claimsFor(auth, role, tenant, over = {}) {
    const t = now();
    const c = { iss: auth.issuer, aud: auth.audience, sub: `test-${role}${tenant ? `-${tenant}` : ''}`, role,
        iat: t, nbf: t - 5, exp: t + 600 };
    if (tenant !== undefined && tenant !== null) c.tenant = tenant;
    for (const [k, v] of Object.entries(over)) {
        if (v === undefined) delete c[k];
        else c[k] = v;
    }
    return c;
}
