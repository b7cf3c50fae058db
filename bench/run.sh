#!/usr/bin/env bash
# bench/run.sh: one benchmark run of tollgate against its simulator, on this machine.
#
# Builds a release tree (build-bench/), starts a throwaway PostgreSQL (tests/pg_tmp.sh), tollgate-sim
# and `tollgate serve` (BENCH_WORKERS workers, default one per core like the gateway's own default;
# the stack floor gets as many threads), creates a key and warms the key cache,
# then measures with wrk (bench/chat.lua), each run BENCH_DURATION long (default 10s):
#   - the simulator direct vs through tollgate: non-stream and stream, 1 and 64 connections
#     (p50/p99/RPS; added latency at 1 connection in µs; throughput ratio at 64);
#   - the same 64-connection runs through tollgate-bench-relay (bench/relay.c), a bare TCP relay:
#     its throughput over the direct one is the ceiling for any proxy on this machine;
#   - and through tollgate-bench-floor (bench/floor.c), h2o + tollgate's libcurl upstream module
#     with no gateway logic: the ceiling for any proxy built on the fixed stack;
#   - the translation path: an Anthropic-kind model behind the OpenAI API, 1 connection, vs the
#     pass-through path;
#   - failover (a): primary answers 503 (its breaker never opens), fallback healthy, vs a call to
#     the fallback alone, compared with the primary's own error time (the simulator's 503, direct);
#     (b): primary breaker open, added latency over the healthy path; (c): throughput with the dead
#     primary (breaker open) vs healthy, 64 connections;
#   - the gateway's RSS, idle after start-up and warm-up, and idle again after the load.
# Prints a table and appends it to bench/RESULTS.md with the date, the machine and the commit.
# BENCH_ONLY="name ..." measures only those runs (failover (a) when one of its series is named);
# figures whose inputs were not measured print n/a.
# BENCH_ROUNDS (default 3): every wrk series is measured that many times, its group interleaved
# round by round (direct, relay, floor, gateway, direct, relay, floor, gateway, ...), so that drift in a noisy
# machine's speed hits both sides of a ratio alike. The table reports medians; a ratio is the
# median of the per-round ratios, and the rows list each round's req/s.
# Not a test: tests/run.sh does not run it. Everything listens on 127.0.0.1 only, every wrk run is
# bounded by -d, and everything it started is stopped on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
duration=${BENCH_DURATION:-10s}
rounds=${BENCH_ROUNDS:-3}
workers=${BENCH_WORKERS:-$(nproc)}
results=$root/bench/RESULTS.md
work=$build/bench-run
pg_dir=$work/pg
pg_port=55491
read -r -a only <<<"${BENCH_ONLY:-}"

say() { echo "bench: $*" >&2; }
die() {
    say "$*"
    exit 1
}

for tool in wrk curl cmake psql node; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install wrk curl cmake postgresql-client)"
done

# Every measured series, in the order of the report's table.
all_runs=(direct-ns-1 gw-ns-1 direct-st-1 gw-st-1 direct-ns-64 relay-ns-64 floor-ns-64 gw-ns-64 direct-st-64
    relay-st-64 floor-st-64 gw-st-64 direct-an-ns-1 gw-anthropic-ns-1 gw-fb-ns-1 primary-503-direct-1 gw-chain503-ns-1 gw-fb2-ns-1 gw-chainopen-ns-1
    gw-fb2-ns-64 gw-chainopen-ns-64)
for n in "${only[@]}"; do
    [[ " ${all_runs[*]} " == *" $n "* ]] || die "BENCH_ONLY: unknown run $n (known: ${all_runs[*]})"
done
wanted() { # name -> measured in this run?
    local n
    [ ${#only[@]} -eq 0 ] && return 0
    for n in "${only[@]}"; do
        [ "$n" = "$1" ] && return 0
    done
    return 1
}

sim_pid=
relay_pid=
floor_pid=
gw_pid=
cleanup() {
    # Only what this script started, by pid. Each step goes on whatever the one before it did
    # (set -e must not stop a clean-up halfway and leave PostgreSQL running).
    local pid
    for pid in "$gw_pid" "$relay_pid" "$floor_pid" "$sim_pid"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    "$root/tests/pg_tmp.sh" stop "$pg_dir" "$pg_port" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# ---- build ----------------------------------------------------------------------------------
say "building $build (Release)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target tollgate tollgate-sim tollgate-bench-relay tollgate-bench-floor >/dev/null
gw_bin=$build/gateway/tollgate
sim_bin=$build/gateway/tollgate-sim
relay_bin=$build/bench/tollgate-bench-relay
floor_bin=$build/bench/tollgate-bench-floor
for bin in "$gw_bin" "$sim_bin" "$relay_bin" "$floor_bin"; do
    [ -x "$bin" ] || die "build did not produce $bin"
done

rm -rf "$work"
mkdir -p "$work"

free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port"
}

wait_http() { # url pid what
    local i
    for ((i = 0; i < 300; i++)); do
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || die "$3 exited (see $work)"
        sleep 0.1
    done
    die "$3 not ready at $1"
}

# ---- database, simulator, gateway ------------------------------------------------------------
say "starting PostgreSQL"
"$root/tests/pg_tmp.sh" start "$pg_dir" "$pg_port" >/dev/null
pg_sock=$(cat "$pg_dir/socket_dir")
psql -X -q -v ON_ERROR_STOP=1 "host=$pg_sock port=$pg_port user=postgres dbname=postgres" \
    -c 'CREATE DATABASE tollgate_bench' >/dev/null
db_url="postgresql:///tollgate_bench?host=$pg_sock&port=$pg_port&user=postgres"

sim_port=$(free_port)
relay_port=$(free_port)
floor_port=$(free_port)
data_port=$(free_port)
admin_port=$(free_port)
sim_url=http://127.0.0.1:$sim_port
relay_url=http://127.0.0.1:$relay_port
floor_url=http://127.0.0.1:$floor_port
gw_url=http://127.0.0.1:$data_port
admin_url=http://127.0.0.1:$admin_port
(
    umask 077
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$work/pepper"
)

# Providers: sim-openai (pass-through), sim-anthropic (translation), sim-nobreak (a primary whose
# breaker opens only after 1000 failures in a row, the config's maximum: the failover (a) client
# resets it every 250 requests, so every measured request pays the primary's 503), sim-open (a
# breaker that opens at the first failure and stays open for the whole run).
cat >"$work/tollgate.json" <<EOF
{
  "listen": {"data": "127.0.0.1:$data_port", "admin": "127.0.0.1:$admin_port"},
  "workers": $workers,
  "log_level": "warn",
  "database": {"url": "$db_url", "pool_size": 2},
  "secrets": {"key_pepper_file": "$work/pepper"},
  "providers": {
    "sim-openai": {"kind": "openai", "base_url": "$sim_url/openai/v1", "api_key_file": "$work/pepper"},
    "sim-anthropic": {"kind": "anthropic", "base_url": "$sim_url/anthropic", "api_key_file": "$work/pepper"},
    "sim-nobreak": {"kind": "openai", "base_url": "$sim_url/openai/v1", "api_key_file": "$work/pepper",
                    "breaker": {"failure_threshold": 1000, "open_ms": 1000, "half_open_probes": 1}},
    "sim-open": {"kind": "openai", "base_url": "$sim_url/openai/v1", "api_key_file": "$work/pepper",
                 "breaker": {"failure_threshold": 1, "open_ms": 3600000, "half_open_probes": 1}}
  },
  "models": {
    "bench-oa": {"provider": "sim-openai", "upstream": "bench-oa"},
    "bench-an": {"provider": "sim-anthropic", "upstream": "bench-an"},
    "bench-p503": {"provider": "sim-nobreak", "upstream": "bench-p503"},
    "bench-fb": {"provider": "sim-openai", "upstream": "bench-fb"},
    "bench-dead": {"provider": "sim-open", "upstream": "bench-dead"},
    "bench-fb2": {"provider": "sim-openai", "upstream": "bench-fb2"}
  },
  "chains": {
    "bench-chain-503": {"targets": ["bench-p503", "bench-fb"]},
    "bench-chain-open": {"targets": ["bench-dead", "bench-fb2"]}
  }
}
EOF

"$gw_bin" check -c "$work/tollgate.json" >"$work/check.log" 2>&1 || {
    cat "$work/check.log" >&2
    die "config does not validate"
}
(cd "$root" && "$gw_bin" migrate -c "$work/tollgate.json") >"$work/migrate.log" 2>&1 ||
    die "migrate failed (see $work/migrate.log)"
key=$("$gw_bin" keys create -c "$work/tollgate.json" --tenant bench --name bench 2>"$work/keys.log" | tail -n 1)
[ -n "$key" ] || die "keys create printed no key"

say "starting tollgate-sim on :$sim_port"
"$sim_bin" --listen "127.0.0.1:$sim_port" </dev/null >"$work/sim.log" 2>&1 &
sim_pid=$!
wait_http "$sim_url/_sim/stats" "$sim_pid" simulator

say "starting tollgate-bench-relay on :$relay_port (to the simulator)"
"$relay_bin" --listen "127.0.0.1:$relay_port" --upstream "127.0.0.1:$sim_port" </dev/null >"$work/relay.log" 2>&1 &
relay_pid=$!
wait_http "$relay_url/_sim/stats" "$relay_pid" relay

say "starting tollgate-bench-floor ($workers thread(s)) on :$floor_port (to the simulator)"
"$floor_bin" --listen "127.0.0.1:$floor_port" --upstream "127.0.0.1:$sim_port" --threads "$workers" </dev/null >"$work/floor.log" 2>&1 &
floor_pid=$!
wait_http "$floor_url/_sim/stats" "$floor_pid" floor

say "starting tollgate ($workers worker(s)) on :$data_port, admin :$admin_port"
(cd "$root" && exec "$gw_bin" serve -c "$work/tollgate.json") </dev/null >"$work/gateway.log" 2>&1 &
gw_pid=$!
wait_http "$admin_url/readyz" "$gw_pid" gateway
wait_http "$gw_url/healthz" "$gw_pid" "gateway data listener"

sim_fault() {
    curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d "$1" "$sim_url/_sim/faults" ||
        die "the simulator refused the fault $1"
}
sim_fault '{"model": "bench-p503", "status": 503}'
sim_fault '{"model": "bench-dead", "status": 503}'

chat_once() { # model -> http status
    curl -sS -o /dev/null -w '%{http_code}' -H "authorization: Bearer $key" -H 'content-type: application/json' \
        -d "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"warm up\"}]}" \
        "$gw_url/v1/chat/completions"
}

# Warm-up: the key cache (every worker), upstream connections, and the dead primary's breaker.
for ((i = 0; i < 20; i++)); do
    for m in bench-oa bench-an bench-fb bench-fb2 bench-chain-503 bench-chain-open; do
        st=$(chat_once "$m")
        [ "$st" = 200 ] || die "warm-up: $m answered $st"
    done
done
curl -fsS "$admin_url/admin/v1/breakers" | grep -q '"sim-open/bench-dead"[^}]*"open"' ||
    say "warning: the breaker of sim-open/bench-dead does not report open"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$gw_pid/status"; }
# Other work on the machine skews every figure: the report says how busy it was when the load began.
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
rss_idle_start=$(rss_kib)

# ---- measurements ------------------------------------------------------------------------------
declare -A P50 P99 RPS NON2XX ALL_P50 ALL_P99 ALL_RPS ALL_NON2XX
median() { # numbers... -> their median
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
        else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# run NAME URL MODEL STREAM CONNS AUTH [SHAPE]: one wrk measurement, appended to NAME's rounds; the
# table's figures are the medians (summarise). SHAPE "anthropic" posts the simulator's own
# Anthropic Messages request instead of an OpenAI one.
run() {
    local name=$1 url=$2 model=$3 stream=$4 conns=$5 auth=$6 shape=${7:-openai} threads=1 out
    wanted "$name" || return 0
    [ "$conns" -gt 1 ] && threads=2
    say "wrk $name: $conns connection(s), $duration"
    out=$(BENCH_MODEL=$model BENCH_STREAM=$stream BENCH_AUTH=$auth BENCH_SHAPE=$shape \
        wrk -t"$threads" -c"$conns" -d"$duration" --latency -s "$root/bench/chat.lua" "$url" 2>&1) ||
        die "wrk failed: $out"
    echo "$out" >>"$work/wrk-$name.txt"
    local line
    line=$(grep '^RESULT ' <<<"$out" | tail -n 1)
    [ -n "$line" ] || die "no RESULT line from wrk for $name"
    ALL_P50[$name]+="$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line") "
    ALL_P99[$name]+="$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line") "
    ALL_RPS[$name]+="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line") "
    ALL_NON2XX[$name]+="$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line") "
}
summarise() { # the medians of every series measured with run
    local n
    for n in "${!ALL_RPS[@]}"; do
        # shellcheck disable=SC2086 # the lists are space-separated numbers
        {
            P50[$n]=$(median ${ALL_P50[$n]})
            P50[$n]=${P50[$n]%.*}
            P99[$n]=$(median ${ALL_P99[$n]})
            P99[$n]=${P99[$n]%.*}
            RPS[$n]=$(median ${ALL_RPS[$n]})
            NON2XX[$n]=$(printf '%s\n' ${ALL_NON2XX[$n]} | awk '{ s += $1 } END { print s }')
        }
    done
}

# Failover (a) cannot run under wrk: the primary's breaker would open after its threshold and the
# run would measure the open-breaker path instead. A sequential client (one keep-alive connection
# per series, like wrk -c1) interleaves the three series in rounds of 250 requests and resets the
# primary's breaker between rounds, outside the timed requests.
failover_a() {
    say "failover (a): 3 series x ${BENCH_A_REQUESTS:-3000} sequential requests"
    cat >"$work/failover_a.mjs" <<'EOJS'
import http from 'node:http';
const [gw, sim, admin, key, total] = process.argv.slice(2);
const body = (m) => JSON.stringify({ model: m, messages: [{ role: 'user', content: 'Say hello to the benchmark.' }] });
function post(agent, base, path, data, auth) {
    const u = new URL(base);
    return new Promise((resolve, reject) => {
        const t0 = process.hrtime.bigint();
        const req = http.request({ host: u.hostname, port: u.port, path, method: 'POST', agent,
            headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data),
                       ...(auth ? { authorization: auth } : {}) } }, (res) => {
            res.on('data', () => {});
            res.on('end', () => resolve({ us: Number(process.hrtime.bigint() - t0) / 1000, status: res.statusCode }));
        });
        req.on('error', reject);
        req.end(data);
    });
}
const series = {
    'gw-fb-ns-1': { agent: new http.Agent({ keepAlive: true, maxSockets: 1 }), base: gw, model: 'bench-fb', auth: `Bearer ${key}`, want: 200, lat: [] },
    'primary-503-direct-1': { agent: new http.Agent({ keepAlive: true, maxSockets: 1 }), base: sim, model: 'bench-p503', auth: 'Bearer sim', want: 503, lat: [] },
    'gw-chain503-ns-1': { agent: new http.Agent({ keepAlive: true, maxSockets: 1 }), base: gw, model: 'bench-chain-503', auth: `Bearer ${key}`, want: 200, lat: [] },
};
const reset = () => post(undefined, admin, '/admin/v1/breakers/' + encodeURIComponent('sim-nobreak/bench-p503') + '/reset', '', null);
const round = 250;
for (let done = 0; done < Number(total); done += round) {
    for (const s of Object.values(series)) {
        await reset();
        for (let i = 0; i < round; i++) {
            const r = await post(s.agent, s.base, '/v1/chat/completions', body(s.model), s.auth);
            if (r.status !== s.want) { console.error(`unexpected status ${r.status} for ${s.model}`); process.exit(1); }
            s.lat.push(r.us);
        }
    }
}
for (const [name, s] of Object.entries(series)) {
    const l = s.lat.sort((a, b) => a - b);
    const p = (q) => Math.round(l[Math.min(l.length - 1, Math.floor(q * l.length))]);
    const secs = l.reduce((a, b) => a + b, 0) / 1e6;
    console.log(`SERIES ${name} p50_us=${p(0.5)} p99_us=${p(0.99)} rps=${(l.length / secs).toFixed(1)} non2xx=${s.want === 200 ? 0 : l.length}`);
}
process.exit(0);
EOJS
    local out line name
    out=$(node "$work/failover_a.mjs" "$gw_url" "$sim_url" "$admin_url" "$key" "${BENCH_A_REQUESTS:-3000}") ||
        die "failover (a) client failed: $out"
    echo "$out" >"$work/failover-a.txt"
    while read -r line; do
        name=$(awk '{print $2}' <<<"$line")
        P50[$name]=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line")
        P99[$name]=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line")
        RPS[$name]=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line")
        NON2XX[$name]=$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line")
    done < <(grep '^SERIES ' <<<"$out")
}

direct=$sim_url/v1/chat/completions
relayed=$relay_url/v1/chat/completions
floored=$floor_url/v1/chat/completions
via=$gw_url/v1/chat/completions
bearer="Bearer $key"

direct_an=$sim_url/anthropic/v1/messages
for ((round = 1; round <= rounds; round++)); do
    say "round $round of $rounds"
    run direct-ns-1 "$direct" bench-oa 0 1 "Bearer sim"
    run gw-ns-1 "$via" bench-oa 0 1 "$bearer"
    run direct-st-1 "$direct" bench-oa 1 1 "Bearer sim"
    run gw-st-1 "$via" bench-oa 1 1 "$bearer"
    # the translation path's own baseline: the same simulator answering its Anthropic endpoint
    run direct-an-ns-1 "$direct_an" bench-an 0 1 "sim" anthropic
    run gw-anthropic-ns-1 "$via" bench-an 0 1 "$bearer"
    run direct-ns-64 "$direct" bench-oa 0 64 "Bearer sim"
    run relay-ns-64 "$relayed" bench-oa 0 64 "Bearer sim"
    run floor-ns-64 "$floored" bench-oa 0 64 "Bearer sim"
    run gw-ns-64 "$via" bench-oa 0 64 "$bearer"
    run direct-st-64 "$direct" bench-oa 1 64 "Bearer sim"
    run relay-st-64 "$relayed" bench-oa 1 64 "Bearer sim"
    run floor-st-64 "$floored" bench-oa 1 64 "Bearer sim"
    run gw-st-64 "$via" bench-oa 1 64 "$bearer"
    run gw-fb2-ns-1 "$via" bench-fb2 0 1 "$bearer"
    run gw-chainopen-ns-1 "$via" bench-chain-open 0 1 "$bearer"
    run gw-fb2-ns-64 "$via" bench-fb2 0 64 "$bearer"
    run gw-chainopen-ns-64 "$via" bench-chain-open 0 64 "$bearer"
done
summarise
if wanted gw-fb-ns-1 || wanted primary-503-direct-1 || wanted gw-chain503-ns-1; then
    failover_a
fi

rss_idle_end=$(rss_kib)

# ---- report ------------------------------------------------------------------------------------
calc() { awk "BEGIN { printf \"%s\", $1 }"; }
pct() { calc "sprintf(\"%.0f%%\", 100 * $1 / $2)"; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo ok; else echo MISSED; fi; }

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (+ uncommitted changes)"
fi
cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
machine="$(nproc) cores, ${cpu:-unknown CPU}, Linux $(uname -r)"

measured() { # names... -> were they all measured in this run (BENCH_ONLY)?
    local n
    for n; do
        [ -n "${RPS[$n]:-}" ] || return 1
    done
}
row() { echo "| $1 | $2 | $3 | $4 |"; }
added() { # label a b bound_us: p50(a) - p50(b) against the bound
    local v
    if measured "$2" "$3"; then
        v=$((P50[$2] - P50[$3]))
        row "$1" "$v µs" "≤ $4 µs" "$(verdict "$v <= $4")"
    else
        row "$1" n/a "≤ $4 µs" ""
    fi
}
ratio() { # label a b min: the median of the rounds' RPS(a) / RPS(b) against min (a fraction); an
    # empty min is for information
    local v=n/a target="(for information)" ok="" r
    [ -n "$4" ] && target="≥ $(calc "sprintf(\"%.0f%%\", 100 * $4)")"
    if measured "$2" "$3"; then
        # shellcheck disable=SC2086,SC2046 # the lists are space-separated numbers
        r=$(median $(paste -d/ <(printf '%s\n' ${ALL_RPS[$2]}) <(printf '%s\n' ${ALL_RPS[$3]}) |
            awk -F/ '{ printf "%.4f\n", $1 / $2 }'))
        v="$(calc "sprintf(\"%.0f%%\", 100 * $r)")"
        [ -n "$4" ] && ok=$(verdict "$r >= $4")
    fi
    row "$1" "$v" "$target" "$ok"
}

{
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — commit $commit"
    echo
    echo "Machine: $machine; load average before the runs: $loadavg_start. Gateway workers and floor threads: $workers;"
    echo "wrk, tollgate-sim, the TCP relay (bench/relay.c), the h2o + libcurl floor (bench/floor.c) and the"
    echo "gateway share the"
    echo "machine. $rounds interleaved rounds of $duration per series, wrk -t1 at 1 connection, -t2 at 64;"
    echo "p50/p99/req/s are the medians of the rounds, a ratio is the median of the rounds' ratios."
    echo "Latencies are wrk's percentiles of whole requests (a stream's total time). Failover (a) rows"
    echo "come from a sequential Node client (one keep-alive connection per series), see bench/README.md."
    [ ${#only[@]} -gt 0 ] && echo "Partial run: BENCH_ONLY=\"${only[*]}\"."
    echo
    echo "| run | conns | p50 µs | p99 µs | req/s | non-2xx | req/s per round |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    for n in "${all_runs[@]}"; do
        measured "$n" || continue
        c=1
        [[ $n == *-64 ]] && c=64
        per=${ALL_RPS[$n]:-}
        echo "| $n | $c | ${P50[$n]} | ${P99[$n]} | ${RPS[$n]} | ${NON2XX[$n]} | ${per% } |"
    done
    echo
    echo "| figure | value | target | |"
    echo "| --- | ---: | --- | --- |"
    added "added latency, non-stream, 1 conn (p50)" gw-ns-1 direct-ns-1 100
    added "added latency, stream, 1 conn (p50)" gw-st-1 direct-st-1 100
    ratio "throughput through tollgate / direct, non-stream, 64 conns" gw-ns-64 direct-ns-64 0.5
    ratio "throughput through tollgate / direct, stream, 64 conns" gw-st-64 direct-st-64 0.5
    ratio "TCP relay (the floor of any proxy) / direct, non-stream, 64 conns" relay-ns-64 direct-ns-64 ""
    ratio "TCP relay (the floor of any proxy) / direct, stream, 64 conns" relay-st-64 direct-st-64 ""
    ratio "h2o + libcurl, no gateway logic (the floor of the fixed stack) / direct, non-stream, 64 conns" floor-ns-64 direct-ns-64 ""
    ratio "h2o + libcurl, no gateway logic (the floor of the fixed stack) / direct, stream, 64 conns" floor-st-64 direct-st-64 ""
    label="translation (anthropic kind) added latency over its direct call, 1 conn (p50)"
    if measured gw-anthropic-ns-1 direct-an-ns-1 gw-ns-1 direct-ns-1; then
        add_ns=$((P50[gw-ns-1] - P50[direct-ns-1]))
        add_tr=$((P50[gw-anthropic-ns-1] - P50[direct-an-ns-1]))
        row "$label" "${add_tr} µs" "≤ 1.5 × ${add_ns} µs" "$(verdict "$add_tr <= 1.5 * ($add_ns > 0 ? $add_ns : 1)")"
    else
        row "$label" n/a "≤ 1.5 × the pass-through's" ""
    fi
    label="(a) 503 primary + fallback, over the fallback alone (p50)"
    if measured gw-chain503-ns-1 gw-fb-ns-1 primary-503-direct-1; then
        add_fo_a=$((P50[gw-chain503-ns-1] - P50[gw-fb-ns-1]))
        err_a=${P50[primary-503-direct-1]}
        row "$label" "${add_fo_a} µs" "≤ primary's error time ${err_a} µs + 100" "$(verdict "$add_fo_a <= $err_a + 100")"
    else
        row "$label" n/a "≤ primary's error time + 100 µs" ""
    fi
    added "(b) breaker open, added over the healthy path (p50)" gw-chainopen-ns-1 gw-fb2-ns-1 20
    ratio "(c) throughput, dead primary (breaker open) / healthy, 64 conns" gw-chainopen-ns-64 gw-fb2-ns-64 0.9
    echo "| gateway RSS idle after start-up and warm-up | $((rss_idle_start / 1024)) MiB ($rss_idle_start KiB) | ≤ 20 MiB | $(verdict "$rss_idle_start <= 20480") |"
    echo "| gateway RSS idle after the load | $((rss_idle_end / 1024)) MiB ($rss_idle_end KiB) | (for information) | |"
} >"$work/report.md"

cat "$work/report.md"
cat "$work/report.md" >>"$results"
say "appended to $results; raw wrk output in $work"
