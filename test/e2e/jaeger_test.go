//go:build linux

package e2e

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/google/go-cmp/cmp"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	watch, job := e.provisionJob(ctx, macs)
	vm := e.bootVM("jaeger1", BIOS, mac)
	bctx, bcancel := context.WithTimeout(ctx, 3*time.Minute)
	_, err := watch.wait(bctx, job, bootapiv1.JobState_JOB_STATE_SUCCEEDED)
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

// TestJaegerRoundTrip runs Jaeger in a lab namespace (no VM), exports two spans to
// it over OTLP/gRPC and reads them back through the query API, directly and
// through Forward on the host's loopback (what the demo prints).
func TestJaegerRoundTrip(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Jaeger in a lab namespace; skipped with -short")
	}
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	bin := needJaeger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := lab.NewT(t, lab.Config{})
	j, err := StartJaeger(ctx, l, l.Main(), JaegerConfig{Binary: bin, Dir: filepath.Join(l.Dir(), "jaeger")})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Stop()

	const tid, rootID, hopID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "00f067aa0ba902b8"
	id := func(h string) []byte { b, _ := hex.DecodeString(h); return b }
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	start := time.Now().Add(-time.Second)
	req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "bootchain-tftpd")}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{
			{TraceId: id(tid), SpanId: id(rootID), Name: "boot 52:54:00:bc:e2:0b",
				StartTimeUnixNano: uint64(start.UnixNano()), EndTimeUnixNano: uint64(start.UnixNano() + 1000)},
			{TraceId: id(tid), SpanId: id(hopID), ParentSpanId: id(rootID), Name: "tftp",
				StartTimeUnixNano: uint64(start.UnixNano() + 1e6), EndTimeUnixNano: uint64(start.UnixNano() + 5e8),
				Attributes: []*commonpb.KeyValue{str("bootchain.hop", "tftp")},
				Status:     &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "stalled at block 7"}},
		}}},
	}}}
	cc, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(j.OTLPEndpoint(), "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return l.Main().DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := collectorpb.NewTraceServiceClient(cc).Export(ctx, req); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	spans, err := j.WaitTrace(wctx, tid, func(sp []Span) bool { return len(sp) == 2 })
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sp := range spans {
		got = append(got, strings.Join([]string{sp.Service, sp.Name, sp.SpanID, sp.ParentID, sp.Attrs["bootchain.hop"], strconv.FormatBool(sp.Error)}, " "))
	}
	want := []string{
		"bootchain-tftpd boot 52:54:00:bc:e2:0b " + rootID + "   false",
		"bootchain-tftpd tftp " + hopID + " " + rootID + " tftp true",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spans from jaeger (-want +got):\n%s", diff)
	}
	if p := traceTreeProblems(spans, "52:54:00:bc:e2:0b"); len(p) > 0 {
		t.Errorf("tree: %v", p)
	}
	if found, err := j.Find(ctx, "bootchain-tftpd"); err != nil || len(found) != 2 {
		t.Errorf("find by service: %d spans, %v; want 2", len(found), err)
	}
	if none, err := j.Trace(ctx, "0123456789abcdef0123456789abcdef"); err != nil || none != nil {
		t.Errorf("unknown trace: %v, %v; want nil, nil", none, err)
	}

	// The demo's view: the query API forwarded to this host's loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := j.Forward(ln)
	defer stop()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get("http://" + ln.Addr().String() + TracePath(tid))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("forwarded GET: %d %v", resp.StatusCode, err)
	}
	fwd, err := parseOTLPJSON(body)
	if err != nil || len(fwd) != 2 {
		t.Errorf("forwarded trace: %d spans, %v; want 2", len(fwd), err)
	}
	hc.CloseIdleConnections()
	stop()
	if _, err := hc.Get("http://" + ln.Addr().String() + "/api/v3/services"); err == nil {
		t.Error("forwarder still answers after stop")
	}
}
