package httpapi

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
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
	now = now.Add(time.Minute)
	if tc.seen(e, mac, m, q, ip, now); !pending() {
		t.Fatal("a minute later: no sighting queued")
	}
}
