# shellcheck shell=bash
# Debian 12 packages that building, running and testing tollgate need.
# Sourced by deploy/dev.sh and tests/run.sh so the list lives in one place.
# Only what dpkg reports as missing is installed, so a second run does no apt work.

TG_DEB_PACKAGES=(
    build-essential cmake pkg-config
    libh2o-evloop-dev libcurl4-openssl-dev libpq-dev libjansson-dev libsodium-dev libjwt-dev
    libcmocka-dev libssl-dev
    postgresql
    clang libclang-rt-14-dev # libFuzzer targets (tests/fuzz)
    curl
)

# What bench/run.sh needs on top of TG_DEB_PACKAGES: the load generator and nginx, the reference
# proxy. Kept apart so that tests/run.sh (and so CI) never installs them.
TG_BENCH_DEB_PACKAGES=(wrk nginx)

# Prints the packages of "$@" that are not installed, one per line.
tg_missing_packages()
{
    local p
    for p in "$@"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
            echo "$p"
        fi
    done
}

# Installs whatever of TG_DEB_PACKAGES is missing.
tg_ensure_packages()
{
    tg_packages_install "${TG_DEB_PACKAGES[@]}"
}

# Installs whatever of TG_DEB_PACKAGES and TG_BENCH_DEB_PACKAGES is missing (bench/run.sh).
tg_ensure_bench_packages()
{
    tg_packages_install "${TG_DEB_PACKAGES[@]}" "${TG_BENCH_DEB_PACKAGES[@]}"
}

# Installs whatever of "$@" is missing, and node + npm when `node` is absent (CI machines usually
# bring their own Node 20, which must not be replaced).
tg_packages_install()
{
    local want=("$@")
    command -v node >/dev/null 2>&1 || want+=(nodejs npm)
    local missing
    mapfile -t missing < <(tg_missing_packages "${want[@]}")
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "missing packages (${missing[*]}) and no sudo: install them as root" >&2
            return 1
        }
        sudo=(sudo)
    fi
    echo "installing: ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The newest installed PostgreSQL server binaries (postgresql-15 on Debian 12).
tg_pg_bindir()
{
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
    [ -n "$d" ] || {
        echo "no PostgreSQL server binaries under /usr/lib/postgresql" >&2
        return 1
    }
    echo "$d"
}
