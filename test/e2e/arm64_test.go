//go:build linux

package e2e

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/test/lab"
)

// arm64Prereqs skips t unless qemu-system-aarch64, AAVMF and the arm64 packages
// (scripts/arm64.sh) are there, and returns those packages and the arm64 initrd.
func arm64Prereqs(t *testing.T) (*ARM64Kit, *Initrd) {
	t.Helper()
	needQEMU(t, ARM64.QEMU())
	needInitrdTools(t)
	for _, p := range []string{DefaultAAVMFCode, DefaultAAVMFVars} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (scripts/install-deps.sh: package qemu-efi-aarch64)", err)
		}
	}
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kit := findARM64(t, ctx)
	rd, err := kit.BuildInitrd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return kit, rd
}

// findARM64 returns the packages scripts/arm64.sh fetched, or skips t saying
// they were not.
func findARM64(t *testing.T, ctx context.Context) *ARM64Kit {
	t.Helper()
	root, err := ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kit, err := FindARM64(ctx, root)
	if errors.Is(err, ErrNoARM64) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return kit
}

// arm64Cmdline is the arm64 profile's cmdline: the virt machine's serial port is
// a PL011, ttyAMA0.
const arm64Cmdline = "console=ttyAMA0 panic=1 hostname={{.Machine.Hostname}}"

// provisionARM64 uploads GRUB under the name arm64 firmware asks for and
// registers macs with the arm64 kernel and initrd, as an operator would.
func (e *chainEnv) provisionARM64(ctx context.Context, kit *ARM64Kit, macs string) {
	t := e.t
	t.Helper()
	if _, err := e.stack.Provision(ctx, BootConfig{MAC: macs, Initrd: e.rd, Cmdline: arm64Cmdline, NoJob: true}); err != nil {
		t.Fatal(err)
	}
	if out, err := e.stack.Bootctl(ctx, "artifacts", "upload", kit.GRUB, "--name", ARM64GRUBName); err != nil {
		t.Fatalf("bootctl artifacts upload: %v: %s", err, out)
	}
}

// firstDHCP returns how long after power-on the session's first DHCP hop began.
func firstDHCP(vm *VM, s *bootapiv1.BootSession) time.Duration {
	for _, h := range s.GetHops() {
		if strings.HasPrefix(h.GetName(), "dhcp.") {
			return h.GetStartTime().AsTime().Sub(vm.Started)
		}
	}
	return 0
}

// ARM64Hops is a good arm64 boot's trace: the Microsoft-signed path's
// (GRUB's config from bootapi through tftpd, kernel and initrd over TFTP)
// without shim, the firmware loading grubaa64.efi itself.
var ARM64Hops = func() []HopWant {
	var o []HopWant
	for _, h := range MicrosoftHops {
		switch h.What {
		case "tftp shimx64.efi":
			continue
		case "tftp grubx64.efi":
			h.What = "tftp " + ARM64GRUBName
		}
		o = append(o, h)
	}
	return o
}()

// TestChainARM64 powers on an arm64 VM (AAVMF on QEMU's virt machine, TCG)
// whose firmware PXE-boots through bootchain: dhcpd picks grubaa64.efi by
// client architecture 11, tftpd sends it, GRUB reads grub/grub.cfg and then
// the machine's own config, which tftpd gets from bootapi: the job is
// dispatched, its arm64 kernel and the arm64 e2e initrd come over TFTP, and
// the initrd reports running and succeeded. One trace holds every hop.
func TestChainARM64(t *testing.T) {
	kit, rd := arm64Prereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, rd, chainOpts{})
	const macs = "52:54:00:bc:a6:01"
	e.provisionARM64(ctx, kit, macs)
	watch := e.watchJobs(ctx, macs)
	job, err := e.stack.CreateJob(ctx, macs, "e2e")
	if err != nil {
		t.Fatal(err)
	}

	s, vm := e.bootJob(ctx, macs, watch, job, VMConfig{Name: "arm64", Firmware: ARM64, MemoryMiB: 1024})
	t.Logf("power-on to first DHCP packet %v", firstDHCP(vm, s).Round(time.Millisecond))
	if s.GetJobId() != job {
		t.Errorf("session job %q, want %q", s.GetJobId(), job)
	}
	if !strings.Contains(vm.Serial(), "init start, kernel "+kit.Kernel.Version) {
		t.Errorf("the serial log does not show the arm64 kernel %s running the initrd:\n%s", kit.Kernel.Version, tail(vm.Serial(), 3000))
	}
	e.checkTraceOrder(ctx, s, ARM64Hops, "e2e/vmlinuz", "e2e/initrd.gz")
}

// TestBuildInitrdARM64 builds the arm64 e2e initrd from the packages
// scripts/arm64.sh fetched: its busybox is an arm64 program and it packs and
// loads the arm64 kernel's virtio-net modules.
func TestBuildInitrdARM64(t *testing.T) {
	needInitrdTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kit := findARM64(t, ctx)
	f, err := elf.Open(kit.Busybox)
	if err != nil {
		t.Fatal(err)
	}
	machine := f.Machine
	f.Close()
	if machine != elf.EM_AARCH64 {
		t.Fatalf("%s is built for %v, want %v", kit.Busybox, machine, elf.EM_AARCH64)
	}
	rd, err := BuildInitrd(ctx, InitrdConfig{Kernel: kit.Kernel, Busybox: kit.Busybox, Modules: ARM64VirtioNetModules, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if rd.Kernel.Version != kit.Kernel.Version || !strings.HasSuffix(rd.Kernel.Version, "-arm64") {
		t.Errorf("initrd kernel %q, want the arm64 kernel %q", rd.Kernel.Version, kit.Kernel.Version)
	}
	var got []string
	for _, m := range rd.Modules {
		got = append(got, strings.TrimSuffix(m[strings.LastIndex(m, "/")+1:], ".ko"))
	}
	if fmt.Sprint(got) != fmt.Sprint(ARM64VirtioNetModules) {
		t.Errorf("modules %v, want %v", got, ARM64VirtioNetModules)
	}
}
