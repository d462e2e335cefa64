package state

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestSightingsBatched records sightings of registered, new and deleted machines in
// shared transactions, and loses no concurrent change when the cache it compared
// against was behind (the fallback to one read-modify-write each).
func TestSightingsBatched(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := storetest.New(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New(st, log)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	stopped := false
	freeze := func() { // the caches keep what they hold and see no more changes
		if !stopped {
			stop()
			<-done
			stopped = true
		}
	}
	defer freeze()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	const n = sightingBatch + 10 // more than one transaction
	var rev int64
	for i := 0; i < n; i++ {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		r, err := st.Put(ctx, store.Key("machines", mac), &bootapiv1.Machine{Mac: mac, Hostname: fmt.Sprintf("h%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	if err := s.Machines.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}

	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	tc := newSightings(s, log, func() time.Time { return now })
	batch := map[string]sighting{}
	var macs []string
	for i := 0; i < n; i++ {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		batch[mac] = sighting{facts: &bootapiv1.MachineFacts{Arch: "x86_64", Ip: "198.18.0.10"}}
		macs = append(macs, mac)
	}
	newMAC, goneMAC := "52:54:00:00:02:01", "52:54:00:00:02:02"
	batch[newMAC] = sighting{site: "lab", isNew: true}
	batch[goneMAC] = sighting{facts: &bootapiv1.MachineFacts{Arch: "arm64"}} // never registered: not resurrected
	macs = append(macs, newMAC, goneMAC)

	// Change machine 0 behind the cache's back: its batch's compare fails, and the
	// fallback must keep this change as well as record the sighting.
	freeze()
	if _, err := st.Put(ctx, store.Key("machines", macs[0]), &bootapiv1.Machine{Mac: macs[0], Hostname: "renamed"}); err != nil {
		t.Fatal(err)
	}
	for len(macs) > 0 {
		k := min(len(macs), sightingBatch)
		tc.writeBatch(ctx, macs[:k], batch)
		macs = macs[k:]
	}

	for i := 0; i < n; i++ {
		mac := fmt.Sprintf("52:54:00:00:01:%02x", i)
		m := &bootapiv1.Machine{}
		if _, err := st.Get(ctx, store.Key("machines", mac), m); err != nil {
			t.Fatalf("%s: %v", mac, err)
		}
		if !m.GetLastSeenTime().AsTime().Equal(now) || m.GetFacts().GetArch() != "x86_64" {
			t.Errorf("%s: last seen %v, facts %v; want %v, x86_64", mac, m.GetLastSeenTime().AsTime(), m.GetFacts(), now)
		}
		want := fmt.Sprintf("h%d", i)
		if i == 0 {
			want = "renamed"
		}
		if m.GetHostname() != want {
			t.Errorf("%s: hostname %q, want %q (a concurrent change was lost)", mac, m.GetHostname(), want)
		}
	}
	m := &bootapiv1.Machine{}
	if _, err := st.Get(ctx, store.Key("machines", newMAC), m); err != nil {
		t.Fatalf("discovered machine not recorded: %v", err)
	}
	if !m.GetDiscovered() || m.GetSite() != "lab" || !m.GetLastSeenTime().AsTime().Equal(now) {
		t.Errorf("discovered machine = %v", m)
	}
	if _, err := st.Get(ctx, store.Key("machines", goneMAC), &bootapiv1.Machine{}); err == nil {
		t.Errorf("a sighting of an unregistered, undiscovered machine created its record")
	}
}

// TestSightingSeen checks which requests queue a sighting: a machine whose
// record says it was seen recently with the same facts queues none; changed
// facts, another address, an old last-seen time or an unknown machine do. A
// full queue drops a sighting and the next request's goes in.
func TestSightingSeen(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	const mac = "52:54:00:00:03:01"
	f := Facts{IP: "198.18.0.10", Arch: "x86_64", Platform: "pcbios", Product: "Standard PC"}
	seen := &bootapiv1.Machine{Mac: mac, LastSeenTime: timestamppb.New(now.Add(-10 * time.Second)), Facts: f.proto()}
	other := func(change func(*Facts)) Facts { g := f; change(&g); return g }
	for name, tc := range map[string]struct {
		m     *bootapiv1.Machine
		facts Facts
		at    time.Time
		want  bool
	}{
		"seen 10 s ago, same facts":   {seen, f, now, false},
		"changed facts":               {seen, other(func(g *Facts) { g.Arch = "arm64" }), now, true},
		"another address":             {seen, other(func(g *Facts) { g.IP = "198.18.0.11" }), now, true},
		"last seen sightingEvery ago": {seen, f, now.Add(sightingEvery(mac)), true},
		"never seen":                  {&bootapiv1.Machine{Mac: mac}, f, now, true},
		"unknown machine":             {nil, f, now, true},
	} {
		t.Run(name, func(t *testing.T) {
			s := newSightings(nil, log, func() time.Time { return now })
			s.Seen(mac, tc.m, tc.facts, tc.at)
			if _, queued := s.pending[mac]; queued != tc.want {
				t.Errorf("queued %v, want %v", queued, tc.want)
			}
		})
	}

	s := newSightings(nil, log, func() time.Time { return now })
	for i := 0; i < maxPendingSightings; i++ {
		s.pending[fmt.Sprintf("other%d", i)] = sighting{}
	}
	s.Seen(mac, nil, f, now)
	if _, ok := s.pending[mac]; ok || s.Dropped.Load() != 1 {
		t.Fatalf("a sighting went into a full queue (dropped %d)", s.Dropped.Load())
	}
	delete(s.pending, "other0")
	if s.Seen(mac, nil, f, now); s.pending[mac].facts.GetArch() != "x86_64" {
		t.Error("a dropped sighting held back the next request's")
	}
}

// TestSightingEverySpread checks that machines' last-seen rewrites are spread:
// each MAC has its own period within [1 min, 1.5 min).
func TestSightingEverySpread(t *testing.T) {
	periods := map[time.Duration]bool{}
	for i := 0; i < 100; i++ {
		d := sightingEvery(fmt.Sprintf("52:54:00:00:05:%02x", i))
		if d < time.Minute || d >= 90*time.Second {
			t.Fatalf("period %v outside [1m, 1m30s)", d)
		}
		periods[d.Truncate(time.Second)] = true
	}
	if len(periods) < 20 {
		t.Errorf("100 machines share %d periods (whole seconds)", len(periods))
	}
}

// TestSightingsWrittenAtStop: what is still queued when Run's context ends is
// written before Run returns (the HTTP server has stopped by then, so these are
// the last requests' sightings), not dropped.
func TestSightingsWrittenAtStop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := storetest.New(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New(st, log)
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	tc := newSightings(s, log, func() time.Time { return now })
	const mac = "52:54:00:00:04:01"
	// Queued without waking the writer: only the stop can write it.
	tc.pending[mac] = sighting{site: "lab", isNew: true, facts: &bootapiv1.MachineFacts{Arch: "x86_64"}}
	stopped, stop := context.WithCancel(ctx)
	stop()
	if err := tc.run(stopped); err != nil {
		t.Fatal(err)
	}
	m := &bootapiv1.Machine{}
	if _, err := st.Get(ctx, store.Key("machines", mac), m); err != nil {
		t.Fatalf("sighting queued at stop not written: %v", err)
	}
	if !m.GetDiscovered() || m.GetSite() != "lab" || !m.GetLastSeenTime().AsTime().Equal(now) {
		t.Errorf("machine written at stop = %v", m)
	}
}

// TestSightingsRequeuedAtStop: sightings taken from the queue but not written
// when the stop comes go back to it, merged with newer ones, for the last flush.
func TestSightingsRequeuedAtStop(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := newSightings(nil, log, time.Now)
	const a, b = "52:54:00:00:05:01", "52:54:00:00:05:02"
	s.pending[a] = sighting{site: "lab", isNew: true}
	s.pending[b] = sighting{facts: &bootapiv1.MachineFacts{Arch: "x86_64"}}
	stopped, stop := context.WithCancel(context.Background())
	stop()
	s.writePending(context.Background(), stopped) // nothing written: stop has come
	s.add(a, sighting{facts: &bootapiv1.MachineFacts{Arch: "arm64"}})
	if got := s.pending[a]; !got.isNew || got.site != "lab" || got.facts.GetArch() != "arm64" {
		t.Errorf("requeued discovery merged with a newer sighting = %+v", got)
	}
	if got := s.pending[b]; got.facts.GetArch() != "x86_64" {
		t.Errorf("requeued sighting = %+v", got)
	}
}
