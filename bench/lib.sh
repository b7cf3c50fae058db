# shellcheck shell=bash
# bench/lib.sh - helpers the bench scripts share, sourced after they define say/die, $root,
# $build and $work: a free loopback port that no earlier call handed out, a bounded wait for an
# HTTP endpoint of a process that must stay alive meanwhile, a throwaway PostgreSQL, the Release
# build, and the clean-up of everything a script started.

ports_taken=" "
pick_port() { # VAR: sets VAR to a free port, none that an earlier call picked
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $ports_taken == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            ports_taken+="$p "
            printf -v "$1" '%s' "$p"
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

start_pg() { # DBNAME VAR: a throwaway cluster in $pg_dir on $pg_port (its socket dir in pg_sock), a
    # database in it, and that database's URL in VAR
    say "starting PostgreSQL"
    "$root/tests/pg_tmp.sh" start "$pg_dir" "$pg_port" >/dev/null
    pg_sock=$(cat "$pg_dir/socket_dir")
    psql -X -q -v ON_ERROR_STOP=1 "host=$pg_sock port=$pg_port user=postgres dbname=postgres" \
        -c "CREATE DATABASE $1" >/dev/null
    printf -v "$2" '%s' "postgresql:///$1?host=$pg_sock&port=$pg_port&user=postgres"
}

bench_pid_vars=()
bench_stop_all() { # the EXIT trap of bench_traps: the processes named, then the cluster
    trap '' INT TERM HUP
    local v pid
    for v in "${bench_pid_vars[@]}"; do
        pid=${!v:-}
        [ -n "$pid" ] || continue
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${pg_dir:-}" ]; then
        "$root/tests/pg_tmp.sh" stop "$pg_dir" "$pg_port" >/dev/null 2>&1 || true
    fi
}

bench_traps() { # VAR...: on exit, or a signal (through exit), stop the processes whose pids these
    # variables hold when it happens, in this order, then the cluster of start_pg
    bench_pid_vars=("$@")
    trap bench_stop_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

bench_build() { # TARGET...: the Release tree in $build; gw_bin and sim_bin name its binaries
    say "building $build (Release)"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j "$(nproc)" --target "$@" >/dev/null
    gw_bin=$build/gateway/tollgate
    sim_bin=$build/gateway/tollgate-sim
}
