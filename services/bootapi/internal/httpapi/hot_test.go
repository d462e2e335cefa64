package httpapi

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The per-machine memo answers a machine asking again from what it remembers,
// and never past a change: a new record with another hostname, another site,
// other facts or an old last-seen time.
func TestHotEntryMemo(t *testing.T) {
	const mac = "52:54:00:00:03:01"
	e := &hotEntry{}

	m1 := &bootapiv1.Machine{Mac: mac, Hostname: "alpha"}
	head, err := e.menuHead(m1, "default")
	if err != nil || !strings.Contains(head, "alpha") {
		t.Fatalf("head %q, %v", head, err)
	}
	if again, _ := e.menuHead(m1, "default"); again != head {
		t.Fatalf("same record, another head: %q", again)
	}
	m2 := &bootapiv1.Machine{Mac: mac, Hostname: "beta"} // the record changed
	if h2, _ := e.menuHead(m2, "default"); !strings.Contains(h2, "beta") {
		t.Fatalf("renamed machine kept the old head: %q", h2)
	}
	if h3, _ := e.menuHead(m2, "lab"); !strings.Contains(h3, "lab") {
		t.Fatalf("another site kept the old head: %q", h3)
	}

	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	tc := newToucher(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })
	q := params{arch: "x86_64", platform: "pcbios", product: "Standard PC"}
	const ip = "198.18.0.10"
	m := &bootapiv1.Machine{Mac: mac, LastSeenTime: timestamppb.New(now.Add(-10 * time.Second)),
		Facts: &bootapiv1.MachineFacts{Ip: ip, Arch: q.arch, Platform: q.platform, Product: q.product}}
	pending := func() bool {
		tc.mu.Lock()
		defer tc.mu.Unlock()
		_, ok := tc.pending[mac]
		clear(tc.pending)
		return ok
	}
	for i := 0; i < 2; i++ { // the second answer comes from the memo
		tc.seen(e, mac, m, q, ip, now)
		if pending() {
			t.Fatalf("round %d: a sighting queued for a machine seen 10 s ago with the same facts", i)
		}
	}
	if e.seenFor != m {
		t.Fatal("no memo kept")
	}
	q2 := q
	q2.arch = "arm64"
	if tc.seen(e, mac, m, q2, ip, now); !pending() {
		t.Fatal("changed facts: no sighting queued")
	}
	if tc.seen(e, mac, m, q, "198.18.0.11", now); !pending() {
		t.Fatal("changed address: no sighting queued")
	}
	now = now.Add(sightingEvery(mac))
	if tc.seen(e, mac, m, q, ip, now); !pending() {
		t.Fatal("sightingEvery later: no sighting queued")
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

// The entries mirror the machines cache's events: a request reads what
// Machines.Get would, and the memos of unknown MACs stay bounded without ever
// dropping a machine's record.
func TestHotEntryMirrorsMachines(t *testing.T) {
	h := &Handler{}
	for i := range h.hot {
		h.hot[i].m = map[uint64]*hotEntry{}
	}
	const mac = "52:54:00:00:04:01"
	m1 := &bootapiv1.Machine{Mac: mac, Hostname: "alpha"}
	h.onMachine(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: mac, Value: m1, ModRevision: 5}})
	if it, known, _ := h.hotEntry(mac).load(); !known || it.Value != m1 || it.ModRevision != 5 {
		t.Fatalf("after a put: %v %v", it, known)
	}

	// A MAC first seen by a request, then registered.
	const late = "52:54:00:00:04:02"
	if _, known, _ := h.hotEntry(late).load(); known {
		t.Fatal("unknown MAC reported known")
	}
	m2 := &bootapiv1.Machine{Mac: late}
	h.onMachine(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: late, Value: m2, ModRevision: 6}})
	if it, known, _ := h.hotEntry(late).load(); !known || it.Value != m2 {
		t.Fatalf("registered after a request: %v %v", it, known)
	}
	h.onMachine(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: late, ModRevision: 7}, Deleted: true})
	if _, known, _ := h.hotEntry(late).load(); known {
		t.Fatal("deleted machine still known")
	}

	// A flood of unknown MACs: bounded, and the machine's record stays.
	for i := 0; i < 3*maxUnknown*hotShards; i++ {
		h.hotEntry(fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i)))
	}
	n := 0
	for i := range h.hot {
		n += len(h.hot[i].m)
		if h.hot[i].unknown > maxUnknown {
			t.Fatalf("shard %d holds %d unknown entries", i, h.hot[i].unknown)
		}
	}
	if n > maxUnknown*hotShards+1 {
		t.Fatalf("%d entries after the flood", n)
	}
	if it, known, _ := h.hotEntry(mac).load(); !known || it.Value != m1 {
		t.Fatal("the flood dropped a machine's record")
	}
}
