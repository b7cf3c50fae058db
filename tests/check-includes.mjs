#!/usr/bin/env node
// The project's own include graph has no cycle, and each layer includes only what it may use.
//
// A module is a file name without its extension (server.c and server.h are module "server"); module
// A depends on B when a file of A includes B's header. Exits 1 naming every cycle and every
// layering breach:
//   - gateway/core may include only gateway/core (it is the base every part may use);
//   - billing/ may include only gateway/core and billing/;
//   - admin/ never includes server.h (it reaches its worker through worker.h).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, basename, extname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dirs = ['gateway/core', 'gateway/src', 'gateway/src/providers', 'gateway/sim', 'admin', 'billing'];

const files = [];
for (const d of dirs) {
    let names = [];
    try {
        names = readdirSync(join(root, d));
    } catch {
        continue;
    }
    for (const n of names) {
        const p = join(root, d, n);
        if (statSync(p).isFile() && (n.endsWith('.c') || n.endsWith('.h'))) files.push(relative(root, p));
    }
}

// header name as written in #include "..." -> the files that can satisfy it
const byHeader = new Map();
for (const f of files.filter((f) => f.endsWith('.h'))) {
    for (const key of [basename(f), relative('gateway/src', f)]) {
        if (!byHeader.has(key)) byHeader.set(key, []);
        byHeader.get(key).push(f);
    }
}

const moduleOf = (f) => join(dirname(f), basename(f, extname(f)));
const edges = new Map();
const problems = [];
for (const f of files) {
    const src = readFileSync(join(root, f), 'utf8');
    for (const m of src.matchAll(/^\s*#\s*include\s+"([^"]+)"/gm)) {
        const inc = m[1];
        const sameDir = join(dirname(f), inc);
        let target = files.includes(sameDir) ? sameDir : null;
        if (!target) {
            const c = byHeader.get(inc) || byHeader.get(basename(inc)) || [];
            // prefer a header of the includer's own part
            target = c.find((h) => h.startsWith(f.split('/')[0])) || c[0] || null;
        }
        if (!target) continue; // generated or system-like header
        const a = moduleOf(f), b = moduleOf(target);
        if (f.startsWith('gateway/core/') && !target.startsWith('gateway/core/'))
            problems.push(`layering: ${f} (core) includes ${target}`);
        if (f.startsWith('billing/') && !target.startsWith('gateway/core/') && !target.startsWith('billing/'))
            problems.push(`layering: ${f} (billing) includes ${target}`);
        if (f.startsWith('admin/') && basename(target) === 'server.h')
            problems.push(`layering: ${f} (admin) includes server.h`);
        if (a === b) continue;
        if (!edges.has(a)) edges.set(a, new Set());
        edges.get(a).add(b);
    }
}

// cycles: Tarjan's strongly connected components
let index = 0;
const idx = new Map(), low = new Map(), onStack = new Set(), stack = [];
function strong(v) {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) || []) {
        if (!idx.has(w)) {
            strong(w);
            low.set(v, Math.min(low.get(v), low.get(w)));
        } else if (onStack.has(w)) {
            low.set(v, Math.min(low.get(v), idx.get(w)));
        }
    }
    if (low.get(v) === idx.get(v)) {
        const comp = [];
        let w;
        do {
            w = stack.pop();
            onStack.delete(w);
            comp.push(w);
        } while (w !== v);
        if (comp.length > 1) problems.push(`include cycle: ${comp.sort().join(' <-> ')}`);
    }
}
for (const v of edges.keys()) if (!idx.has(v)) strong(v);

if (problems.length) {
    for (const p of problems) console.log(p);
    process.exit(1);
}
console.log(`include graph: ${files.length} files, ${edges.size} modules with includes, no cycle, layers respected`);
