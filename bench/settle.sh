#!/usr/bin/env bash
# bench/settle.sh: what a settlement batch costs PostgreSQL, per usage record, the ways the gateway's
# writer sends it: a fresh batch (migration 0013) BEGIN; COPY of the records straight into
# usage_records; tollgate_settle_direct(batch, per-lease sums, records, closes); COMMIT; a replay or
# a retry (migration 0012) BEGIN; COPY into the session's stage; tollgate_settle_staged(batch,
# closes); COMMIT.
#
# Builds `tollgate` (Release, build-bench/), starts a throwaway PostgreSQL, migrates it, opens
# 1000 tenants with a wallet and a lease each, then times psql running the batches of each case:
#   hot        10 batches of 4000 records of one tenant (one lease, one charge entry a batch)
#   many-4     10 batches of 4000 records over 1000 tenants (4 a tenant: a 250 ms batch at 16k req/s,
#              the cost a shorter billing.commit_ms pays)
#   many-17     3 batches of 17000 records over 1000 tenants (17 a tenant: a 1 s batch at 17k req/s)
#   replay     the hot batches again under new batch keys: every record exists, nothing is charged
# and the same hot records once more through tollgate_settle(batch, jsonb) (an older gateway's
# journal); then "hot" and "many-17" again as fresh batches the direct way (dhot, dmany17). Wall time of psql per record (client included: an upper bound of the server's share).
# tollgate_ledger_check() must be clean afterwards. Prints a table and appends it to
# bench/RESULTS.md (BENCH_RECORD=0: print only). Not a test: tests/run.sh does not run it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BENCH_BUILD_DIR:-$root/build-bench}
work=$build/settle-run
pg_dir=$work/pg
pg_port=55494
record=${BENCH_RECORD:-1}
results=$root/bench/RESULTS.md

say() { echo "settle: $*" >&2; }
die() {
    say "$*"
    exit 1
}

command -v psql >/dev/null || die "psql is missing (deploy/packages.sh installs it)"
# shellcheck source=SCRIPTDIR/lib.sh
. "$root/bench/lib.sh"
bench_traps # the cluster only
bench_build tollgate
rm -rf "$work"
mkdir -p "$work"
start_pg tollgate_settle db_url
sql() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$db_url" -c "$1"; }

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/pepper"
chmod 600 "$work/pepper"
cat >"$work/tollgate.json" <<EOF
{"database": {"url": "$db_url"}, "secrets": {"key_pepper_file": "$work/pepper"},
 "providers": {"sim": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_file": "$work/pepper"}},
 "models": {"bench-chat": {"provider": "sim", "upstream": "bench-chat", "context_window": 128000}}}
EOF
"$build/gateway/tollgate" migrate -c "$work/tollgate.json" >"$work/migrate.log" 2>&1 || die "migrate failed (see $work/migrate.log)"

say "1000 tenants, a wallet and a lease each"
sql "INSERT INTO tenants (name) SELECT 'settle-' || g FROM generate_series(1, 1000) g" >/dev/null
sql "SELECT count(tollgate_wallet_open(id, 0)) FROM tenants" >/dev/null
sql "SELECT count(*) FROM tenants, LATERAL tollgate_top_up(id, 1000000000000, 'settle-' || id, NULL)" >/dev/null
price=$(sql "INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, effective_from)
             VALUES ('bench-chat', 1000000, 2000000, 500000, now() - interval '1 day') RETURNING id")
sql "SELECT id, (SELECT lease_id FROM tollgate_lease_open(id, 'settle', 'k', 100000000000, 1, 100, 3600000))
       FROM tenants ORDER BY id" | tr '|' ' ' >"$work/leases"
hot_lease=$(head -1 "$work/leases")

# batches TAG BATCHES RECORDS TENANTS [direct]: a psql script of COPY batches (12 input, 20 output
# tokens at the price above cost 52); created_at this second plus the record's number in
# microseconds. With "direct", each batch is the writer's way for fresh records (migrations 0013,
# 0014): saying it keeps the rollup, COPY straight into usage_records with each row's charge key,
# the rollup rows into the rollup stage, then tollgate_settle_direct with the per-lease sums (what
# billing/batch.c computes); without, the stage's way (COPY into the stage,
# tollgate_settle_staged), which replays and retries take.
at=$(date -u +%Y-%m-%dT%H:%M:%S)
batches() {
    awk -v tag="$1" -v nb="$2" -v nr="$3" -v nt="$4" -v direct="${5:-}" -v price="$price" -v at="$at" -v hot="$hot_lease" '
        NR == FNR { t[NR - 1] = $1; l[NR - 1] = $2; next }
        END {
            print "SELECT tollgate_settle_stage_open();"
            k = 0
            for (b = 0; b < nb; b++) {
                key = tag "-" b
                if (direct) printf "BEGIN; SET LOCAL tollgate.usage_rollup = %ccaller%c;\n", 39, 39
                else print "BEGIN;"
                if (direct) print "COPY usage_records (tenant_id, request_id, created_at, key_id, model, provider, byok, input_tokens, output_tokens, cached_tokens, estimated, price_id, price_input, price_output, price_cached, platform_fee, billed, cost, charged, lease_id, latency_ms, attempts, status, error, charge_key) FROM STDIN;"
                else print "COPY pg_temp.tollgate_settle_stage FROM STDIN;"
                delete sum; delete cnt; delete ten; delete first; nl = 0
                for (i = 0; i < nr; i++) {
                    k++
                    if (nt == 1) { split(hot, h, " "); tn = h[1]; ls = h[2] } else { tn = t[k % nt]; ls = l[k % nt] }
                    ts = sprintf("%s.%06dZ", at, k % 1000000)
                    printf "%s\treq_%s_%d\t%s\t\\N\tbench-chat\tsim\tf\t12\t20\t0\tf\t%s\t1000000\t2000000\t500000\t0\tt\t52\t52\t%s\t3\t1\t200\t\\N",
                        tn, tag, k, ts, price, ls
                    if (direct) {
                        printf "\tusage_charge/%s/%s", key, ls
                        if (!(ls in sum)) { order[nl++] = ls; first[ls] = ts }
                        sum[ls] += 52; cnt[ls]++; ten[ls] = tn
                        if (ts < first[ls]) first[ls] = ts
                    }
                    printf "\n"
                }
                print "\\."
                if (direct) { # the rollup rows (one lease, model and day a tenant), then the sums
                    print "COPY pg_temp.tollgate_rollup_stage FROM STDIN;"
                    for (j = 0; j < nl; j++) {
                        x = order[j]
                        printf "%s\t%s\tbench-chat\t%d\t0\t%d\t%d\t0\t%d\t%d\n", ten[x], substr(at, 1, 10), cnt[x], 12 * cnt[x], 20 * cnt[x], sum[x], sum[x]
                    }
                    print "\\."
                    ta = "{"; la = "{"; sa = "{"; pa = "{"; fa = "{"
                    for (j = 0; j < nl; j++) {
                        x = order[j]; sep = j ? "," : ""
                        ta = ta sep ten[x]; la = la sep x; sa = sa sep sum[x]; pa = pa sep cnt[x]; fa = fa sep "\"" first[x] "\""
                    }
                    printf "SELECT * FROM tollgate_settle_direct(%c%s%c, %c%s}%c, %c%s}%c, %c%s}%c, %c%s}%c, %c%s}%c, %d);\n",
                        39, key, 39, 39, ta, 39, 39, la, 39, 39, sa, 39, 39, pa, 39, 39, fa, 39, nr
                } else {
                    printf "SELECT * FROM tollgate_settle_staged(%c%s%c);\n", 39, key, 39
                }
                print "COMMIT;"
            }
        }' "$work/leases" /dev/null >"$work/$1.sql"
}

# timed FILE RECORDS: ns per record of psql -f FILE
timed() {
    local s e
    s=$(date +%s%N)
    psql -X -q -v ON_ERROR_STOP=1 "$db_url" -f "$1" >/dev/null
    e=$(date +%s%N)
    echo $(((e - s) / $2))
}

batches hot 10 4000 1
batches many4 10 4000 1000
batches many17 3 17000 1000
batches dhot 10 4000 1 direct
batches dmany17 3 17000 1000 direct
sed 's/tollgate_settle_staged(.hot-/tollgate_settle_staged(\x27replay-/' "$work/hot.sql" >"$work/replay.sql"
# the jsonb form: the same records as one JSON array per batch, under new request ids
sql "SELECT 'SELECT * FROM tollgate_settle(''json-' || b || ''', ''' || jsonb_agg(jsonb_build_object(
        'tenant_id', $(echo "$hot_lease" | cut -d' ' -f1), 'request_id', 'req_json_' || (b * 4000 + i),
        'created_at', '$at.' || lpad(((b * 4000 + i) % 1000000)::text, 6, '0') || 'Z', 'model', 'bench-chat',
        'provider', 'sim', 'input_tokens', 12, 'output_tokens', 20, 'cached_tokens', 0, 'price_id', $price,
        'price_input', 1000000, 'price_output', 2000000, 'price_cached', 500000, 'platform_fee', 0, 'cost', 52,
        'charge', 52, 'lease_id', $(echo "$hot_lease" | cut -d' ' -f2), 'latency_ms', 3, 'attempts', 1,
        'status', 200))::text || '''::jsonb);'
       FROM generate_series(0, 9) b, generate_series(1, 4000) i GROUP BY b ORDER BY b" >"$work/json.sql"

declare -A per
for c in hot many4 many17 replay json dhot dmany17; do
    case $c in *many17) n=51000 ;; *) n=40000 ;; esac
    say "case $c"
    per[$c]=$(timed "$work/$c.sql" "$n")
done
recorded=$(sql "SELECT count(*) FROM usage_records")
violations=$(sql "SELECT count(*) FROM tollgate_ledger_check()")
[ "$recorded" = 262000 ] || die "expected 262000 usage records, found $recorded"

sha=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — A settlement batch in PostgreSQL, per usage record, commit $sha"
    echo
    echo "\`bench/settle.sh\`: psql runs the writer's statements (BEGIN; COPY into the stage; tollgate_settle_staged; COMMIT, or for a fresh batch BEGIN; COPY into usage_records; tollgate_settle_direct; COMMIT) against a throwaway cluster (fsync off) on this machine ($(nproc) cores); wall time per record, client included."
    echo
    echo "| case | records a batch | tenants | µs per record |"
    echo "| --- | --- | --- | --- |"
    echo "| hot | 4000 | 1 | $(awk -v n="${per[hot]}" 'BEGIN { printf "%.1f", n / 1000 }') |"
    echo "| many-4 | 4000 | 1000 | $(awk -v n="${per[many4]}" 'BEGIN { printf "%.1f", n / 1000 }') |"
    echo "| many-17 | 17000 | 1000 | $(awk -v n="${per[many17]}" 'BEGIN { printf "%.1f", n / 1000 }') |"
    echo "| replay (all skipped) | 4000 | 1 | $(awk -v n="${per[replay]}" 'BEGIN { printf "%.1f", n / 1000 }') |"
    echo "| hot, jsonb form | 4000 | 1 | $(awk -v n="${per[json]}" 'BEGIN { printf "%.1f", n / 1000 }') |"
    echo "| hot, direct (fresh batch) | 4000 | 1 | $(awk -v n="${per[dhot]}" 'BEGIN { printf "%.1f", n / 1000 }') |"
    echo "| many-17, direct (fresh batch) | 17000 | 1000 | $(awk -v n="${per[dmany17]}" 'BEGIN { printf "%.1f", n / 1000 }') |"
    echo
    echo "tollgate_ledger_check() after the run: $violations violation(s); $recorded records."
} | tee "$work/table.md"
[ "$violations" = 0 ] || die "tollgate_ledger_check() found $violations violation(s)"
if [ "$record" = 1 ]; then
    cat "$work/table.md" >>"$results"
    say "appended to bench/RESULTS.md"
fi
