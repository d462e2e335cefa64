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

# bootchain_cmdline FILE: set CALLBACK, TOKEN, TRACEPARENT, IFACE, JOB and the
# image install's IMAGE, IMAGE_SHA256, IMAGE_SIZE, SEED, DISK, and IP6 (an IPv6
# client's address, bootchain.ip6=) from a kernel command line (default
# /proc/cmdline). bootchain.fallback= is used as the callback
# URL when bootchain.callback= is absent.
bootchain_cmdline() {
	CALLBACK= TOKEN= TRACEPARENT= FALLBACK= IFACE=eth0 JOB= IP6=
	IMAGE= IMAGE_SHA256= IMAGE_SIZE= SEED= DISK=vda
	# The callback URL contains '?': no globbing while splitting words.
	set -f
	for arg in $(cat "${1:-/proc/cmdline}"); do
		case "$arg" in
		bootchain.callback=*) CALLBACK="${arg#*=}" ;;
		bootchain.token=*) TOKEN="${arg#*=}" ;;
		bootchain.traceparent=*) TRACEPARENT="${arg#*=}" ;;
		bootchain.fallback=*) FALLBACK="${arg#*=}" ;;
		bootchain.iface=*) IFACE="${arg#*=}" ;;
		bootchain.job=*) JOB="${arg#*=}" ;;
		bootchain.image=*) IMAGE="${arg#*=}" ;;
		bootchain.image.sha256=*) IMAGE_SHA256="${arg#*=}" ;;
		bootchain.image.size=*) IMAGE_SIZE="${arg#*=}" ;;
		bootchain.seed=*) SEED="${arg#*=}" ;;
		bootchain.disk=*) DISK="${arg#*=}" ;;
		bootchain.ip6=*) IP6="${arg#*=}" ;;
		esac
	done
	set +f
	[ -n "$CALLBACK" ] || CALLBACK="$FALLBACK"
}

# url_host6 URL: the IPv6 literal of URL's host (http://[fd00:bc::1]:8080/x ->
# fd00:bc::1); nothing for another host.
url_host6() {
	case "$1" in
	*://\[*\]*)
		h="${1#*://[}"
		printf '%s' "${h%%]*}"
		;;
	esac
}

# ip6_tentative IFACE [FILE]: true while an IPv6 address of IFACE is still
# tentative (duplicate address detection running: the kernel does not use it
# as a source yet). FILE is /proc/net/if_inet6 or a copy; its fifth column is
# the address's flags in hex, IFA_F_TENTATIVE 0x40.
ip6_tentative() {
	while read -r _ _ _ _ flags dev; do
		[ "$dev" = "$1" ] || continue
		case "$flags" in
		*[4567cdefCDEF]?) return 0 ;;
		esac
	done <"${2:-/proc/net/if_inet6}"
	return 1
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

# seed_lba DISK: the first sector of DISK's seed partition (MBR type 0xda), from
# the partition table the image brought; fails without one.
seed_lba() {
	dev=$1
	set -- $(od -An -tu1 -j 510 -N 2 "$dev")
	[ "$1 $2" = "85 170" ] || return 1
	i=0
	while [ "$i" -lt 4 ]; do
		set -- $(od -An -tu1 -j $((446 + 16 * i)) -N 16 "$dev")
		if [ "$5" = 218 ]; then
			echo $(($9 + ${10} * 256 + ${11} * 65536 + ${12} * 16777216))
			return 0
		fi
		i=$((i + 1))
	done
	return 1
}

# written_mib DISK: MiB written to block device DISK since boot (/sys/block/*/stat).
written_mib() {
	set -- $(cat "/sys/block/$1/stat" 2>/dev/null) 0 0 0 0 0 0 0
	echo $(($7 / 2048))
}

# image_progress: while the image is written, report running with how much is
# on the disk every 5 s, until /tmp/image-done appears.
image_progress() {
	while [ ! -e /tmp/image-done ]; do
		sleep 5
		[ -e /tmp/image-done ] && break
		mib=$(written_mib "$DISK")
		pct=10
		case "$IMAGE_SIZE" in
		'' | *[!0-9]* | 0) ;;
		*) pct=$((10 + mib * 1048576 * 70 / IMAGE_SIZE)) ;;
		esac
		[ "$pct" -gt 80 ] && pct=80
		report running "$pct" "writing image: $mib MiB" >/dev/null
	done
}

# install_image: write the gzip-compressed disk image at $IMAGE to $DEVICE
# (default /dev/$DISK; a file in the host's tests) as
# it downloads, check its SHA-256 (of the download, $IMAGE_SHA256), write the seed
# (the job's NoCloud URL, callback and token) to the image's seed partition for the
# installed system's first boot, and return; the caller reboots. Reports running
# with progress on the way. On failure it says why and returns 1 (a disk whose
# image did not verify is wiped at its start, so it does not boot).
install_image() {
	DEVICE=${DEVICE:-/dev/$DISK}
	[ -b "$DEVICE" ] || [ -f "$DEVICE" ] || { say "no disk $DEVICE"; return 1; }
	case "$IMAGE_SHA256" in
	????????????????????????????????????????????????????????????????) ;;
	*) say "bootchain.image.sha256 is not a SHA-256"; return 1 ;;
	esac
	report running 10 "writing image to $DISK" || return 1
	url=$IMAGE
	if [ -n "$TRACEPARENT" ]; then
		case "$url" in
		*\?*) url="$url&traceparent=$(urlencode "$TRACEPARENT")" ;;
		*) url="$url?traceparent=$(urlencode "$TRACEPARENT")" ;;
		esac
	fi
	rm -f /tmp/image-done /tmp/image.fifo /tmp/image.dd
	mkfifo /tmp/image.fifo
	sha256sum </tmp/image.fifo >/tmp/image.sum &
	sumpid=$!
	image_progress &
	progpid=$!
	say "image: downloading $IMAGE to $DEVICE"
	(
		set -o pipefail
		wget -q -O - "$url" | tee /tmp/image.fifo | gunzip -c | dd of="$DEVICE" ibs=65536 obs=1048576 conv=fsync 2>/tmp/image.dd
	)
	rc=$?
	touch /tmp/image-done
	wait "$sumpid"
	wait "$progpid"
	read -r got _ </tmp/image.sum
	# Whole MiB written: dd's "<full>+<partial> records out" of 1 MiB.
	mib=$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' /tmp/image.dd)
	if [ "$rc" -ne 0 ] || [ "$got" != "$IMAGE_SHA256" ]; then
		dd if=/dev/zero of="$DEVICE" bs=1048576 count=1 conv=fsync 2>/dev/null
		say "image: failed (exit $rc, sha256 $got, want $IMAGE_SHA256): disk wiped"
		return 1
	fi
	say "image: $mib MiB written, sha256 $got"
	report running 85 "image written: $mib MiB, sha256 ok" || return 1
	# The disk's new partition table, then the seed.
	blockdev --rereadpt "$DEVICE" 2>/dev/null
	lba=$(seed_lba "$DEVICE") || { say "image: no seed partition (MBR type 0xda)"; return 1; }
	printf 'BOOTCHAIN-SEED/1\nseedfrom %s\ntoken %s\ncallback %s\njob %s\n' "$SEED" "$TOKEN" "$CALLBACK" "$JOB" >/tmp/seed
	dd if=/tmp/seed of="$DEVICE" bs=512 seek="$lba" conv=notrunc,fsync 2>/dev/null || { say "image: seed write failed"; return 1; }
	rm -f /tmp/seed
	sync
	say "image: seed at sector $lba"
	report running 90 "image installed, rebooting into it" || return 1
	return 0
}
