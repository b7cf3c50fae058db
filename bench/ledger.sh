#!/usr/bin/env bash
# bench/ledger.sh: what the credit ledger costs the gateway, billing on against billing off.
#
# Builds a release tree (build-bench/), starts a throwaway PostgreSQL, tollgate-sim and TWO
# gateways on the same database and simulator: one with billing off, one with billing on (its
# journal fsync'd per batch, as in production). Keys: one hot tenant, and BENCH_TENANTS tenants
# (default 1000) with a key each; every wallet is topped up far beyond what a run spends, and the
# bench model has a price. wrk (bench/chat.lua, 64 connections, non-stream, BENCH_DURATION each,
# default 10s, after one unmeasured second of the same load, and with billing on as many more as
# it takes for every tenant of the round to hold a lease) runs, in BENCH_ROUNDS interleaved
# rounds (default 5), each of: off/hot, on/hot, off/1000 tenants, on/1000 tenants (the key file
# walked round-robin; every other round runs "on" before "off"), and nginx serving a fixed JSON
# answer (the floor of the machine) when nginx is installed.
# Reports per case the median req/s and p99, the on/off ratio (the issue's bar: >= 85%), and for
# billing on the database writes per request: usage records, tollgate_settle batches, and the
# rows PostgreSQL wrote (n_tup_ins + n_tup_upd of its tables over the round, temporary ones not) per
# request. BENCH_COMMIT_MS sets the billing-on gateway's billing.commit_ms (what a batch gathers).
# BENCH_LAYOUT: "shared" (default) lets every process use every core, as a single small box would;
# "split" gives the gateway under test (and nginx) the first half of the cores, one worker per core,
# and the load generator, the simulator and PostgreSQL the other half (taskset): the shape of a
# deployment, where the database is another machine's and the gateway's throughput is what its own
# cores do. Prints a table and appends it to bench/RESULTS.md (BENCH_RECORD=0: print only).
# Not a test: tests/run.sh does not run it. Everything listens on 127.0.0.1 only and everything it
# started is stopped on exit.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
duration=${BENCH_DURATION:-10s}
rounds=${BENCH_ROUNDS:-5}
tenants=${BENCH_TENANTS:-1000}
layout=${BENCH_LAYOUT:-shared}
ncpu=$(nproc)
case $layout in
shared)
    gw_cpus=0-$((ncpu - 1)) peer_cpus=$gw_cpus
    workers=${BENCH_WORKERS:-$ncpu}
    layout_text="layout shared: every process on every core"
    cpu_note="In the shared layout the load generator, the simulator and PostgreSQL share the cores with the gateway, so the req/s ratio also pays PostgreSQL's share; the CPU columns separate the two."
    ;;
split)
    [ "$ncpu" -ge 2 ] || { echo "ledger: BENCH_LAYOUT=split needs 2 cores or more" >&2; exit 1; }
    half=$((ncpu / 2))
    gw_cpus=0-$((half - 1)) peer_cpus=$half-$((ncpu - 1))
    workers=${BENCH_WORKERS:-$half}
    layout_text="layout split: the gateway under test and nginx on cores $gw_cpus, the load generator, the simulator and PostgreSQL on cores $peer_cpus"
    cpu_note="In the split layout the gateway's cores run only the gateway (workers and settlement writer), so the req/s ratio is what billing costs the gateway's own cores; PostgreSQL's work lands on the peers' cores, beside the load generator and the simulator, and shows in its CPU column."
    ;;
*)
    echo "ledger: BENCH_LAYOUT is shared or split, not $layout" >&2
    exit 1
    ;;
esac
results=$root/bench/RESULTS.md
work=$build/ledger-run
pg_dir=$work/pg
pg_port=55493
record=${BENCH_RECORD:-1}
commit_ms=${BENCH_COMMIT_MS:-} # billing.commit_ms of the billing-on gateway (empty: its default)
settle_s=$(((${commit_ms:-2000} + 999) / 1000 + 1)) # a batch gathered and committed

say() { echo "ledger: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# shellcheck source=SCRIPTDIR/../deploy/packages.sh
. "$root/deploy/packages.sh"
tg_ensure_bench_packages || die "cannot install the packages the bench needs"
for tool in wrk curl cmake psql; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

sim_pid=
off_pid=
on_pid=
ngx_pid=
# shellcheck source=SCRIPTDIR/lib.sh
. "$root/bench/lib.sh"
bench_traps on_pid off_pid sim_pid ngx_pid
bench_build tollgate tollgate-sim
rm -rf "$work"
mkdir -p "$work"
start_pg tollgate_ledger db_url
sql() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$db_url" -c "$1"; }
# the cluster's processes on the peers' cores (its backends, forked later, inherit it)
pg_pm=$(head -n 1 "$(cat "$pg_dir/location" 2>/dev/null || echo "$pg_dir")/data/postmaster.pid")
for p in $pg_pm $(ps -o pid= --ppid "$pg_pm"); do
    taskset -a -c -p "$peer_cpus" "$p" >/dev/null
done

sim_port='' off_port='' off_admin='' on_port='' on_admin='' ngx_port=''
for v in sim_port off_port off_admin on_port on_admin ngx_port; do
    pick_port "$v"
done
(
    umask 077
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$work/pepper"
)
# The keys' cache outlives the run (key_cache_ttl_ms): with the default minute, the 1000 keys of a
# round expired inside a later round of the same case (a round trip comes about once a minute),
# and their database lookups, queued behind the load generator on a busy core, gave that round a
# tail of tens of milliseconds and fewer requests: a key lookup is not what this bench measures.
config() { # data_port admin_port billing-json
    cat <<EOF
{
  "listen": {"data": "127.0.0.1:$1", "admin": "127.0.0.1:$2"},
  "workers": $workers,
  "log_level": "warn",
  "key_cache_ttl_ms": 3600000,
  "database": {"url": "$db_url", "pool_size": 2},
  "secrets": {"key_pepper_file": "$work/pepper"},
  "retention": {"stored_requests": false},
  "billing": $3,
  "providers": {
    "sim-openai": {"kind": "openai", "base_url": "http://127.0.0.1:$sim_port/openai/v1", "api_key_file": "$work/pepper"}
  },
  "models": {"bench-oa": {"provider": "sim-openai", "upstream": "bench-oa"}}
}
EOF
}
config "$off_port" "$off_admin" '{"enabled": false}' >"$work/off.json"
config "$on_port" "$on_admin" "{\"enabled\": true, \"journal_path\": \"$work/ledger.journal\", \"journal_fsync\": true${commit_ms:+, \"commit_ms\": $commit_ms}}" >"$work/on.json"
"$gw_bin" migrate -c "$work/off.json" >"$work/migrate.log" 2>&1 || die "migrate failed (see $work/migrate.log)"

say "creating the hot tenant and $tenants tenants"
key_hot=$("$gw_bin" keys create -c "$work/off.json" --tenant hot 2>>"$work/keys.log" | tail -n 1)
[ -n "$key_hot" ] || die "keys create printed no key"
: >"$work/keys"
for ((i = 0; i < tenants; i++)); do
    "$gw_bin" keys create -c "$work/off.json" --tenant "t$i" 2>>"$work/keys.log" | tail -n 1 >>"$work/keys"
done
[ "$(wc -l <"$work/keys")" = "$tenants" ] || die "keys create failed (see $work/keys.log)"
sql "SELECT count(*) FROM (SELECT tollgate_top_up(id, 1000000000000000, 'bench', 'bench') FROM tenants) t" >/dev/null
sql "INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, effective_from)
     VALUES ('bench-oa', 2500000, 10000000, 1250000, now() - interval '1 minute')"

say "starting tollgate-sim and two gateways ($workers worker(s) each)"
taskset -c "$peer_cpus" "$sim_bin" --listen "127.0.0.1:$sim_port" </dev/null >"$work/sim.log" 2>&1 &
sim_pid=$!
wait_http "http://127.0.0.1:$sim_port/_sim/stats" "$sim_pid" simulator
(cd "$work" && exec taskset -c "$gw_cpus" "$gw_bin" serve -c "$work/off.json") </dev/null >"$work/off.log" 2>&1 &
off_pid=$!
(cd "$work" && exec taskset -c "$gw_cpus" "$gw_bin" serve -c "$work/on.json") </dev/null >"$work/on.log" 2>&1 &
on_pid=$!
wait_http "http://127.0.0.1:$off_admin/readyz" "$off_pid" "gateway (billing off)"
wait_http "http://127.0.0.1:$on_admin/readyz" "$on_pid" "gateway (billing on)"

have_nginx=0
if command -v nginx >/dev/null; then
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<EOF
worker_processes $workers;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$ngx_port;
        location / { default_type application/json; return 200 '{"id":"x","object":"chat.completion","choices":[]}'; }
    }
}
EOF
    taskset -c "$gw_cpus" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' </dev/null >"$work/nginx/out.log" 2>&1 &
    ngx_pid=$!
    wait_http "http://127.0.0.1:$ngx_port/" "$ngx_pid" nginx && have_nginx=1
fi

# CPU time in clock ticks: a process (all its threads), and the cluster's server processes (the
# postmaster's children: backends, writers), so the cost of billing shows apart from the machine's
# other work (this machine runs the load generator, the simulator and PostgreSQL beside the gateway)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
pg_ticks() {
    local pm t=0 p
    pm=$(head -n 1 "$(cat "$pg_dir/location" 2>/dev/null || echo "$pg_dir")/data/postmaster.pid")
    for p in $pm $(ps -o pid= --ppid "$pm"); do
        t=$((t + $(ticks "$p" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
hz=$(getconf CLK_TCK)

metric() { curl -fsS "http://127.0.0.1:$on_admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
# rows of the database's own tables (the settlement's temporary stage is not a write that stays)
rows() { sql "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables WHERE schemaname NOT LIKE 'pg\\_temp%'"; }
warm() { # url key
    for ((i = 0; i < 20; i++)); do
        curl -fsS -o /dev/null -H "authorization: Bearer $2" -H 'content-type: application/json' \
            -d '{"model":"bench-oa","messages":[{"role":"user","content":"warm up"}]}' "$1/v1/chat/completions" ||
            die "warm-up request to $1 failed"
    done
}
warm "http://127.0.0.1:$off_port" "$key_hot"
warm "http://127.0.0.1:$on_port" "$key_hot"

declare -A RPS P99 CALLS RECORDS BATCHES ROWS GWCPU PGCPU WAITS WARM
cases="off-hot on-hot off-many on-many"
[ "$have_nginx" = 1 ] && cases="$cases nginx"
for c in $cases; do
    RPS[$c]=""
    P99[$c]=""
    CALLS[$c]=0
    RECORDS[$c]=0
    WAITS[$c]=0
    WARM[$c]=""
    BATCHES[$c]=0
    ROWS[$c]=0
    GWCPU[$c]=0
    PGCPU[$c]=0
done
for ((r = 1; r <= rounds; r++)); do
    order=$cases
    # every other round runs billing on first: neither side always follows the other
    [ $((r % 2)) = 0 ] && order=$(sed -E 's/off-hot on-hot/on-hot off-hot/; s/off-many on-many/on-many off-many/' <<<"$cases")
    for c in $order; do
        port=$off_port
        case $c in on-*) port=$on_port ;; nginx) port=$ngx_port ;; esac
        keys=""
        case $c in *-many) keys=$work/keys ;; esac
        # one unmeasured second first, for every case alike: a measured round starts in the steady
        # state (connections made), not in the ramp of its first hundred milliseconds. With billing
        # on, more unmeasured seconds until every tenant of the round holds a lease: a tenant idle
        # since its last round (longer than billing's idle close) waits for a lease open at its
        # first request, and 1000 tenants starting cold get about 900 of them through in the first
        # second here (the warm-up seconds are reported: the cold start, apart from the steady
        # state measured)
        want=0
        case $c in
        on-hot) want=1 who="t.name = 'hot'" ;;
        on-many) want=$tenants who="t.name LIKE 't%'" ;;
        esac
        for ((w = 1; ; w++)); do
            BENCH_MODEL=bench-oa BENCH_STREAM=0 BENCH_AUTH="Bearer $key_hot" BENCH_KEYS="$keys" \
                taskset -c "$peer_cpus" wrk -t2 -c64 -d1s -s "$root/bench/chat.lua" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null 2>&1 ||
                die "$c: the warm-up run failed"
            [ "$want" = 0 ] && break
            [ "$(sql "SELECT count(DISTINCT l.tenant_id) FROM leases l JOIN tenants t ON t.id = l.tenant_id
                      WHERE l.state = 'open' AND l.request_id IS NULL AND $who")" -ge "$want" ] && break
            [ "$w" -lt 10 ] || die "$c: after $w s of warm-up, not every tenant holds a lease"
        done
        [ "$want" = 0 ] || WARM[$c]+="$w "
        sleep "$settle_s" # its records committed before the counting starts
        rec0=$(metric tollgate_ledger_records_total)
        bat0=$(metric tollgate_ledger_batches_total)
        wait0=$(metric tollgate_ledger_lease_waits_total)
        rows0=$(rows)
        gpid=$off_pid
        case $c in on-*) gpid=$on_pid ;; nginx) gpid=$ngx_pid ;; esac
        g0=$(ticks "$gpid")
        p0=$(pg_ticks)
        say "round $r: $c, 64 connections, $duration"
        out=$(BENCH_MODEL=bench-oa BENCH_STREAM=0 BENCH_AUTH="Bearer $key_hot" BENCH_KEYS="$keys" \
            taskset -c "$peer_cpus" wrk -t2 -c64 -d"$duration" --latency -s "$root/bench/chat.lua" "http://127.0.0.1:$port/v1/chat/completions" 2>&1) ||
            die "wrk failed: $out"
        # the writer commits a batch every billing.commit_ms: let it catch up before counting
        sleep "$settle_s"
        GWCPU[$c]=$((GWCPU[$c] + $(ticks "$gpid") - g0))
        PGCPU[$c]=$((PGCPU[$c] + $(pg_ticks) - p0))
        line=$(grep '^RESULT ' <<<"$out" | tail -n 1)
        [ -n "$line" ] || die "no RESULT line from wrk"
        [ "$(sed -E 's/.*non2xx=([0-9]+).*/\1/' <<<"$line")" = 0 ] || die "$c: non-2xx answers: $line"
        RPS[$c]+="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line") "
        P99[$c]+="$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line") "
        CALLS[$c]=$((CALLS[$c] + $(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$line")))
        RECORDS[$c]=$((RECORDS[$c] + $(metric tollgate_ledger_records_total | cut -d. -f1) - ${rec0%.*}))
        WAITS[$c]=$((WAITS[$c] + $(metric tollgate_ledger_lease_waits_total | cut -d. -f1) - ${wait0%.*}))
        BATCHES[$c]=$((BATCHES[$c] + $(metric tollgate_ledger_batches_total | cut -d. -f1) - ${bat0%.*}))
        ROWS[$c]=$((ROWS[$c] + $(rows) - rows0))
    done
done
violations=$(sql "SELECT count(*) FROM tollgate_ledger_check()")
fallbacks=$(metric tollgate_ledger_direct_fallbacks_total)

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b ? a / b : 0 }'; }

sha=$(git -C "$root" rev-parse --short HEAD)
report=$(
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — The credit ledger: billing on against billing off, commit $sha"
    echo
    echo "\`bench/ledger.sh\`: $rounds interleaved rounds of $duration, each after 1 s of unmeasured warm-up and, with billing on, as many more as it took for every tenant of the round to hold a lease, then ${settle_s} s for the warm-up's records to commit (on and off in alternating order), 64 connections, non-stream, $workers gateway worker(s) per gateway, one hot tenant or $tenants tenants (round-robin keys); journal fsync'd per batch; billing.commit_ms ${commit_ms:-default (2000)}; $layout_text; $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))."
    echo
    echo "| case | req/s (median) | p99 (µs, median) | on / off | gateway CPU µs per request | PostgreSQL CPU µs per request | usage records per request | settle batches per request | rows written per request |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for c in $cases; do
        # shellcheck disable=SC2086
        rps=$(median ${RPS[$c]})
        # shellcheck disable=SC2086
        p99=$(median ${P99[$c]})
        ratio="" recs="" bats="" rw=""
        case $c in
        on-*)
            # shellcheck disable=SC2086
            off=$(median ${RPS[off-${c#on-}]})
            ratio=$(awk -v a="$rps" -v b="$off" 'BEGIN { printf "%.1f%%", 100 * a / b }')
            recs=$(per "${RECORDS[$c]}" "${CALLS[$c]}")
            bats=$(per "${BATCHES[$c]}" "${CALLS[$c]}")
            rw=$(per "${ROWS[$c]}" "${CALLS[$c]}")
            ;;
        off-*) rw=$(per "${ROWS[$c]}" "${CALLS[$c]}") ;;
        esac
        gcpu=$(awk -v t="${GWCPU[$c]}" -v hz="$hz" -v n="${CALLS[$c]}" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
        pcpu=$(awk -v t="${PGCPU[$c]}" -v hz="$hz" -v n="${CALLS[$c]}" 'BEGIN { printf "%.1f", n ? t * 1e6 / hz / n : 0 }')
        [ "$c" = nginx ] && gcpu="" && pcpu=""
        echo "| $c | $rps | $p99 | $ratio | $gcpu | $pcpu | $recs | $bats | $rw |"
    done
    echo
    echo "CPU per request: the gateway process (every thread: workers and the settlement writer) and the PostgreSQL cluster's server processes, over the case's rounds (the ${settle_s} s after each round in which the writer catches up included). $cpu_note"
    echo
    echo "tollgate_ledger_check() after the run: $violations violation(s); batches sent through the stage instead of straight into usage_records (tollgate_ledger_direct_fallbacks_total): ${fallbacks:-0}; reservations that waited for a lease over the measured rounds (tollgate_ledger_lease_waits_total): ${WAITS[on-hot]} with one hot tenant, ${WAITS[on-many]} with $tenants tenants. Warm-up seconds before each measured round with billing on (until every tenant of the round held a lease: the cold start of tenants idle since their last round): ${WARM[on-many]}for the $tenants tenants, ${WARM[on-hot]}for the hot one. Rows written: n_tup_ins + n_tup_upd of the database's tables over the rounds, temporary tables (the settlement's stage) not counted (usage records, their indexes' rows are not counted, the rollup, leases, ledger entries, wallets; with billing off, the other writers: last_used_at, none else)."
)
echo "$report"
if [ "$record" = 1 ]; then
    printf '\n%s\n' "$report" >>"$results"
    say "appended to bench/RESULTS.md"
fi
