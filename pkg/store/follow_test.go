package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// A follower that falls behind loses its stream and is handed a fresh snapshot:
// what it derives ends up equal to the cache, with no change missed.
func TestFollowResyncsAfterFallingBehind(t *testing.T) {
	st := storetest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pre := store.Prefix("machines")
	c := store.NewCache(st, pre, newMachine, nil)
	go c.Run(ctx)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	const keys = 20
	var mu sync.Mutex
	derived := map[string]string{}
	syncs := 0
	gate := make(chan struct{}) // holds the first batch until every write is done
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	followCtx, stopFollow := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		first := true
		done <- c.Follow(followCtx, 2, func(snap []store.Item[*bootapiv1.Machine]) error {
			mu.Lock()
			syncs++
			clear(derived)
			for _, it := range snap {
				derived[it.Name] = it.Value.GetHostname()
			}
			mu.Unlock()
			notify()
			return nil
		}, func(batch []store.Event[*bootapiv1.Machine]) error {
			if first {
				first = false
				<-gate
			}
			mu.Lock()
			for _, ev := range batch {
				if ev.Deleted {
					delete(derived, ev.Name)
				} else {
					derived[ev.Name] = ev.Value.GetHostname()
				}
			}
			mu.Unlock()
			notify()
			return nil
		})
	}()

	var last int64
	for i := range keys {
		rev, err := st.Put(ctx, pre+fmt.Sprint(i), &bootapiv1.Machine{Hostname: fmt.Sprint("h", i)})
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	if err := c.WaitRevision(ctx, last); err != nil {
		t.Fatal(err)
	}
	close(gate)
	for {
		mu.Lock()
		n, s := len(derived), syncs
		mu.Unlock()
		if n == keys {
			if s < 2 {
				t.Fatalf("%d syncs: the follower never lost its 2-event stream", s)
			}
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("derived %d of %d keys after %d syncs", n, keys, s)
		}
	}
	stopFollow()
	if err := <-done; err != nil {
		t.Fatalf("Follow = %v after its context ended", err)
	}
}
