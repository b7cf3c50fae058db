#!/usr/bin/env bash
# Throwaway PostgreSQL for tests: pg_tmp.sh start|stop DIR PORT
#
# start: a fresh cluster listening only on a unix socket (no TCP, so parallel CI jobs never clash;
# PORT only names the socket file). Prints the libpq conninfo and writes it to DIR/conninfo, and the
# URL form to DIR/url. As root the server runs as user postgres, which must be able to traverse
# every parent of the data dir: when DIR is not reachable (a checkout under /root) or its path is
# too long for a unix socket, the cluster lives in a mktemp dir under /tmp, recorded in
# DIR/location. Test settings only (fsync off).
# stop: stops the cluster and deletes it.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR PORT" >&2
    exit 2
}
[ $# -eq 3 ] || usage
cmd=$1
dir=$2
port=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../deploy/packages.sh
. "$here/../deploy/packages.sh"
pgbin=$(tg_pg_bindir)

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The directory that really holds the cluster (DIR itself, or the /tmp dir it points to).
cluster_dir() {
    if [ -f "$dir/location" ]; then
        cat "$dir/location"
    else
        echo "$dir"
    fi
}

stop_cluster() {
    local cdir
    cdir=$(cluster_dir)
    if [ -f "$cdir/data/postmaster.pid" ]; then
        as_pg "$pgbin/pg_ctl" -D "$cdir/data" -m immediate -w stop >/dev/null || true
    fi
    if [ "$cdir" != "$dir" ]; then
        rm -rf "$cdir"
    fi
    rm -rf "$dir"
}

case $cmd in
start)
    # A cluster left over from an aborted run would hold the socket name: remove it first.
    if [ -e "$dir" ]; then
        stop_cluster
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    cdir=$dir
    # 107 bytes is the unix socket path limit; "/.s.PGSQL.NNNNN" takes 16 of them.
    if [ ${#dir} -gt 90 ] || { [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$dir"; }; then
        cdir=$(mktemp -d /tmp/tg-pg.XXXXXX)
        chmod 755 "$cdir"
        echo "$cdir" >"$dir/location"
    fi
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$cdir"
    fi
    as_pg "$pgbin/initdb" -D "$cdir/data" -U postgres -A trust --no-sync -E UTF8 >"$cdir/initdb.log" 2>&1 || {
        cat "$cdir/initdb.log" >&2
        exit 1
    }
    as_pg "$pgbin/pg_ctl" -D "$cdir/data" -l "$cdir/server.log" -w -t 60 start \
        -o "-k $cdir -p $port -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        >/dev/null || {
        cat "$cdir/server.log" >&2
        exit 1
    }
    echo "host=$cdir port=$port user=postgres dbname=postgres" >"$dir/conninfo"
    echo "$cdir" >"$dir/socket_dir"
    echo "$port" >"$dir/port"
    cat "$dir/conninfo"
    ;;
stop)
    if [ -e "$dir" ]; then
        stop_cluster
    fi
    ;;
*)
    usage
    ;;
esac
