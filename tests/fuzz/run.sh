#!/bin/bash
# Builds the libFuzzer targets with clang into BUILD_DIR and runs each one briefly on a copy of its
# seed corpus (the checked-in corpus is never written to).
#   tests/fuzz/run.sh [BUILD_DIR] [SECONDS_PER_TARGET]   defaults: build-fuzz, $TG_FUZZ_SECONDS or 10
# The smoke is reproducible: a fixed seed (TG_FUZZ_SEED, default 1) and a fixed number of runs
# (TG_FUZZ_RUNS, default 150000) walk the same inputs on every machine, so a red CI run is a real
# bug that replays here, not luck; the seconds only bound a slow machine. Exploration with fresh
# seeds and no run limit: TG_FUZZ_SEED=random TG_FUZZ_RUNS=0 (see tests/fuzz/README.md).
# Longer runs: see tests/fuzz/README.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build-fuzz}
secs=${2:-${TG_FUZZ_SECONDS:-10}}
seed=${TG_FUZZ_SEED:-1}
runs=${TG_FUZZ_RUNS:-150000}
extra=()
[ "$seed" = random ] || extra+=("-seed=$seed")
[ "$runs" = 0 ] || extra+=("-runs=$runs")
targets=(fuzz_sse_parser fuzz_canon fuzz_openai_stream fuzz_anthropic_stream fuzz_gemini_stream
         fuzz_openai_response fuzz_anthropic_response fuzz_gemini_response fuzz_passthrough fuzz_jsonmem)

command -v clang >/dev/null || { echo "fuzz: clang is required" >&2; exit 1; }
CC=clang cmake -S "$root" -B "$build" -DTG_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
for t in "${targets[@]}"; do
    bin=$(find "$build" -type f -name "$t" -perm -u+x | head -n1)
    mkdir -p "$work/$t"
    echo "== $t (${secs}s)"
    # the first corpus dir receives new inputs; the seed dir is only read
    if ! "$bin" "${extra[@]}" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -dict="$here/dict/llm.dict" \
         -artifact_prefix="$work/$t-" -print_final_stats=0 "$work/$t" "$here/corpus/$t" >"$work/$t.log" 2>&1; then
        echo "FAIL: $t" >&2
        tail -n 60 "$work/$t.log" >&2
        mkdir -p "$build/fuzz-artifacts" && cp "$work/$t"-* "$build/fuzz-artifacts/" 2>/dev/null || true
        fail=1
    else
        grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" "$work/$t.log" | tail -n1 || true
    fi
done
exit $fail
