#!/usr/bin/env bash
# Runs every Go native fuzz target in the tree for a short fixed time on
# top of its seed corpus (real files, see each target) and the committed
# crashers under testdata/fuzz/. A new crasher is written there by go test;
# commit it with the fix.
#
# Usage: bash scripts/fuzz.sh [FUZZTIME]   (default 10s per target; env
# FUZZ_PARALLEL sets the workers, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
fuzztime=${1:-10s}
parallel=${FUZZ_PARALLEL:-2}
# package directory and target name of every func FuzzXxx(f *testing.F)
mapfile -t targets < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz[A-Za-z0-9_]*(f \*testing.F)' |
  while read -r file; do
    sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing.F).*/\1/p' "$file" |
      while read -r name; do echo "./$(dirname "$file") $name"; done
  done | sort)
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no targets found" >&2; exit 1; }
start=$SECONDS
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "fuzz: $pkg $name for $fuzztime"
  go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 5s -parallel "$parallel" "$pkg" 2>&1 |
    grep -v '^fuzz: elapsed' || { echo "fuzz: $pkg $name failed" >&2; exit 1; }
done
echo "fuzz: ${#targets[@]} targets in $((SECONDS - start)) s"
