#!/usr/bin/env bash
# bench/mem.sh - memory per request and memory that comes back (issue #9 item 4). Not a test.
#
# Builds tollgate and tollgate-sim in a Release tree (MEM_BUILD_DIR, default build-mem/), starts a
# throwaway PostgreSQL (tests/pg_tmp.sh), the simulator and the gateway (MEM_WORKERS workers,
# default 2), and measures, for each gateway binary named (the build's own, and MEM_BEFORE_BIN
# when set: a binary of an older commit, same config and database, measured the same way):
#
#   (a) MEM_BURSTS rounds (default 3) of 60 concurrent 1 MiB bodies of tiny JSON values (half
#       `"x":[1,1,...]`, half 34k one-word messages), fired at once, while one keep-alive client
#       sends GET /v1/models back to back until every body is answered: the answers' statuses, the
#       gateway's peak RSS (VmHWM, reset before each round) and the /v1/models latencies
#       (p50/p99/max) during the burst;
#   (b) a burst of MEM_STREAMS (default 4000) concurrent streams of about 42 KiB each (40 chunks
#       of 780 bytes of text, 20 ms apart): RSS idle before, the peak, and how long after the last stream
#       ended RSS takes to come back within 16 MiB of the idle figure (watched for 30 to 90 s);
#   (c) with MEM_CALLGRIND=1 (first, before the rest): instructions per request on the normal path
#       under valgrind's callgrind (whole process, counters zeroed after a warm-up), for a small
#       chat body and a ~200 KiB conversation (above the pre-scan threshold). MEM_ONLY_CALLGRIND=1
#       measures (c) alone.
#
# Prints a Markdown section on stdout (append it to bench/RESULTS.md by hand) and keeps the raw
# output in the run directory ($MEM_WORK, default /tmp/tollgate-mem). Everything listens on
# 127.0.0.1; everything started is stopped on exit, by pid.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${MEM_BUILD_DIR:-$root/build-mem}
work=${MEM_WORK:-/tmp/tollgate-mem}
workers=${MEM_WORKERS:-2}
bursts=${MEM_BURSTS:-3}
streams=${MEM_STREAMS:-4000}
before_bin=${MEM_BEFORE_BIN:-}
pg_dir=$work/pg
pg_port=55493

say() { echo "mem: $*" >&2; }
die() {
    say "$*"
    exit 1
}
for tool in curl cmake psql node; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[ -z "$before_bin" ] || [ -x "$before_bin" ] || die "MEM_BEFORE_BIN=$before_bin is not an executable"

sim_pid=
gw_pid=
cleanup() {
    local pid
    for pid in "$gw_pid" "$sim_pid"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    "$root/tests/pg_tmp.sh" stop "$pg_dir" "$pg_port" >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "building $build (Release)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target tollgate tollgate-sim >/dev/null
gw_bin=$build/gateway/tollgate
sim_bin=$build/gateway/tollgate-sim

rm -rf "$work"
mkdir -p "$work"

# shellcheck source=SCRIPTDIR/lib.sh
. "$root/bench/lib.sh"


start_pg tollgate_mem db_url

sim_port="" data_port="" admin_port=""
pick_port sim_port
pick_port data_port
pick_port admin_port
sim_url=http://127.0.0.1:$sim_port
gw_url=http://127.0.0.1:$data_port
(
    umask 077
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$work/pepper"
)
# The default limits (1 MiB bodies, body_memory_factor 10): an older binary reads the same file.
cat >"$work/tollgate.json" <<EOF
{
  "listen": {"data": "127.0.0.1:$data_port", "admin": "127.0.0.1:$admin_port"},
  "workers": $workers,
  "log_level": "warn",
  "database": {"url": "$db_url", "pool_size": 2},
  "secrets": {"key_pepper_file": "$work/pepper"},
  "billing": {"enabled": false},
  "timeouts": {"connect_ms": 3000, "first_byte_ms": 60000, "idle_ms": 60000, "total_ms": 600000},
  "providers": {
    "sim-openai": {"kind": "openai", "base_url": "$sim_url/openai/v1", "api_key_file": "$work/pepper"}
  },
  "models": {
    "mem-chat": {"provider": "sim-openai", "upstream": "mem-chat", "context_window": 1000000},
    "mem-stream": {"provider": "sim-openai", "upstream": "mem-stream"}
  }
}
EOF
"$gw_bin" check -c "$work/tollgate.json" >"$work/check.log" 2>&1 || die "config does not validate ($work/check.log)"
(cd "$root" && "$gw_bin" migrate -c "$work/tollgate.json") >"$work/migrate.log" 2>&1 || die "migrate failed"
key=$("$gw_bin" keys create -c "$work/tollgate.json" --tenant mem --name mem 2>"$work/keys.log" | tail -n 1)
[ -n "$key" ] || die "keys create printed no key"

say "starting tollgate-sim on :$sim_port"
"$sim_bin" --listen "127.0.0.1:$sim_port" --threads 2 </dev/null >"$work/sim.log" 2>&1 &
sim_pid=$!
wait_http "$sim_url/_sim/stats" "$sim_pid" simulator
curl -fsS -o /dev/null -X POST -H 'content-type: application/json' "$sim_url/_sim/faults" \
    -d '{"model": "mem-stream", "stream_chunks": 40, "chunk_bytes": 780, "chunk_delay_ms": 20}' ||
    die "the simulator refused the stream fault"

# The client: one Node process per measurement, so its own memory never counts against the gateway.
cat >"$work/client.mjs" <<'EOF'
import http from 'node:http';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
const [mode, url, key, pid, n] = process.argv.slice(2);
const MiB = 1 << 20;
const u = new URL(url);
const status = (f) => Number(new RegExp(`${f}:\\s+(\\d+)\\s+kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
function request(method, path, body, { onData } = {}) {
    return new Promise((res, rej) => {
        const h = { authorization: `Bearer ${key}` };
        if (body) Object.assign(h, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        const r = http.request({ host: u.hostname, port: u.port, method, path, headers: h, agent }, (resp) => {
            let len = 0;
            resp.on('data', (d) => { len += d.length; if (onData) onData(d); });
            resp.on('end', () => res({ status: resp.statusCode, len }));
            resp.on('error', rej);
        });
        r.on('error', rej);
        if (body) r.write(body);
        r.end();
    });
}
const pct = (a, p) => a[Math.min(a.length - 1, Math.floor((a.length * p) / 100))];
if (mode === 'burst') {
    const head1 = '{"model":"mem-chat","messages":[{"role":"user","content":"hi"}],"x":[1';
    const ones = head1 + ',1'.repeat(Math.floor((MiB - head1.length - 2) / 2)) + ']}';
    const msg = '{"role":"user","content":"hi"}';
    const tiny = '{"model":"mem-chat","messages":[' + Array(Math.floor((MiB - 40) / (msg.length + 1))).fill(msg).join(',') + ']}';
    // The prober is a process of its own: this one is busy writing 60 MiB during the burst.
    const probe = spawn(process.execPath, [process.argv[1], 'probe', url, key, pid], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    probe.stdout.on('data', (d) => (out += d));
    await new Promise((r) => probe.stdout.once('data', r)); // "ready": its connection is open
    const idle = status('VmRSS');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const t0 = Date.now();
    const answers = await Promise.all(Array.from({ length: 60 }, (_, i) =>
        request('POST', '/v1/chat/completions', i % 2 ? tiny : ones)));
    const ms = Date.now() - t0;
    probe.stdin.end(); // stop probing
    await new Promise((r) => probe.on('close', r));
    const peak = status('VmHWM');
    const st = {};
    for (const a of answers) st[a.status] = (st[a.status] || 0) + 1;
    const lat = JSON.parse(out.slice(out.indexOf('\n') + 1));
    console.log(JSON.stringify({ idle, peak, after: status('VmRSS'), ms, statuses: st, lat }));
} else if (mode === 'probe') {
    // GET /v1/models back to back on one keep-alive connection until stdin closes.
    await request('GET', '/v1/models');
    let done = false;
    process.stdin.on('end', () => (done = true));
    process.stdin.resume();
    process.stdout.write('ready\n');
    const lat = [];
    while (!done) {
        const t0 = process.hrtime.bigint();
        const r = await request('GET', '/v1/models');
        if (r.status !== 200) throw new Error(`/v1/models answered ${r.status}`);
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    process.stdout.write(JSON.stringify(lat) + '\n');
} else if (mode === 'seq') {
    // n requests of the body in file pid (reused argument), one after the other, one connection.
    const body = readFileSync(pid, 'utf8');
    for (let i = 0; i < Number(n); i++) {
        const r = await request('POST', '/v1/chat/completions', body);
        if (r.status !== 200) throw new Error(`answered ${r.status}`);
    }
} else if (mode === 'streams') {
    const idle = status('VmRSS');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const body = JSON.stringify({ model: 'mem-stream', stream: true, messages: [{ role: 'user', content: 'stream please' }] });
    let bytes = 0, ok = 0;
    const t0 = Date.now();
    const all = await Promise.all(Array.from({ length: Number(n) }, () => request('POST', '/v1/chat/completions', body)));
    for (const a of all) { bytes += a.len; if (a.status === 200) ok++; }
    const end = Date.now();
    const peak = status('VmHWM');
    // How long until RSS is back within 16 MiB of idle: polled every 250 ms for 90 s.
    const near = idle + 16 * MiB;
    let back = null, rss = status('VmRSS');
    const trace = [];
    for (let t = 0; t < 90000 && (back === null || t < 30000); t = Date.now() - end) {
        rss = status('VmRSS');
        trace.push([t, rss]);
        if (back === null && rss <= near) back = t;
        await new Promise((r) => setTimeout(r, 250));
    }
    const at = (s) => (trace.find(([t]) => t >= s * 1000) || trace[trace.length - 1])[1];
    console.log(JSON.stringify({ idle, peak, ok, n: Number(n), avg_bytes: Math.round(bytes / Number(n)), ms: end - t0,
        back_ms: back, rss_at_end: trace[0][1], rss_5s: at(5), rss_30s: at(30), rss_last: rss }));
}
agent.destroy();
EOF

# start_gw LABEL BIN: starts the gateway binary and warms it up (key cache, connections).
start_gw() {
    local label=$1 bin=$2 i
    say "[$label] starting $bin ($workers workers)"
    (cd "$root" && exec "$bin" serve -c "$work/tollgate.json") </dev/null >>"$work/gateway-$label.log" 2>&1 &
    gw_pid=$!
    wait_http "http://127.0.0.1:$admin_port/readyz" "$gw_pid" "gateway ($label)"
    for ((i = 0; i < 20; i++)); do
        curl -fsS -o /dev/null -H "authorization: Bearer $key" -H 'content-type: application/json' \
            -d '{"model":"mem-chat","messages":[{"role":"user","content":"warm up"}]}' "$gw_url/v1/chat/completions" ||
            die "warm-up failed ($label)"
    done
    sleep 3 # let the warm-up settle before an idle figure is read
}

stop_gw() {
    kill -TERM "$gw_pid"
    wait "$gw_pid" || true
    gw_pid=
}

# measure LABEL BIN: (a) on one gateway process, (b) on a fresh one (so that (a)'s high-water mark
# does not hide (b)'s); one JSON line per run in $work/LABEL-{burst,streams}.jsonl.
measure() {
    local label=$1 bin=$2 i
    start_gw "$label" "$bin"
    for ((i = 1; i <= bursts; i++)); do
        say "[$label] (a) burst $i/$bursts: 60 x 1 MiB adversarial bodies"
        node "$work/client.mjs" burst "$gw_url" "$key" "$gw_pid" >>"$work/$label-burst.jsonl"
        sleep 5
    done
    stop_gw
    start_gw "$label" "$bin"
    say "[$label] (b) $streams concurrent streams"
    node "$work/client.mjs" streams "$gw_url" "$key" "$gw_pid" "$streams" >>"$work/$label-streams.jsonl"
    stop_gw
}

# callgrind LABEL BIN: instructions per request on the normal path (valgrind's callgrind, counters
# zeroed after warm-up and dumped after N sequential requests of each body) -> $work/LABEL-cg.txt.
callgrind() {
    local label=$1 bin=$2 name body n dump ir
    say "[$label] (c) callgrind"
    (cd "$root" && exec valgrind --tool=callgrind --callgrind-out-file="$work/cg-$label.out" \
        "$bin" serve -c "$work/tollgate.json") </dev/null >"$work/gateway-cg-$label.log" 2>&1 &
    gw_pid=$!
    wait_http "http://127.0.0.1:$admin_port/readyz" "$gw_pid" "gateway under callgrind ($label)"
    : >"$work/$label-cg.txt"
    for name in small big; do
        body=$work/body-$name.json
        n=$([ "$name" = small ] && echo 400 || echo 40)
        node "$work/client.mjs" seq "$gw_url" "$key" "$body" 20 # warm-up
        callgrind_control -z "$gw_pid" >/dev/null
        node "$work/client.mjs" seq "$gw_url" "$key" "$body" "$n"
        callgrind_control -d "$gw_pid" >/dev/null
        dump=$(ls -t "$work"/cg-"$label".out.* | head -n 1)
        ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
        echo "$name $(wc -c <"$body") $n $ir" >>"$work/$label-cg.txt"
        rm -f "$work"/cg-"$label".out.*
    done
    kill -TERM "$gw_pid"
    wait "$gw_pid" || true
    gw_pid=
}

loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "${MEM_CALLGRIND:-0}" = 1 ]; then
    command -v valgrind >/dev/null || die "valgrind is missing"
    node -e 'process.stdout.write(JSON.stringify({model: "mem-chat", messages: [{role: "user", content: "Hello there, how are you today?"}]}))' >"$work/body-small.json"
    node -e 'const m = [{role: "system", content: "You are a helpful assistant."}];
        for (let i = 0; m.length < 400; i++) m.push({role: i % 2 ? "assistant" : "user", content: "a turn of an ordinary conversation, ".repeat(14)});
        process.stdout.write(JSON.stringify({model: "mem-chat", messages: m}))' >"$work/body-big.json"
    callgrind after "$gw_bin"
    [ -z "$before_bin" ] || callgrind before "$before_bin"
fi
if [ "${MEM_ONLY_CALLGRIND:-0}" != 1 ]; then
    measure after "$gw_bin"
    [ -z "$before_bin" ] || measure before "$before_bin"
fi
loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- report ----------------------------------------------------------------------------------
node - "$work" "$before_bin" "$loadavg_start" "$loadavg_end" "$workers" "$streams" <<'EOF'
const [work, before, la0, la1, workers, streams] = process.argv.slice(2);
const fs = require('node:fs');
const MiB = 1 << 20;
const read = (f) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map(JSON.parse) : []);
const mb = (x) => (x / MiB).toFixed(0);
const ms = (x) => (x == null ? 'not within 90 s' : `${(x / 1000).toFixed(1)} s`);
const labels = before ? ['before', 'after'] : ['after'];
const pct = (a, p) => a[Math.min(a.length - 1, Math.floor((a.length * p) / 100))];
const lat = (a) => { a = [...a].sort((x, y) => x - y); return a.length ? `${a.length}, ${pct(a, 50).toFixed(1)} / ${pct(a, 99).toFixed(1)} / ${a[a.length - 1].toFixed(1)}` : 'none'; };
const any = (kind) => labels.some((l) => read(`${work}/${l}-${kind}.jsonl`).length > 0);
if (any('burst')) {
console.log('| binary | round | answers | RSS idle → peak (MiB) | /v1/models during the burst: n, p50 / p99 / max (ms) | burst time |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const l of labels) {
    const rs = read(`${work}/${l}-burst.jsonl`);
    if (!rs.length) continue;
    rs.forEach((r, i) => console.log(`| ${l} | ${i + 1} | ${Object.entries(r.statuses).map(([s, n]) => `${n} x ${s}`).join(', ')} | ${mb(r.idle)} → ${mb(r.peak)} | ${lat(r.lat)} | ${(r.ms / 1000).toFixed(2)} s |`));
    console.log(`| ${l} | all | | peak ${mb(Math.max(...rs.map((r) => r.peak)))} | ${lat(rs.flatMap((r) => r.lat))} | |`);
}
console.log('');
}
if (any('streams')) {
console.log(`| binary | streams (200s, avg bytes) | RSS idle → peak (MiB) | RSS at the end, +5 s, +30 s (MiB) | back within 16 MiB of idle |`);
console.log('| --- | --- | --- | --- | --- |');
for (const l of labels)
    for (const r of read(`${work}/${l}-streams.jsonl`))
        console.log(`| ${l} | ${r.ok}/${r.n}, ${r.avg_bytes} B | ${mb(r.idle)} → ${mb(r.peak)} | ${mb(r.rss_at_end)}, ${mb(r.rss_5s)}, ${mb(r.rss_30s)} | ${ms(r.back_ms)} |`);
console.log('');
}
const cg = {};
for (const l of labels)
    if (fs.existsSync(`${work}/${l}-cg.txt`))
        for (const line of fs.readFileSync(`${work}/${l}-cg.txt`, 'utf8').trim().split('\n')) {
            const [name, bytes, n, ir] = line.split(' ');
            (cg[name] ??= { bytes })[l] = Number(ir) / Number(n);
        }
if (Object.keys(cg).length) {
    console.log('| request (callgrind, whole process) | body | instructions per request: ' + labels.join(' / ') + ' | change |');
    console.log('| --- | --- | --- | --- |');
    for (const [name, r] of Object.entries(cg))
        console.log(`| ${name} | ${r.bytes} B | ${labels.map((l) => Math.round(r[l]).toLocaleString('en')).join(' / ')} | ${r.before ? (((r.after - r.before) / r.before) * 100).toFixed(2) + '%' : ''} |`);
    console.log('');
}
console.log(`${workers} gateway workers; load average ${la0} at the start, ${la1} at the end.`);
EOF
say "raw output in $work"
