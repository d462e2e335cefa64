package session_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMaxHopsKeepsLatest records far more hops than MaxHops on one session,
// none of them a repeat of the one before: Get shows the latest MaxHops, and
// etcd holds a bounded number, the oldest cut.
func TestMaxHopsKeepsLatest(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	r := newRecorder(t, st, "bootapi", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const mac, total = "52:54:00:00:08:01", 2*session.MaxHops + 30
	s := r.Open(ctx, mac, session.OpenOptions{New: true})
	start := time.Now().Add(-time.Hour)
	for i := range total {
		_, h := s.StartHopAt(ctx, "script", start.Add(time.Duration(i)*time.Second))
		h.SetDetail(fmt.Sprintf("attempt %d", i))
		h.End()
		if i%100 == 0 {
			// Let writes (and cuts) happen along the way, as they do in a loop.
			if err := r.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.Dropped.Load(); n != 0 {
		t.Fatalf("%d hops dropped", n)
	}
	got, ok := r.Get(ctx, mac)
	if !ok {
		t.Fatal("no session")
	}
	hops := got.GetHops()
	if len(hops) != session.MaxHops {
		t.Fatalf("%d hops, want %d", len(hops), session.MaxHops)
	}
	if first, last := hops[0].GetDetail(), hops[len(hops)-1].GetDetail(); first != fmt.Sprintf("attempt %d", total-session.MaxHops) || last != fmt.Sprintf("attempt %d", total-1) {
		t.Fatalf("hops %q .. %q, want the latest %d", first, last, session.MaxHops)
	}
	resp, err := st.Client().Get(ctx, store.Prefix("sessionhops", mac), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	// Cut back to MaxHops every MaxHops/4 hops past it.
	if resp.Count < session.MaxHops || resp.Count > session.MaxHops*5/4 {
		t.Fatalf("etcd holds %d hops, want %d to %d", resp.Count, session.MaxHops, session.MaxHops*5/4)
	}
	t.Logf("%d hops recorded, %d kept in etcd", total, resp.Count)
}
