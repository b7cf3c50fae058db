// issue #10 items 4 and 6, zero retention that can be proven, on a gateway and a simulator of this
// file's own (lib/instance.mjs) at log level debug, its log kept in a file of its own:
//   - requests carrying a unique canary in the prompt, for a tenant whose policy is zero retention
//     and for a normal tenant asking with `x-tollgate-zero-retention: true`, through success,
//     failover (the first target failing with an error that quotes the prompt), a provider error
//     quoting the prompt, a mid-stream provider error quoting it, a stream cut mid-way, and a client
//     that leaves mid-stream: a full pg_dump of the database and every log file hold the canary
//     zero times;
//   - a normal tenant's canary is found, and only in stored_requests;
//   - the access log line of a zero-retention call shows every stage's work and no content;
//   - a zero-retention call whose chain has no zero-retention target gets 422 naming why; one whose
//     chain has one is served by it; the OpenAI kind was asked `store: false`;
//   - an old partition of stored_requests is dropped by the partition job.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { waitFor } from './lib/wait.mjs';
import { startInstance, baseConfig, req, runCmd, assertNoSanitizerReport, metricValue } from './lib/instance.mjs';
import { stack } from './lib/stack.mjs';

const run = promisify(execFile);

const ZR_TENANT = `zr-policy-${randomBytes(4).toString('hex')}`;
const HDR_TENANT = `zr-header-${randomBytes(4).toString('hex')}`;
const NORMAL_TENANT = `zr-normal-${randomBytes(4).toString('hex')}`;

// upstream model names at the simulator: each one's fault is its scenario
const M = {
    ok: 'zr-ok', // a zero-retention provider, no fault
    fail: 'zr-fail', // 503 quoting the prompt: fails over
    fb: 'zr-fb', // the failover target (anthropic kind, zero retention)
    err: 'zr-err', // the caller's 400 quoting the prompt (passed to the client, never logged)
    cut: 'zr-cut', // a stream with an in-stream provider error quoting the prompt
    drop: 'zr-drop', // a stream whose connection drops after two chunks
    slow: 'zr-slow', // a slow stream the client leaves
    plain: 'zr-plain', // a provider without zero retention
};

function retentionConfig(ctx) {
    const provider = (kind, path, zr) => ({ kind, base_url: `${ctx.simUrl}/${path}`, api_key_file: ctx.pepperFile, zero_retention: zr });
    const model = (provider, upstream) => ({ provider, upstream, context_window: 128000 });
    return baseConfig({
        ...ctx,
        providers: {
            'zr-openai': provider('openai', 'openai/v1', true),
            'zr-anthropic': provider('anthropic', 'anthropic', true),
            'plain-openai': provider('openai', 'openai/v1', false),
        },
        models: {
            [M.ok]: model('zr-openai', M.ok),
            [M.fail]: model('zr-openai', M.fail),
            [M.fb]: model('zr-anthropic', M.fb),
            [M.err]: model('zr-openai', M.err),
            [M.cut]: model('zr-openai', M.cut),
            [M.drop]: model('zr-openai', M.drop),
            [M.slow]: model('zr-openai', M.slow),
            [M.plain]: model('plain-openai', M.plain),
        },
        chains: {
            'zr-failover': { targets: [M.fail, M.fb] },
            'zr-mixed': { targets: [M.plain, M.ok] },
            'zr-plain-only': { targets: [M.plain] },
        },
        extra: { retention: { job_interval_ms: 300, max_record_bytes: 4096 } },
    });
}

let inst;
let keys = {};
const zrCanaries = []; // every canary sent by a zero-retention call, searched for at the end
const logFile = () => join(inst.dir, 'gateway.log');

async function psql(sql) {
    const { stdout } = await run('psql', [stack().databaseUrl, '-X', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-c', sql]);
    return stdout.trim();
}

async function setFault(model, fault) {
    const r = await req(inst.simUrl, 'POST', '/_sim/faults', { body: { model, ...fault } });
    assert.ok(r.status >= 200 && r.status < 300, `the simulator took the fault: ${r.status} ${r.text}`);
}

async function newKey(tenant) {
    const k = await runCmd(stack().gatewayBin, ['keys', 'create', '-c', inst.configPath, '--tenant', tenant]);
    assert.equal(k.code, 0, `keys create: ${k.stderr}`);
    return k.stdout.trim().split('\n').pop();
}

const canary = (what) => `CANARY${randomBytes(8).toString('hex')}${what}`;
const chat = (model, text, extra = {}) => ({ model, messages: [{ role: 'user', content: `${text} is the word, say it back` }], ...extra });

function chatReq(key, body, headers = {}) {
    return req(inst.url, 'POST', '/v1/chat/completions', { key, body, headers, signal: AbortSignal.timeout(30000) });
}

/** A stream read to its end: {status, requestId, text}. */
async function streamReq(key, body, headers = {}) {
    const r = await chatReq(key, { ...body, stream: true }, headers);
    return { status: r.status, requestId: r.headers.get('x-tollgate-request-id'), text: r.text };
}

/** A stream the client leaves after its first content bytes. */
async function streamLeave(key, body, headers = {}) {
    const ac = new AbortController();
    const res = await fetch(`${inst.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ ...body, stream: true }),
        signal: ac.signal,
    });
    assert.equal(res.status, 200);
    const requestId = res.headers.get('x-tollgate-request-id');
    const reader = res.body.getReader();
    let got = '';
    while (!got.includes('"content"')) {
        const { value, done } = await reader.read();
        assert.ok(!done, 'the stream went on past its first chunk');
        got += Buffer.from(value).toString('utf8');
    }
    ac.abort();
    await reader.cancel().catch(() => {});
    return requestId;
}

/** The gateway's `request` log line of a request id, once written. */
async function requestLine(rid) {
    return waitFor(() => inst.gateway.logEvents().find((e) => e.event === 'request' && e.request_id === rid) || null, {
        tries: 400,
        what: `the request line of ${rid}`,
    });
}

before(async () => {
    inst = await startInstance(retentionConfig, { tenant: ZR_TENANT });
    keys.zr = inst.key;
    keys.hdr = await newKey(HDR_TENANT);
    keys.normal = await newKey(NORMAL_TENANT);
    // the policy CLI is another item's: the tenant's policy is set in SQL (NOTIFY clears the cache)
    await psql(`UPDATE tenants SET zero_retention = true WHERE name = '${ZR_TENANT}'`);
    await setFault(M.fail, { status: 503, echo_error: true });
    await setFault(M.err, { status: 400, echo_error: true });
    await setFault(M.cut, { error_after_chunks: 2, stream_chunks: 6, echo_error: true });
    await setFault(M.drop, { drop_after_chunks: 2, stream_chunks: 6 });
    await setFault(M.slow, { stream_chunks: 200, chunk_delay_ms: 50 });
});

after(async () => {
    if (inst) await inst.stop();
});

test('crash output: the gateway may write no core file (RLIMIT_CORE 0)', () => {
    const limits = readFileSync(`/proc/${inst.gateway.pid}/limits`, 'utf8');
    assert.match(limits, /^Max core file size\s+0\s+0\s/m, limits);
});

test('the header only tightens: any value but true or false is a 400 naming it', async () => {
    for (const v of ['yes', '1', '']) {
        const c = canary('badheader');
        zrCanaries.push(c); // refused before anything could store it
        const r = await chatReq(keys.normal, chat(M.ok, c), { 'x-tollgate-zero-retention': v });
        assert.equal(r.status, 400, `value ${JSON.stringify(v)}: ${r.text}`);
        assert.equal(r.json.error.code, 'invalid_request');
        assert.match(r.json.error.message, /x-tollgate-zero-retention/);
    }
});

test('a zero-retention call with no zero-retention target fails closed with 422 naming why', async () => {
    for (const [key, headers, why] of [
        [keys.zr, {}, 'tenant policy'],
        [keys.hdr, { 'x-tollgate-zero-retention': 'true' }, 'x-tollgate-zero-retention'],
    ]) {
        for (const model of ['zr-plain-only', M.plain]) {
            const c = canary('unavailable');
            zrCanaries.push(c);
            const r = await chatReq(key, chat(model, c), headers);
            assert.equal(r.status, 422, r.text);
            assert.equal(r.json.error.code, 'zero_retention_unavailable');
            assert.equal(r.json.error.type, 'invalid_request_error');
            assert.ok(r.json.error.message.includes(M.plain), `the removed target is named: ${r.json.error.message}`);
            assert.ok(r.json.error.message.includes(why), `the reason is named: ${r.json.error.message}`);
            assert.match(r.json.error.message, /zero_retention/);
            const line = await requestLine(r.headers.get('x-tollgate-request-id'));
            assert.equal(line.status, 422);
            assert.equal(line.zero_retention, 1);
            assert.equal(line.attempts, 0, 'nothing was sent upstream');
        }
    }
    // the same chain serves a normal call
    const r = await chatReq(keys.normal, chat('zr-plain-only', 'hello'));
    assert.equal(r.status, 200, r.text);
});

test('the partition job creates the days ahead and drops a partition older than the retention', async () => {
    const day = (offset) => `to_char((now() AT TIME ZONE 'UTC') + interval '${offset} day', 'YYYYMMDD')`;
    for (const d of [0, 1, 2])
        await waitFor(async () => (await psql(`SELECT to_regclass('stored_requests_' || ${day(d)}) IS NOT NULL`)) === 't', {
            what: `the partition of day +${d}`,
        });
    await psql(`DROP TABLE IF EXISTS stored_requests_20000101`);
    // one transaction (the job runs every 300 ms): the partition and its row exist together
    const created = await psql(
        `CREATE TABLE stored_requests_20000101 PARTITION OF stored_requests FOR VALUES FROM ('2000-01-01 00:00+00') TO ('2000-01-02 00:00+00');
         INSERT INTO stored_requests VALUES ('2000-01-01 12:00+00', 'req_old', 1, NULL, 'm', 'm', 'p', 200, false, 1, 1, '{}', false, 'x', false);
         SELECT count(*) FROM stored_requests WHERE request_id = 'req_old'`
    );
    assert.equal(created.split('\n').pop(), '1', created);
    await waitFor(async () => (await psql(`SELECT to_regclass('stored_requests_20000101') IS NULL`)) === 't', {
        tries: 400,
        what: 'the old partition dropped by the job',
    });
    assert.equal(await psql(`SELECT count(*) FROM stored_requests WHERE request_id = 'req_old'`), '0');
    // the days within the retention are kept
    assert.equal(await psql(`SELECT to_regclass('stored_requests_' || ${day(0)}) IS NOT NULL`), 't');
});

test('a stored record is capped at retention.max_record_bytes on a UTF-8 boundary, and flagged', async () => {
    const big = 'é'.repeat(3000) + 'x'; // 6001 bytes of prompt text, cut inside a two-byte character
    const r = await chatReq(keys.normal, chat(M.ok, big));
    assert.equal(r.status, 200, r.text);
    const id = r.headers.get('x-tollgate-request-id');
    await waitFor(async () => (await psql(`SELECT count(*) FROM stored_requests WHERE request_id = '${id}'`)) === '1', {
        tries: 400,
        what: 'the big call stored',
    });
    const [len, trunc, rtrunc, tail] = (
        await psql(`SELECT octet_length(request_body), request_truncated, response_truncated, right(request_body, 1) FROM stored_requests WHERE request_id = '${id}'`)
    ).split('\t');
    assert.ok(Number(len) <= 4096 && Number(len) >= 4090, `capped at 4096 bytes: ${len}`);
    assert.equal(trunc, 't');
    assert.equal(rtrunc, 'f');
    assert.equal(tail, 'é', 'the cut fell between characters');
});

test('a stored request body is the client\'s bytes exactly (tabs, newlines, backslashes, non-ASCII)', async () => {
    // whitespace a JSON text may carry between tokens, escapes, and characters of every UTF-8 length
    const raw = `{\t"model":\r\n"${M.ok}",\n\t"messages": [{"role": "user", "content": "a\\\\b \\t\\n \\u00e9 é € 😀 \\\\N"}]}\n`;
    JSON.parse(raw); // a valid body
    const r = await req(inst.url, 'POST', '/v1/chat/completions', { key: keys.normal, body: raw, signal: AbortSignal.timeout(30000) });
    assert.equal(r.status, 200, r.text);
    const id = r.headers.get('x-tollgate-request-id');
    await waitFor(async () => (await psql(`SELECT count(*) FROM stored_requests WHERE request_id = '${id}'`)) === '1', {
        tries: 400,
        what: 'the call stored',
    });
    const stored = await psql(`SELECT encode(convert_to(request_body, 'UTF8'), 'base64') FROM stored_requests WHERE request_id = '${id}'`);
    assert.equal(Buffer.from(stored.replace(/\s+/g, ''), 'base64').toString('utf8'), raw);
    const answer = await psql(`SELECT response_body FROM stored_requests WHERE request_id = '${id}'`);
    assert.equal(answer, r.text, 'the answer stored is what the client received');
});

test('two instances: the partition job runs in one session at a time (its advisory lock)', async () => {
    // a session that holds the job's lock, as another gateway running the job does
    const holder = spawn('psql', [stack().databaseUrl, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    holder.stdout.on('data', (d) => (out += d));
    try {
        holder.stdin.write("BEGIN;\nSELECT pg_advisory_xact_lock(8390876119406896230), 'locked';\n");
        await waitFor(() => out.includes('locked'), { what: 'the other session to hold the lock' });
        assert.equal(await psql('SELECT tollgate_stored_requests_partitions(30, 2)'), '-1', 'the job skips its round');
    } finally {
        holder.stdin.end('COMMIT;\n');
        await new Promise((res) => holder.on('close', res));
    }
    // free again: the job runs (this instance's own job may hold the lock for a moment: waited for)
    await waitFor(async () => (await psql('SELECT tollgate_stored_requests_partitions(30, 2)')) === '0', { what: 'the job to run again' });
});

// The zero-retention calls of one tenant (header: the header that asks for it, or none); returns
// the request ids and the canaries used.
async function zeroRetentionCalls(key, headers) {
    const out = { ids: [], canaries: [] };
    const c = (what) => {
        const v = canary(what);
        out.canaries.push(v);
        zrCanaries.push(v);
        return v;
    };
    // success, non-stream and stream
    let r = await chatReq(key, chat(M.ok, c('ok')), headers);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-model'), M.ok);
    out.ids.push(r.headers.get('x-tollgate-request-id'));
    let s = await streamReq(key, chat(M.ok, c('okstream')), headers);
    assert.equal(s.status, 200);
    assert.match(s.text, /\[DONE\]/);
    out.ids.push(s.requestId);
    // failover: the first target's 503 quotes the prompt, the second serves
    r = await chatReq(key, chat('zr-failover', c('failover')), headers);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-model'), M.fb);
    out.ids.push(r.headers.get('x-tollgate-request-id'));
    // a provider error quoting the prompt: the caller's 400 passes to the client with its words
    const perr = c('provider-error');
    r = await chatReq(key, chat(M.err, perr), headers);
    assert.equal(r.status, 400, r.text);
    assert.ok(r.text.includes(perr), 'the provider quoted the prompt to the client (the scenario is real)');
    out.ids.push(r.headers.get('x-tollgate-request-id'));
    // mid-stream: the provider's in-stream error quotes the prompt; then a stream cut mid-way
    s = await streamReq(key, chat(M.cut, c('midstream')), headers);
    assert.equal(s.status, 200);
    assert.match(s.text, /stream_broken/);
    out.ids.push(s.requestId);
    s = await streamReq(key, chat(M.drop, c('drop')), headers);
    assert.equal(s.status, 200);
    assert.match(s.text, /stream_broken/);
    out.ids.push(s.requestId);
    // the client leaves mid-stream
    out.ids.push(await streamLeave(key, chat(M.slow, c('leave')), headers));
    // a chain with a provider without zero retention: served by the one that has it
    r = await chatReq(key, chat('zr-mixed', c('mixed')), headers);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get('x-tollgate-model'), M.ok, 'the zero-retention target served');
    out.ids.push(r.headers.get('x-tollgate-request-id'));
    for (const id of out.ids) assert.match(id || '', /^req_/);
    return out;
}

const EXPECTED_STATUS = [200, 200, 200, 400, 200, 200, 200, 200];

test('zero retention: no canary in the database or any log, every stage in the access log, store:false', async () => {
    const statsBefore = (await req(inst.simUrl, 'GET', '/_sim/stats')).json.models[M.ok] || { store_false: 0 };

    const policy = await zeroRetentionCalls(keys.zr, {});
    // the header cannot loosen a tenant's policy
    const loosen = await zeroRetentionCalls(keys.zr, { 'x-tollgate-zero-retention': 'false' });
    const header = await zeroRetentionCalls(keys.hdr, { 'x-tollgate-zero-retention': 'true' });
    const zr = [policy, loosen, header];

    // a normal tenant: stored, and only in stored_requests
    const normalCanary = canary('normal');
    const nr = await chatReq(keys.normal, chat('zr-mixed', normalCanary));
    assert.equal(nr.status, 200, nr.text);
    assert.equal(nr.headers.get('x-tollgate-model'), M.plain, 'a normal call keeps every target');
    const normalId = nr.headers.get('x-tollgate-request-id');
    const normalStream = canary('normalstream');
    const ns = await streamReq(keys.normal, chat(M.ok, normalStream, { stream_options: { include_usage: true } }));
    assert.equal(ns.status, 200);

    // every call ended and was logged
    for (const set of zr) {
        for (const [i, id] of set.ids.entries()) {
            const line = await requestLine(id);
            // the access log: every stage's work, no content
            assert.equal(line.zero_retention, 1, `zero_retention in ${JSON.stringify(line)}`);
            assert.equal(line.stored, 0);
            assert.ok(line.tenant_id > 0 && line.key_id > 0, 'auth: tenant and key ids');
            // each stage's own fields: AUTH (ids above), POLICY (zero_retention, max_tokens_capped),
            // ROUTE (route, chain, zr_removed, byok), LIMIT (rate_*), the attempts and the answer,
            // and the admission stages' own time
            for (const f of ['route', 'chain', 'model', 'provider', 'status', 'attempts', 'stream', 'prompt_tokens',
                             'completion_tokens', 'duration_us', 'zr_removed', 'max_tokens_capped', 'byok',
                             'byok_attempts', 'rate_limited', 'rate_tokens', 'rate_local', 'admission_ns'])
                assert.ok(f in line, `${f} in the request line ${JSON.stringify(line)}`);
            // no content in any field (the LIMIT and RESERVE fields too, once those stages write them)
            const text = JSON.stringify(line);
            for (const c of set.canaries) assert.ok(!text.includes(c), `content in the request line: ${text}`);
            for (const [k, v] of Object.entries(line))
                assert.ok(typeof v !== 'string' || v.length < 200, `a long string field ${k} in the request line`);
            const want = i === 6 ? [200, 499] : [EXPECTED_STATUS[i]];
            assert.ok(want.includes(line.status), `status of call ${i}: ${line.status}`);
            if (i === 0) {
                assert.equal(line.model, M.ok);
                assert.equal(line.provider, 'zr-openai');
                assert.equal(line.attempts, 1);
                assert.ok(line.prompt_tokens > 0 && line.completion_tokens > 0, 'tokens');
            }
            if (i === 2) assert.equal(line.attempts, 2, 'failover: two attempts');
            if (i === 7) assert.equal(line.zr_removed, 1, 'route: the target without zero retention was removed');
        }
    }
    const zrLine = await requestLine(policy.ids[0]);
    const hdrLine = await requestLine(header.ids[0]);
    assert.notEqual(zrLine.tenant_id, hdrLine.tenant_id);

    // the normal tenant's record reaches stored_requests (written in batches, off the request path)
    await waitFor(async () => (await psql(`SELECT count(*) FROM stored_requests WHERE request_id = '${normalId}'`)) === '1', {
        tries: 400,
        what: 'the normal call stored',
    });
    const row = (await psql(`SELECT tenant_id, key_id, model_requested, model_served, provider, status, stream, request_truncated, response_truncated,
                                    position('${normalCanary}' in request_body) > 0, position('${normalCanary}' in response_body) > 0
                             FROM stored_requests WHERE request_id = '${normalId}'`)).split('\t');
    assert.equal(row[2], 'zr-mixed');
    assert.equal(row[3], M.plain);
    assert.equal(row[4], 'plain-openai');
    assert.equal(row[5], '200');
    assert.deepEqual(row.slice(6), ['f', 'f', 'f', 't', 't'], `the request and the answer are stored whole: ${row}`);
    await waitFor(async () => (await psql(`SELECT count(*) FROM stored_requests WHERE request_id = '${ns.requestId}' AND stream AND response_body LIKE '%"content"%'`)) === '1', {
        tries: 400,
        what: 'the normal stream stored with its delivered chunks',
    });
    // no zero-retention call has a row
    const zrIds = zr.flatMap((s) => s.ids).map((id) => `'${id}'`).join(',');
    assert.equal(await psql(`SELECT count(*) FROM stored_requests WHERE request_id IN (${zrIds})`), '0');
    // their failover events are stored (nothing in them can hold content: reasons are stable words)
    await waitFor(async () => Number(await psql(`SELECT count(*) FROM failover_events WHERE request_id IN (${zrIds})`)) >= 3, {
        tries: 400,
        what: 'the failover events of the zero-retention calls',
    });

    // store:false reached the OpenAI-kind provider for every zero-retention call to it, and never
    // for the normal tenant's call to the provider without zero retention
    const stats = (await req(inst.simUrl, 'GET', '/_sim/stats')).json.models;
    assert.ok(stats[M.ok].store_false - (statsBefore.store_false || 0) >= 9, `store_false at ${M.ok}: ${JSON.stringify(stats[M.ok])}`);
    assert.equal(stats[M.plain].store_false, 0, 'a normal call is not asked store:false');
    assert.ok(stats[M.cut].store_false >= 3 && stats[M.drop].store_false >= 3);

    // the whole database, dumped
    const dump = (await run('pg_dump', [stack().databaseUrl], { maxBuffer: 512 << 20 })).stdout;
    // the normal tenant's canaries: only in COPY blocks of stored_requests' partitions
    let found = 0;
    for (const block of dump.split(/\n(?=COPY )/)) {
        const table = /^COPY ([^ ]+)/.exec(block);
        for (const c of [normalCanary, normalStream]) {
            if (!block.includes(c)) continue;
            found++;
            assert.ok(table && /^public\.stored_requests_\d{8}$/.test(table[1]), `the normal canary appears outside stored_requests: ${table ? table[1] : 'schema'}`);
        }
    }
    assert.ok(found >= 2, 'the normal canaries are in the dump');

    // the writer's counters: records written, none dropped
    const metrics = (await req(inst.adminUrl, 'GET', '/metrics')).text;
    assert.ok(metricValue(metrics, 'tollgate_stored_requests_written_total') >= 2, 'stored records counted');
    assert.equal(metricValue(metrics, 'tollgate_stored_requests_dropped_total', { reason: 'queue_full' }), 0);
    assert.equal(metricValue(metrics, 'tollgate_stored_requests_dropped_total', { reason: 'db' }), 0);

    // stop the gateway so that every line is written, then keep its log in a file of its own
    inst.gateway.kill('SIGTERM');
    const exit = await inst.gateway.closed;
    assert.equal(exit.code, 0, 'the gateway drained and exited 0');
    assertNoSanitizerReport(inst.gateway, 'the retention gateway');
    writeFileSync(logFile(), inst.gateway.output);
    assert.equal(JSON.parse(readFileSync(inst.configPath, 'utf8')).log_level, 'debug', 'the gateway ran at log level debug');
    assert.ok(inst.gateway.logEvents().some((e) => e.event === 'upstream_stream_error' && e.message === '[withheld: zero retention]'), 'the in-stream error was logged, its words withheld');

    // every log file: this gateway's, the simulator's, the stack's gateway and simulator, PostgreSQL's
    const logs = [logFile()];
    writeFileSync(join(inst.dir, 'sim.log'), inst.sim.output);
    logs.push(join(inst.dir, 'sim.log'));
    for (const k of ['TG_GATEWAY_LOG', 'TG_SIM_LOG']) if (stack().env[k] && existsSync(stack().env[k])) logs.push(stack().env[k]);
    const host = new URL(stack().databaseUrl.replace(/^postgres(ql)?:/, 'http:')).searchParams.get('host');
    if (host && existsSync(join(host, 'server.log'))) logs.push(join(host, 'server.log'));
    const all = zrCanaries;
    assert.equal(zr.flatMap((s) => s.canaries).length, 24);
    assert.ok(all.length >= 27, `canaries searched: ${all.length}`);
    for (const c of all) {
        assert.ok(!dump.includes(c), `canary ${c} is in the pg_dump`);
        for (const f of logs) assert.ok(!readFileSync(f, 'utf8').includes(c), `canary ${c} is in ${f}`);
    }
    // the normal canaries are in no log either (no log line carries request or answer text; none of
    // its calls had a provider error, whose words are logged for tenants without zero retention)
    for (const f of logs) assert.ok(!readFileSync(f, 'utf8').includes(normalCanary), `the normal canary is in ${f}`);
    assert.ok(logs.length >= 4, `logs searched: ${logs}`);
});
