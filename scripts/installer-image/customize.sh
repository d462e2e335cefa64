#!/bin/sh
# customize.sh ROOT: mmdebstrap's last hook for scripts/installer-image.sh: make the
# tree a bootable, small, first-boot-ready system.
set -eu
root=$1

# Kernel modules: only what a virtio VM needs (virtio disk and NIC, ext4, FAT,
# packet sockets for DHCP, netfilter); the rest of Debian's 390 MB of modules goes.
for m in "$root"/lib/modules/*; do
	k=$m/kernel
	find "$k" -mindepth 1 -maxdepth 1 ! -name drivers ! -name fs ! -name net ! -name lib ! -name crypto ! -name arch ! -name block ! -name mm -exec rm -rf {} +
	find "$k/drivers" -mindepth 1 -maxdepth 1 ! -name virtio ! -name block ! -name char ! -name input ! -name net -exec rm -rf {} +
	find "$k/drivers/net" -mindepth 1 ! -name virtio_net.ko ! -name net_failover.ko -delete 2>/dev/null || true
	find "$k/fs" -mindepth 1 -maxdepth 1 ! -name ext4 ! -name jbd2 ! -name mbcache.ko ! -name fat ! -name nls ! -name autofs -exec rm -rf {} +
	find "$k/net" -mindepth 1 -maxdepth 1 ! -name core ! -name packet ! -name ipv4 ! -name ipv6 ! -name unix ! -name netlink ! -name netfilter -exec rm -rf {} +
	chroot "$root" depmod "$(basename "$m")"
done
rm -rf "$root/usr/lib/firmware" "$root/var/cache/apt/"*.bin "$root/var/lib/apt/lists/"*_Packages

# The root by label, as the boot loader names it; no fsck (a fresh image).
echo 'LABEL=bootchain-root / ext4 rw,errors=remount-ro 0 0' >"$root/etc/fstab"
echo localhost >"$root/etc/hostname"
# A new identity on first boot: machine-id and SSH host keys are made there.
: >"$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
chmod 0755 "$root/usr/local/sbin/bootchain-seed"
chmod 0644 "$root/etc/systemd/system/bootchain-seed.service" "$root/etc/cloud/cloud.cfg.d/90-bootchain.cfg"
chroot "$root" systemctl enable bootchain-seed.service
# A serial console that logs nothing in: the e2e reads the console, no one logs in.
chroot "$root" systemctl mask serial-getty@ttyS0.service getty@tty1.service
