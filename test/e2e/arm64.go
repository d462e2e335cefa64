package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNoARM64 is returned when the arm64 pieces were not fetched
// (scripts/arm64.sh, which scripts/install-deps.sh runs).
var ErrNoARM64 = errors.New("e2e: arm64 packages not fetched")

// ARM64GRUBName is the name arm64 machines ask for (dhcpd's default boot file for
// client architecture 11): Debian's signed GRUB netboot image, whose prefix is
// "grub" beside it, so it reads grub/grub.cfg over TFTP.
const ARM64GRUBName = "grubaa64.efi"

// ARM64VirtioNetModules are the modules virtio-net needs in Debian's arm64 kernel,
// in load order: virtio and virtio_ring are built in there.
var ARM64VirtioNetModules = []string{
	"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net",
}

// ARM64Kit is what Debian's arm64 packages give the arm64 boot, unpacked by
// scripts/arm64.sh under one root.
type ARM64Kit struct {
	// Root is the folder the packages were unpacked into.
	Root string
	// GRUB is the signed GRUB netboot image (grub-efi-arm64-signed).
	GRUB string
	// Kernel is the arm64 kernel and its modules (linux-image-<v>-arm64).
	Kernel Kernel
	// Busybox is the static arm64 busybox (busybox-static).
	Busybox string
}

// FindARM64 finds the pieces scripts/arm64.sh fetched; it fetches nothing. root is
// bootchain's module root (the script's home).
func FindARM64(ctx context.Context, moduleRoot string) (*ARM64Kit, error) {
	out, err := runOutput(ctx, filepath.Join(moduleRoot, "scripts", "arm64.sh"), "--path")
	if err != nil {
		return nil, err
	}
	root := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(root, ".complete")); err != nil {
		return nil, fmt.Errorf("%w: %s (run scripts/arm64.sh)", ErrNoARM64, root)
	}
	k, err := findKernel(root)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoARM64, err)
	}
	a := &ARM64Kit{
		Root:    root,
		GRUB:    filepath.Join(root, "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed"),
		Kernel:  k,
		Busybox: filepath.Join(root, "bin/busybox"),
	}
	for _, p := range []string{a.GRUB, a.Busybox} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoARM64, err)
		}
	}
	return a, nil
}

// BuildInitrd builds the e2e initramfs for arm64: the same /init and scripts as
// the x86-64 one (they are shell, run by busybox), with arm64 busybox and the
// arm64 kernel's virtio-net modules.
func (a *ARM64Kit) BuildInitrd(ctx context.Context) (*Initrd, error) {
	return BuildInitrd(ctx, InitrdConfig{Kernel: a.Kernel, Busybox: a.Busybox, Modules: ARM64VirtioNetModules})
}
