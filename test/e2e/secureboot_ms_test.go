//go:build linux

package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// MicrosoftHops is a good boot's trace on the Microsoft-signed path:
// everything over TFTP (this GRUB has no HTTP), GRUB's config from bootapi.
var MicrosoftHops = []HopWant{
	{"dhcp.discover", "bootchain-dhcpd", "firmware DHCP DISCOVER"},
	{"dhcp.request", "bootchain-dhcpd", "firmware DHCP REQUEST"},
	{"tftp", "bootchain-tftpd", "tftp shimx64.efi"},
	{"tftp", "bootchain-tftpd", "tftp grubx64.efi"},
	{"tftp", "bootchain-tftpd", "tftp grub.cfg-"},
	{"script", "bootchain-bootapi", "GRUB config"},
	{"tftp", "bootchain-tftpd", "tftp kernel"},
	{"tftp", "bootchain-tftpd", "tftp initrd"},
	{"callback", "bootchain-bootapi", "callback running"},
	{"callback", "bootchain-bootapi", "callback succeeded"},
}

func microsoftPrereqs(t *testing.T) {
	t.Helper()
	for _, p := range []string{SecureBootCode, MicrosoftVars} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (scripts/install-deps.sh: package ovmf)", err)
		}
	}
	for _, p := range []string{ShimSigned, GrubNetSigned} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (scripts/install-deps.sh unpacks shim-signed and grub-efi-amd64-signed)", err)
		}
	}
}

// provisionMicrosoft uploads Debian's signed shim and GRUB under the names
// the firmware and shim ask for, and points the machine's boot file at shim
// (a site would set boot_files uefi-x64=shimx64.efi instead).
func (e *chainEnv) provisionMicrosoft(ctx context.Context, macs, grub string) {
	t := e.t
	t.Helper()
	for _, st := range [][]string{
		{"artifacts", "upload", ShimSigned, "--name", "shimx64.efi"},
		{"artifacts", "upload", grub, "--name", "grubx64.efi"},
		{"machines", "update", macs, "--boot-file", "shimx64.efi"},
	} {
		if out, err := e.stack.Bootctl(ctx, st...); err != nil {
			t.Fatalf("bootctl %v: %v: %s", st, err, out)
		}
	}
}

// TestChainUEFISecureBootMicrosoft boots OVMF with Secure Boot enforced and
// Microsoft's keys enrolled, as most machines ship: OVMF loads Debian's shim
// (signed by Microsoft) over TFTP, shim loads Debian's signed GRUB, GRUB reads
// grub/grub.cfg and then the machine's own config, which tftpd gets from
// bootapi: the job dispatched, its kernel (Debian's, signed by Debian, which
// shim trusts) and the e2e initrd over TFTP, to the installer's succeeded.
// One trace holds every hop.
func TestChainUEFISecureBootMicrosoft(t *testing.T) {
	rd := chainPrereqs(t)
	microsoftPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, rd, chainOpts{})
	const macs = "52:54:00:bc:e2:07"
	watch, job := e.provisionJob(ctx, macs)
	e.provisionMicrosoft(ctx, macs, GrubNetSigned)
	s, vm := e.bootJob(ctx, macs, watch, job, VMConfig{Name: "sb-ms", SecureBoot: true, OVMFVars: MicrosoftVars, MemoryMiB: 1024})
	for _, refused := range []string{"Access Denied", "Verification failed", "Security Violation"} {
		if strings.Contains(vm.Serial(), refused) {
			t.Errorf("the signed boot was refused somewhere: %s", lastLine(vm.Serial(), refused))
		}
	}
	e.checkTraceOrder(ctx, s, MicrosoftHops, "e2e/vmlinuz", "e2e/initrd.gz")
}

// TestChainUEFISecureBootMicrosoftTampered: the same path with grubx64.efi
// altered after Debian signed it. shim downloads it, finds the signature
// does not match and refuses to start it; the session ends failed at that
// tftp hop, naming grubx64.efi, and the job is never dispatched.
func TestChainUEFISecureBootMicrosoftTampered(t *testing.T) {
	rd := chainPrereqs(t)
	microsoftPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	b, err := os.ReadFile(GrubNetSigned)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff // inside the code, which the signature covers
	tampered := filepath.Join(t.TempDir(), "grubx64-tampered.efi")
	if err := os.WriteFile(tampered, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A boot program that does not run is diagnosed once the iPXE stage's
	// timeout passes (when the firmware does not DHCP again first).
	e := newChainEnv(t, ctx, rd, chainOpts{args: []string{"--bootapi-stall-after-ipxe", "20s"}})
	const macs = "52:54:00:bc:e2:08"
	watch, job := e.provisionJob(ctx, macs)
	e.provisionMicrosoft(ctx, macs, tampered)
	mac, _ := net.ParseMAC(macs)
	s := e.bootRefusedBy(ctx, VMConfig{Name: "sb-ms-tampered", MAC: mac, OVMFVars: MicrosoftVars, MemoryMiB: 1024}, "Verification failed")
	if s.GetState() != bootapiv1.SessionState_SESSION_STATE_FAILED || s.GetFailedHop() != "tftp" || !strings.Contains(s.GetMessage(), "grubx64.efi") {
		t.Errorf("refused boot: state %v hop %q message %q; want failed at tftp naming grubx64.efi", s.GetState(), s.GetFailedHop(), s.GetMessage())
	}
	watch.mu.Lock()
	states := watch.states[job]
	watch.mu.Unlock()
	for _, st := range states {
		if st != bootapiv1.JobState_JOB_STATE_PENDING {
			t.Errorf("job went %v on a refused boot", st)
		}
	}
}
