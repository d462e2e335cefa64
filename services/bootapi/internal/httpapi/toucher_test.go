package httpapi

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
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
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
	s := state.New(st, log)
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
	tc := newToucher(s, log, func() time.Time { return now })
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

// TestSightingInFlight checks that a machine asking again while its sighting
// is on its way queues no second one, unless its facts changed or the write
// has not shown up in the cache within sightingInFlight.
func TestSightingInFlight(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	tc := newToucher(state.New(storetest.New(t), log), log, func() time.Time { return now })
	const mac = "52:54:00:00:03:01"
	m := &bootapiv1.Machine{Mac: mac}
	e := &hotEntry{}
	q := params{arch: "x86_64", platform: "pcbios"}
	queued := func(at time.Time, q params, ip string) bool {
		tc.seen(e, mac, m, q, ip, at)
		tc.mu.Lock()
		defer tc.mu.Unlock()
		_, ok := tc.pending[mac]
		clear(tc.pending)
		return ok
	}
	if !queued(now, q, "198.18.0.10") {
		t.Fatal("first sighting not queued")
	}
	if queued(now.Add(time.Second), q, "198.18.0.10") {
		t.Error("a repeat while the sighting is on its way queued another")
	}
	if !queued(now.Add(2*time.Second), q, "198.18.0.11") {
		t.Error("a request from another address queued no sighting")
	}
	if !queued(now.Add(2*time.Second+sightingInFlight), q, "198.18.0.11") {
		t.Error("a sighting whose write never showed up was not tried again")
	}
	seen := &bootapiv1.Machine{Mac: mac, LastSeenTime: timestamppb.New(now), Facts: facts(q, "198.18.0.11")}
	m = seen
	if queued(now.Add(3*time.Second), q, "198.18.0.11") {
		t.Error("a machine seen a moment ago was sighted again")
	}
	// A sighting dropped from a full queue leaves no note: the next request's
	// goes in.
	m = &bootapiv1.Machine{Mac: mac}
	tc.mu.Lock()
	for i := 0; i < maxPendingSightings; i++ {
		tc.pending[fmt.Sprintf("other%d", i)] = sighting{}
	}
	tc.mu.Unlock()
	if queued(now.Add(4*time.Second), q, "198.18.0.12") {
		t.Error("a sighting went into a full queue")
	}
	if !queued(now.Add(4*time.Second), q, "198.18.0.12") {
		t.Error("a dropped sighting held back the next request's")
	}
}
