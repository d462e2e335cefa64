package testkit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Service is one service's Run, running for one test.
type Service struct {
	t      testing.TB
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result; set before done is closed
	once   sync.Once
}

// Run runs run in its own goroutine until the test ends, or until Stop. A Run
// that returns an error other than context.Canceled fails the test: a service
// stops cleanly when its context ends.
func Run(t testing.TB, name string, run func(context.Context) error) *Service {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{t: t, name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = run(ctx)
	}()
	t.Cleanup(s.Stop)
	return s
}

// Done is closed when Run has returned.
func (s *Service) Done() <-chan struct{} { return s.done }

// Stop cancels Run's context and waits for it to return; Run's error, other
// than context.Canceled, fails the test, and so does a Run that does not return
// within Wait (a stop that hangs is a bug). Later calls do nothing.
func (s *Service) Stop() {
	s.once.Do(func() {
		s.cancel()
		select {
		case <-s.done:
			if s.err != nil && !errors.Is(s.err, context.Canceled) {
				s.t.Errorf("%s: Run: %v", s.name, s.err)
			}
		case <-time.After(Wait):
			s.t.Errorf("%s did not stop within %v of its context's end", s.name, Wait)
		}
	})
}
