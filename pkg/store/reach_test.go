package store_test

import (
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestReachFollowsEtcd: Reach says offline while etcd is down and online again
// once it is back, and wakes whoever waits on Changed each time.
func TestReachFollowsEtcd(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	r := store.NewReach(st, 100*time.Millisecond, nil)
	testkit.Run(t, "reach", r.Run)
	if !r.Online() {
		t.Fatal("offline with etcd up")
	}
	changed := r.Changed()
	e.Restart(t, func() {
		// Two probes of up to 5 s each must fail first.
		testkit.EventuallyWithin(t, time.Minute, "offline with etcd down", func() bool { return !r.Online() })
		select {
		case <-changed:
		default:
			t.Error("Changed not closed when going offline")
		}
		changed = r.Changed()
	})
	testkit.Eventually(t, "online with etcd back", r.Online)
	select {
	case <-changed:
	case <-time.After(time.Second):
		t.Error("Changed not closed when coming back")
	}
	if time.Since(r.Since()) > time.Minute {
		t.Errorf("Since %v: not the last change", r.Since())
	}
}
