#!/usr/bin/env bash
# installer-image.sh: build the disk image that make e2e-installer's image install
# writes to a VM's disk (TestInstallerImage, docs/installer.md), once per machine,
# into ~/.cache/bootchain/installer-image/<hash>/, and print its directory.
#
# The image is a minimal Debian 12 (mmdebstrap minbase) with systemd, cloud-init
# (NoCloud only), openssh-server, curl, Debian's kernel and SYSLINUX, all from
# Debian's packages through apt. Its MBR disk:
#
#   1  FAT, active   64 MiB  SYSLINUX, the kernel, the initrd, syslinux.cfg
#   2  type 0xda      1 MiB  the seed: written by the installer, read once at
#                            first boot by bootchain-seed.service (scripts/
#                            installer-image/), then zeroed
#   3  ext4                  the root file system, label bootchain-root
#
# The directory holds disk.img.gz (gzip of the raw disk), disk.img.gz.sha256,
# disk.img.size (the raw disk's size in bytes) and build.log. <hash> is the SHA-256 of this script and the files it installs, so
# an edit builds a new image; the package versions are whatever apt has that day
# (a cached image is not rebuilt when Debian updates).
#
# Building it needs no loop device or mount: the partitions are built as files
# (mkfs.vfat + mtools + syslinux, mkfs.ext4 -d) and copied into the disk.
#
# Usage: scripts/installer-image.sh           (builds if needed, prints the directory)
#        scripts/installer-image.sh --path    (prints the directory; builds nothing)
# Env:   BOOTCHAIN_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/bootchain)
set -euo pipefail

# Packages beyond minbase (Essential + apt).
PACKAGES=(
	systemd systemd-sysv udev dbus
	linux-image-amd64 initramfs-tools zstd
	cloud-init ifupdown isc-dhcp-client
	openssh-server curl
	e2fsprogs
)
SUITE=bookworm
MIRRORS=(
	"deb http://deb.debian.org/debian bookworm main"
	"deb http://deb.debian.org/debian bookworm-updates main"
	"deb http://deb.debian.org/debian-security bookworm-security main"
)

# One function, called on the last line: bash reads a script as it runs.
main() {
	root=$(cd "$(dirname "$0")/.." && pwd)
	files="$root/scripts/installer-image"
	hash=$( (cat "$0" && cd "$files" && find . -type f | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16)
	cache=${BOOTCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bootchain}
	dir="$cache/installer-image/$hash"
	if [ "${1:-}" = "--path" ] || [ -s "$dir/disk.img.gz.sha256" ]; then
		echo "$dir"
		exit 0
	fi
	for tool in mmdebstrap mkfs.vfat mcopy syslinux sfdisk mkfs.ext4; do
		command -v "$tool" >/dev/null || { echo "installer-image.sh: no $tool (scripts/install-deps.sh)" >&2; exit 1; }
	done
	[ "$(id -u)" -eq 0 ] || { echo "installer-image.sh: mmdebstrap's root mode needs root" >&2; exit 1; }

	mkdir -p "$dir"
	work=$(mktemp -d "$dir/.build.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	start=$(date +%s)
	echo "installer-image.sh: building into $dir (a few minutes, once)" >&2
	rootfs="$work/rootfs"
	include=$(IFS=,; echo "${PACKAGES[*]}")
	nice -n 10 mmdebstrap --mode=root --variant=minbase --include="$include" \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" && printf "MODULES=list\nCOMPRESS=zstd\n" >"$1/etc/initramfs-tools/conf.d/bootchain" && printf "virtio_pci\nvirtio_blk\next4\n" >"$1/etc/initramfs-tools/modules"' \
		--customize-hook="copy-in $files/bootchain-seed /usr/local/sbin" \
		--customize-hook="copy-in $files/bootchain-seed.service /etc/systemd/system" \
		--customize-hook="copy-in $files/90-bootchain.cfg /etc/cloud/cloud.cfg.d" \
		--customize-hook="$files/customize.sh \"\$1\"" \
		"$SUITE" "$rootfs" "${MIRRORS[@]}" >"$work/build.log" 2>&1 || {
		tail -n 40 "$work/build.log" >&2
		exit 1
	}

	kver=$(cd "$rootfs/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
	# The boot partition: SYSLINUX, the kernel and initrd.
	boot="$work/boot.img"
	mkfs.vfat -n BOOT -C "$boot" $((64 * 1024)) >/dev/null
	syslinux --install "$boot"
	cat >"$work/syslinux.cfg" <<CFG
DEFAULT debian
PROMPT 0
TIMEOUT 1
LABEL debian
	LINUX /vmlinuz
	INITRD /initrd.img
	APPEND root=LABEL=bootchain-root rw console=ttyS0,115200 net.ifnames=0
CFG
	mcopy -i "$boot" "$work/syslinux.cfg" ::/syslinux.cfg
	mcopy -i "$boot" "$rootfs/boot/vmlinuz-$kver" ::/vmlinuz
	mcopy -i "$boot" "$rootfs/boot/initrd.img-$kver" ::/initrd.img
	rm -f "$rootfs/boot/vmlinuz-$kver" "$rootfs/boot/initrd.img-$kver"

	# The root file system: its size plus a quarter and 256 MiB of room (cloud-init
	# and the first boot's logs), in MiB.
	used=$(du -s --block-size=1M "$rootfs" | cut -f1)
	size=$((used + used / 4 + 256))
	mkfs.ext4 -q -L bootchain-root -E root_owner=0:0 -d "$rootfs" "$work/root.img" "${size}M" >/dev/null

	# The disk: 1 MiB for the MBR and SYSLINUX, then the partitions.
	disk="$work/disk.img"
	total=$((1 + 64 + 1 + size))
	truncate -s "${total}M" "$disk"
	sfdisk -q "$disk" <<PART
label: dos
start=1MiB, size=64MiB, type=c, bootable
start=65MiB, size=1MiB, type=da
start=66MiB, size=${size}MiB, type=83
PART
	dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
	dd if="$boot" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
	dd if="$work/root.img" of="$disk" bs=1M seek=66 conv=notrunc,sparse status=none

	stat -c %s "$disk" >"$work/disk.img.size"
	gzip -1 -c "$disk" >"$work/disk.img.gz"
	(cd "$work" && sha256sum disk.img.gz >disk.img.gz.sha256)
	echo "installer-image.sh: kernel $kver, root ${size} MiB, disk ${total} MiB, $(du -h "$work/disk.img.gz" | cut -f1) gzipped, $(($(date +%s) - start)) s" | tee -a "$work/build.log" >&2
	mv -f "$work/build.log" "$work/disk.img.gz" "$work/disk.img.size" "$dir/"
	mv -f "$work/disk.img.gz.sha256" "$dir/" # last: its presence marks a complete image
	echo "$dir"
}

main "$@"
exit
