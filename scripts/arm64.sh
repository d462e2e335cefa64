#!/usr/bin/env bash
# arm64.sh: fetch, once per machine, the arm64 pieces bootchain's arm64 e2e test and
# boot benchmark need, from Debian's arm64 packages, into
# ~/.cache/bootchain/arm64/<key>/root, and print that root.
#
#   root/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed   (grub-efi-arm64-signed)
#   root/boot/vmlinuz-<v>-arm64, root/lib/modules/<v>-arm64      (linux-image-<v>-arm64)
#   root/bin/busybox                                             (busybox-static, arm64)
#
# The firmware (AAVMF, qemu-efi-aarch64) and qemu-system-aarch64 (qemu-system-arm)
# are ordinary packages: scripts/install-deps.sh installs them and runs this script.
#
# Why not `dpkg --add-architecture arm64`: that changes the machine's package
# database for good and makes every later `apt-get update` fetch arm64 lists too.
# Instead apt runs with arm64 as its architecture and a package-list folder of its
# own under the cache (the machine's sources, nothing installed); the .debs are only
# unpacked (dpkg-deb -x), never installed.
#
# Idempotent and safe to run concurrently: fetches take a lock, and the root is
# unpacked under a temporary name and renamed into place, so a reader never sees
# half of it.
#
# Usage: scripts/arm64.sh            (fetches if needed, prints the root)
#        scripts/arm64.sh --path     (prints where the root is or would be; fetches nothing)
# Env:   BOOTCHAIN_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/bootchain)
set -euo pipefail

# The packages, with the kernel's version package resolved through this one.
KERNEL_META=linux-image-arm64
PACKAGES=(grub-efi-arm64-signed busybox-static)
# Bump when the layout of root changes.
LAYOUT=1

main() {
	cache=${BOOTCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bootchain}
	base="$cache/arm64"
	root="$base/$LAYOUT/root"
	if [ "${1:-}" = "--path" ] || [ -e "$root/.complete" ]; then
		echo "$root"
		exit 0
	fi

	# One fetch at a time (apt runs without its own lock here); a run that
	# waited finds the root the other one made.
	mkdir -p "$base"
	exec 9>"$base/.lock"
	flock 9
	if [ -e "$root/.complete" ]; then
		echo "$root"
		exit 0
	fi

	apt_dir="$base/apt"
	mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
	apt_opts=(-q
		-o APT::Architecture=arm64 -o APT::Architectures::=arm64
		-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir"
		-o Dir::State::status=/dev/null -o Debug::NoLocking=1
		-o APT::Sandbox::User="$(id -un)")
	echo "arm64.sh: fetching Debian's arm64 package lists into $apt_dir" >&2
	apt-get "${apt_opts[@]}" update >&2

	kernel=$(apt-cache "${apt_opts[@]}" depends "$KERNEL_META" |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-arm64$/ { print $2; exit }')
	if [ -z "$kernel" ]; then
		echo "arm64.sh: $KERNEL_META depends on no linux-image-<version>-arm64" >&2
		exit 1
	fi

	tmp=$(mktemp -d "$base/.fetch.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	echo "arm64.sh: downloading $kernel ${PACKAGES[*]} (arm64)" >&2
	(cd "$tmp" && apt-get "${apt_opts[@]}" download "$kernel:arm64" "${PACKAGES[@]/%/:arm64}" >&2)
	mkdir "$tmp/root"
	for deb in "$tmp"/*.deb; do
		dpkg-deb -x "$deb" "$tmp/root"
	done
	rm -f "$tmp"/*.deb
	for f in usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed bin/busybox; do
		if [ ! -e "$tmp/root/$f" ]; then
			echo "arm64.sh: $f is not in the packages" >&2
			exit 1
		fi
	done
	compgen -G "$tmp/root/boot/vmlinuz-*-arm64" >/dev/null || {
		echo "arm64.sh: no boot/vmlinuz-*-arm64 in $kernel" >&2
		exit 1
	}
	touch "$tmp/root/.complete"
	mkdir -p "$(dirname "$root")"
	rm -rf "$root" # a half-moved root of a run that was killed
	mv -T "$tmp/root" "$root"
	echo "$root"
}

main "$@"
exit
