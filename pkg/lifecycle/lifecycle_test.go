package lifecycle

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

// The layers stop from the newest to the oldest, each finished before the next
// one is told to stop.
func TestLayersStopTopDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	run := New(ctx)
	var mu sync.Mutex
	var order []string
	part := func(name string) func(context.Context) error {
		return func(ctx context.Context) error {
			<-ctx.Done()
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return ctx.Err()
		}
	}
	writers := run.Layer()
	writers.Go(part("writers"))
	recorder := run.Layer()
	recorder.Go(part("recorder"))
	servers := run.Layer()
	servers.Go(part("servers"))
	servers.OnStop(func() { mu.Lock(); order = append(order, "servers stopped"); mu.Unlock() })
	cancel()
	if err := run.Wait(); err != nil {
		t.Fatalf("Wait = %v after a clean stop", err)
	}
	if len(order) != 4 || order[2] != "recorder" || order[3] != "writers" || !slices.Contains(order[:2], "servers") {
		t.Fatalf("stop order %v, want servers, recorder, writers", order)
	}
}

// A failing part stops the run, lower layers last, and its error is returned.
func TestFailureStopsTheRun(t *testing.T) {
	run := New(context.Background())
	stopped := make(chan struct{})
	base := run.Layer()
	base.Go(func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil })
	boom := errors.New("listener broke")
	front := run.Layer()
	front.Go(func(ctx context.Context) error {
		select {
		case <-stopped:
			t.Error("base layer stopped before the front one")
		default:
		}
		return boom
	})
	if err := run.Wait(); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v, want %v", err, boom)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("base layer still running after Wait")
	}
	if run.Stopping().Err() == nil {
		t.Fatal("Stopping not done after Wait")
	}
}
