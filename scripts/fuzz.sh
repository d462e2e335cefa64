#!/usr/bin/env bash
# Runs every Go fuzz target in the module briefly (default 5000 executions each; a
# count, not a duration: see the Makefile).
set -euo pipefail
fuzztime=${1:-5000x}
cd "$(dirname "$0")/.."
n=0
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //'); do
    echo "fuzz $pkg $f ($fuzztime)"
    go test -run '^$' -fuzz "^${f}\$" -fuzztime "$fuzztime" "$pkg" >/tmp/fuzz.$$.log 2>&1 || { cat /tmp/fuzz.$$.log; rm -f /tmp/fuzz.$$.log; exit 1; }
    n=$((n+1))
  done
done
rm -f /tmp/fuzz.$$.log
echo "fuzz: $n targets ran for $fuzztime each"
