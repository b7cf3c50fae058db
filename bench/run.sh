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
#   - nginx (Debian's package), the reference proxy: proxy_pass to the simulator with upstream
#     keep-alive, as many worker processes as the gateway has workers, run unprivileged from a
#     temporary prefix; the same four series as the gateway (1 and 64 connections); tollgate's
#     throughput and added latency are read against nginx's as well as against the direct path;
#   - with BENCH_BASE_REV=<git rev>, the gateway built at that revision (a temporary git worktree
#     and build tree, removed on exit) as the series base-*: before and after in the same rounds;
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
# round by round (direct, relay, floor, nginx, base, gateway, direct, ...), so that drift in a noisy
# machine's speed hits both sides of a ratio alike. The table reports medians; a ratio is the
# median of the per-round ratios, and the rows list each round's req/s.
# BENCH_RECORD=0 prints the report without appending it to bench/RESULTS.md (trial runs).
# BENCH_STORED_REQUESTS=0 turns the measured gateway's request storage off (the default stores
# every request of a tenant without zero retention, as the product does).
# BENCH_BUILD_TYPE (default Release): the CMake build type of both gateways.
# Installs what it needs that is missing (deploy/packages.sh: TG_BENCH_DEB_PACKAGES).
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
base_rev=${BENCH_BASE_REV:-}
build_type=${BENCH_BUILD_TYPE:-Release}
record=${BENCH_RECORD:-1}
read -r -a only <<<"${BENCH_ONLY:-}"

say() { echo "bench: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# shellcheck source=SCRIPTDIR/../deploy/packages.sh
. "$root/deploy/packages.sh"
tg_ensure_bench_packages || die "cannot install the packages the bench needs"
PATH=$PATH:/usr/sbin # nginx, for a user whose PATH lacks it
for tool in wrk curl cmake psql node git nginx; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

# Every measured series, in the order of the report's table.
all_runs=(direct-ns-1 nginx-ns-1 base-ns-1 gw-ns-1 direct-st-1 nginx-st-1 base-st-1 gw-st-1
    direct-ns-64 relay-ns-64 floor-ns-64 nginx-ns-64 base-ns-64 gw-ns-64
    direct-st-64 relay-st-64 floor-st-64 nginx-st-64 base-st-64 gw-st-64
    direct-an-ns-1 gw-anthropic-ns-1 gw-fb-ns-1 primary-503-direct-1 gw-chain503-ns-1
    gw-fb2-ns-1 gw-chainopen-ns-1 gw-fb2-ns-64 gw-chainopen-ns-64)
for n in "${only[@]}"; do
    [[ " ${all_runs[*]} " == *" $n "* ]] || die "BENCH_ONLY: unknown run $n (known: ${all_runs[*]})"
    [[ $n != base-* || -n $base_rev ]] || die "BENCH_ONLY: $n needs BENCH_BASE_REV"
done
wanted() { # name -> measured in this run?
    local n
    [[ $1 == base-* && -z $base_rev ]] && return 1
    [ ${#only[@]} -eq 0 ] && return 0
    for n in "${only[@]}"; do
        [ "$n" = "$1" ] && return 0
    done
    return 1
}
wanted_any() { # names... -> is one of them measured in this run?
    local n
    for n; do
        wanted "$n" && return 0
    done
    return 1
}
want_nginx=0
wanted_any nginx-ns-1 nginx-st-1 nginx-ns-64 nginx-st-64 && want_nginx=1
want_base=0
wanted_any base-ns-1 base-st-1 base-ns-64 base-st-64 && want_base=1

sim_pid=
relay_pid=
floor_pid=
gw_pid=
nginx_pid=
nginx_dir=
base_pid=
base_tmp=
base_src=
cleanup() {
    # Only what this script started, by pid. Each step goes on whatever the one before it did
    # (set -e must not stop a clean-up halfway and leave PostgreSQL running). nginx's master stops
    # its workers on SIGTERM before it exits. A signal that arrives now must not cut it short.
    trap '' INT TERM HUP
    local pid
    for pid in "$gw_pid" "$base_pid" "$nginx_pid" "$relay_pid" "$floor_pid" "$sim_pid"; do
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    "$root/tests/pg_tmp.sh" stop "$pg_dir" "$pg_port" >/dev/null 2>&1 || true
    if [ -n "$nginx_dir" ]; then
        cp "$nginx_dir/error.log" "$work/nginx-error.log" 2>/dev/null || true
        rm -rf "$nginx_dir"
    fi
    if [ -n "$base_tmp" ]; then
        [ -z "$base_src" ] || git -C "$root" worktree remove --force "$base_src" >/dev/null 2>&1 || true
        rm -rf "$base_tmp"
        git -C "$root" worktree prune >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
# A signal ends the script through exit, so the EXIT trap cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- build ----------------------------------------------------------------------------------
# Both gateways are built alike (BENCH_BUILD_TYPE, default Release), so that base-* and gw-* differ
# only by their source.
say "building $build ($build_type)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
cmake --build "$build" -j "$(nproc)" --target tollgate tollgate-sim tollgate-bench-relay tollgate-bench-floor >/dev/null
gw_bin=$build/gateway/tollgate
sim_bin=$build/gateway/tollgate-sim
relay_bin=$build/bench/tollgate-bench-relay
floor_bin=$build/bench/tollgate-bench-floor
for bin in "$gw_bin" "$sim_bin" "$relay_bin" "$floor_bin"; do
    [ -x "$bin" ] || die "build did not produce $bin"
done

# The base gateway: BENCH_BASE_REV checked out in a temporary worktree (outside the repository's
# directory, removed with its build tree on exit) and built there. Only `tollgate` comes from the
# base: the simulator and the other proxies are this tree's, shared by every series.
base_bin=
base_sha=
if [ "$want_base" = 1 ]; then
    base_sha=$(git -C "$root" rev-parse --verify --quiet "$base_rev^{commit}") ||
        die "BENCH_BASE_REV: $base_rev is not a commit of this repository"
    base_tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench-base.XXXXXX")
    base_src=$base_tmp/src
    say "building the base gateway at ${base_sha:0:7} in $base_tmp ($build_type)"
    git -C "$root" worktree add --detach --quiet "$base_src" "$base_sha" ||
        die "cannot check out $base_rev in a worktree"
    cmake -S "$base_src" -B "$base_tmp/build" -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
    cmake --build "$base_tmp/build" -j "$(nproc)" --target tollgate >/dev/null
    base_bin=$base_tmp/build/gateway/tollgate
    [ -x "$base_bin" ] || die "the base build did not produce $base_bin"
fi

rm -rf "$work"
mkdir -p "$work"
# shellcheck source=SCRIPTDIR/lib.sh
. "$root/bench/lib.sh"



# ---- database, simulator, gateway ------------------------------------------------------------
start_pg tollgate_bench db_url

sim_port='' relay_port='' floor_port='' nginx_port='' data_port='' admin_port='' base_data_port='' base_admin_port=''
for v in sim_port relay_port floor_port nginx_port data_port admin_port base_data_port base_admin_port; do
    pick_port "$v"
done
sim_url=http://127.0.0.1:$sim_port
relay_url=http://127.0.0.1:$relay_port
floor_url=http://127.0.0.1:$floor_port
nginx_url=http://127.0.0.1:$nginx_port
gw_url=http://127.0.0.1:$data_port
admin_url=http://127.0.0.1:$admin_port
base_url=http://127.0.0.1:$base_data_port
base_admin_url=http://127.0.0.1:$base_admin_port
(
    umask 077
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$work/pepper"
)

# Providers: sim-openai (pass-through), sim-anthropic (translation), sim-nobreak (a primary whose
# breaker opens only after 1000 failures in a row, the config's maximum: the failover (a) client
# resets it every 250 requests, so every measured request pays the primary's 503), sim-open (a
# breaker that opens at the first failure and stays open for the whole run).
# write_config FILE DATA_PORT ADMIN_PORT DB_URL: the gateway's config (the base gateway gets the
# same one on its own ports and database).
write_config() {
    cat >"$1" <<EOF
{
  "listen": {"data": "127.0.0.1:$2", "admin": "127.0.0.1:$3"},
  "workers": $workers,
  "log_level": "warn",
  "database": {"url": "$4", "pool_size": 2},
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
}
write_config "$work/tollgate.json" "$data_port" "$admin_port" "$db_url"
# Settings of the measured gateway only (the base may be a revision that does not know them):
# billing off (the bench has no prices, and bench/ledger.sh measures billing), the admin API's JWT
# secret (failover (a) resets a breaker through it), and with BENCH_STORED_REQUESTS=0 no request
# storage, to read the pipeline's cost apart from the storage's.
(
    umask 077
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$work/admin-hs256"
)
node -e 'const [f, secret, store] = process.argv.slice(1); const fs = require("fs");
         const c = JSON.parse(fs.readFileSync(f, "utf8"));
         c.billing = { enabled: false };
         c.admin_auth = { issuer: "tollgate-bench", audience: "tollgate-admin", hs256_secret_file: secret };
         if (store === "0") c.retention = { stored_requests: false };
         fs.writeFileSync(f, JSON.stringify(c, null, 2));' "$work/tollgate.json" "$work/admin-hs256" "${BENCH_STORED_REQUESTS:-1}"

"$gw_bin" check -c "$work/tollgate.json" >"$work/check.log" 2>&1 || {
    cat "$work/check.log" >&2
    die "config does not validate"
}
(cd "$root" && "$gw_bin" migrate -c "$work/tollgate.json") >"$work/migrate.log" 2>&1 ||
    die "migrate failed (see $work/migrate.log)"
key=$("$gw_bin" keys create -c "$work/tollgate.json" --tenant bench --name bench 2>"$work/keys.log" | tail -n 1)
[ -n "$key" ] || die "keys create printed no key"
admin_token=$("$gw_bin" token -c "$work/tollgate.json" --role operator --sub bench 2>>"$work/keys.log")
[ -n "$admin_token" ] || die "tollgate token printed no token"

# The base gateway has a database of its own, migrated and given a key by the base binary, so that
# a schema change between the two revisions cannot hurt either.
base_key=
if [ "$want_base" = 1 ]; then
    psql -X -q -v ON_ERROR_STOP=1 "host=$pg_sock port=$pg_port user=postgres dbname=postgres" \
        -c 'CREATE DATABASE tollgate_bench_base' >/dev/null
    write_config "$work/base.json" "$base_data_port" "$base_admin_port" \
        "postgresql:///tollgate_bench_base?host=$pg_sock&port=$pg_port&user=postgres"
    "$base_bin" check -c "$work/base.json" >"$work/base-check.log" 2>&1 || {
        cat "$work/base-check.log" >&2
        die "the base gateway (${base_sha:0:7}) does not accept this bench's config"
    }
    (cd "$base_src" && "$base_bin" migrate -c "$work/base.json") >"$work/base-migrate.log" 2>&1 ||
        die "base migrate failed (see $work/base-migrate.log)"
    base_key=$("$base_bin" keys create -c "$work/base.json" --tenant bench --name bench 2>"$work/base-keys.log" | tail -n 1)
    [ -n "$base_key" ] || die "the base's keys create printed no key"
fi

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

# nginx, the reference proxy: Debian's binary with a config of its own in a temporary prefix (pid,
# error log, temp paths there; no access log), as many worker processes as the gateway has workers,
# one SO_REUSEPORT listener per worker like the gateway, kept-alive upstream connections (HTTP/1.1,
# the client's Connection header dropped) and no response buffering, so that streams go through
# event by event. The keep-alive request caps are lifted on both sides: wrk's connections, like the
# gateway's upstream ones, are never closed for having served too many requests. As root it runs
# as nobody (setpriv), so nginx never holds a privilege in the bench.
if [ "$want_nginx" = 1 ]; then
    nginx_dir=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench-nginx.XXXXXX")
    mkdir "$nginx_dir/tmp"
    cat >"$nginx_dir/nginx.conf" <<EOF
worker_processes $workers;
pid $nginx_dir/nginx.pid;
lock_file $nginx_dir/nginx.lock;
error_log $nginx_dir/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $nginx_dir/tmp/body;
    proxy_temp_path $nginx_dir/tmp/proxy;
    fastcgi_temp_path $nginx_dir/tmp/fastcgi;
    uwsgi_temp_path $nginx_dir/tmp/uwsgi;
    scgi_temp_path $nginx_dir/tmp/scgi;
    keepalive_requests 1000000000;
    upstream sim {
        server 127.0.0.1:$sim_port;
        keepalive 64;
        keepalive_requests 1000000000;
    }
    server {
        listen 127.0.0.1:$nginx_port reuseport;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    as_user=()
    if [ "$(id -u)" -eq 0 ]; then
        chown -R nobody "$nginx_dir"
        as_user=(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups)
    fi
    say "starting nginx ($workers worker(s)) on :$nginx_port (to the simulator)"
    "${as_user[@]}" nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -e "$nginx_dir/error.log" -g 'daemon off;' \
        </dev/null >"$work/nginx.log" 2>&1 &
    nginx_pid=$!
    wait_http "$nginx_url/_sim/stats" "$nginx_pid" nginx
fi

say "starting tollgate ($workers worker(s)) on :$data_port, admin :$admin_port"
(cd "$root" && exec "$gw_bin" serve -c "$work/tollgate.json") </dev/null >"$work/gateway.log" 2>&1 &
gw_pid=$!
wait_http "$admin_url/readyz" "$gw_pid" gateway
wait_http "$gw_url/healthz" "$gw_pid" "gateway data listener"

if [ "$want_base" = 1 ]; then
    say "starting the base gateway (${base_sha:0:7}, $workers worker(s)) on :$base_data_port, admin :$base_admin_port"
    (cd "$base_src" && exec "$base_bin" serve -c "$work/base.json") </dev/null >"$work/base-gateway.log" 2>&1 &
    base_pid=$!
    wait_http "$base_admin_url/readyz" "$base_pid" "base gateway"
    wait_http "$base_url/healthz" "$base_pid" "base gateway data listener"
fi

sim_fault() {
    curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -d "$1" "$sim_url/_sim/faults" ||
        die "the simulator refused the fault $1"
}
sim_fault '{"model": "bench-p503", "status": 503}'
sim_fault '{"model": "bench-dead", "status": 503}'

chat_once() { # model [gateway_url key] -> http status
    curl -sS -o /dev/null -w '%{http_code}' -H "authorization: Bearer ${3:-$key}" -H 'content-type: application/json' \
        -d "{\"model\":\"$1\",\"messages\":[{\"role\":\"user\",\"content\":\"warm up\"}]}" \
        "${2:-$gw_url}/v1/chat/completions"
}

# Warm-up: the key cache (every worker), upstream connections, and the dead primary's breaker.
for ((i = 0; i < 20; i++)); do
    for m in bench-oa bench-an bench-fb bench-fb2 bench-chain-503 bench-chain-open; do
        st=$(chat_once "$m")
        [ "$st" = 200 ] || die "warm-up: $m answered $st"
    done
done
curl -fsS -H "authorization: Bearer $admin_token" "$admin_url/admin/v1/breakers" | grep -q '"sim-open/bench-dead"[^}]*"open"' ||
    say "warning: the breaker of sim-open/bench-dead does not report open"
# The base gateway serves only bench-oa in the rounds. nginx opens its upstream connections.
if [ "$want_nginx" = 1 ]; then
    for ((i = 0; i < 20; i++)); do
        st=$(chat_once bench-oa "$nginx_url" sim)
        [ "$st" = 200 ] || die "warm-up: nginx answered $st"
    done
fi
if [ "$want_base" = 1 ]; then
    for ((i = 0; i < 20; i++)); do
        st=$(chat_once bench-oa "$base_url" "$base_key")
        [ "$st" = 200 ] || die "warm-up: the base gateway answered $st"
    done
fi

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/${1:-$gw_pid}/status"; }
# Other work on the machine skews every figure: the report says how busy it was when the load began.
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
rss_idle_start=$(rss_kib)
base_rss_idle_start=
[ "$want_base" = 1 ] && base_rss_idle_start=$(rss_kib "$base_pid")

# ---- measurements ------------------------------------------------------------------------------
declare -A P50 P99 RPS NON2XX ALL_P50 ALL_P99 ALL_RPS ALL_NON2XX
median() { # numbers... -> their median
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
        else printf "%.10g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
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
const [gw, sim, admin, key, total, adminToken] = process.argv.slice(2);
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
const reset = async () => {
    const r = await post(undefined, admin, '/admin/v1/breakers/' + encodeURIComponent('sim-nobreak/bench-p503') + '/reset', '', `Bearer ${adminToken}`);
    if (r.status !== 200) { console.error(`breaker reset answered ${r.status}`); process.exit(1); }
};
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
    out=$(node "$work/failover_a.mjs" "$gw_url" "$sim_url" "$admin_url" "$key" "${BENCH_A_REQUESTS:-3000}" "$admin_token") ||
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
nginxed=$nginx_url/v1/chat/completions
based=$base_url/v1/chat/completions
base_bearer="Bearer $base_key"

direct_an=$sim_url/anthropic/v1/messages
for ((round = 1; round <= rounds; round++)); do
    say "round $round of $rounds"
    run direct-ns-1 "$direct" bench-oa 0 1 "Bearer sim"
    run nginx-ns-1 "$nginxed" bench-oa 0 1 "Bearer sim"
    run base-ns-1 "$based" bench-oa 0 1 "$base_bearer"
    run gw-ns-1 "$via" bench-oa 0 1 "$bearer"
    run direct-st-1 "$direct" bench-oa 1 1 "Bearer sim"
    run nginx-st-1 "$nginxed" bench-oa 1 1 "Bearer sim"
    run base-st-1 "$based" bench-oa 1 1 "$base_bearer"
    run gw-st-1 "$via" bench-oa 1 1 "$bearer"
    # the translation path's own baseline: the same simulator answering its Anthropic endpoint
    run direct-an-ns-1 "$direct_an" bench-an 0 1 "sim" anthropic
    run gw-anthropic-ns-1 "$via" bench-an 0 1 "$bearer"
    run direct-ns-64 "$direct" bench-oa 0 64 "Bearer sim"
    run relay-ns-64 "$relayed" bench-oa 0 64 "Bearer sim"
    run floor-ns-64 "$floored" bench-oa 0 64 "Bearer sim"
    run nginx-ns-64 "$nginxed" bench-oa 0 64 "Bearer sim"
    run base-ns-64 "$based" bench-oa 0 64 "$base_bearer"
    run gw-ns-64 "$via" bench-oa 0 64 "$bearer"
    run direct-st-64 "$direct" bench-oa 1 64 "Bearer sim"
    run relay-st-64 "$relayed" bench-oa 1 64 "Bearer sim"
    run floor-st-64 "$floored" bench-oa 1 64 "Bearer sim"
    run nginx-st-64 "$nginxed" bench-oa 1 64 "Bearer sim"
    run base-st-64 "$based" bench-oa 1 64 "$base_bearer"
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
base_rss_idle_end=
[ "$want_base" = 1 ] && base_rss_idle_end=$(rss_kib "$base_pid")

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
nginx_version=$(nginx -v 2>&1 | sed -E 's|.*nginx/||')

measured() { # names... -> were they all measured in this run (BENCH_ONLY)?
    local n
    for n; do
        [ -n "${RPS[$n]:-}" ] || return 1
    done
}
row() { echo "| $1 | $2 | $3 | $4 |"; }
added() { # label a b bound_us: p50(a) - p50(b) against the bound; an empty bound is for information
    local v=n/a target="(for information)" ok=""
    [ -n "$4" ] && target="≤ $4 µs"
    if measured "$2" "$3"; then
        v="$((P50[$2] - P50[$3])) µs"
        [ -n "$4" ] && ok=$(verdict "$((P50[$2] - P50[$3])) <= $4")
    fi
    row "$1" "$v" "$target" "$ok"
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
    echo "machine; nginx $nginx_version (Debian's package) is the reference proxy, with $workers worker process(es)."
    [ -n "$base_sha" ] && echo "Base (base-*): the gateway built at ${base_sha:0:7} (BENCH_BASE_REV=$base_rev), measured in the same rounds."
    echo "$rounds interleaved rounds of $duration per series, wrk -t1 at 1 connection, -t2 at 64;"
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
    added "nginx's added latency, non-stream, 1 conn (p50)" nginx-ns-1 direct-ns-1 ""
    added "added latency, stream, 1 conn (p50)" gw-st-1 direct-st-1 100
    added "nginx's added latency, stream, 1 conn (p50)" nginx-st-1 direct-st-1 ""
    ratio "throughput through tollgate / nginx, non-stream, 64 conns" gw-ns-64 nginx-ns-64 ""
    ratio "throughput through tollgate / nginx, stream, 64 conns" gw-st-64 nginx-st-64 ""
    ratio "throughput through tollgate / direct, non-stream, 64 conns" gw-ns-64 direct-ns-64 ""
    ratio "throughput through tollgate / direct, stream, 64 conns" gw-st-64 direct-st-64 ""
    ratio "nginx (the reference proxy) / direct, non-stream, 64 conns" nginx-ns-64 direct-ns-64 ""
    ratio "nginx (the reference proxy) / direct, stream, 64 conns" nginx-st-64 direct-st-64 ""
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
    if [ -n "$base_sha" ]; then
        b=${base_sha:0:7}
        added "base ($b) added latency, non-stream, 1 conn (p50)" base-ns-1 direct-ns-1 ""
        added "tollgate − base ($b), non-stream, 1 conn (p50)" gw-ns-1 base-ns-1 ""
        added "base ($b) added latency, stream, 1 conn (p50)" base-st-1 direct-st-1 ""
        added "tollgate − base ($b), stream, 1 conn (p50)" gw-st-1 base-st-1 ""
        ratio "throughput through base ($b) / direct, non-stream, 64 conns" base-ns-64 direct-ns-64 ""
        ratio "throughput through base ($b) / direct, stream, 64 conns" base-st-64 direct-st-64 ""
        ratio "throughput through tollgate / base ($b), non-stream, 64 conns" gw-ns-64 base-ns-64 ""
        ratio "throughput through tollgate / base ($b), stream, 64 conns" gw-st-64 base-st-64 ""
        echo "| base ($b) RSS idle after start-up and warm-up | $((base_rss_idle_start / 1024)) MiB ($base_rss_idle_start KiB) | (for information) | |"
        echo "| base ($b) RSS idle after the load | $((base_rss_idle_end / 1024)) MiB ($base_rss_idle_end KiB) | (for information) | |"
    fi
} >"$work/report.md"

cat "$work/report.md"
if [ "$record" = 0 ]; then
    say "BENCH_RECORD=0: not appended to $results; raw wrk output in $work"
else
    cat "$work/report.md" >>"$results"
    say "appended to $results; raw wrk output in $work"
fi
