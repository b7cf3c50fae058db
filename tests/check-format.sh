#!/usr/bin/env bash
# Fails when a tracked C file differs from what clang-format (.clang-format at the root) makes of it.
# Exit 77 (ctest: skipped) when clang-format is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format not installed: skipped"; exit 77; }
bad=0
while IFS= read -r f; do
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
        echo "not formatted: $f (run: clang-format -i $f)"
        bad=1
    fi
done < <(git ls-files '*.c' '*.h' 2>/dev/null || find gateway admin billing tests -name '*.[ch]')
exit "$bad"
