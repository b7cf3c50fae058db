// The OpenAPI document (admin/openapi.json) as a checker of real answers: each operation's
// responses compiled with ajv (JSON Schema 2020-12, OpenAPI 3.1's dialect), and a check of one
// answer (status, headers listed as required, body against the schema of its media type).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

export const DOC_PATH = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'admin', 'openapi.json');

export function loadDoc() {
    return JSON.parse(readFileSync(DOC_PATH, 'utf8'));
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head'];

/** Every operation of the document: [{ method: 'GET', path: '/admin/v1/tenants/{id}', op }]. */
export function operations(doc) {
    const out = [];
    for (const [path, item] of Object.entries(doc.paths || {}))
        for (const m of METHODS) if (item[m]) out.push({ method: m.toUpperCase(), path, op: item[m], item });
    return out;
}

/** A route pattern's parameters made generic: '/a/{id}/b/{key_id}' -> '/a/{}/b/{}'. */
export const shape = (p) => p.replace(/\{[^}]+\}/g, '{}');

export class Checker {
    constructor(doc = loadDoc()) {
        this.doc = doc;
        this.ajv = new Ajv2020({ strict: false, allErrors: true });
        addFormats(this.ajv);
        // components are reachable as "openapi.json#/components/schemas/X"
        this.ajv.addSchema({ $id: 'openapi.json', components: doc.components || {} });
        this.cache = new Map();
    }

    /** The operation of a method and route pattern (parameters may be named differently). */
    find(method, pattern) {
        const s = shape(pattern);
        for (const o of operations(this.doc)) if (o.method === method && shape(o.path) === s) return o;
        return null;
    }

    resolve(obj) {
        let o = obj;
        while (o && o.$ref) {
            const parts = o.$ref.replace(/^#\//, '').split('/');
            o = parts.reduce((a, k) => a && a[k.replace(/~1/g, '/').replace(/~0/g, '~')], this.doc);
        }
        return o;
    }

    validator(schema) {
        const key = JSON.stringify(schema);
        if (!this.cache.has(key)) {
            // local refs (#/components/...) point into the registered components document
            const fixed = JSON.parse(key.replace(/"\$ref":"#\/components\//g, '"$ref":"openapi.json#/components/'));
            this.cache.set(key, this.ajv.compile(fixed));
        }
        return this.cache.get(key);
    }

    /**
     * Checks one answer of `method pattern` against the document. Returns a list of problems
     * (empty when it conforms), each a sentence naming the route.
     * res: { status, headers: Headers|object, body or text: string }
     */
    check(method, pattern, res) {
        const where = `${method} ${pattern} -> ${res.status}`;
        res = { ...res, body: res.body ?? res.text };
        const o = this.find(method, pattern);
        if (!o) return [`${method} ${pattern}: not in the OpenAPI document`];
        const responses = o.op.responses || {};
        const r = this.resolve(responses[String(res.status)] || responses[`${String(res.status)[0]}XX`] ||
            responses.default);
        if (!r) return [`${where}: status not documented (documented: ${Object.keys(responses).join(', ')})`];
        const problems = [];
        const get = (h) => (typeof res.headers.get === 'function' ? res.headers.get(h) : res.headers[h.toLowerCase()]);
        for (const [name, h0] of Object.entries(r.headers || {})) {
            const h = this.resolve(h0);
            if (h.required && get(name) == null) problems.push(`${where}: header ${name} is documented as required but absent`);
        }
        const ctype = (get('content-type') || '').split(';')[0].trim();
        const content = r.content || {};
        if (Object.keys(content).length === 0) {
            if (res.body && res.body.length > 0 && method !== 'HEAD')
                problems.push(`${where}: a body (${ctype}) where the document has none`);
            return problems;
        }
        if (method === 'HEAD') return problems;
        const media = content[ctype];
        if (!media) {
            problems.push(`${where}: content-type ${ctype || '(none)'} not documented (${Object.keys(content).join(', ')})`);
            return problems;
        }
        if (ctype === 'application/json') {
            let body;
            try {
                body = JSON.parse(res.body);
            } catch {
                problems.push(`${where}: body is not JSON: ${String(res.body).slice(0, 200)}`);
                return problems;
            }
            if (media.schema) {
                const v = this.validator(media.schema);
                if (!v(body))
                    problems.push(`${where}: body does not match the schema: ${this.ajv.errorsText(v.errors.slice(0, 5), { separator: "; " })}` +
                        `\n  body: ${JSON.stringify(body).slice(0, 400)}`);
            }
        }
        return problems;
    }
}
