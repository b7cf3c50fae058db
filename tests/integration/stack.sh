#!/usr/bin/env bash
# The stack the integration and e2e tests run against: stack.sh start|stop BUILD_DIR
#
# start (ctest fixture "stack", after tests/pg_tmp.sh has started the "pg" fixture):
#   creates a database in the throwaway cluster, generates a pepper, renders the gateway config
#   from tests/integration/config.template.json (config.fallback.json until that exists), runs
#   `tollgate migrate`, creates a tenant and key with `tollgate keys create`, starts tollgate-sim
#   and `tollgate serve` on free ports, waits until the gateway's /readyz says 200, and writes
#   BUILD_DIR/tests/integration/stack.env (KEY=VALUE lines, read by tests/integration/lib/stack.mjs).
# stop: SIGTERMs the gateway and fails unless it exits 0 within its grace period and its log
#   (and the simulator's) holds no sanitizer report; then stops the simulator.
#
# Binaries default to BUILD_DIR/gateway/{tollgate,tollgate-sim}; TG_GATEWAY_BIN and TG_SIM_BIN
# override them (ctest passes the real target paths). TG_PG_DIR names the pg_tmp.sh dir
# (default BUILD_DIR/tests/integration/pg).
set -euo pipefail

usage() {
    echo "usage: $0 start|stop BUILD_DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
build=$(cd "$2" && pwd)
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=$build/tests/integration/stack
envfile=$build/tests/integration/stack.env
gw_bin=${TG_GATEWAY_BIN:-$build/gateway/tollgate}
sim_bin=${TG_SIM_BIN:-$build/gateway/tollgate-sim}
pg_dir=${TG_PG_DIR:-$build/tests/integration/pg}
gw_log=$state/gateway.log
sim_log=$state/sim.log
# Under ASan the gateway's own leaks must be reported, h2o's recycled buffers must not.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$src/tests/lsan.supp}

say() { echo "stack: $*" >&2; }
die() {
    say "$*"
    exit 1
}

# A port nothing listens on, outside Linux's ephemeral range so outgoing connections do not take it
# meanwhile. Another job may still bind it before we do: start() retries with new ports.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Starts "$@" detached from ctest's pipes (ctest waits for them to close), logging to $1's log.
# A small wrapper waits for the process and records its exit status in $name.rc, because the
# stop step runs in another process and cannot `wait` for it.
spawn() {
    local name=$1 log=$2
    shift 2
    rm -f "$state/$name.pid" "$state/$name.rc"
    (
        "$@" </dev/null >>"$log" 2>&1 &
        echo $! >"$state/$name.pid"
        rc=0
        wait $! || rc=$?
        echo "$rc" >"$state/$name.rc"
    ) </dev/null >/dev/null 2>&1 &
    local i
    for ((i = 0; i < 200; i++)); do
        [ -s "$state/$name.pid" ] && break
        sleep 0.01
    done
    [ -s "$state/$name.pid" ] || die "$name did not start"
    cat "$state/$name.pid"
}

# Polls URL until it answers 200, while PID lives; bounded (about 30 s).
wait_ready() {
    local url=$1 pid=$2 what=$3 i
    for ((i = 0; i < 300; i++)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        alive "$pid" || return 1
        sleep 0.1
    done
    say "$what did not become ready at $url"
    return 1
}

# Replaces @NAME@ placeholders. The replacement is quoted so bash 5.2 does not expand & in it.
render() {
    local text
    text=$(<"$1")
    text=${text//@SIM_URL@/"$sim_url"}
    text=${text//@DATA_LISTEN@/"127.0.0.1:$data_port"}
    text=${text//@ADMIN_LISTEN@/"127.0.0.1:$admin_port"}
    text=${text//@DATABASE_URL@/"$db_url"}
    text=${text//@PEPPER_FILE@/"$state/pepper"}
    text=${text//@ADMIN_SECRET_FILE@/"$state/admin-secret"}
    text=${text//@MASTER_KEY_FILE@/"$state/master-key"}
    text=${text//@ADMIN_ES256_PUB@/"$state/admin-es256.pub"}
    text=${text//@LEDGER_JOURNAL@/"$state/ledger.journal"}
    printf '%s\n' "$text" >"$2"
}

sanitizer_report() {
    grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$@" 2>/dev/null
}

stop_proc() { # name timeout_tenths: SIGTERM, then wait for the wrapper's exit status
    local name=$1 tries=$2 pid i
    pid=$(cat "$state/$name.pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 0
    alive "$pid" && kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < tries; i++)); do
        [ -s "$state/$name.rc" ] && break
        sleep 0.1
    done
    if [ ! -s "$state/$name.rc" ]; then
        say "$name (pid $pid) did not exit after SIGTERM: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        return 1
    fi
    cat "$state/$name.rc"
}

start() {
    [ -x "$gw_bin" ] || die "no gateway binary at $gw_bin (build the tollgate target)"
    [ -x "$sim_bin" ] || die "no simulator binary at $sim_bin (build the tollgate-sim target)"
    [ -s "$pg_dir/conninfo" ] || die "no PostgreSQL at $pg_dir (the pg fixture runs tests/pg_tmp.sh start)"
    local pg_sock pg_port template
    pg_sock=$(cat "$pg_dir/socket_dir")
    pg_port=$(cat "$pg_dir/port")

    # A previous run that was not stopped (a killed ctest) must not hold ports or state.
    if [ -d "$state" ]; then
        stop_proc gateway 50 >/dev/null || true
        stop_proc sim 20 >/dev/null || true
        rm -rf "$state"
    fi
    mkdir -p "$state"
    rm -f "$envfile"

    db_url="postgresql:///tollgate_it?host=$pg_sock&port=$pg_port&user=postgres"
    PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 "host=$pg_sock port=$pg_port user=postgres dbname=postgres" \
        -c 'DROP DATABASE IF EXISTS tollgate_it' -c 'CREATE DATABASE tollgate_it' >/dev/null

    (
        umask 077
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$state/pepper"
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$state/admin-secret"
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$state/master-key"
        # an ES256 issuer for the admin API's tests (lib/admin_tokens.mjs signs with its private key)
        node -e '
            const { generateKeyPairSync } = require("crypto");
            const fs = require("fs");
            const k = generateKeyPairSync("ec", { namedCurve: "P-256" });
            fs.writeFileSync(process.argv[1], k.privateKey.export({ type: "pkcs8", format: "pem" }));
            fs.writeFileSync(process.argv[2], k.publicKey.export({ type: "spki", format: "pem" }));
        ' "$state/admin-es256.key" "$state/admin-es256.pub"
    )
    template=$src/tests/integration/config.template.json
    [ -f "$template" ] || template=$src/tests/integration/config.fallback.json
    config=$state/tollgate.json

    local attempt sim_pid gw_pid key admin_token
    for attempt in 1 2 3; do
        sim_port=$(free_port)
        data_port=$(free_port)
        admin_port=$(free_port)
        if [ "$sim_port" = "$data_port" ] || [ "$data_port" = "$admin_port" ] ||
            [ "$sim_port" = "$admin_port" ]; then
            continue
        fi
        sim_url=http://127.0.0.1:$sim_port
        render "$template" "$config"

        if [ "$attempt" = 1 ]; then
            "$gw_bin" check -c "$config" >"$state/check.log" 2>&1 || {
                cat "$state/check.log" >&2
                die "the rendered config $config does not validate"
            }
            # migrate finds migrations/ relative to the source tree
            (cd "$src" && "$gw_bin" migrate -c "$config") >"$state/migrate.log" 2>&1 || {
                cat "$state/migrate.log" >&2
                die "tollgate migrate failed"
            }
            # billing is on as in production: every model of the config gets a price (tenants get
            # billing.trial_credits when created), so ledger_check.mjs checks a real ledger after
            # every test
            node -e '
                const c = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
                for (const m of Object.keys(c.models))
                    console.log(`INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, byok_fee, effective_from) VALUES (\x27${m.replace(/\x27/g, "\x27\x27")}\x27, 1000000, 2000000, 500000, 1000, now() - interval \x271 day\x27);`);
            ' "$config" >"$state/prices.sql"
            psql -X -q -v ON_ERROR_STOP=1 "$db_url" -f "$state/prices.sql" >"$state/prices.log" 2>&1 || {
                cat "$state/prices.log" >&2
                die "the stack's prices could not be set"
            }
            key=$("$gw_bin" keys create -c "$config" --tenant integration --name stack 2>"$state/keys.log" |
                tail -n 1) || true
            [ -n "$key" ] || {
                cat "$state/keys.log" >&2
                die "tollgate keys create printed no key"
            }
            # the admin API's operator token for the tests (lib/http.mjs admin())
            admin_token=$("$gw_bin" token -c "$config" --role operator --ttl 24h --sub integration-stack \
                2>"$state/token.log") || {
                cat "$state/token.log" >&2
                die "tollgate token failed"
            }
        fi

        sim_pid=$(spawn sim "$sim_log" "$sim_bin" --listen "127.0.0.1:$sim_port")
        if ! wait_ready "$sim_url/_sim/stats" "$sim_pid" simulator; then
            say "simulator failed on port $sim_port (attempt $attempt); log tail:"
            tail -n 5 "$sim_log" >&2 || true
            stop_proc sim 20 >/dev/null || true
            continue
        fi
        gw_pid=$(cd "$src" && spawn gateway "$gw_log" "$gw_bin" serve -c "$config")
        if ! wait_ready "http://127.0.0.1:$admin_port/readyz" "$gw_pid" gateway; then
            say "gateway not ready (attempt $attempt); log tail:"
            tail -n 20 "$gw_log" >&2 || true
            stop_proc gateway 50 >/dev/null || true
            stop_proc sim 20 >/dev/null || true
            continue
        fi
        # The data listener must answer too before tests start.
        wait_ready "http://127.0.0.1:$data_port/healthz" "$gw_pid" "gateway data listener" || die "no data listener"

        cat >"$envfile" <<EOT
TG_URL=http://127.0.0.1:$data_port
TG_ADMIN_URL=http://127.0.0.1:$admin_port
TG_SIM_URL=$sim_url
TG_KEY=$key
TG_ADMIN_TOKEN=$admin_token
TG_ADMIN_ES256_KEY=$state/admin-es256.key
TG_DATABASE_URL=$db_url
TG_CONFIG=$config
TG_GATEWAY_PID=$gw_pid
TG_GATEWAY_LOG=$gw_log
TG_SIM_BIN=$sim_bin
TG_GATEWAY_BIN=$gw_bin
TG_SIM_PID=$sim_pid
TG_SIM_LOG=$sim_log
EOT
        chmod 600 "$envfile"
        say "ready: gateway pid $gw_pid on :$data_port (admin :$admin_port), sim on :$sim_port; env in $envfile"
        return 0
    done
    die "could not start the stack (see $gw_log and $sim_log)"
}

stop() {
    [ -d "$state" ] || {
        say "nothing to stop"
        return 0
    }
    local fail=0 rc reports
    # The grace period of the test config is 5 s; allow for a slow sanitizer build.
    rc=$(stop_proc gateway 300) || rc=killed
    if [ "$rc" != 0 ] && [ -n "$rc" ]; then
        say "gateway exited with status $rc after SIGTERM (want 0); log: $gw_log"
        tail -n 30 "$gw_log" >&2 || true
        fail=1
    fi
    rc=$(stop_proc sim 100) || rc=killed
    if [ "$rc" = killed ]; then
        fail=1
    fi
    mapfile -t reports < <(sanitizer_report "$gw_log" "$sim_log" || true)
    if [ "${#reports[@]}" -gt 0 ]; then
        say "sanitizer report in: ${reports[*]}"
        grep -hE -A30 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "${reports[@]}" >&2 || true
        fail=1
    fi
    rm -f "$envfile"
    return "$fail"
}

case $cmd in
start) start ;;
stop) stop ;;
*) usage ;;
esac
