//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// httpHopOrder is hopOrder for UEFI HTTP boot: the firmware fetches the boot file
// from artifactstore, not over TFTP.
var httpHopOrder = []hopWant{
	{"dhcp.discover", "bootchain-dhcpd", "firmware DHCP DISCOVER"},
	{"dhcp.request", "bootchain-dhcpd", "firmware DHCP REQUEST"},
	{"artifact", "bootchain-artifactstore", "boot file download"},
	{"ipxe.dhcp", "bootchain-dhcpd", "iPXE's DHCP"},
	{"script", "bootchain-bootapi", "script request"},
	{"artifact", "bootchain-artifactstore", "kernel download"},
	{"artifact", "bootchain-artifactstore", "initrd download"},
	{"callback", "bootchain-bootapi", "callback running"},
	{"callback", "bootchain-bootapi", "callback succeeded"},
}

// bootUEFI provisions mac with a reinstall job, boots cfg (MAC and Tap filled in)
// and waits for the job to succeed and the VM to power off. It returns the
// finished session.
func (e *chainEnv) bootUEFI(ctx context.Context, macs string, cfg VMConfig) *bootapiv1.BootSession {
	t := e.t
	t.Helper()
	mac, _ := net.ParseMAC(macs)
	if _, err := e.stack.Provision(ctx, BootConfig{MAC: macs, Initrd: e.rd, NoJob: true}); err != nil {
		t.Fatal(err)
	}
	watch := e.watchJobs(ctx, macs)
	job, err := e.stack.CreateJob(ctx, macs, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Firmware, cfg.NoNICROM, cfg.MAC, cfg.Tap, cfg.QMP = UEFI, true, mac, e.tap, true
	vm, err := StartVM(e.l, e.l.Main(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Kill() })
	bctx, bcancel := context.WithTimeout(ctx, 3*time.Minute)
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
	return s
}

// TestChainUEFIHTTP boots OVMF with its PXE turned off, so its UEFI HTTP boot
// client asks DHCP for a URL (option 60 "HTTPClient", arch 16), gets
// snponly.efi's URL on artifactstore and boots it: no TFTP at all.
func TestChainUEFIHTTP(t *testing.T) {
	rd := chainPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, rd, chainOpts{})
	s := e.bootUEFI(ctx, "52:54:00:bc:e2:03", VMConfig{Name: "http1", HTTPBoot: true})
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
