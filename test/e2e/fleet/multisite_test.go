//go:build linux

package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/test/e2e"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// prereqs skips the test where a fleet and VMs cannot run, and returns the e2e
// initrd.
func prereqs(t *testing.T) *e2e.Initrd {
	t.Helper()
	if testing.Short() {
		t.Skip("boots VMs under TCG in a multi-process fleet; skipped with -short")
	}
	if err := Check(""); err != nil {
		t.Skip(err)
	}
	for _, tool := range []string{"qemu-system-x86_64", "tcpdump", "depmod"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh)", tool)
		}
	}
	for _, p := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/ipxe.efi", e2e.DefaultOVMFCode, e2e.DefaultOVMFVars, "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (scripts/install-deps.sh)", err)
		}
	}
	if _, err := e2e.FindKernel(); errors.Is(err, e2e.ErrNoKernel) {
		t.Skipf("%v (scripts/install-deps.sh)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rd, err := e2e.BuildInitrd(ctx, e2e.InitrdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

// fault is one injected failure: when it started and when the path the boots
// use worked again.
type fault struct {
	what              string
	start, recovered  time.Time
	restarted         time.Time
	skippedBecauseErr error
}

// siteBoot is one VM booting in one site.
type siteBoot struct {
	site *Site
	fw   e2e.Firmware
	mac  string
	job  string
	vm   *e2e.VM
	cap  *Capture
}

// TestMultiSite boots a BIOS VM in site-a and a UEFI VM in site-b at the same
// time, through per-site dhcpd, tftpd and artifactstore replicas, two bootapi
// replicas behind a VIP and a 3-member etcd cluster, while the etcd leader, the
// bootapi replica holding the VIP and site-a's dhcpd are killed with SIGKILL and
// brought back. Both installers must report succeeded; every ACK seen on the
// wire must be a lease in etcd, no address bound twice; each boot one trace.
func TestMultiSite(t *testing.T) {
	rd := prereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	f := StartT(t, Config{Keep: os.Getenv("BOOTCHAIN_E2E_KEEP") != ""})
	a, err := f.AddSite(ctx, "site-a", SiteConfig{ChainloadOwnIPXE: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.AddSite(ctx, "site-b", SiteConfig{})
	if err != nil {
		t.Fatal(err)
	}
	boots := []*siteBoot{
		{site: a, fw: e2e.BIOS, mac: "52:54:00:bc:f1:0a"},
		{site: b, fw: e2e.UEFI, mac: "52:54:00:bc:f1:0b"},
	}

	// As an operator: everything goes to the origin; the sites pull through.
	steps := [][]string{
		{"artifacts", "import-ipxe", "--dir", "/usr/lib/ipxe"},
		{"artifacts", "upload", rd.Kernel.Image, "--name", "e2e/vmlinuz"},
		{"artifacts", "upload", rd.Path, "--name", "e2e/initrd.gz"},
		{"profiles", "create", "e2e", "-kernel", "e2e/vmlinuz", "-initrd", "e2e/initrd.gz",
			"-cmdline", "console=ttyS0 panic=1 hostname={{.Machine.Hostname}}"},
	}
	for _, bt := range boots {
		steps = append(steps, []string{"machines", "register", bt.mac, "--site", bt.site.Name, "--hostname", "vm-" + bt.site.Name})
	}
	for _, st := range steps {
		if out, err := f.Bootctl(ctx, st...); err != nil {
			t.Fatalf("bootctl %s: %v: %s", strings.Join(st, " "), err, out)
		}
	}
	for _, bt := range boots {
		out, err := f.Bootctl(ctx, "-o", "json", "jobs", "create", "-mac", bt.mac, "-profile", "e2e")
		if err != nil {
			t.Fatalf("jobs create: %v: %s", err, out)
		}
		if bt.job, err = e2e.ParseJobID(out); err != nil {
			t.Fatal(err)
		}
		if bt.cap, err = bt.site.CaptureDHCP(ctx); err != nil {
			t.Fatal(err)
		}
	}
	api, err := f.GRPC(VIP.String() + ":9080")
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	// Power on both at once.
	for _, bt := range boots {
		tap, err := bt.site.AddTap(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := net.ParseMAC(bt.mac)
		bt.vm, err = e2e.StartVM(f.Lab, bt.site.NS, e2e.VMConfig{Name: bt.site.Name, Firmware: bt.fw, NoNICROM: bt.fw == e2e.UEFI, MAC: mac, Tap: tap})
		if err != nil {
			t.Fatal(err)
		}
		vm := bt.vm
		t.Cleanup(func() { vm.Kill() })
	}

	// The faults, one after the other, while the machines boot.
	var faults []fault
	var fwg sync.WaitGroup
	fwg.Add(1)
	go func() {
		defer fwg.Done()
		faults = injectFaults(ctx, t, f, a, boots[0].mac, boots[1].mac)
	}()

	jobs := bootapiv1.NewJobServiceClient(api)
	for _, bt := range boots {
		vm := bt.vm
		lost := func() error {
			// SeaBIOS and OVMF end here when the machine got its default
			// (local disk) instead of the job: waiting longer is pointless.
			for _, m := range []string{"No bootable device", "No bootable option"} {
				if strings.Contains(vm.Serial(), m) {
					return fmt.Errorf("the VM booted its default: %q on its console", m)
				}
			}
			return nil
		}
		if err := waitJob(ctx, jobs, bt.job, 8*time.Minute, lost); err != nil {
			fwg.Wait()
			s, _ := bootapiv1.NewSessionServiceClient(api).GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: bt.mac})
			t.Fatalf("%s: %v\nsession: %v\nserial:\n%s", bt.site.Name, err, s.GetSession(), tail(bt.vm.Serial(), 3000))
		}
	}
	fwg.Wait()
	for _, ft := range faults {
		if ft.skippedBecauseErr != nil {
			t.Errorf("fault %s: %v", ft.what, ft.skippedBecauseErr)
		}
	}
	for _, bt := range boots {
		if _, err := bt.vm.Wait(ctx); err != nil {
			t.Errorf("%s VM after succeeded: %v", bt.site.Name, err)
		}
	}

	// One complete trace per boot, from the site's own services.
	sessions := bootapiv1.NewSessionServiceClient(api)
	report := []string{}
	for _, bt := range boots {
		var s *bootapiv1.BootSession
		testkit.Eventually(t, bt.site.Name+" session succeeded", func() bool {
			r, err := sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: bt.mac})
			s = r.GetSession()
			return err == nil && s.GetState() == bootapiv1.SessionState_SESSION_STATE_SUCCEEDED
		})
		spans := checkBootTrace(ctx, t, f, s)
		// The site's own dhcpd, tftpd and replica served it, not the origin.
		for _, sp := range spans {
			switch sp.Service {
			case "bootchain-dhcpd", "bootchain-tftpd", "bootchain-artifactstore":
				if site := sp.Attrs["bootchain.site"]; sp.Attrs["bootchain.hop"] != "" && site != bt.site.Name {
					t.Errorf("%s: hop %s from %s of site %q, want %q", bt.site.Name, sp.Name, sp.Service, site, bt.site.Name)
				}
			}
		}
		// The session in etcd has every hop too: none lost to the faults.
		if miss := missingRecordedHop(s); miss != "" {
			t.Errorf("%s: session in etcd lacks hop %s; hops: %v", bt.site.Name, miss, recordedHops(s))
		}
		var done time.Time
		for _, sp := range spans {
			if sp.Name == "callback" && sp.Attrs["bootchain.report_state"] == "succeeded" {
				done = sp.Start
			}
		}
		line := fmt.Sprintf("%s (%s): power-on -> succeeded %v", bt.site.Name, bt.fw, done.Sub(bt.vm.Started).Round(time.Millisecond))
		for _, ft := range faults {
			needs := func(sp e2e.Span) bool { return true } // etcd: every hop writes
			switch {
			case strings.HasPrefix(ft.what, "bootapi"):
				needs = func(sp e2e.Span) bool { return sp.Service == "bootchain-bootapi" }
			case strings.HasPrefix(ft.what, a.Name):
				needs = func(sp e2e.Span) bool { return bt.site == a && sp.Service == "bootchain-dhcpd" }
			}
			line += fmt.Sprintf("; held up by %s", heldUp(ft, spans, needs))
		}
		report = append(report, line)
	}

	// Every ACK on the wire is a lease in etcd; no address bound twice.
	for _, bt := range boots {
		acks, err := bt.cap.ACKs()
		if err != nil {
			t.Fatal(err)
		}
		leases, err := f.Leases(ctx, bt.site.Name)
		if err != nil {
			t.Fatal(err)
		}
		checkLeases(t, bt.site.Name, acks, leases)
		report = append(report, fmt.Sprintf("%s: %d ACKs on the wire, %d leases in etcd", bt.site.Name, len(acks), len(leases)))
	}

	// Each site's replica pulled the boot files through from the origin and
	// verified them; nothing was uploaded to it directly.
	for _, bt := range boots {
		m, err := bt.site.Replica.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pulled := Sum(m, "bootchain_artifactstore_origin_fetches_total", `result="ok"`)
		if pulled < 3 { // iPXE, kernel, initrd
			t.Errorf("%s replica: %v pull-throughs from the origin, want the iPXE binary, kernel and initrd (metrics: %v)", bt.site.Name, pulled, pick(m, "origin"))
		}
		if v := Sum(m, "bootchain_artifactstore_blob_checks_total", `check="pull"`, `result="ok"`); v != pulled {
			t.Errorf("%s replica: %v pulls verified (sha256), want %v", bt.site.Name, v, pulled)
		}
		if v := Sum(m, "bootchain_artifactstore_uploads_total"); v != 0 {
			t.Errorf("%s replica: %v uploads, want none (everything from the origin)", bt.site.Name, v)
		}
	}
	for _, ft := range faults {
		report = append(report, fmt.Sprintf("fault %s: down %v (restarted after %v)", ft.what, ft.recovered.Sub(ft.start).Round(time.Millisecond), ft.restarted.Sub(ft.start).Round(time.Millisecond)))
	}
	t.Logf("multi-site figures:\n  %s", strings.Join(report, "\n  "))
}

// injectFaults kills the etcd leader, the bootapi replica holding the VIP and
// site's dhcpd, each once the boots have reached a stage it can hurt, and brings
// each back; it returns what happened when.
func injectFaults(ctx context.Context, t *testing.T, f *Fleet, site *Site, macs ...string) []fault {
	var out []fault
	// waitSpans waits until every MAC has a span named name (or max passed).
	waitSpans := func(name string, max time.Duration, macs ...string) {
		wctx, cancel := context.WithTimeout(ctx, max)
		defer cancel()
		for wctx.Err() == nil {
			seen := map[string]bool{}
			for _, sp := range f.OTLP.All() {
				if sp.Name == name {
					seen[sp.Attrs["bootchain.mac"]] = true
				}
			}
			n := 0
			for _, m := range macs {
				if seen[m] {
					n++
				}
			}
			if n == len(macs) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// 1. The etcd leader, once the later machine's firmware (OVMF starts its
	// PXE client well after SeaBIOS) is in DHCP: the other is further on.
	waitSpans("dhcp.discover", 3*time.Minute, macs...)
	ft := fault{what: "etcd leader"}
	func() {
		leader, err := f.EtcdLeader(ctx)
		if err != nil {
			ft.skippedBecauseErr = err
			return
		}
		ft.what = "etcd leader (" + leader.Name + ")"
		ft.start = time.Now()
		if err := leader.Kill(); err != nil {
			ft.skippedBecauseErr = err
			return
		}
		if err := f.EtcdWritable(ctx); err != nil {
			ft.skippedBecauseErr = err
			return
		}
		ft.recovered = time.Now()
		time.Sleep(2 * time.Second)
		ft.restarted = time.Now()
		ft.skippedBecauseErr = leader.Restart(ctx)
	}()
	out = append(out, ft)

	// 2. The bootapi replica holding the VIP, once both fetched their
	// scripts: their callbacks must reach the other replica.
	waitSpans("script", 3*time.Minute, macs...)
	ft = fault{what: "bootapi VIP holder"}
	func() {
		holder := f.VIPHolder()
		ft.what = "bootapi VIP holder (" + holder.Name + ")"
		ft.start = time.Now()
		if err := holder.Kill(); err != nil {
			ft.skippedBecauseErr = err
			return
		}
		vip := &Proc{Name: "VIP", NS: site.NS, Ready: "http://" + VIP.String() + ":8080/healthz"}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		for f.VIPHolder() == holder && wctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		if err := vip.WaitReady(wctx); err != nil {
			ft.skippedBecauseErr = err
			return
		}
		ft.recovered = time.Now()
		ft.restarted = time.Now()
		ft.skippedBecauseErr = holder.Restart(ctx)
	}()
	out = append(out, ft)

	// 3. The site's dhcpd, killed and started again a second later, before the
	// installer's own DHCP (the kernel is still loading or starting).
	ft = fault{what: site.Name + " dhcpd", start: time.Now()}
	if err := site.DHCPD.Kill(); err != nil {
		ft.skippedBecauseErr = err
	} else {
		time.Sleep(time.Second)
		ft.restarted = time.Now()
		ft.skippedBecauseErr = site.DHCPD.Restart(ctx)
		ft.recovered = time.Now()
	}
	out = append(out, ft)
	for _, ft := range out {
		t.Logf("fault %s at %s, path working again at %s", ft.what, ft.start.Format("15:04:05.000"), ft.recovered.Format("15:04:05.000"))
	}
	return out
}

// heldUp says how long a fault held one boot up: the part of the outage
// (kill to path working again) in which the boot made no progress, between its
// last hop before the kill and its next hop after it, when that next hop needs
// the killed component (needs); otherwise the boot was elsewhere.
func heldUp(ft fault, spans []e2e.Span, needs func(e2e.Span) bool) string {
	var prev, next *e2e.Span
	for i := range spans {
		sp := &spans[i]
		if strings.HasPrefix(sp.Name, "boot ") {
			continue
		}
		if !sp.Start.After(ft.start) {
			prev = sp
		} else if next == nil {
			next = sp
		}
	}
	if prev == nil || next == nil {
		return fmt.Sprintf("%s: not during this boot", ft.what)
	}
	if !needs(*next) {
		return fmt.Sprintf("%s: 0 (the boot's next hop, %s, does not need it)", ft.what, next.Name)
	}
	from := ft.start
	if prev.End.After(from) {
		from = prev.End // a hop in progress at the kill
	}
	to := ft.recovered
	if next.Start.Before(to) {
		to = next.Start
	}
	held := max(to.Sub(from), 0)
	return fmt.Sprintf("%s: %v (%s -> %s)", ft.what, held.Round(time.Millisecond), prev.Name, next.Name)
}

// waitJob polls the job (through the VIP, whichever replica answers) until it
// succeeded, failed, lost says the machine will not run it, or max passed.
func waitJob(ctx context.Context, jobs bootapiv1.JobServiceClient, id string, max time.Duration, lost func() error) error {
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	var states []bootapiv1.JobState
	for {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		r, err := jobs.GetJob(cctx, &bootapiv1.GetJobRequest{Id: id})
		ccancel()
		if err == nil {
			st := r.GetJob().GetState()
			if len(states) == 0 || states[len(states)-1] != st {
				states = append(states, st)
			}
			switch st {
			case bootapiv1.JobState_JOB_STATE_SUCCEEDED:
				return nil
			case bootapiv1.JobState_JOB_STATE_FAILED, bootapiv1.JobState_JOB_STATE_CANCELED, bootapiv1.JobState_JOB_STATE_EXPIRED:
				return fmt.Errorf("job %s ended %v (states %v)", id, st, states)
			}
		}
		if lerr := lost(); lerr != nil {
			return fmt.Errorf("job %s: %w (states %v)", id, lerr, states)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s: %w (states %v, last error %v)", id, ctx.Err(), states, err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// checkBootTrace waits for the session's trace and checks it holds every hop of a
// boot in order, all children of the session's root, and that no span of the
// machine went to another trace. It returns the trace's spans.
func checkBootTrace(ctx context.Context, t *testing.T, f *Fleet, s *bootapiv1.BootSession) []e2e.Span {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	spans, err := f.OTLP.WaitTrace(wctx, s.GetTraceId(), func(sp []e2e.Span) bool {
		return e2e.MissingHop(sp, "e2e/vmlinuz", "e2e/initrd.gz") == ""
	})
	var b strings.Builder
	root := ""
	for _, sp := range spans {
		fmt.Fprintf(&b, "  %s %-24s %-14s parent=%s err=%v %v %v\n", sp.Start.Format("15:04:05.000"), sp.Service, sp.Name, sp.ParentID, sp.Error, sp.Attrs["url.path"], sp.Attrs["server.address"])
		if strings.HasPrefix(sp.Name, "boot ") {
			root = sp.SpanID
		}
	}
	if err != nil {
		t.Errorf("trace %s of %s lacks %s; spans:\n%s", s.GetTraceId(), s.GetMac(), e2e.MissingHop(spans, "e2e/vmlinuz", "e2e/initrd.gz"), b.String())
		return spans
	}
	if root == "" {
		t.Errorf("trace %s has no root span; spans:\n%s", s.GetTraceId(), b.String())
	}
	for _, sp := range spans {
		if sp.SpanID != root && sp.ParentID != root && sp.Attrs["bootchain.hop"] != "" {
			t.Errorf("hop %s (%s) is not a child of the session root %s", sp.Name, sp.Service, root)
		}
	}
	var elsewhere []string
	for _, sp := range f.OTLP.All() {
		if sp.TraceID != s.GetTraceId() && sp.Attrs["bootchain.mac"] == s.GetMac() {
			elsewhere = append(elsewhere, sp.Service+"/"+sp.Name+"@"+sp.TraceID[:8])
		}
	}
	if len(elsewhere) > 0 {
		t.Errorf("%s: spans of the boot in other traces than %s: %v", s.GetMac(), s.GetTraceId(), elsewhere)
	}
	t.Logf("%s: trace %s, %d spans:\n%s", s.GetMac(), s.GetTraceId(), len(spans), b.String())
	return spans
}

// checkLeases checks the ACKs seen on a site's wire against its leases in etcd:
// each ACKed (MAC, IP) is a bound lease of that MAC, no IP was ACKed to two
// MACs, and no MAC holds two bound leases.
func checkLeases(t *testing.T, site string, acks []ACK, leases map[string]*dhcpdv1.Lease) {
	t.Helper()
	if len(acks) == 0 {
		t.Errorf("%s: no DHCPACK on the wire", site)
	}
	owner := map[string]string{}
	for _, a := range acks {
		if o, ok := owner[a.IP]; ok && o != a.MAC {
			t.Errorf("%s: %s ACKed to %s and to %s", site, a.IP, o, a.MAC)
		}
		owner[a.IP] = a.MAC
		l := leases[a.IP]
		if l == nil {
			t.Errorf("%s: ACK of %s to %s at %s has no lease in etcd", site, a.IP, a.MAC, a.Time.Format("15:04:05.000"))
			continue
		}
		if l.GetMac() != a.MAC || l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			t.Errorf("%s: ACK of %s to %s, etcd says %v of %s", site, a.IP, a.MAC, l.GetState(), l.GetMac())
		}
	}
	bound := map[string][]string{}
	for ip, l := range leases {
		if l.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			bound[l.GetMac()] = append(bound[l.GetMac()], ip)
		}
	}
	for mac, ips := range bound {
		if len(ips) > 1 {
			sort.Strings(ips)
			t.Errorf("%s: %s holds %d bound leases: %v", site, mac, len(ips), ips)
		}
	}
}

// recordedHops lists the session's hops as "name/service".
func recordedHops(s *bootapiv1.BootSession) []string {
	var out []string
	for _, h := range s.GetHops() {
		out = append(out, h.GetName()+"/"+h.GetService())
	}
	return out
}

// missingRecordedHop is e2e.MissingHop for the hops recorded in etcd (names and
// services, in order).
func missingRecordedHop(s *bootapiv1.BootSession) string {
	var spans []e2e.Span
	for _, h := range s.GetHops() {
		sp := e2e.Span{Name: h.GetName(), Service: "bootchain-" + h.GetService(), Attrs: map[string]string{"url.path": h.GetDetail()}}
		if h.GetName() == "callback" {
			sp.Attrs["bootchain.report_state"] = callbackState(h.GetDetail())
		}
		spans = append(spans, sp)
	}
	return e2e.MissingHop(spans, "e2e/vmlinuz", "e2e/initrd.gz")
}

func callbackState(detail string) string {
	for _, st := range []string{"succeeded", "running"} {
		if strings.Contains(detail, st) {
			return st
		}
	}
	return ""
}

func pick(m map[string]float64, sub string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if strings.Contains(k, sub) {
			out[k] = v
		}
	}
	return out
}
