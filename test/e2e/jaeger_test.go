//go:build linux

package e2e

import (
	"context"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// TestChainJaeger boots a SeaBIOS VM through the whole chain (bootchain's dhcpd
// authoritative, chain-loading its own undionly.kpxe) with `bootchain up`
// exporting OTLP to a real Jaeger in the lab, then reads the boot's trace back
// from Jaeger's query API: every hop, from the service that handled it, under the
// session's one root, no orphans; and Jaeger lists the four services and finds
// the trace by each of them.
func TestChainJaeger(t *testing.T) {
	rd := chainPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, rd, chainOpts{chainload: true, jaeger: true})
	j := e.traces.(*Jaeger)
	const macs = "52:54:00:bc:e2:0a"
	mac, _ := net.ParseMAC(macs)
	if _, err := e.stack.Provision(ctx, BootConfig{MAC: macs, Initrd: rd, NoJob: true}); err != nil {
		t.Fatal(err)
	}
	watch := e.watchJobs(ctx, macs)
	job, err := e.stack.CreateJob(ctx, macs, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	vm := e.bootVM("jaeger1", BIOS, mac)
	bctx, bcancel := context.WithTimeout(ctx, 3*time.Minute)
	_, err = watch.wait(bctx, job, bootapiv1.JobState_JOB_STATE_SUCCEEDED)
	bcancel()
	if err != nil {
		t.Fatalf("%v\nsession:\n%s\nserial:\n%s", err, describeSession(e.session(ctx, macs)), tail(vm.Serial(), 3000))
	}
	s, err := e.waitSession(ctx, macs, func(s *bootapiv1.BootSession) bool {
		return s.GetState() == bootapiv1.SessionState_SESSION_STATE_SUCCEEDED && strings.Count(strings.Join(hopNames(s), " "), "callback") == 2
	})
	if err != nil {
		t.Fatal(err)
	}
	// The trace ID the session carries is the one in its traceparent, the header
	// the kernel's callbacks send back.
	if tp := s.GetTraceparent(); !strings.Contains(tp, "-"+s.GetTraceId()+"-") {
		t.Fatalf("session traceparent %q does not carry its trace ID %s", tp, s.GetTraceId())
	}
	// Every hop from its service, one root, no orphans: read from Jaeger.
	e.checkTrace(ctx, s, "e2e/vmlinuz", "e2e/initrd.gz")

	spans, err := j.Trace(ctx, s.GetTraceId())
	if err != nil {
		t.Fatal(err)
	}
	bySvc := map[string]int{}
	for _, sp := range spans {
		bySvc[sp.Service]++
	}
	svcs, err := j.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(svcs)
	for _, want := range []string{"bootchain-dhcpd", "bootchain-tftpd", "bootchain-bootapi", "bootchain-artifactstore"} {
		if bySvc[want] == 0 {
			t.Errorf("trace %s has no span of %s (by service: %v)", s.GetTraceId(), want, bySvc)
		}
		if !slices.Contains(svcs, want) {
			t.Errorf("jaeger's services %v lack %s", svcs, want)
		}
		// What an operator does in Jaeger: pick the service, find the boot.
		found, err := j.Find(ctx, want)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(found, func(sp Span) bool { return sp.TraceID == s.GetTraceId() }) {
			t.Errorf("searching jaeger by service %s does not find trace %s", want, s.GetTraceId())
		}
	}
	t.Logf("jaeger: trace %s has %d spans, by service %v; services %v; query http://%s%s",
		s.GetTraceId(), len(spans), bySvc, svcs, j.QueryAddr(), TracePath(s.GetTraceId()))
}
