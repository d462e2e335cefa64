//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bootchain/bootchain/test/e2e"
)

// bootPath is one firmware path through the chain: a group of rows in the table,
// chosen by its flag. To add a path, add an entry to bootPaths.
type bootPath struct {
	// fw is the path's label in the output and its key in results.
	fw e2e.Firmware
	// flag names the command-line flag that selects the path; on says whether it
	// runs without the flag.
	flag, usage string
	on          bool
	// vm sets the VM's firmware fields (Firmware, NoNICROM, HTTPBoot, SecureBoot).
	vm func(*e2e.VMConfig)
	// uefiFileHTTP serves the UEFI boot file over HTTP (UEFI HTTP boot) instead
	// of TFTP; uefiFile says whether the path loads a UEFI boot file at all.
	uefiFile, uefiFileHTTP bool
	// shimGrub boots Debian's signed shim, which loads Debian's signed GRUB;
	// GRUB reads its config, the kernel and the initrd over TFTP (it has no HTTP).
	shimGrub bool
	// bootchainOnly: the dnsmasq peers here are set up for IPv4 boots only.
	bootchainOnly bool
	// siteSigned signs the UEFI boot file and the kernel with the site key (the
	// snakeoil key that Secure Boot's variable store enrolls).
	siteSigned bool
}

// uefiHTTP is the UEFI HTTP boot path: OVMF with its PXE turned off, so DHCP gives
// its HTTP boot client an http URL of the UEFI iPXE binary.
const uefiHTTP e2e.Firmware = "uefi-http"

// uefiSiteKey is OVMF with Secure Boot enforced and the site's own key enrolled:
// the site's signed iPXE and kernel (docs/firmware.md#secure-boot).
const uefiSiteKey e2e.Firmware = "uefi-sb"

// uefiSBMS is Secure Boot with Microsoft's keys (docs/firmware.md, "The
// Microsoft-signed path"): OVMF loads Debian's signed shim over TFTP, shim loads
// Debian's signed GRUB. The peers serve a static grub/grub.cfg with dnsmasq's
// TFTP; bootchain renders the machine's config in bootapi.
const uefiSBMS e2e.Firmware = "uefi-sb-ms"

// uefiPXE6 is UEFI PXE over IPv6: OVMF with PXE over IPv4 off, so its first
// boot option is PXE over IPv6 (DHCPv6, option 59, TFTP on IPv6).
const uefiPXE6 e2e.Firmware = "uefi-pxe6"

// bootPaths are the firmware paths, in the table's order; the first is the base
// of the "/ BIOS" column.
var bootPaths = []bootPath{
	{fw: e2e.BIOS, flag: "bios", on: true,
		usage: "boot BIOS (SeaBIOS, iPXE option ROM on virtio-net)",
		vm:    func(c *e2e.VMConfig) { c.Firmware = e2e.BIOS }},
	{fw: e2e.UEFI, flag: "uefi", uefiFile: true,
		usage: "also boot UEFI (OVMF's own PXE client, NIC without option ROM, the UEFI iPXE over TFTP)",
		vm:    func(c *e2e.VMConfig) { c.Firmware, c.NoNICROM = e2e.UEFI, true }},
	{fw: uefiHTTP, flag: "http", uefiFile: true, uefiFileHTTP: true,
		usage: "also boot UEFI HTTP boot (OVMF with PXE off: DHCP gives an http URL of the UEFI iPXE binary, no TFTP)",
		vm:    func(c *e2e.VMConfig) { c.Firmware, c.NoNICROM, c.HTTPBoot = e2e.UEFI, true, true }},
	{fw: uefiSiteKey, flag: "secureboot", uefiFile: true, siteSigned: true,
		usage: "also boot UEFI PXE with Secure Boot enforced and the site key enrolled (iPXE and kernel signed with it)",
		vm:    func(c *e2e.VMConfig) { c.Firmware, c.NoNICROM, c.SecureBoot = e2e.UEFI, true, true }},
	{fw: uefiSBMS, flag: "secureboot-ms", shimGrub: true,
		usage: "also boot UEFI with Secure Boot and Microsoft's keys: Debian's signed shim and GRUB, kernel and initrd over TFTP",
		vm: func(c *e2e.VMConfig) {
			c.Firmware, c.NoNICROM, c.SecureBoot, c.OVMFVars, c.MemoryMiB = e2e.UEFI, true, true, e2e.MicrosoftVars, 1024
		}},
	{fw: uefiPXE6, flag: "ipv6", uefiFile: true, bootchainOnly: true,
		usage: "also boot OVMF's PXE over IPv6 (IPv4 PXE off: DHCPv6 with option 59, TFTP on IPv6; bootchain row only)",
		vm: func(c *e2e.VMConfig) {
			c.Firmware, c.NoNICROM = e2e.UEFI, true
			c.ExtraArgs = []string{"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no"}
		}},
	{fw: e2e.ARM64, flag: "arm64",
		usage: "also boot arm64 (AAVMF on QEMU's virt machine: its PXE client loads Debian's signed GRUB, which reads its config, the arm64 kernel and initrd over TFTP)",
		vm:    func(c *e2e.VMConfig) { c.Firmware, c.MemoryMiB = e2e.ARM64, 1024 }},
}

// supports reports whether setup s can boot firmware fw.
func supports(s Setup, fw e2e.Firmware) bool {
	return !pathOf(fw).bootchainOnly || s.Key == "bootchain"
}

// pathOf returns the path of fw.
func pathOf(fw e2e.Firmware) bootPath {
	for _, p := range bootPaths {
		if p.fw == fw {
			return p
		}
	}
	panic("bench/boot: unknown path " + string(fw))
}

// siteSigned is the UEFI iPXE binary and the kernel signed with the site key, made
// once per run.
type siteSigned struct {
	ipxe, kernel string
}

// signForSiteKey signs the UEFI iPXE binary and the kernel into dir.
func signForSiteKey(ctx context.Context, dir, ipxeEFI, kernel string) (*siteSigned, error) {
	for _, p := range []string{e2e.SecureBootCode, e2e.SnakeoilVars} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w (scripts/install-deps.sh installs ovmf)", err)
		}
	}
	key, err := e2e.NewSiteKey(ctx, dir)
	if err != nil {
		return nil, err
	}
	s := &siteSigned{ipxe: filepath.Join(dir, filepath.Base(ipxeEFI)), kernel: filepath.Join(dir, "vmlinuz.signed")}
	if err := key.Sign(ctx, ipxeEFI, s.ipxe); err != nil {
		return nil, err
	}
	return s, key.Sign(ctx, kernel, s.kernel)
}
