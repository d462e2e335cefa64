package session_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// newRecorder runs a recorder whose spans go to exp (nil: no TracerProvider, so
// no spans) until the test ends.
func newRecorder(t *testing.T, st *store.Store, service string, exp *tracetest.InMemoryExporter) *session.Recorder {
	t.Helper()
	cfg := session.Config{Store: st, Service: service, Site: "lab"}
	if exp != nil {
		cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	}
	r, err := session.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestOneTraceAcrossServices opens a session in one recorder ("dhcpd"), continues it
// from another ("bootapi") through etcd, and checks that every hop is a span of the
// same trace and a record on the session.
func TestOneTraceAcrossServices(t *testing.T) {
	e := storetest.Start(t)
	exp := tracetest.NewInMemoryExporter()
	dhcp := newRecorder(t, e.Client(t), "dhcpd", exp)
	api := newRecorder(t, e.Client(t), "bootapi", exp)
	ctx := context.Background()
	const mac = "52:54:00:12:34:56"

	s := dhcp.Open(ctx, mac, session.OpenOptions{New: true, IP: "198.18.0.10"})
	_, hop := s.StartHop(ctx, "dhcp.discover")
	hop.SetDetail("offer 198.18.0.10")
	hop.End()
	if again := dhcp.Open(ctx, mac, session.OpenOptions{}); again.TraceID() != s.TraceID() {
		t.Fatalf("second Open started a new trace")
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := dhcp.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	var joined *session.Session
	for joined == nil {
		if js, ok := api.Join(mac); ok {
			joined = js
			break
		}
		select {
		case <-wctx.Done():
			t.Fatal("bootapi never saw the session")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if joined.TraceID() != s.TraceID() {
		t.Fatalf("joined trace %s, opened %s", joined.TraceID(), s.TraceID())
	}
	if byIP, ok := api.FindByIP("198.18.0.10"); !ok || byIP.GetMac() != mac {
		t.Fatalf("FindByIP: %v %v", byIP, ok)
	}
	_, h2 := joined.StartHop(ctx, "script")
	h2.Fail(errors.New("no such profile"))
	h2.End()
	if err := api.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	got, ok := dhcp.Get(ctx, mac)
	if !ok {
		t.Fatal("no session")
	}
	if len(got.Hops) != 2 || got.Hops[0].Name != "dhcp.discover" || got.Hops[1].Name != "script" || !got.Hops[1].Failed {
		t.Fatalf("hops: %v", got.Hops)
	}
	for _, sp := range exp.GetSpans() {
		if sp.SpanContext.TraceID().String() != s.TraceID() {
			t.Errorf("span %q in trace %s, want %s", sp.Name, sp.SpanContext.TraceID(), s.TraceID())
		}
	}
	if n := len(exp.GetSpans()); n != 3 {
		t.Errorf("spans: %d, want 3 (root + 2 hops)", n)
	}

	// (Failed and stalled sessions are diagnosed by bootapi's diagnoser:
	// services/bootapi/diagnosis_test.go.)
	head := &bootapiv1.BootSession{}
	if _, err := e.Client(t).Get(ctx, store.Key("sessions", mac), head); err != nil {
		t.Fatal(err)
	}
	if len(head.Hops) != 0 {
		t.Errorf("hops stored inside the session record: %d", len(head.Hops))
	}
}

// TestManyMachinesConcurrently records sessions of machines spread over the shards
// from concurrent goroutines, as a busy script endpoint does: after Flush every
// session and every hop is in etcd, each session is found by its IP and by its
// traceparent alone, and a second recorder (another replica) reads the same.
func TestManyMachinesConcurrently(t *testing.T) {
	e := storetest.Start(t)
	exp := tracetest.NewInMemoryExporter()
	api := newRecorder(t, e.Client(t), "bootapi", exp)
	ctx := context.Background()
	const machines, workers, hopsEach = 300, 8, 3
	macOf := func(i int) string { return fmt.Sprintf("52:54:00:aa:%02x:%02x", i>>8, i&0xff) }
	ipOf := func(i int) string { return fmt.Sprintf("198.18.%d.%d", 10+i>>8, i&0xff) }
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < machines; i += workers {
				s := api.Open(ctx, macOf(i), session.OpenOptions{IP: ipOf(i)})
				for k := 0; k < hopsEach; k++ {
					_, h := s.StartHop(ctx, fmt.Sprintf("step%d", k))
					h.SetDetail(fmt.Sprintf("machine %d step %d", i, k))
					h.End()
				}
				s.Finish(bootapiv1.SessionState_SESSION_STATE_SUCCEEDED, "", "done")
			}
		}()
	}
	wg.Wait()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := api.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	if n := api.Dropped.Load(); n != 0 {
		t.Fatalf("%d changes dropped", n)
	}
	other := newRecorder(t, e.Client(t), "dhcpd", tracetest.NewInMemoryExporter())
	for i := 0; i < machines; i++ {
		mac := macOf(i)
		got, ok := api.Get(ctx, mac)
		if !ok {
			t.Fatalf("%s: no session", mac)
		}
		if got.GetState() != bootapiv1.SessionState_SESSION_STATE_SUCCEEDED || got.GetIp() != ipOf(i) || len(got.GetHops()) != hopsEach {
			t.Fatalf("%s: state %v ip %q hops %d", mac, got.GetState(), got.GetIp(), len(got.GetHops()))
		}
		if byIP, ok := api.FindByIP(ipOf(i)); !ok || byIP.GetMac() != mac {
			t.Fatalf("FindByIP(%s) = %v, %v", ipOf(i), byIP.GetMac(), ok)
		}
		if s, ok := api.FromTraceparent(got.GetTraceparent(), ""); !ok || s.MAC != mac {
			t.Fatalf("FromTraceparent for %s: %v %v", mac, s, ok)
		}
		if err := other.Cache().WaitRevision(wctx, api.Cache().Revision()); err != nil {
			t.Fatal(err)
		}
		if o, ok := other.Get(ctx, mac); !ok || o.GetTraceId() != got.GetTraceId() || len(o.GetHops()) != hopsEach {
			t.Fatalf("%s from another replica: %v", mac, o)
		}
	}
}

// TestSessionWritesShareTransactions opens sessions for many machines at once,
// as a fleet powering on does, and checks that they reach etcd in shared
// transactions (a transaction's keys share its revision), not one each.
func TestSessionWritesShareTransactions(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	r := newRecorder(t, st, "bootapi", nil)
	ctx := context.Background()
	const machines = 256
	for i := 0; i < machines; i++ {
		r.Open(ctx, fmt.Sprintf("52:54:00:bb:%02x:%02x", i>>8, i&0xff), session.OpenOptions{IP: fmt.Sprintf("198.18.1.%d", i)})
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := r.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Client().Get(wctx, store.Prefix("sessions"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != machines {
		t.Fatalf("%d sessions in etcd, want %d", len(resp.Kvs), machines)
	}
	revs := map[int64]bool{}
	for _, kv := range resp.Kvs {
		revs[kv.ModRevision] = true
	}
	// Opens gather for 20 ms before a write; 64 sessions share a transaction.
	t.Logf("%d sessions written in %d transactions", machines, len(revs))
	if len(revs) > machines/8 {
		t.Errorf("%d sessions written in %d transactions", machines, len(revs))
	}
}
