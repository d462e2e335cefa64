package testkit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

// recorder is a testing.TB that records failures instead of failing, so that
// the helpers' own failures can be checked.
type recorder struct {
	testing.TB
	failures []string
	cleanups []func()
}

func (r *recorder) Helper()                   {}
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, a ...any) { r.failures = append(r.failures, fmt.Sprintf(f, a...)) }
func (r *recorder) Fatalf(f string, a ...any) { r.Errorf(f, a...); runtime.Goexit() }
func (r *recorder) Fatal(a ...any)            { r.Errorf("%s", fmt.Sprint(a...)); runtime.Goexit() }

// do runs f as a test body would run, on its own goroutine (Fatal ends it),
// then the cleanups, and returns the failures.
func do(f func(t *recorder)) []string {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	return r.failures
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	if f := do(func(r *recorder) { Eventually(r, "three polls", func() bool { return n.Add(1) == 3 }) }); len(f) != 0 {
		t.Errorf("a condition that comes true failed: %v", f)
	}
	f := do(func(r *recorder) { EventuallyWithin(r, 30*time.Millisecond, "never", func() bool { return false }) })
	if len(f) != 1 || f[0] != "timed out after 30ms waiting for never" {
		t.Errorf("a condition that never holds: %q", f)
	}
}

func TestRun(t *testing.T) {
	clean := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	if f := do(func(r *recorder) { Run(r, "clean", clean) }); len(f) != 0 {
		t.Errorf("a Run that returns context.Canceled failed the test: %v", f)
	}
	failing := func(ctx context.Context) error { <-ctx.Done(); return errors.New("close: boom") }
	if f := do(func(r *recorder) { Run(r, "failing", failing) }); len(f) != 1 || f[0] != "failing: Run: close: boom" {
		t.Errorf("a Run that fails at stop: %q", f)
	}
	// Stop stops at once and only once; Cleanup's second Stop does nothing.
	f := do(func(r *recorder) {
		svc := Run(r, "stopped", clean)
		svc.Stop()
		select {
		case <-svc.Done():
		default:
			r.Errorf("Done open after Stop")
		}
		svc.Stop()
	})
	if len(f) != 0 {
		t.Errorf("Stop: %v", f)
	}
	// A Run that ends early fails WaitClosed at once instead of after Wait.
	start := time.Now()
	f = do(func(r *recorder) {
		svc := Run(r, "early", func(context.Context) error { return errors.New("listen: in use") })
		WaitClosed(r, svc, "ready", make(chan struct{}))
	})
	if len(f) != 2 || f[0] != "early stopped before ready: listen: in use" || time.Since(start) > Wait/2 {
		t.Errorf("early stop: %q after %v", f, time.Since(start))
	}
}

func TestWaitHTTP(t *testing.T) {
	var ready atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "loading", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	time.AfterFunc(50*time.Millisecond, func() { ready.Store(true) })
	if f := do(func(r *recorder) { WaitHTTP(r, srv.URL) }); len(f) != 0 || !ready.Load() {
		t.Errorf("WaitHTTP: %v, ready %v", f, ready.Load())
	}
}
