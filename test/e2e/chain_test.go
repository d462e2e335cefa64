//go:build linux

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/test/lab"
	"google.golang.org/grpc"
)

// chainEnv is one lab with the whole bootchain stack in it: the launcher as a
// subprocess in the lab's namespace, an OTLP receiver it exports to, a tap for
// the VM.
type chainEnv struct {
	t     *testing.T
	l     *lab.Lab
	tap   string
	stack *Stack
	// traces is where the stack's spans go: the test's receiver or Jaeger.
	traces traceSource
	rd     *Initrd
}

type chainOpts struct {
	// proxy: dnsmasq hands out addresses, bootchain's dhcpd answers PXE only.
	proxy bool
	// chainload: site chain-loads our own iPXE even for an iPXE ROM (BIOS, TFTP).
	chainload bool
	// jaeger: export to a real Jaeger in the lab instead of the test's receiver.
	jaeger bool
	// args are further flags of bootchain up.
	args []string
	// noPool4: the site's IPv4 subnet has no pool, so dhcpd answers no
	// DHCPv4 client (an IPv6-only boot network; DHCPv6 comes from args).
	noPool4 bool
}

var (
	toolsOnce sync.Once
	tools     Tools
	toolsErr  error
)

// buildTools builds the launcher and bootctl once per test binary.
func buildTools(t *testing.T) Tools {
	t.Helper()
	toolsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bootchain-e2e-tools-")
		if err != nil {
			toolsErr = err
			return
		}
		tools, toolsErr = BuildTools(context.Background(), dir)
	})
	if toolsErr != nil {
		t.Fatal(toolsErr)
	}
	return tools
}

// startStack starts `bootchain up` in l's main namespace for t and stops it
// when t ends, printing the tail of its log if t failed.
func startStack(t *testing.T, ctx context.Context, l *lab.Lab, cfg StackConfig) *Stack {
	t.Helper()
	st, err := StartStack(ctx, l, l.Main(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("launcher log (tail):\n%s", tail(st.Log(), 6000))
		}
		st.Stop()
	})
	return st
}

func newChainEnv(t *testing.T, ctx context.Context, rd *Initrd, o chainOpts) *chainEnv {
	t.Helper()
	tl := buildTools(t)
	// IPv6 on: dhcpd's router-advertisement responder needs link-local addresses.
	l := lab.NewT(t, lab.Config{IPv6: true, KeepDir: os.Getenv("BOOTCHAIN_E2E_KEEP") != ""})
	tap, err := l.AddTap(ctx, "tap0")
	if err != nil {
		t.Fatal(err)
	}
	traces, otlpEndpoint := startTraceBackend(t, ctx, l, o)

	args := []string{
		"--dhcpd-interface", l.Bridge(),
		"--dhcpd-subnet", "198.18.0.0/24",
		// Longer than any quiet stretch of a good boot under TCG on a loaded
		// machine (kernel start to first callback took 33 s here): past it the
		// boot is diagnosed NO_CALLBACK and its job failed. The failed-boot case
		// (a 404) is diagnosed at once.
		"--bootapi-stall-after", "3m",
	}
	if o.proxy {
		args = append(args, "--dhcpd-mode", "proxy")
		if _, err := StartDnsmasq(ctx, l, l.Main(), DnsmasqConfig{
			Dir:        filepath.Join(l.Dir(), "dnsmasq"),
			Interface:  l.Bridge(),
			RangeStart: netip.MustParseAddr("198.18.0.50"),
			RangeEnd:   netip.MustParseAddr("198.18.0.90"),
			NoPing:     true,
		}); err != nil {
			t.Fatal(err)
		}
	} else if !o.noPool4 {
		args = append(args, "--dhcpd-pool", "198.18.0.100-198.18.0.200")
	}
	if o.chainload {
		args = append(args, "--dhcpd-chainload-own-ipxe")
	}
	args = append(args, o.args...)
	st := startStack(t, ctx, l, StackConfig{
		Tools: tl, Dir: filepath.Join(l.Dir(), "bootchain"), Args: args, DHCP: true,
		Env: []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlpEndpoint,
			"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
			"OTEL_BSP_SCHEDULE_DELAY=200",
		},
	})
	return &chainEnv{t: t, l: l, tap: tap, stack: st, traces: traces, rd: rd}
}

func (e *chainEnv) bootapi() *grpc.ClientConn {
	cc, err := e.stack.Conn("bootapi")
	if err != nil {
		e.t.Fatal(err)
	}
	return cc
}

// watchJobs streams the machine's job states (consecutive duplicates folded).
func (e *chainEnv) watchJobs(ctx context.Context, mac string) *jobWatch {
	w := &jobWatch{changed: make(chan struct{})}
	stream, err := bootapiv1.NewJobServiceClient(e.bootapi()).WatchJobs(ctx, &bootapiv1.WatchJobsRequest{Mac: mac})
	if err != nil {
		e.t.Fatal(err)
	}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			j := r.GetJob()
			w.mu.Lock()
			if n := len(w.states[j.GetId()]); n == 0 || w.states[j.GetId()][n-1] != j.GetState() {
				if w.states == nil {
					w.states = map[string][]bootapiv1.JobState{}
				}
				w.states[j.GetId()] = append(w.states[j.GetId()], j.GetState())
			}
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
	}()
	return w
}

type jobWatch struct {
	mu      sync.Mutex
	states  map[string][]bootapiv1.JobState
	changed chan struct{}
}

// provisionJob registers macs with the env's kernel and initrd and creates a
// reinstall job, watched from before it exists.
func (e *chainEnv) provisionJob(ctx context.Context, macs string) (*jobWatch, string) {
	t := e.t
	t.Helper()
	if _, err := e.stack.Provision(ctx, BootConfig{MAC: macs, Initrd: e.rd, NoJob: true}); err != nil {
		t.Fatal(err)
	}
	watch := e.watchJobs(ctx, macs)
	job, err := e.stack.CreateJob(ctx, macs, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	return watch, job
}

func (w *jobWatch) wait(ctx context.Context, id string, want bootapiv1.JobState) ([]bootapiv1.JobState, error) {
	for {
		w.mu.Lock()
		got := append([]bootapiv1.JobState(nil), w.states[id]...)
		ch := w.changed
		w.mu.Unlock()
		if len(got) > 0 && got[len(got)-1] == want {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return got, fmt.Errorf("job %s: waiting for %v: %w (states so far %v)", id, want, ctx.Err(), got)
		case <-ch:
		}
	}
}

// session returns the machine's latest boot session.
func (e *chainEnv) session(ctx context.Context, mac string) *bootapiv1.BootSession {
	r, err := bootapiv1.NewSessionServiceClient(e.bootapi()).GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
	if err != nil {
		return nil
	}
	return r.GetSession()
}

// waitSession polls the machine's session until ok holds.
func (e *chainEnv) waitSession(ctx context.Context, mac string, ok func(*bootapiv1.BootSession) bool) (*bootapiv1.BootSession, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var s *bootapiv1.BootSession
	for {
		if s = e.session(ctx, mac); s != nil && ok(s) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("session of %s: %w; last seen:\n%s", mac, ctx.Err(), describeSession(s))
		case <-tick.C:
		}
	}
}

func describeSession(s *bootapiv1.BootSession) string {
	if s == nil {
		return "(none)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "trace %s state %v failed_hop %q message %q job %s ip %s\n", s.GetTraceId(), s.GetState(), s.GetFailedHop(), s.GetMessage(), s.GetJobId(), s.GetIp())
	for _, h := range s.GetHops() {
		fmt.Fprintf(&b, "  %s %-13s %-13s failed=%v bytes=%d %s\n", h.GetStartTime().AsTime().Format("15:04:05.000"), h.GetName(), h.GetService(), h.GetFailed(), h.GetBytes(), h.GetDetail())
	}
	return b.String()
}

func hopNames(s *bootapiv1.BootSession) []string {
	var out []string
	for _, h := range s.GetHops() {
		out = append(out, h.GetName())
	}
	return out
}

// bootVM starts the VM and fails the test with its serial log if ctx's wait fails.
func (e *chainEnv) bootVM(name string, fw Firmware, mac net.HardwareAddr) *VM {
	e.t.Helper()
	vm, err := StartVM(e.l, e.l.Main(), VMConfig{Name: name, Firmware: fw, NoNICROM: fw == UEFI, MAC: mac, Tap: e.tap, QMP: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { vm.Kill() })
	return vm
}

// checkTrace waits for the session's trace at the OTLP receiver and checks that it
// holds every hop of BootHops, in that order, each from its service, all children of
// the session's root span. It returns the trace's spans.
func (e *chainEnv) checkTrace(ctx context.Context, s *bootapiv1.BootSession, kernel, initrd string) []Span {
	e.t.Helper()
	return e.checkTraceOrder(ctx, s, BootHops, kernel, initrd)
}

// checkTraceOrder is checkTrace with another order of hops (another firmware path).
func (e *chainEnv) checkTraceOrder(ctx context.Context, s *bootapiv1.BootSession, order []HopWant, kernel, initrd string) []Span {
	t := e.t
	t.Helper()
	match := func(spans []Span) string { return MissingHopIn(order, spans, kernel, initrd) }
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	spans, err := e.traces.WaitTrace(wctx, s.GetTraceId(), func(sp []Span) bool { return match(sp) == "" })
	var b strings.Builder
	root := ""
	for _, sp := range spans {
		fmt.Fprintf(&b, "  %s %-24s %-14s parent=%s err=%v %v\n", sp.Start.Format("15:04:05.000"), sp.Service, sp.Name, sp.ParentID, sp.Error, sp.Attrs["url.path"])
		if strings.HasPrefix(sp.Name, "boot ") {
			root = sp.SpanID
		}
	}
	if err != nil {
		// Say where the missing hop went, if it was exported in another trace.
		miss := match(spans)
		var elsewhere []string
		for _, sp := range e.traces.All() {
			if sp.TraceID != s.GetTraceId() && sp.Attrs["bootchain.mac"] == s.GetMac() {
				elsewhere = append(elsewhere, sp.Service+"/"+sp.Name+"@"+sp.TraceID[:8])
			}
		}
		t.Fatalf("trace %s lacks %s; spans in order:\n%s\nspans of this MAC in other traces: %v\nsession:\n%s", s.GetTraceId(), miss, b.String(), elsewhere, describeSession(s))
	}
	if root == "" {
		t.Errorf("trace %s has no root span \"boot <mac>\"; spans:\n%s", s.GetTraceId(), b.String())
	}
	for _, sp := range spans {
		if sp.SpanID != root && sp.ParentID != root && sp.Attrs["bootchain.hop"] != "" {
			t.Errorf("hop %s (%s) is not a child of the session root %s", sp.Name, sp.Service, root)
		}
	}
	for _, p := range traceTreeProblems(spans, s.GetMac()) {
		t.Errorf("trace %s: %s", s.GetTraceId(), p)
	}
	t.Logf("trace %s, %d spans:\n%s", s.GetTraceId(), len(spans), b.String())
	return spans
}

func chainPrereqs(t *testing.T) *Initrd {
	t.Helper()
	needQEMU(t)
	needInitrdTools(t)
	for _, p := range []string{"/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/ipxe.efi", DefaultOVMFCode, DefaultOVMFVars} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (scripts/install-deps.sh)", err)
		}
	}
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rd, err := BuildInitrd(ctx, InitrdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

// TestChainBIOS boots a SeaBIOS VM through the whole chain with bootchain's dhcpd
// authoritative and chain-loading its own undionly.kpxe over TFTP, then boots it
// again (the default: local disk, no reinstall), then makes a reinstall fail by
// deleting its initrd and checks the session says so, naming the hop.
func TestChainBIOS(t *testing.T) {
	rd := chainPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, rd, chainOpts{chainload: true})
	const macs = "52:54:00:bc:e2:01"
	mac, _ := net.ParseMAC(macs)
	watch, job := e.provisionJob(ctx, macs)

	// Boot 1: the reinstall.
	vm := e.bootVM("bios1", BIOS, mac)
	bctx, bcancel := context.WithTimeout(ctx, 3*time.Minute)
	states, err := watch.wait(bctx, job, bootapiv1.JobState_JOB_STATE_SUCCEEDED)
	bcancel()
	if err != nil {
		s := e.session(ctx, macs)
		t.Fatalf("%v\nsession:\n%s\nserial:\n%s", err, describeSession(s), tail(vm.Serial(), 3000))
	}
	if _, err := vm.Wait(ctx); err != nil {
		t.Errorf("VM after succeeded: %v", err)
	}
	t.Logf("boot 1: power-on to power-off %v", time.Since(vm.Started).Round(time.Millisecond))
	want := []bootapiv1.JobState{bootapiv1.JobState_JOB_STATE_PENDING, bootapiv1.JobState_JOB_STATE_DISPATCHED, bootapiv1.JobState_JOB_STATE_RUNNING, bootapiv1.JobState_JOB_STATE_SUCCEEDED}
	if fmt.Sprint(states) != fmt.Sprint(want) {
		t.Errorf("job states %v, want %v", states, want)
	}
	s1, err := e.waitSession(ctx, macs, func(s *bootapiv1.BootSession) bool {
		return s.GetState() == bootapiv1.SessionState_SESSION_STATE_SUCCEEDED && strings.Count(strings.Join(hopNames(s), " "), "callback") == 2
	})
	if err != nil {
		t.Fatal(err)
	}
	if s1.GetJobId() != job {
		t.Errorf("session job %q, want %q", s1.GetJobId(), job)
	}
	t.Logf("boot 1 session:\n%s", describeSession(s1))
	e.checkTrace(ctx, s1, "e2e/vmlinuz", "e2e/initrd.gz")

	// Boot 2: same VM, no job: the machine's default (local disk), a new session.
	vm2 := e.bootVM("bios2", BIOS, mac)
	s2, err := e.waitSession(ctx, macs, func(s *bootapiv1.BootSession) bool {
		return s.GetTraceId() != s1.GetTraceId() && s.GetState() == bootapiv1.SessionState_SESSION_STATE_SUCCEEDED
	})
	if err != nil {
		cur := e.session(ctx, macs)
		t.Fatalf("second boot: %v\nserial:\n%s\nsession now:\n%s", err, tail(vm2.Serial(), 2000), describeSession(cur))
	}
	vm2.Kill()
	if !strings.Contains(s2.GetMessage(), "local disk") || s2.GetJobId() != "" {
		t.Errorf("second boot: message %q job %q, want the default (local disk) and no job", s2.GetMessage(), s2.GetJobId())
	}
	if g, err := bootapiv1.NewJobServiceClient(e.bootapi()).GetJob(ctx, &bootapiv1.GetJobRequest{Id: job}); err != nil || g.GetJob().GetState() != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("job after the second boot: %v %v", g.GetJob().GetState(), err)
	}
	t.Logf("boot 2 session:\n%s", describeSession(s2))

	// Boot 3: a reinstall whose initrd was deleted (with force) fails at the
	// initrd download; the session ends failed, naming the artifact hop.
	rdBytes, err := os.ReadFile(rd.Path)
	if err != nil {
		t.Fatal(err)
	}
	rdSum := sha256.Sum256(rdBytes)
	for _, st := range [][]string{
		{"artifacts", "upload", rd.Path, "--name", "e2e/initrd-gone.gz"},
		{"profiles", "create", "e2e-broken", "-kernel", "e2e/vmlinuz", "-initrd", "e2e/initrd-gone.gz", "-cmdline", "console=ttyS0 panic=1"},
		// Forcing past a profile's reference names the content deleted.
		{"artifacts", "delete", "e2e/initrd-gone.gz", "--force", "--sha256", hex.EncodeToString(rdSum[:])},
	} {
		if out, err := e.stack.Bootctl(ctx, st...); err != nil {
			t.Fatalf("bootctl %v: %v: %s", st, err, out)
		}
	}
	job3, err := e.stack.CreateJob(ctx, macs, "e2e-broken")
	if err != nil {
		t.Fatal(err)
	}
	vm3 := e.bootVM("bios3", BIOS, mac)
	s3, err := e.waitSession(ctx, macs, func(s *bootapiv1.BootSession) bool {
		for _, h := range s.GetHops() {
			if h.GetName() == "artifact" && h.GetFailed() && s.GetTraceId() != s2.GetTraceId() {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("failed boot: %v\nserial:\n%s", err, tail(vm3.Serial(), 2000))
	}
	// The machine stops here (as a machine whose disk is being rewritten would).
	vm3.Kill()
	sctx, scancel := context.WithTimeout(ctx, 90*time.Second)
	s3, err = e.waitSession(sctx, macs, func(s *bootapiv1.BootSession) bool {
		return s.GetTraceId() == s3.GetTraceId() && s.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE && s.GetDiagnosis() != nil
	})
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	if s3.GetState() != bootapiv1.SessionState_SESSION_STATE_FAILED || s3.GetFailedHop() != "artifact" || !strings.Contains(s3.GetMessage(), "initrd-gone") {
		t.Errorf("failed boot session: state %v hop %q message %q; want failed at hop artifact naming the initrd", s3.GetState(), s3.GetFailedHop(), s3.GetMessage())
	}
	if s3.GetJobId() != job3 {
		t.Errorf("failed boot session job %q, want %q", s3.GetJobId(), job3)
	}
	// The diagnosis names the hop and the cause, and the job failed with it at
	// once, not when its hour ran out.
	if d := s3.GetDiagnosis(); d.GetClass() != bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND || d.GetHop() != "artifact" || !strings.Contains(d.GetCause(), "e2e/initrd-gone.gz answered 404") {
		t.Errorf("failed boot diagnosis %v, want ARTIFACT_NOT_FOUND at artifact naming the initrd", d)
	}
	if r, err := bootapiv1.NewJobServiceClient(e.bootapi()).GetJob(ctx, &bootapiv1.GetJobRequest{Id: job3}); err != nil ||
		r.GetJob().GetState() != bootapiv1.JobState_JOB_STATE_FAILED || !strings.HasPrefix(r.GetJob().GetMessage(), "artifact_not_found at artifact:") {
		t.Errorf("failed boot's job: %v %v; want failed with the diagnosis", r.GetJob(), err)
	}
	out, err := e.stack.Bootctl(ctx, "trace", macs)
	if err != nil {
		t.Fatalf("bootctl trace: %v: %s", err, out)
	}
	t.Logf("bootctl trace %s:\n%s", macs, out)
	for _, w := range []string{"HOP", "SERVICE", "DURATION", "BYTES", "OUTCOME", "failed at hop artifact", "artifactstore", "FAILED", "script", "bootapi", "e2e/vmlinuz"} {
		if !strings.Contains(out, w) {
			t.Errorf("bootctl trace output lacks %q", w)
		}
	}
}

// TestChainUEFIProxy boots an OVMF VM whose NIC has no option ROM, so the
// firmware's own PXE client does DHCP and TFTP, in a network where dnsmasq hands
// out the addresses and bootchain's dhcpd runs in proxy mode.
func TestChainUEFIProxy(t *testing.T) {
	rd := chainPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, rd, chainOpts{proxy: true})
	const macs = "52:54:00:bc:e2:02"
	mac, _ := net.ParseMAC(macs)
	watch, job := e.provisionJob(ctx, macs)
	vm := e.bootVM("uefi1", UEFI, mac)
	bctx, bcancel := context.WithTimeout(ctx, 3*time.Minute)
	states, err := watch.wait(bctx, job, bootapiv1.JobState_JOB_STATE_SUCCEEDED)
	bcancel()
	if err != nil {
		shot := filepath.Join(t.TempDir(), "screen.png")
		vm.Screendump(ctx, shot)
		t.Fatalf("%v\nsession:\n%s\nserial:\n%s", err, describeSession(e.session(ctx, macs)), tail(vm.Serial(), 3000))
	}
	if _, err := vm.Wait(ctx); err != nil {
		t.Errorf("VM after succeeded: %v", err)
	}
	t.Logf("UEFI boot: power-on to power-off %v", time.Since(vm.Started).Round(time.Millisecond))
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
	t.Logf("UEFI session:\n%s", describeSession(s))
	// The firmware asked for the UEFI iPXE over TFTP.
	var tftp string
	for _, h := range s.GetHops() {
		if h.GetName() == "tftp" && !h.GetFailed() && h.GetBytes() > 0 {
			tftp = h.GetDetail()
		}
	}
	if !strings.Contains(tftp, "ipxe.efi") && !strings.Contains(tftp, "snponly.efi") {
		t.Errorf("no successful TFTP transfer of ipxe.efi/snponly.efi in the session (last: %q)", tftp)
	}
	e.checkTrace(ctx, s, "e2e/vmlinuz", "e2e/initrd.gz")
}
