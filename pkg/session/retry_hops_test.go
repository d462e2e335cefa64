package session_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestHopsRetriedAfterEtcdReturns: hops recorded while etcd is down are
// written once it is back, none twice and none dropped.
func TestHopsRetriedAfterEtcdReturns(t *testing.T) {
	e := storetest.Start(t)
	st, err := store.Open(context.Background(), store.Config{Endpoints: e.Endpoints(), RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := newRecorder(t, st, "bootapi", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const mac = "52:54:00:00:09:01"
	s := r.Open(ctx, mac, session.OpenOptions{New: true})
	start := time.Now().Add(-time.Minute)
	hop := func(i int) {
		_, h := s.StartHopAt(ctx, fmt.Sprintf("script-%d", i), start.Add(time.Duration(i)*time.Second))
		h.End()
	}
	hop(0)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.Restart(t, func() {
		for i := 1; i <= 3; i++ {
			hop(i)
		}
		// One write attempt fails while etcd is down.
		r.Flush(ctx)
	})
	count := func() int64 {
		resp, err := st.Client().Get(ctx, store.Prefix("sessionhops", mac), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return -1
		}
		return resp.Count
	}
	testkit.EventuallyWithin(t, 45*time.Second, "hops of the outage written", func() bool { return count() == 4 })
	if n := r.Dropped.Load(); n != 0 {
		t.Errorf("%d hops dropped", n)
	}
}
