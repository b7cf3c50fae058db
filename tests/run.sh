#!/usr/bin/env bash
# Everything CI runs (.ci/run calls exactly this), from any cwd, on a fresh Debian 12 machine:
#   1. installs missing Debian packages (deploy/packages.sh) and the Node test deps (npm ci);
#   2. builds build/ (RelWithDebInfo) and build-asan/ (ASan+UBSan, -DTG_SANITIZE=ON);
#   3. runs the fuzz smoke (tests/fuzz/run.sh, a few seconds per target) when it exists;
#   4. runs ctest in both trees: unit, integration (PostgreSQL + simulator + gateway) and e2e.
# It ends with ctest's summary line and exits non-zero if any step failed.
# TG_BUILD_DIR / TG_ASAN_BUILD_DIR / TG_FUZZ_BUILD_DIR override the build trees, TG_BUILD_TYPE the normal tree's build
# type (RelWithDebInfo), TG_FUZZ_SECONDS the fuzz time per target.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${TG_BUILD_DIR:-$root/build}
asan=${TG_ASAN_BUILD_DIR:-$root/build-asan}
fuzz_build=${TG_FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=$(nproc 2>/dev/null || echo 2)
logs=$(mktemp -d /tmp/tg-run.XXXXXX)
trap 'rm -rf "$logs"' EXIT

step() { printf '\n==== %s ====\n' "$*"; }

# shellcheck source=SCRIPTDIR/../deploy/packages.sh
. "$root/deploy/packages.sh"

step "packages"
tg_ensure_packages
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
    echo "node $(node --version) is too old: the tests need Node 18 or newer" >&2
    exit 1
fi
# npm ci when node_modules is missing or older than the lock file (npm writes its own copy of the
# lock into node_modules/.package-lock.json on every install).
if [ ! -f "$root/tests/node_modules/.package-lock.json" ] ||
    [ "$root/tests/package-lock.json" -nt "$root/tests/node_modules/.package-lock.json" ]; then
    (cd "$root/tests" && npm ci --no-audit --no-fund)
fi

build_type=${TG_BUILD_TYPE:-RelWithDebInfo}
step "build: $build ($build_type)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE="$build_type" >/dev/null
cmake --build "$build" -j "$jobs"

step "build: $asan (ASan+UBSan)"
cmake -S "$root" -B "$asan" -DCMAKE_BUILD_TYPE=Debug -DTG_SANITIZE=ON >/dev/null
cmake --build "$asan" -j "$jobs"

fuzz_status="skipped (no tests/fuzz/run.sh)"
if [ -x "$root/tests/fuzz/run.sh" ]; then
    step "fuzz smoke"
    if "$root/tests/fuzz/run.sh" "$fuzz_build" "${TG_FUZZ_SECONDS:-10}"; then
        fuzz_status=passed
    else
        fuzz_status=FAILED
    fi
fi

# Sanitizer settings for everything the ASan tree runs, the gateway under test included:
# leaks are errors (h2o's recycled buffers are suppressed), a report does not abort the process
# mid-way so the full report reaches the log.
run_ctest() { # name dir
    local name=$1 dir=$2 rc=0
    step "ctest: $name ($dir)"
    (cd "$dir" && ctest --output-on-failure -j "$jobs" --timeout 900) 2>&1 | tee "$logs/$name.log" || rc=$?
    grep -E '^[0-9]+% tests passed' "$logs/$name.log" | tail -n 1 >"$logs/$name.summary" || true
    [ -s "$logs/$name.summary" ] || echo "no ctest summary (ctest exited $rc)" >"$logs/$name.summary"
    return "$rc"
}

asan_rc=0
# A small quarantine: ASan otherwise keeps up to 256 MiB of freed memory resident, which the
# backpressure test would mistake for buffering (it asserts the gateway's RSS stays bounded).
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1:quarantine_size_mb=16 \
    LSAN_OPTIONS=suppressions=$root/tests/lsan.supp \
    UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest sanitizer "$asan" || asan_rc=$?
normal_rc=0
run_ctest normal "$build" || normal_rc=$?

step "summary"
echo "fuzz smoke: $fuzz_status"
echo "sanitizer tree ($asan):"
cat "$logs/sanitizer.summary"
echo "normal tree ($build):"
# The last line is the summary of a failing tree if there is one.
if [ "$normal_rc" -eq 0 ] && [ "$asan_rc" -ne 0 ]; then
    cat "$logs/normal.summary"
    echo "the sanitizer tree failed:"
    cat "$logs/sanitizer.summary"
else
    cat "$logs/normal.summary"
fi
if [ "$asan_rc" -ne 0 ] || [ "$normal_rc" -ne 0 ] || [ "$fuzz_status" = FAILED ]; then
    exit 1
fi
