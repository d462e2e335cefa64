# bootchain.sh: shell functions of the bootchain e2e initramfs (busybox ash).
# Sourced by /init; also sourced on the host by the e2e package's tests, so it must
# not do anything when sourced.
#
# Contract with bootapi (docs/architecture.md, "Installer callbacks"): the kernel
# cmdline carries bootchain.callback=<URL>, bootchain.token=<token> and
# bootchain.traceparent=<W3C traceparent>. A report is
#   POST <callback URL, as given>
#   Content-Type: application/x-www-form-urlencoded
#   traceparent: <traceparent>            (only if one was given)
#   state=<state>&progress=<n>&message=<text>&token=<token>
# The token goes in the body only, never in the URL. The cmdline's token is a
# bootstrap token, good for the first report only: that report's answer has a
# line "token <fresh>", the token of every later report (kept in memory, so
# what /proc/cmdline shows is spent once the installer has reported).

BOOTCHAIN_MARK="BOOTCHAIN-E2E:"

# say MESSAGE: a console marker, "BOOTCHAIN-E2E: MESSAGE (uptime S)"; the kernel's
# uptime lets a benchmark place the marker on its own time line.
say() {
	up=
	[ -r /proc/uptime ] && read -r up _ </proc/uptime
	echo "$BOOTCHAIN_MARK $*${up:+ (uptime $up)}"
}

# bootchain_cmdline FILE: set CALLBACK, TOKEN, TRACEPARENT, IFACE from a kernel
# command line (default /proc/cmdline). bootchain.fallback= is used as the callback
# URL when bootchain.callback= is absent.
bootchain_cmdline() {
	CALLBACK= TOKEN= TRACEPARENT= FALLBACK= IFACE=eth0
	# The callback URL contains '?': no globbing while splitting words.
	set -f
	for arg in $(cat "${1:-/proc/cmdline}"); do
		case "$arg" in
		bootchain.callback=*) CALLBACK="${arg#*=}" ;;
		bootchain.token=*) TOKEN="${arg#*=}" ;;
		bootchain.traceparent=*) TRACEPARENT="${arg#*=}" ;;
		bootchain.fallback=*) FALLBACK="${arg#*=}" ;;
		bootchain.iface=*) IFACE="${arg#*=}" ;;
		esac
	done
	set +f
	[ -n "$CALLBACK" ] || CALLBACK="$FALLBACK"
}

# urlencode STRING: percent-encode everything but RFC 3986 unreserved characters.
urlencode() {
	s="$1"
	out=
	while [ -n "$s" ]; do
		rest="${s#?}"
		c="${s%"$rest"}"
		s="$rest"
		case "$c" in
		[A-Za-z0-9._~-]) out="$out$c" ;;
		*) out="$out$(printf '%%%02X' "'$c")" ;;
		esac
	done
	printf '%s' "$out"
}

# REPORT_FOR is how long report keeps trying, in seconds: a site cut off from
# etcd answers 503 (Retry-After) until etcd is back, and bootapi replicas
# restart; minutes, not seconds.
REPORT_FOR=${REPORT_FOR:-300}

# report STATE PROGRESS MESSAGE: POST one report to $CALLBACK, each attempt at
# most 10 s, again and again (waits of 1, 2, 4, 8, then 10 s) for REPORT_FOR
# seconds while the server does not answer or answers 5xx, 408 or 429. Another
# 4xx is a refusal that repeating does not change: it stops at once. Returns 0
# when the server answered 2xx.
report() {
	if [ -z "$CALLBACK" ]; then
		say "no callback on cmdline, not reporting $1"
		return 1
	fi
	body="state=$(urlencode "$1")&progress=$(urlencode "$2")&message=$(urlencode "$3")"
	[ -n "$TOKEN" ] && body="$body&token=$(urlencode "$TOKEN")"
	n=1
	wait=1
	deadline=$(($(date +%s) + REPORT_FOR))
	while :; do
		if [ -n "$TRACEPARENT" ]; then
			timeout 10 wget -S -q -O /tmp/bootchain-response \
				--header "traceparent: $TRACEPARENT" \
				--post-data "$body" "$CALLBACK" 2>/tmp/bootchain-status
		else
			timeout 10 wget -S -q -O /tmp/bootchain-response \
				--post-data "$body" "$CALLBACK" 2>/tmp/bootchain-status
		fi
		rc=$?
		if [ "$rc" -eq 0 ]; then
			fresh=$(sed -n 's/^token \([0-9a-f]*\)$/\1/p' /tmp/bootchain-response 2>/dev/null)
			if [ -n "$fresh" ]; then
				TOKEN="$fresh"
				say "token exchanged"
			fi
			say "callback $1 ok"
			rm -f /tmp/bootchain-response /tmp/bootchain-status
			return 0
		fi
		code=$(sed -n 's/^ *HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' /tmp/bootchain-status 2>/dev/null | tail -n 1)
		say "callback $1 attempt $n failed (exit $rc, status ${code:-none})"
		case "$code" in
		408 | 429) ;;
		4??)
			say "callback $1 refused"
			return 1
			;;
		esac
		[ "$(date +%s)" -ge "$deadline" ] && break
		sleep "$wait"
		wait=$((wait * 2))
		[ "$wait" -gt 10 ] && wait=10
		n=$((n + 1))
	done
	say "callback $1 failed"
	return 1
}
