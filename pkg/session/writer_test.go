package session

import (
	"context"
	"fmt"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestWriteGroupBehindCache writes a group of sessions while the recorder's
// cache is behind etcd (never loaded, here): two sessions exist in etcd with a
// state of their own. The change to the first would create a session, so the
// group's compare (no such key) fails and each session of the group is written
// on its own from etcd's copy; the change to the second only applies to an
// existing session, which the cache does not have, so it goes to etcd's copy
// at once. Nothing is lost: the new session is created, the existing ones
// changed and keep what they had.
func TestWriteGroupBehindCache(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	r, err := New(Config{Store: st, Service: "bootapi"})
	if err != nil {
		t.Fatal(err)
	}
	const old, old2, fresh = "52:54:00:00:00:01", "52:54:00:00:00:03", "52:54:00:00:00:02"
	for _, mac := range []string{old, old2} {
		if _, err := st.Put(ctx, store.Key("sessions", mac), &bootapiv1.BootSession{Mac: mac, TraceId: "t-" + mac, Ip: "198.18.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	setState := func(s *bootapiv1.BootSession) *bootapiv1.BootSession {
		if s == nil {
			s = &bootapiv1.BootSession{TraceId: "t-new"}
		}
		s.State = bootapiv1.SessionState_SESSION_STATE_SUCCEEDED
		return s
	}
	finish := func(s *bootapiv1.BootSession) *bootapiv1.BootSession {
		if s == nil {
			return nil
		}
		return setState(s)
	}
	revs := r.writeGroup(ctx, []string{old, old2, fresh}, map[string][]mutation{old: {setState}, old2: {finish}, fresh: {setState}})
	for mac, want := range map[string]string{old: "t-" + old, old2: "t-" + old2, fresh: "t-new"} {
		var got bootapiv1.BootSession
		rev, err := st.Get(ctx, store.Key("sessions", mac), &got)
		if err != nil {
			t.Fatalf("%s: %v", mac, err)
		}
		if got.GetTraceId() != want || got.GetState() != bootapiv1.SessionState_SESSION_STATE_SUCCEEDED {
			t.Errorf("%s: trace %q state %v, want %q succeeded", mac, got.GetTraceId(), got.GetState(), want)
		}
		if mac != fresh && got.GetIp() != "198.18.0.1" {
			t.Errorf("%s: existing session lost its address: %q", mac, got.GetIp())
		}
		if revs[mac] != rev {
			t.Errorf("%s: written at %d, etcd has %d", mac, revs[mac], rev)
		}
	}
}

// TestRepeatCountsSpread checks that repeat counts that came due together are
// written a share at a time: a due write takes 1/repeatSpread of them, the
// rest wait for the next ones (or for a write of all of them).
func TestRepeatCountsSpread(t *testing.T) {
	start := time.Unix(1000, 0)
	var sh shard
	for i := 0; i < 95; i++ {
		rp := &repeat{key: fmt.Sprintf("hop%d", i), first: &bootapiv1.Hop{Name: "script"}, written: start, count: 3}
		sh.repeatLocked(rp, start.Add(time.Second))
	}
	if got := sh.takeHops(start.Add(repeatFlush), noRepeats); len(got) != 0 {
		t.Fatalf("a write of hops only took %d counts", len(got))
	}
	if got := sh.takeHops(start.Add(repeatFlush/2), dueRepeats); len(got) != 0 {
		t.Fatalf("%d counts written before they were due", len(got))
	}
	due := start.Add(repeatFlush)
	if got := sh.takeHops(due, dueRepeats); len(got) != 10 {
		t.Fatalf("a due write took %d of 95 counts, want 10", len(got))
	} else if got[0].hop.GetRepeats() != 4 {
		t.Fatalf("count written as %d, want 4", got[0].hop.GetRepeats())
	}
	if got := sh.takeHops(due, dueRepeats); len(got) != 9 {
		t.Fatalf("the next due write took %d of 85 counts, want 9", len(got))
	}
	if got := sh.takeHops(due, allRepeats); len(got) != 76 {
		t.Fatalf("a write of all took %d of 76 counts", len(got))
	}
	if len(sh.dirty) != 0 {
		t.Fatalf("%d counts still waiting", len(sh.dirty))
	}
}

// TestTouchAfterSpread checks that sessions' update-time touches are spread:
// each MAC has its own staleness bound within [touchEvery, 1.5 touchEvery).
func TestTouchAfterSpread(t *testing.T) {
	bounds := map[time.Duration]bool{}
	for i := 0; i < 100; i++ {
		d := touchAfter(fmt.Sprintf("52:54:00:00:06:%02x", i))
		if d < touchEvery || d >= touchEvery*3/2 {
			t.Fatalf("bound %v outside [%v, %v)", d, touchEvery, touchEvery*3/2)
		}
		bounds[d.Truncate(time.Second)] = true
	}
	if len(bounds) < 10 {
		t.Errorf("100 machines share %d bounds (whole seconds)", len(bounds))
	}
}
