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

	// A session whose last hop failed ends as failed, naming the hop.
	for api.MarkStalled(wctx, 0, time.Now().Add(time.Second)) == 0 {
		select {
		case <-wctx.Done():
			t.Fatal("nothing marked")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := api.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	head := &bootapiv1.BootSession{}
	if _, err := e.Client(t).Get(ctx, store.Key("sessions", mac), head); err != nil {
		t.Fatal(err)
	}
	if len(head.Hops) != 0 {
		t.Errorf("hops stored inside the session record: %d", len(head.Hops))
	}
	got = head
	if got.State != bootapiv1.SessionState_SESSION_STATE_FAILED || got.FailedHop != "script" {
		t.Fatalf("state %v hop %q", got.State, got.FailedHop)
	}
}

func TestTraceparentRoundTrip(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	sc, err := session.Parse(tp)
	if err != nil {
		t.Fatal(err)
	}
	if got := session.Format(sc); got != tp {
		t.Fatalf("Format(Parse(%q)) = %q", tp, got)
	}
	for _, bad := range []string{"", "00-xyz", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz"} {
		if _, err := session.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func FuzzParseTraceparent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("00--")
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := session.Parse(s)
		if err != nil {
			return
		}
		if back, err := session.Parse(session.Format(sc)); err != nil || back.TraceID() != sc.TraceID() || back.SpanID() != sc.SpanID() {
			t.Fatalf("round trip of %q failed: %v", s, err)
		}
	})
}

// TestRepeatsFold checks that identical hops in quick succession (iPXE fetching
// its script in a loop) become one record with a count, that every one still has
// its span, and that a hop with another outcome starts a record of its own.
func TestRepeatsFold(t *testing.T) {
	e := storetest.Start(t)
	exp := tracetest.NewInMemoryExporter()
	api := newRecorder(t, e.Client(t), "bootapi", exp)
	ctx := context.Background()
	const mac = "52:54:00:12:34:57"
	s := api.Open(ctx, mac, session.OpenOptions{New: true})
	hop := func(detail string) {
		_, h := s.StartHop(ctx, "script")
		h.SetDetail(detail)
		h.SetAttr("bootchain.decision", detail)
		h.End()
	}
	for i := 0; i < 5; i++ {
		hop("menu")
	}
	hop("job j1 profile p")
	hop("job j1 profile p")
	hop("menu")
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := api.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	got, ok := api.Get(ctx, mac)
	if !ok {
		t.Fatal("no session")
	}
	type rec struct {
		detail  string
		repeats uint32
	}
	var recs []rec
	for _, h := range got.GetHops() {
		recs = append(recs, rec{h.GetDetail(), h.GetRepeats()})
		if h.GetRepeats() > 0 && !h.GetLastRepeatTime().AsTime().After(h.GetStartTime().AsTime()) {
			t.Errorf("hop %q: last repeat %v not after start %v", h.GetDetail(), h.GetLastRepeatTime().AsTime(), h.GetStartTime().AsTime())
		}
	}
	want := []rec{{"menu", 4}, {"job j1 profile p", 1}, {"menu", 0}}
	if len(recs) != len(want) {
		t.Fatalf("records %v, want %v", recs, want)
	}
	for i := range want {
		if recs[i] != want[i] {
			t.Fatalf("records %v, want %v", recs, want)
		}
	}
	if n := len(exp.GetSpans()); n != 9 {
		t.Errorf("spans: %d, want 9 (root + 8 hops: folding keeps every span)", n)
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

// TestRepeatWithoutSpans checks the allocation-free path for a machine looping on
// one request when nothing is exported: Repeat counts only true repeats of the run
// in progress, and the counts reach etcd as with StartHop and End. With spans,
// Repeat declines (every request is a span of its own).
func TestRepeatWithoutSpans(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	r := newRecorder(t, st, "bootapi", nil)
	ctx := context.Background()
	const mac = "52:54:00:12:34:58"
	s := r.Open(ctx, mac, session.OpenOptions{New: true})
	if r.Spans() {
		t.Fatal("Spans() with no TracerProvider")
	}
	if s.Repeat("script", "menu", 873, time.Now()) {
		t.Fatal("Repeat with no run in progress")
	}
	_, h := s.StartHop(ctx, "script")
	h.SetDetail("menu")
	h.SetBytes(873)
	h.End()
	for i := 0; i < 3; i++ {
		if !s.Repeat("script", "menu", 873, time.Now()) {
			t.Fatalf("repeat %d not counted", i+1)
		}
	}
	// Repeats counted elsewhere (bootapi's memo of an answer) come in bulk.
	if s.RepeatN("script", "menu", 873, time.Now(), 0) {
		t.Fatal("RepeatN of nothing counted")
	}
	if !s.RepeatN("script", "menu", 873, time.Now(), 4) {
		t.Fatal("RepeatN of 4 not counted")
	}
	for _, c := range []struct {
		name, detail string
		bytes        int64
		end          time.Time
	}{
		{"script", "menu (2 profiles)", 873, time.Now()},
		{"script", "menu", 874, time.Now()},
		{"report", "menu", 873, time.Now()},
		{"script", "menu", 873, time.Now().Add(session.RepeatWindow + time.Second)},
	} {
		if s.Repeat(c.name, c.detail, c.bytes, c.end) {
			t.Errorf("Repeat(%q, %q, %d, +%s) counted as a repeat", c.name, c.detail, c.bytes, time.Until(c.end).Round(time.Second))
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	got, ok := newRecorder(t, st, "bootctl", tracetest.NewInMemoryExporter()).Get(ctx, mac)
	if !ok || len(got.GetHops()) != 1 {
		t.Fatalf("session %v, want one hop record", got)
	}
	if hop := got.GetHops()[0]; hop.GetDetail() != "menu" || hop.GetRepeats() != 7 || hop.GetBytes() != 873 {
		t.Fatalf("hop %v, want menu, 873 bytes, 7 repeats", hop)
	}

	// A request from another address moves the session's IP; the same one again
	// changes nothing.
	for _, ip := range []string{"198.18.0.20", "198.18.0.21", "198.18.0.21"} {
		r.Open(ctx, mac, session.OpenOptions{IP: ip})
		if got, _ := r.Get(ctx, mac); got.GetIp() != ip {
			t.Fatalf("session IP %q after a request from %s", got.GetIp(), ip)
		}
	}

	exp := tracetest.NewInMemoryExporter()
	withSpans := newRecorder(t, st, "bootapi", exp)
	s2 := withSpans.Open(ctx, "52:54:00:12:34:59", session.OpenOptions{New: true})
	_, h2 := s2.StartHop(ctx, "script")
	h2.SetDetail("menu")
	h2.End()
	if !withSpans.Spans() || s2.Repeat("script", "menu", 0, time.Now()) {
		t.Fatal("Repeat counted a hop that is exported as a span")
	}
}

// A caller that hands Open its last handle (OpenOptions.Last) gets the same
// session as a lookup would give, also after the machine was forgotten (its
// session deleted in etcd) and came back: the old handle does not open a new
// session on every request.
func TestOpenWithLastHandle(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	r := newRecorder(t, st, "bootapi", nil)
	ctx := context.Background()
	const mac, other = "52:54:00:12:34:60", "52:54:00:12:34:61"
	s1 := r.Open(ctx, mac, session.OpenOptions{})
	if again := r.Open(ctx, mac, session.OpenOptions{Last: s1}); again != s1 {
		t.Fatalf("Open with its own last handle: another session %s, want %s", again.TraceID(), s1.TraceID())
	}
	if o := r.Open(ctx, other, session.OpenOptions{Last: s1}); o.MAC != other || o.TraceID() == s1.TraceID() {
		t.Fatalf("another MAC's handle was used: %s %s", o.MAC, o.TraceID())
	}

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.Flush(wctx); err != nil {
		t.Fatal(err)
	}
	// Once the cache holds the write, the recorder drops its own copy (on a
	// read); the delete then leaves nothing of the machine to keep.
	resp, err := st.Client().Get(wctx, store.Prefix("sessions")+mac)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("session not in etcd: %v", err)
	}
	if err := r.Cache().WaitRevision(wctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	r.Get(ctx, mac)
	if _, err := st.Client().Delete(wctx, store.Prefix("sessions")+mac); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := r.Get(ctx, mac); !ok {
			break
		}
		select {
		case <-wctx.Done():
			t.Fatal("deleted session still there")
		case <-time.After(10 * time.Millisecond):
		}
	}
	s2 := r.Open(ctx, mac, session.OpenOptions{Last: s1})
	if s2.TraceID() == s1.TraceID() {
		t.Fatal("deleted session reused")
	}
	if s3 := r.Open(ctx, mac, session.OpenOptions{Last: s1}); s3.TraceID() != s2.TraceID() {
		t.Fatalf("a stale handle opened yet another session: %s after %s", s3.TraceID(), s2.TraceID())
	}
	if s4 := r.Open(ctx, mac, session.OpenOptions{}); s4.TraceID() != s2.TraceID() {
		t.Fatalf("lookup found session %s, the handle path %s", s4.TraceID(), s2.TraceID())
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
