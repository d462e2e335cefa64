package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

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
	if hop := got.GetHops()[0]; hop.GetDetail() != "menu" || hop.GetRepeats() != 3 || hop.GetBytes() != 873 {
		t.Fatalf("hop %v, want menu, 873 bytes, 3 repeats", hop)
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
