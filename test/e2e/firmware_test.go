//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// httpHopOrder is BootHops for UEFI HTTP boot: the firmware fetches the boot file
// from artifactstore, not over TFTP.
var httpHopOrder = func() []HopWant {
	o := slices.Clone(BootHops)
	for i, h := range o {
		if h.Name == "tftp" {
			o[i] = HopWant{"artifact", "bootchain-artifactstore", "boot file download"}
		}
	}
	return o
}()

// bootJob boots cfg (UEFI unless it names another firmware, no NIC ROM, MAC and
// Tap filled in) and waits for job to succeed and the VM to power off. It
// returns the finished session and the VM.
func (e *chainEnv) bootJob(ctx context.Context, macs string, watch *jobWatch, job string, cfg VMConfig) (*bootapiv1.BootSession, *VM) {
	t := e.t
	t.Helper()
	mac, _ := net.ParseMAC(macs)
	if cfg.Firmware == "" {
		cfg.Firmware = UEFI
	}
	cfg.NoNICROM, cfg.MAC, cfg.Tap, cfg.QMP = true, mac, e.tap, true
	vm, err := StartVM(e.l, e.l.Main(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Kill() })
	bctx, bcancel := context.WithTimeout(ctx, 4*time.Minute)
	states, err := watch.wait(bctx, job, bootapiv1.JobState_JOB_STATE_SUCCEEDED)
	bcancel()
	if err != nil {
		vm.Screendump(ctx, filepath.Join(e.l.Dir(), cfg.Name+".png"))
		t.Fatalf("%v\nsession:\n%s\nserial:\n%s", err, describeSession(e.session(ctx, macs)), tail(vm.Serial(), 3000))
	}
	if _, err := vm.Wait(ctx); err != nil {
		t.Errorf("VM after succeeded: %v", err)
	}
	t.Logf("%s: power-on to power-off %v", cfg.Name, time.Since(vm.Started).Round(time.Millisecond))
	want := []bootapiv1.JobState{bootapiv1.JobState_JOB_STATE_PENDING, bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING, bootapiv1.JobState_JOB_STATE_SUCCEEDED}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("job states %v, want %v", states, want)
	}
	s, err := e.waitSession(ctx, macs, func(s *bootapiv1.BootSession) bool {
		return s.GetState() == bootapiv1.SessionState_SESSION_STATE_SUCCEEDED && strings.Count(strings.Join(hopNames(s), " "), "callback") == 2
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s session:\n%s", cfg.Name, describeSession(s))
	return s, vm
}

// TestChainUEFIHTTP boots OVMF with its PXE turned off, so its UEFI HTTP boot
// client asks DHCP for a URL (option 60 "HTTPClient", arch 16), gets
// snponly.efi's URL on artifactstore and boots it: no TFTP at all.
func TestChainUEFIHTTP(t *testing.T) {
	rd := chainPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, rd, chainOpts{})
	const macs = "52:54:00:bc:e2:03"
	watch, job := e.provisionJob(ctx, macs)
	s, _ := e.bootJob(ctx, macs, watch, job, VMConfig{Name: "http1", HTTPBoot: true})
	var bootFile bool
	for _, h := range s.GetHops() {
		if h.GetName() == "tftp" {
			t.Errorf("HTTP boot used TFTP: %s", h.GetDetail())
		}
		if h.GetName() == "artifact" && strings.Contains(h.GetDetail(), "snponly.efi") && !h.GetFailed() {
			bootFile = true
		}
	}
	if !bootFile {
		t.Errorf("no successful artifact hop of snponly.efi in the session")
	}
	e.checkTraceOrder(ctx, s, httpHopOrder, "e2e/vmlinuz", "e2e/initrd.gz")
}

// secureBootPrereqs skips the test without the Secure Boot firmware or signing tools.
func secureBootPrereqs(t *testing.T) {
	t.Helper()
	for _, p := range []string{SecureBootCode, SnakeoilVars, SnakeoilCert, SnakeoilKey} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (scripts/install-deps.sh: package ovmf)", err)
		}
	}
	for _, bin := range []string{"sbsign", "openssl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%v (scripts/install-deps.sh: sbsigntool, openssl)", err)
		}
	}
}

// TestChainUEFISecureBootSiteKey boots OVMF with Secure Boot enforced and the
// site's own key enrolled (the snakeoil key stands in for it). First with
// Debian's unsigned snponly.efi: the firmware downloads it over TFTP and refuses
// it, and the session ends failed at the tftp hop saying so. Then with
// snponly.efi signed by the site key (as a site that builds its own iPXE uploads
// it) and the kernel signed by it too (this iPXE starts the kernel through the
// firmware's LoadImage, which checks it): the job succeeds, one trace.
func TestChainUEFISecureBootSiteKey(t *testing.T) {
	rd := chainPrereqs(t)
	secureBootPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	key, err := NewSiteKey(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	signedIPXE := filepath.Join(dir, "ipxe")
	if err := os.Mkdir(signedIPXE, 0o755); err != nil {
		t.Fatal(err)
	}
	signedKernel := filepath.Join(dir, "vmlinuz.signed")
	if err := key.Sign(ctx, "/usr/lib/ipxe/snponly.efi", filepath.Join(signedIPXE, "snponly.efi")); err != nil {
		t.Fatal(err)
	}
	if err := key.Sign(ctx, rd.Kernel.Image, signedKernel); err != nil {
		t.Fatal(err)
	}
	srd := *rd
	srd.Kernel.Image = signedKernel

	e := newChainEnv(t, ctx, &srd, chainOpts{})
	const macs = "52:54:00:bc:e2:04"
	mac, _ := net.ParseMAC(macs)
	watch, job := e.provisionJob(ctx, macs)

	// Boot 1: Debian's snponly.efi, unsigned: refused. With PXE over IPv6 off, the
	// firmware's next boot option is HTTP boot over IPv4, which DHCPs again at
	// once: dhcpd ends the refused boot on that DISCOVER.
	s1 := e.bootRefused(ctx, VMConfig{Name: "sb-refused", MAC: mac,
		ExtraArgs: []string{"-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"}})
	if s1.GetState() != bootapiv1.SessionState_SESSION_STATE_FAILED || s1.GetFailedHop() != "tftp" ||
		!strings.Contains(s1.GetMessage(), "snponly.efi") ||
		!(strings.Contains(s1.GetMessage(), "started over") || s1.GetDiagnosis().GetClass() == bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_REFUSED) {
		t.Errorf("refused boot: state %v hop %q message %q; want failed at tftp naming snponly.efi, ended by the firmware's new DISCOVER",
			s1.GetState(), s1.GetFailedHop(), s1.GetMessage())
	}

	// Boot 2: the site's signed snponly.efi replaces Debian's.
	if out, err := e.stack.Bootctl(ctx, "artifacts", "import-ipxe", "--dir", signedIPXE, "--replace"); err != nil {
		t.Fatalf("bootctl artifacts import-ipxe: %v: %s", err, out)
	}
	// The job states (bootJob) show the refused boot did not dispatch the job.
	s2, vm2 := e.bootJob(ctx, macs, watch, job, VMConfig{Name: "sb-signed", SecureBoot: true})
	if strings.Contains(vm2.Serial(), "Access Denied") {
		t.Errorf("the signed boot was refused somewhere: %s", lastLine(vm2.Serial(), "Access Denied"))
	}
	e.checkTrace(ctx, s2, "e2e/vmlinuz", "e2e/initrd.gz")
}

// bootRefused powers on cfg (UEFI, Secure Boot, no NIC ROM, the env's tap) and
// waits for the firmware to refuse its boot program ("Access Denied" on its
// console), then powers it off and returns the boot's session once bootchain has
// reached its verdict.
func (e *chainEnv) bootRefused(ctx context.Context, cfg VMConfig) *bootapiv1.BootSession {
	e.t.Helper()
	return e.bootRefusedBy(ctx, cfg, "Access Denied")
}

// bootRefusedBy is bootRefused for a refusal the console reports as refusal
// (shim's "Verification failed" for a binary it loads).
func (e *chainEnv) bootRefusedBy(ctx context.Context, cfg VMConfig, refusal string) *bootapiv1.BootSession {
	t := e.t
	t.Helper()
	macs := cfg.MAC.String()
	cfg.Firmware, cfg.SecureBoot, cfg.NoNICROM, cfg.Tap, cfg.QMP = UEFI, true, true, e.tap, true
	vm, err := StartVM(e.l, e.l.Main(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Kill() })
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Minute)
	_, err = vm.WaitSerial(rctx, refusal)
	rcancel()
	if err != nil {
		t.Fatalf("the firmware refused nothing: %v\nsession:\n%s\nserial:\n%s", err, describeSession(e.session(ctx, macs)), tail(vm.Serial(), 3000))
	}
	// The firmware goes on to its next boot option while bootchain reaches its
	// verdict on the refused boot: the session that is open now.
	first := e.session(ctx, macs)
	t.Logf("%s refused: %s", cfg.Name, lastLine(vm.Serial(), refusal))
	s, err := e.waitSession(ctx, macs, func(s *bootapiv1.BootSession) bool {
		return s.GetTraceId() == first.GetTraceId() && s.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE
	})
	vm.Kill()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s session:\n%s", cfg.Name, describeSession(s))
	return s
}

// lastLine returns the last line of s that contains sub.
func lastLine(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return strings.TrimSpace(lines[i])
		}
	}
	return ""
}

// TestChainUEFISecureBootTamperedHTTP boots OVMF with Secure Boot and HTTP boot
// and gives the machine (its boot_file) an iPXE signed with the site key and then
// altered: the firmware fetches it from artifactstore, its signature no longer
// matches, and the firmware refuses it; the session ends failed at that artifact
// hop, naming the file.
func TestChainUEFISecureBootTamperedHTTP(t *testing.T) {
	rd := chainPrereqs(t)
	secureBootPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir := t.TempDir()
	key, err := NewSiteKey(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "snponly-tampered.efi")
	if err := key.Sign(ctx, "/usr/lib/ipxe/snponly.efi", tampered); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(tampered)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff // inside the code, which the signature covers
	if err := os.WriteFile(tampered, b, 0o644); err != nil {
		t.Fatal(err)
	}

	// A refused boot program is diagnosed once the iPXE stage's timeout passes.
	e := newChainEnv(t, ctx, rd, chainOpts{args: []string{"--bootapi-stall-after-ipxe", "20s"}})
	const macs = "52:54:00:bc:e2:05"
	mac, _ := net.ParseMAC(macs)
	if _, err := e.stack.Provision(ctx, BootConfig{MAC: macs, Initrd: rd, NoJob: true}); err != nil {
		t.Fatal(err)
	}
	for _, st := range [][]string{
		{"artifacts", "upload", tampered, "--name", "site/snponly-tampered.efi"},
		{"machines", "update", macs, "--boot-file", "site/snponly-tampered.efi"},
	} {
		if out, err := e.stack.Bootctl(ctx, st...); err != nil {
			t.Fatalf("bootctl %v: %v: %s", st, err, out)
		}
	}
	s := e.bootRefused(ctx, VMConfig{Name: "sb-tampered", MAC: mac, HTTPBoot: true})
	if s.GetState() != bootapiv1.SessionState_SESSION_STATE_FAILED || s.GetFailedHop() != "artifact" ||
		!strings.Contains(s.GetMessage(), "site/snponly-tampered.efi") {
		t.Errorf("refused boot: state %v hop %q message %q; want failed at artifact naming site/snponly-tampered.efi", s.GetState(), s.GetFailedHop(), s.GetMessage())
	}
	for _, h := range s.GetHops() {
		if h.GetName() == "tftp" {
			t.Errorf("HTTP boot used TFTP: %s", h.GetDetail())
		}
	}
}
