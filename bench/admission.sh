#!/usr/bin/env bash
# bench/admission.sh: what the admission stages (AUTH, POLICY, LIMIT) cost a call on the cached-key
# path, read from real traffic.
#
# Every call's access log line carries `admission_ns`: the time the three stages spent on the loop
# (gateway/src/call.c, "timed"; a wait for the database is not in it). This script builds a release
# tree (build-bench/), starts a throwaway PostgreSQL, tollgate-sim and `tollgate serve` at log level
# info, and gives two tenants a key each:
#   - plain:   no policy row: no model list, no max_tokens, no rate limit (the least work);
#   - limited: a policy with every field set (allowed models, max_tokens, rpm, tpm, key_rpm, key_tpm)
#              at values this run never reaches, so every call does the whole check and counts
#              against four limits without ever being refused.
# Then wrk (bench/chat.lua, 64 connections, BENCH_DURATION each, default 10s) runs both keys in
# BENCH_ROUNDS interleaved rounds (default 3), non-stream, and the report gives, per key, the p50 /
# p99 of admission_ns over every logged call and the median req/s, plus the database queries the
# request path sent per call (tollgate_db_queries_total: the limit's slice leases).
# Prints a table and appends it to bench/RESULTS.md (BENCH_RECORD=0: print only).
# Not a test: tests/run.sh does not run it. Everything listens on 127.0.0.1 only, every wrk run is
# bounded by -d, and everything it started is stopped on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
duration=${BENCH_DURATION:-10s}
rounds=${BENCH_ROUNDS:-3}
workers=${BENCH_WORKERS:-$(nproc)}
results=$root/bench/RESULTS.md
work=$build/admission-run
pg_dir=$work/pg
pg_port=55492
record=${BENCH_RECORD:-1}

say() { echo "admission: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# shellcheck source=SCRIPTDIR/../deploy/packages.sh
. "$root/deploy/packages.sh"
tg_ensure_bench_packages || die "cannot install the packages the bench needs"
for tool in wrk curl cmake psql node; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

sim_pid=
gw_pid=
# shellcheck source=SCRIPTDIR/lib.sh
. "$root/bench/lib.sh"
bench_traps gw_pid sim_pid
bench_build tollgate tollgate-sim
rm -rf "$work"
mkdir -p "$work"
start_pg tollgate_admission db_url
sql() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$db_url" -c "$1"; }

sim_port='' data_port='' admin_port=''
for v in sim_port data_port admin_port; do
    pick_port "$v"
done
(
    umask 077
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$work/pepper"
)
cat >"$work/tollgate.json" <<EOF
{
  "listen": {"data": "127.0.0.1:$data_port", "admin": "127.0.0.1:$admin_port"},
  "workers": $workers,
  "log_level": "info",
  "database": {"url": "$db_url", "pool_size": 2},
  "secrets": {"key_pepper_file": "$work/pepper"},
  "billing": {"enabled": false},
  "providers": {
    "sim-openai": {"kind": "openai", "base_url": "http://127.0.0.1:$sim_port/openai/v1", "api_key_file": "$work/pepper"}
  },
  "models": {"bench-oa": {"provider": "sim-openai", "upstream": "bench-oa"}}
}
EOF
"$gw_bin" migrate -c "$work/tollgate.json" >"$work/migrate.log" 2>&1 || die "migrate failed (see $work/migrate.log)"
key_plain=$("$gw_bin" keys create -c "$work/tollgate.json" --tenant plain 2>>"$work/keys.log" | tail -n 1)
key_limited=$("$gw_bin" keys create -c "$work/tollgate.json" --tenant limited 2>>"$work/keys.log" | tail -n 1)
[ -n "$key_plain" ] && [ -n "$key_limited" ] || die "keys create printed no key"
t_plain=$(sql "SELECT id FROM tenants WHERE name = 'plain'")
t_limited=$(sql "SELECT id FROM tenants WHERE name = 'limited'")
sql "INSERT INTO policies (tenant_id, allowed_models, max_tokens, rpm, tpm, key_rpm, key_tpm)
     VALUES ($t_limited, ARRAY['bench-oa'], 100000, 1000000000, 1000000000000, 1000000000, 1000000000000)"

say "starting tollgate-sim and tollgate ($workers worker(s))"
"$sim_bin" --listen "127.0.0.1:$sim_port" </dev/null >"$work/sim.log" 2>&1 &
sim_pid=$!
wait_http "http://127.0.0.1:$sim_port/_sim/stats" "$sim_pid" simulator
(cd "$root" && exec "$gw_bin" serve -c "$work/tollgate.json") </dev/null >"$work/gateway.log" 2>&1 &
gw_pid=$!
wait_http "http://127.0.0.1:$admin_port/readyz" "$gw_pid" gateway
gw_url=http://127.0.0.1:$data_port

queries() { curl -fsS "http://127.0.0.1:$admin_port/metrics" | awk '$1 == "tollgate_db_queries_total" { print $2 }'; }
for k in "$key_plain" "$key_limited"; do
    for ((i = 0; i < 20; i++)); do
        curl -fsS -o /dev/null -H "authorization: Bearer $k" -H 'content-type: application/json' \
            -d '{"model":"bench-oa","messages":[{"role":"user","content":"warm up"}]}' "$gw_url/v1/chat/completions" ||
            die "warm-up request failed"
    done
done

declare -A RPS CALLS QUERIES
for name in plain limited; do
    RPS[$name]=""
    CALLS[$name]=0
    QUERIES[$name]=0
done
for ((r = 1; r <= rounds; r++)); do
    for name in plain limited; do
        k=$key_plain
        [ "$name" = limited ] && k=$key_limited
        q0=$(queries)
        say "round $r: $name, 64 connections, $duration"
        out=$(BENCH_MODEL=bench-oa BENCH_STREAM=0 BENCH_AUTH="Bearer $k" \
            wrk -t2 -c64 -d"$duration" --latency -s "$root/bench/chat.lua" "$gw_url/v1/chat/completions" 2>&1) || die "wrk failed: $out"
        q1=$(queries)
        line=$(grep '^RESULT ' <<<"$out" | tail -n 1)
        [ -n "$line" ] || die "no RESULT line from wrk"
        [ "$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line")" = 0 ] || die "$name: non-2xx answers: $line"
        RPS[$name]+="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line") "
        CALLS[$name]=$((CALLS[$name] + $(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")))
        QUERIES[$name]=$((QUERIES[$name] + q1 - q0))
    done
done
dropped=$(curl -fsS "http://127.0.0.1:$admin_port/metrics" | awk '$1 == "tollgate_log_dropped_total" { print $2 }')

# admission_ns per tenant from the access log (lines the log queue dropped under load are missing:
# the figures are over the lines that were written, a uniform sample)
read -r -d '' summarise_js <<'EOJS' || true
// Streams the log line by line: a full run writes more than one string may hold.
const fs = require('fs');
const readline = require('readline');
const [log, tPlain, tLimited] = process.argv.slice(1);
const by = { [tPlain]: [], [tLimited]: [] };
const rl = readline.createInterface({ input: fs.createReadStream(log), crlfDelay: Infinity });
rl.on('line', (line) => {
    if (!line.includes('"event":"request"')) return;
    let j;
    try { j = JSON.parse(line); } catch { return; }
    if (j.status !== 200 || !(String(j.tenant_id) in by) || j.admission_ns === undefined) return;
    by[String(j.tenant_id)].push(Number(j.admission_ns));
});
rl.on('close', () => {
    const q = (a, p) => a[Math.min(a.length - 1, Math.floor(p * a.length))];
    for (const [name, t] of [['plain', tPlain], ['limited', tLimited]]) {
        const a = by[t].sort((x, y) => x - y);
        if (a.length === 0) { console.log(`${name} 0 n/a n/a`); continue; }
        console.log(`${name} ${a.length} ${(q(a, 0.5) / 1000).toFixed(2)} ${(q(a, 0.99) / 1000).toFixed(2)}`);
    }
});
EOJS
stats=$(node -e "$summarise_js" "$work/gateway.log" "$t_plain" "$t_limited")
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

sha=$(git -C "$root" rev-parse --short HEAD)
report=$(
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — Admission stages (AUTH, POLICY, LIMIT) on the cached-key path, commit $sha"
    echo
    echo "\`bench/admission.sh\`: $rounds interleaved rounds of $duration, 64 connections, non-stream, $workers gateway worker(s); $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))."
    echo
    echo "| key | logged calls | admission p50 (µs) | admission p99 (µs) | req/s (median) | database queries per call |"
    echo "| --- | --- | --- | --- | --- | --- |"
    while read -r name n p50 p99; do
        # shellcheck disable=SC2086
        rps=$(median ${RPS[$name]})
        qpc=$(awk -v q="${QUERIES[$name]}" -v c="${CALLS[$name]}" 'BEGIN { printf "%.4f", c ? q / c : 0 }')
        echo "| $name | $n | $p50 | $p99 | $rps | $qpc |"
    done <<<"$stats"
    echo
    echo "Access log lines dropped by the log queue under load: ${dropped:-0} (the admission figures are over the lines written)."
)
echo "$report"
if [ "$record" = 1 ]; then
    printf '\n%s\n' "$report" >>"$results"
    say "appended to bench/RESULTS.md"
fi
