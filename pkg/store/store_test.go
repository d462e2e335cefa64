package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/protobuf/proto"
)

func newMachine() *bootapiv1.Machine { return &bootapiv1.Machine{} }

// clients runs test against both ways of reaching etcd: over gRPC, as a service
// in its own process does, and in-process, as the all-in-one launcher does.
func clients(t *testing.T, test func(t *testing.T, st *store.Store)) {
	t.Run("grpc", func(t *testing.T) { test(t, storetest.New(t)) })
	t.Run("inprocess", func(t *testing.T) { test(t, storetest.Start(t).InProcess(t)) })
}

func TestCreateUpdateDelete(t *testing.T) { clients(t, testCreateUpdateDelete) }

func testCreateUpdateDelete(t *testing.T, st *store.Store) {
	ctx := context.Background()
	key := store.Key("machines", "aa:bb:cc:dd:ee:ff")
	rev, err := st.Create(ctx, key, &bootapiv1.Machine{Mac: "aa:bb:cc:dd:ee:ff"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(ctx, key, &bootapiv1.Machine{}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
	if _, err := st.Update(ctx, key, &bootapiv1.Machine{Hostname: "a"}, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(ctx, key, &bootapiv1.Machine{Hostname: "b"}, rev); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: got %v, want ErrConflict", err)
	}
	m := newMachine()
	if _, err := st.Get(ctx, key, m); err != nil || m.Hostname != "a" {
		t.Fatalf("get: %v %v", m, err)
	}
	if err := st.Delete(ctx, key, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, key, m); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

// TestMutateConcurrent checks that compare-and-swap loses no update when many
// writers change one key at once.
func TestMutateConcurrent(t *testing.T) { clients(t, testMutateConcurrent) }

func testMutateConcurrent(t *testing.T, st *store.Store) {
	ctx := context.Background()
	key := store.Key("machines", "m")
	const writers, each = 8, 10
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				_, _, err := store.Mutate(ctx, st, key, newMachine, func(m *bootapiv1.Machine, _ bool) (*bootapiv1.Machine, error) {
					if m.Labels == nil {
						m.Labels = map[string]string{}
					}
					m.Labels["n"] += "x"
					return m, nil
				})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	m := newMachine()
	if _, err := st.Get(ctx, key, m); err != nil {
		t.Fatal(err)
	}
	if got := len(m.Labels["n"]); got != writers*each {
		t.Fatalf("updates kept: %d, want %d", got, writers*each)
	}
}

func TestCacheFollowsWrites(t *testing.T) { clients(t, testCacheFollowsWrites) }

func testCacheFollowsWrites(t *testing.T, st *store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pre := store.Prefix("machines")
	if _, err := st.Put(ctx, pre+"one", &bootapiv1.Machine{Hostname: "one"}); err != nil {
		t.Fatal(err)
	}
	c := store.NewCache(st, pre, newMachine, nil)
	cache := testkit.Run(t, "cache", c.Run)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	snap, events, unsub := c.Subscribe(16)
	defer unsub()
	if len(snap) != 1 || snap[0].Value.Hostname != "one" {
		t.Fatalf("snapshot: %v", snap)
	}
	rev, err := st.Put(ctx, pre+"two", &bootapiv1.Machine{Hostname: "two"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := c.WaitRevision(wctx, rev); err != nil {
		t.Fatal(err)
	}
	if it, ok := c.Get("two"); !ok || !proto.Equal(it.Value, &bootapiv1.Machine{Hostname: "two"}) {
		t.Fatalf("cache get two: %v %v", it, ok)
	}
	if err := st.Delete(ctx, pre+"one", 0); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		select {
		case ev := <-events:
			if ev.Deleted {
				got = append(got, "-"+ev.Name)
			} else {
				got = append(got, "+"+ev.Name)
			}
		case <-wctx.Done():
			t.Fatalf("events so far %v", got)
		}
	}
	if got[0] != "+two" || got[1] != "-one" {
		t.Fatalf("events %v", got)
	}
	cache.Stop()
}

// A key deleted while the cache was not watching is reported as deleted when the
// cache lists again, with a revision at or after the delete (as a watched delete
// is): state derived from the cache that ignores events older than what it holds
// must not skip it.
func TestCacheRelistReportsDeleteRevision(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	pre := store.Prefix("machines")
	put, err := st.Put(ctx, pre+"gone", &bootapiv1.Machine{Hostname: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	c := store.NewCache(st, pre, newMachine, nil)
	var mu sync.Mutex
	var deleted []store.Event[*bootapiv1.Machine]
	c.OnEvent(func(ev store.Event[*bootapiv1.Machine]) {
		if ev.Deleted {
			mu.Lock()
			deleted = append(deleted, ev)
			mu.Unlock()
		}
	})
	run := func() (stop func()) { return testkit.Run(t, "cache", c.Run).Stop }
	stop := run()
	if err := c.WaitRevision(ctx, put); err != nil {
		t.Fatal(err)
	}
	stop() // not watching while the key goes
	if err := st.Delete(ctx, pre+"gone", 0); err != nil {
		t.Fatal(err)
	}
	del, err := st.Put(ctx, pre+"other", &bootapiv1.Machine{Hostname: "other"}) // a revision after the delete
	if err != nil {
		t.Fatal(err)
	}
	stop = run()
	defer stop()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitRevision(wctx, del); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(deleted) != 1 || deleted[0].Name != "gone" {
		t.Fatalf("deleted events %v, want one for gone", deleted)
	}
	if deleted[0].ModRevision <= put {
		t.Fatalf("relisted delete at revision %d, not after the key's last write %d", deleted[0].ModRevision, put)
	}
}
