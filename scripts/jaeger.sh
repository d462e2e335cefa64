#!/usr/bin/env bash
# jaeger.sh: build the Jaeger all-in-one binary pinned in tools/jaeger/go.mod, once per
# machine, into ~/.cache/bootchain/jaeger/<version>/jaeger, and print its path.
#
# Jaeger's go.mod has replace directives, so `go install ...@version` is refused; it is
# a `tool` of a module of its own (tools/jaeger) instead, which keeps its large
# dependency graph out of bootchain's. The build takes about 10 CPU-minutes the first
# time; afterwards this script only prints the path.
#
# Idempotent and safe to run concurrently: the binary is built under a temporary name
# and renamed into place, so a reader never sees half a file.
#
# Usage: scripts/jaeger.sh            (builds if needed, prints the binary's path)
#        scripts/jaeger.sh --path     (prints where the binary is or would be; builds nothing)
# Env:   BOOTCHAIN_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/bootchain)
set -euo pipefail

# One function, called on the last line: bash reads a script as it runs, so an
# edit during the long build must not change what runs after it.
main() {
	root=$(cd "$(dirname "$0")/.." && pwd)
	mod="$root/tools/jaeger"
	ver=$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2 }' "$mod/go.mod")
	if [ -z "$ver" ]; then
		echo "jaeger.sh: no github.com/jaegertracing/jaeger version in $mod/go.mod" >&2
		exit 1
	fi
	cache=${BOOTCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bootchain}
	dir="$cache/jaeger/$ver"
	bin="$dir/jaeger"
	if [ "${1:-}" = "--path" ] || [ -x "$bin" ]; then
		echo "$bin"
		exit 0
	fi

	mkdir -p "$dir"
	tmp=$(mktemp "$dir/.jaeger.XXXXXX")
	trap 'rm -f "$tmp"' EXIT
	echo "jaeger.sh: building Jaeger $ver into $dir (about 10 CPU-minutes, once)" >&2
	# -trimpath and no VCS stamp: the binary depends only on go.mod/go.sum.
	nice -n 10 go -C "$mod" build -trimpath -buildvcs=false -o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger
	chmod 0755 "$tmp"
	mv -f "$tmp" "$bin"
	trap - EXIT
	echo "$bin"
}

main "$@"
exit
