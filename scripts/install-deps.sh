#!/usr/bin/env bash
# install-deps.sh: install the Debian packages bootchain's labs, end-to-end tests and
# benchmarks need (QEMU, iPXE, OVMF, AAVMF, a kernel, busybox, peer DHCP/TFTP/HTTP servers,
# an etcd server for the external-etcd tests, buildah and podman for deploy/oci,
# Prometheus for promtool and the metrics scrape test, chromium for the dashboard's
# browser test, Debian's netboot installer for make e2e-installer, and what
# scripts/installer-image.sh builds its disk image with: mmdebstrap, mkfs.vfat,
# mtools, SYSLINUX, sfdisk).
#
# Idempotent: packages already installed are not touched, and `apt-get update` runs
# only when something is missing.
#
# Daemons in this list (nginx, dnsmasq, atftpd, tftpd-hpa, kea, etcd, prometheus) must never be left
# running as system services: the tests start their own copies, in private network
# namespaces, with their own configs. So while installing, a policy-rc.d forbids every
# service start, and afterwards each of those services is stopped (if it is running
# anyway) and disabled.
#
# Usage: scripts/install-deps.sh            (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
	qemu-system-x86 ipxe ipxe-qemu ovmf
	qemu-system-arm qemu-efi-aarch64
	linux-image-amd64 busybox-static kmod cpio gzip xz-utils
	dnsmasq nginx wrk
	kea-dhcp4-server kea-admin
	tftpd-hpa tftp-hpa atftp
	udhcpc isc-dhcp-client
	iproute2 curl tcpdump
	sbsigntool openssl
	etcd-server
	buildah podman
	prometheus
	chromium
	debian-installer-12-netboot-amd64
	mmdebstrap dosfstools mtools syslinux syslinux-common fdisk e2fsprogs
)

# atftpd conflicts with tftpd-hpa in Debian (tftpd-hpa: "Conflicts: atftpd"), so it is
# not installed as a package: its binary is unpacked from the .deb into ATFTPD_ROOT and
# linked as /usr/local/sbin/atftpd. It is never registered as a service.
ATFTPD_ROOT=/opt/bootchain/atftpd
ATFTPD_LINK=/usr/local/sbin/atftpd

# Services that the packages above may register; checked after the install.
SERVICES=(nginx dnsmasq atftpd tftpd-hpa kea-dhcp4-server kea-dhcp6-server kea-dhcp-ddns-server kea-ctrl-agent etcd prometheus prometheus-node-exporter)

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo)
	else
		echo "install-deps: must run as root (or have sudo)" >&2
		exit 1
	fi
fi

log() { echo "install-deps: $*" >&2; }

installed() {
	[[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == "install ok installed" ]]
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
	log "all ${#PACKAGES[@]} packages already installed"
else
	log "missing: ${missing[*]}"

	# Forbid service starts during the install. Keep an existing policy-rc.d (a
	# container image's, say) in place; otherwise install ours and remove it after.
	POLICY=/usr/sbin/policy-rc.d
	own_policy=false
	if [[ ! -e $POLICY ]]; then
		own_policy=true
		printf '#!/bin/sh\n# bootchain install-deps: no service starts during install\nexit 101\n' |
			"${SUDO[@]}" tee "$POLICY" >/dev/null
		"${SUDO[@]}" chmod 0755 "$POLICY"
		trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
	elif ! grep -qx 'exit 101' "$POLICY"; then
		log "warning: $POLICY exists and may allow service starts; services are stopped afterwards"
	fi
	log "own policy-rc.d: $own_policy"

	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
		--no-install-recommends "${missing[@]}"
fi

# atftpd, unpacked (see ATFTPD_ROOT above). Its shared libraries (libwrap0, libpcre2)
# come with tftpd-hpa and the base system.
if [[ ! -x $ATFTPD_ROOT/usr/sbin/atftpd ]]; then
	log "unpacking atftpd into $ATFTPD_ROOT"
	tmp=$(mktemp -d)
	if [[ ${#missing[@]} -eq 0 ]]; then
		# apt-get download needs package lists, which may be stale or absent.
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	fi
	(cd "$tmp" && apt-get download -q atftpd)
	"${SUDO[@]}" mkdir -p "$ATFTPD_ROOT"
	"${SUDO[@]}" dpkg-deb -x "$tmp"/atftpd_*.deb "$ATFTPD_ROOT"
	rm -rf "$tmp"
fi
"${SUDO[@]}" ln -sfn "$ATFTPD_ROOT/usr/sbin/atftpd" "$ATFTPD_LINK"
if ! "$ATFTPD_LINK" --help 2>&1 | grep -qi atftp; then
	log "warning: $ATFTPD_LINK does not run"
fi

# Secure Boot's Microsoft-signed path (docs/firmware.md): Debian's signed shim and
# GRUB, unpacked into SECUREBOOT_ROOT rather than installed, since their
# maintainer scripts would run grub-install and change this machine's own boot
# setup. bootchain only serves the binaries (usr/lib/shim/shimx64.efi.signed,
# usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed).
SECUREBOOT_ROOT=/opt/bootchain/secureboot
sb_lists=0
for pkg in shim-signed grub-efi-amd64-signed; do
	[[ -e $SECUREBOOT_ROOT/.$pkg ]] && continue
	log "unpacking $pkg into $SECUREBOOT_ROOT"
	if [[ ${#missing[@]} -eq 0 && $sb_lists -eq 0 ]]; then
		# apt-get download needs package lists, which may be stale or absent.
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
		sb_lists=1
	fi
	tmp=$(mktemp -d)
	(cd "$tmp" && apt-get download -q "$pkg")
	"${SUDO[@]}" mkdir -p "$SECUREBOOT_ROOT"
	"${SUDO[@]}" dpkg-deb -x "$tmp"/"$pkg"_*.deb "$SECUREBOOT_ROOT"
	"${SUDO[@]}" touch "$SECUREBOOT_ROOT/.$pkg"
	rm -rf "$tmp"
done

# Stop and disable the daemons' system services, whatever started them.
systemd_running=false
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
	systemd_running=true
fi
for svc in "${SERVICES[@]}"; do
	if $systemd_running; then
		if systemctl list-unit-files "$svc.service" >/dev/null 2>&1 &&
			systemctl list-unit-files "$svc.service" | grep -q "^$svc.service"; then
			"${SUDO[@]}" systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
			log "systemd: $svc disabled and stopped"
		fi
		continue
	fi
	[[ -x /etc/init.d/$svc ]] || continue
	# SysV: stop it only if its init script says it runs, then keep it from starting at boot.
	if "${SUDO[@]}" /etc/init.d/"$svc" status >/dev/null 2>&1; then
		log "sysv: stopping running $svc"
		"${SUDO[@]}" /etc/init.d/"$svc" stop >/dev/null 2>&1 || log "warning: could not stop $svc"
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		"${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
done

# Report anything still bound to the daemons' well-known ports, so a surprise is visible.
if command -v ss >/dev/null 2>&1; then
	busy=$(ss -Hlnptu 2>/dev/null | grep -E '"(nginx|dnsmasq|atftpd|in.tftpd|kea-dhcp4|kea-dhcp6|kea-ctrl-agent|etcd|prometheus)"' || true)
	if [[ -n $busy ]]; then
		log "warning: daemons still listening:"
		echo "$busy" >&2
	fi
fi

# Debian's kernel package ships no modules.dep for a foreign root; the e2e initrd
# builder runs depmod itself, so only check that the pieces it needs are present.
for f in /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/share/OVMF/OVMF_CODE_4M.fd /bin/busybox \
	"$SECUREBOOT_ROOT/usr/lib/shim/shimx64.efi.signed" "$SECUREBOOT_ROOT/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"; do
	[[ -e $f ]] || log "warning: expected file missing: $f"
done
compgen -G '/boot/vmlinuz-*' >/dev/null || log "warning: no /boot/vmlinuz-* found"

# The arm64 boot's GRUB, kernel and busybox are Debian arm64 packages, unpacked into
# a cache (not installed): scripts/arm64.sh, which does nothing once it has them.
"$(dirname "$0")/arm64.sh" >/dev/null

log "done"
