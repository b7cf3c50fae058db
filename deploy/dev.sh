#!/usr/bin/env bash
# Local development stack: deploy/dev.sh up|down|status|purge
#
# up      installs missing Debian packages, builds build/, starts a private PostgreSQL cluster
#         (unix socket only, no system service), writes .local/tollgate.json, applies migrations,
#         starts tollgate-sim and `tollgate serve`, creates a demo tenant and key once, waits for
#         readiness and writes .local/dev.env (with an operator token of the admin API as
#         TOLLGATE_ADMIN_TOKEN, minted by `tollgate token`). Running it again starts only what is not running.
# down    stops what `up` started (gateway, simulator, PostgreSQL) and nothing else; data is kept.
# status  says what runs.
# purge   down, then deletes .local (database, pepper, BYOK master key, admin secret, demo key).
#
# A provider kind whose key is in the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY,
# GEMINI_API_KEY) is served by the real provider; the config names the variable, never the value.
# Ports: TOLLGATE_DATA_PORT (8080), TOLLGATE_ADMIN_PORT (8081), TOLLGATE_SIM_PORT (9100),
# TOLLGATE_PG_PORT (5432; it only names the socket file in the cluster's own dir).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
local_dir=$root/.local
build=${TG_BUILD_DIR:-$root/build}
# TOLLGATE_BIN + TOLLGATE_SIM_BIN: run prebuilt binaries instead of building build/.
gw_bin=${TOLLGATE_BIN:-$build/gateway/tollgate}
sim_bin=${TOLLGATE_SIM_BIN:-$build/gateway/tollgate-sim}
data_port=${TOLLGATE_DATA_PORT:-8080}
admin_port=${TOLLGATE_ADMIN_PORT:-8081}
sim_port=${TOLLGATE_SIM_PORT:-9100}
pg_port=${TOLLGATE_PG_PORT:-5432}
config=$local_dir/tollgate.json
secrets=$local_dir/secrets
envfile=$local_dir/dev.env

# shellcheck source=SCRIPTDIR/packages.sh
. "$root/deploy/packages.sh"

say() { echo "dev: $*"; }
die() {
    echo "dev: $*" >&2
    exit 1
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# ---- processes we started: a pid file plus the command line it must still have ----------------

# True when the pid in .local/NAME.pid runs BIN (so a recycled pid is never signalled).
running() {
    local name=$1 bin=$2 pid
    pid=$(cat "$local_dir/$name.pid" 2>/dev/null) || return 1
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$bin"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_port() {
    if port_busy "$1"; then
        die "port $1 is taken by another program: free it or set $2 to another port"
    fi
}

# Starts "$@" in its own session, detached from this terminal, logging to .local/NAME.log.
spawn() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$local_dir/$name.log" 2>&1 &
    echo $! >"$local_dir/$name.pid"
}

stop_proc() { # name bin tries: SIGTERM, then wait (bounded) for it to go
    local name=$1 bin=$2 tries=$3 pid i
    if ! running "$name" "$bin"; then
        rm -f "$local_dir/$name.pid"
        return 0
    fi
    pid=$(cat "$local_dir/$name.pid")
    kill -TERM "$pid"
    for ((i = 0; i < tries; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$local_dir/$name.pid"
    say "stopped $name"
}

# Polls URL until it answers 200, while NAME runs; bounded (about 30 s).
wait_ready() {
    local url=$1 name=$2 bin=$3 i
    for ((i = 0; i < 300; i++)); do
        curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
        running "$name" "$bin" || die "$name exited; see $local_dir/$name.log"
        sleep 0.1
    done
    die "$name is not ready at $url after 30 s; see $local_dir/$name.log"
}

# ---- PostgreSQL ---------------------------------------------------------------------------------

# The cluster lives in .local/pg, unless the postgres user cannot reach it (a checkout under /root,
# when running as root) or the socket path would be too long: then in a /tmp dir named in
# .local/pg.location.
pg_dir() {
    if [ -f "$local_dir/pg.location" ]; then
        cat "$local_dir/pg.location"
    else
        echo "$local_dir/pg"
    fi
}

# Decides where a new cluster goes (only `up` calls this; `down` never creates anything).
pg_choose_dir() {
    local d=$local_dir/pg
    [ -f "$local_dir/pg.location" ] && return 0
    [ -f "$d/data/PG_VERSION" ] && return 0
    if [ ${#d} -gt 90 ] || { [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$local_dir"; }; then
        d=$(mktemp -d /tmp/tollgate-dev-pg.XXXXXX)
        chmod 755 "$d"
        echo "$d" >"$local_dir/pg.location"
        say "the postgres user cannot use $local_dir: the cluster lives in $d (recorded in .local/pg.location)"
    fi
}

pg_running() {
    local d
    d=$(pg_dir)
    [ -f "$d/data/PG_VERSION" ] && as_pg "$(tg_pg_bindir)/pg_ctl" -D "$d/data" status >/dev/null 2>&1
}

pg_up() {
    local pgbin d
    pgbin=$(tg_pg_bindir)
    pg_choose_dir
    d=$(pg_dir)
    mkdir -p "$d"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$d"
    fi
    if [ ! -f "$d/data/PG_VERSION" ]; then
        say "creating a PostgreSQL cluster in $d"
        as_pg "$pgbin/initdb" -D "$d/data" -U postgres -A trust -E UTF8 >"$d/initdb.log" 2>&1 ||
            die "initdb failed; see $d/initdb.log"
        # A key made for an earlier cluster is not in this one.
        rm -f "$secrets/demo-key"
    fi
    if pg_running; then
        say "PostgreSQL already running ($d)"
    else
        as_pg "$pgbin/pg_ctl" -D "$d/data" -l "$d/server.log" -w -t 60 start \
            -o "-k $d -p $pg_port -c listen_addresses=''" >/dev/null || die "PostgreSQL did not start; see $d/server.log"
        say "started PostgreSQL ($d)"
    fi
    if ! psql -X -tA "host=$d port=$pg_port user=postgres dbname=postgres" \
        -c "SELECT 1 FROM pg_database WHERE datname = 'tollgate'" | grep -q 1; then
        psql -X -q "host=$d port=$pg_port user=postgres dbname=postgres" -c 'CREATE DATABASE tollgate'
    fi
    database_url="postgresql:///tollgate?host=$d&port=$pg_port&user=postgres"
}

pg_down() {
    local d
    [ -d "$local_dir" ] || return 0
    d=$(pg_dir)
    if pg_running; then
        as_pg "$(tg_pg_bindir)/pg_ctl" -D "$d/data" -m fast -w stop >/dev/null
        say "stopped PostgreSQL"
    fi
}

# ---- config -------------------------------------------------------------------------------------

demo_models() { # kind:name of every demo model; the upstream id equals the name
    echo openai:gpt-4o-mini openai:gpt-4o anthropic:claude-3-5-haiku anthropic:claude-3-5-sonnet \
        gemini:gemini-1.5-flash gemini:gemini-1.5-pro
}

# The provider entry of KIND: the real API when its key variable is set, else the simulator.
provider_json() {
    local kind=$1 var real sim
    case $kind in
    openai) var=OPENAI_API_KEY real=https://api.openai.com/v1 sim=/openai/v1 ;;
    anthropic) var=ANTHROPIC_API_KEY real=https://api.anthropic.com sim=/anthropic ;;
    gemini) var=GEMINI_API_KEY real=https://generativelanguage.googleapis.com sim=/gemini ;;
    esac
    if [ -n "${!var:-}" ]; then
        printf '"%s": {"kind": "%s", "base_url": "%s", "api_key_env": "%s"}' "$kind" "$kind" "$real" "$var"
    else
        printf '"%s": {"kind": "%s", "base_url": "http://127.0.0.1:%s%s"}' "$kind" "$kind" "$sim_port" "$sim"
    fi
}

write_config() {
    local models="" m kind name sep=""
    for m in $(demo_models); do
        kind=${m%%:*}
        name=${m#*:}
        models+=$(printf '%s\n    "%s": {"provider": "%s", "upstream": "%s"}' "$sep" "$name" "$kind" "$name")
        sep=,
    done
    cat >"$config.new" <<EOT
{
  "listen": {"data": "127.0.0.1:$data_port", "admin": "127.0.0.1:$admin_port"},
  "workers": 0,
  "log_level": "info",
  "database": {"url": "$database_url", "pool_size": 2},
  "secrets": {"key_pepper_file": "$secrets/pepper",
              "master_keys": [{"id": "dev-1", "file": "$secrets/master-dev-1"}]},
  "admin_auth": {"issuer": "tollgate-dev", "audience": "tollgate-admin",
                 "hs256_secret_file": "$secrets/admin-hs256"},
  "billing": {"trial_credits": 100000000},
  "shutdown_grace_ms": 10000,
  "providers": {
    $(provider_json openai),
    $(provider_json anthropic),
    $(provider_json gemini)
  },
  "models": {$models
  },
  "chains": {
    "smart": {"targets": ["gpt-4o-mini", "claude-3-5-haiku"], "context_fallback": "gemini-1.5-pro"}
  }
}
EOT
    if [ -f "$config" ] && ! cmp -s "$config" "$config.new" && running gateway "$gw_bin"; then
        say "the config changed (a provider key appeared or went?): run deploy/dev.sh down && deploy/dev.sh up"
    fi
    mv "$config.new" "$config"
}

# Every demo model gets a price once (billing is on, as in production: a model without a price in
# effect is refused, never served free). Micro-credits per million tokens, so with 1 credit = 1 USD
# these read as cents: input 0.15, output 0.60, cached input 0.075 per million tokens. The demo
# tenant's trial credits (billing.trial_credits above: 100 credits) pay for them. Change them with
# POST /admin/v1/prices; rows are never updated, a change is a new row.
seed_prices() {
    local m values="" sep=""
    for m in $(demo_models); do
        values+="$sep('${m#*:}')"
        sep=,
    done
    psql -X -q -v ON_ERROR_STOP=1 "$database_url" -c "
        INSERT INTO prices (model, input_per_mtok, output_per_mtok, cached_input_per_mtok, effective_from)
        SELECT m, 150000, 600000, 75000, now() FROM (VALUES $values) AS v(m)
        WHERE NOT EXISTS (SELECT 1 FROM prices p WHERE p.model = v.m)" >/dev/null ||
        die "cannot seed the demo prices"
}

# ---- commands -----------------------------------------------------------------------------------

up() {
    tg_ensure_packages
    if [ -z "${TOLLGATE_BIN:-}" ]; then
        say "building $build"
        cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$build" -j "$(nproc)" --target tollgate tollgate-sim
    fi
    if [ ! -x "$gw_bin" ] || [ ! -x "$sim_bin" ]; then
        die "the build produced no $gw_bin or $sim_bin"
    fi

    # Check every port before starting anything, so a clash leaves nothing half-started.
    if ! running sim "$sim_bin"; then
        need_port "$sim_port" TOLLGATE_SIM_PORT
    fi
    if ! running gateway "$gw_bin"; then
        need_port "$data_port" TOLLGATE_DATA_PORT
        need_port "$admin_port" TOLLGATE_ADMIN_PORT
    fi
    if [ "$sim_port" = "$data_port" ] || [ "$sim_port" = "$admin_port" ] || [ "$data_port" = "$admin_port" ]; then
        die "the data, admin and simulator ports must differ"
    fi

    mkdir -p "$local_dir" "$secrets"
    chmod 700 "$secrets"
    if [ ! -s "$secrets/pepper" ]; then
        (
            umask 077
            od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$secrets/pepper"
        )
    fi
    # the BYOK master key (`tollgate byok set`): 64 hex characters, mode 0600 (a key file others may
    # read is refused)
    if [ ! -s "$secrets/master-dev-1" ]; then
        (
            umask 077
            od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$secrets/master-dev-1"
        )
    fi
    # the admin API's HS256 secret (`tollgate token` signs development tokens with it)
    if [ ! -s "$secrets/admin-hs256" ]; then
        (
            umask 077
            od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$secrets/admin-hs256"
        )
    fi
    pg_up
    write_config
    "$gw_bin" check -c "$config" || die "$config does not validate"
    (cd "$root" && "$gw_bin" migrate -c "$config") >>"$local_dir/migrate.log" 2>&1 ||
        die "tollgate migrate failed; see $local_dir/migrate.log"

    seed_prices

    if [ ! -s "$secrets/demo-key" ]; then
        (
            umask 077
            "$gw_bin" keys create -c "$config" --tenant demo --name dev | tail -n 1 >"$secrets/demo-key.new"
        )
        [ -s "$secrets/demo-key.new" ] || die "tollgate keys create printed no key"
        mv "$secrets/demo-key.new" "$secrets/demo-key"
        say "created the demo tenant's key (.local/secrets/demo-key)"
    fi

    if running sim "$sim_bin"; then
        say "simulator already running"
    else
        need_port "$sim_port" TOLLGATE_SIM_PORT
        spawn sim "$sim_bin" --listen "127.0.0.1:$sim_port"
        wait_ready "http://127.0.0.1:$sim_port/_sim/stats" sim "$sim_bin"
        say "started the simulator on 127.0.0.1:$sim_port"
    fi
    if running gateway "$gw_bin"; then
        say "gateway already running"
    else
        need_port "$data_port" TOLLGATE_DATA_PORT
        need_port "$admin_port" TOLLGATE_ADMIN_PORT
        (cd "$root" && spawn gateway "$gw_bin" serve -c "$config")
        say "started the gateway on 127.0.0.1:$data_port (admin 127.0.0.1:$admin_port)"
    fi
    wait_ready "http://127.0.0.1:$admin_port/readyz" gateway "$gw_bin"

    # an operator token of the admin API, fresh at each `up` (it lasts 7 days)
    local admin_token
    admin_token=$("$gw_bin" token -c "$config" --role operator --ttl 7d --sub dev-operator) ||
        die "tollgate token failed"
    (
        umask 077
        cat >"$envfile" <<EOT
TOLLGATE_URL='http://127.0.0.1:$data_port'
TOLLGATE_KEY='$(cat "$secrets/demo-key")'
TOLLGATE_ADMIN_URL='http://127.0.0.1:$admin_port'
TOLLGATE_ADMIN_TOKEN='$admin_token'
TOLLGATE_SIM_URL='http://127.0.0.1:$sim_port'
DATABASE_URL='$database_url'
TOLLGATE_MODELS='$(demo_models)'
EOT
    )
    say "ready; environment in .local/dev.env. Try:"
    cat <<EOT

(. '$envfile' && curl -sS "\$TOLLGATE_URL/v1/chat/completions" \\
  -H "Authorization: Bearer \$TOLLGATE_KEY" -H 'Content-Type: application/json' \\
  -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello!"}]}')
(. '$envfile' && curl -sS "\$TOLLGATE_ADMIN_URL/admin/v1/tenants" -H "Authorization: Bearer \$TOLLGATE_ADMIN_TOKEN")

EOT
}

down() {
    [ -d "$local_dir" ] || {
        say "nothing to stop"
        return 0
    }
    stop_proc gateway "$gw_bin" 150
    stop_proc sim "$sim_bin" 50
    pg_down
}

status() {
    local name bin
    for name in gateway sim; do
        bin=$gw_bin
        [ "$name" = sim ] && bin=$sim_bin
        if running "$name" "$bin"; then
            say "$name: running (pid $(cat "$local_dir/$name.pid"))"
        else
            say "$name: stopped"
        fi
    done
    if [ -d "$local_dir" ] && pg_running; then
        say "postgres: running ($(pg_dir))"
    else
        say "postgres: stopped"
    fi
}

purge() {
    down
    if [ -f "$local_dir/pg.location" ]; then
        rm -rf "$(cat "$local_dir/pg.location")"
    fi
    rm -rf "$local_dir"
    say "deleted .local"
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
purge) purge ;;
*)
    echo "usage: $0 up|down|status|purge" >&2
    exit 2
    ;;
esac
