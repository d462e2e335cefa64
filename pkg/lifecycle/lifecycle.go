// Package lifecycle runs a service's parts in layers and stops them in the one
// order every bootchain service keeps: stop accepting, drain, flush, close.
//
// A service opens its layers from the bottom up: what others write through first
// (etcd writers, the boot-session recorder, caches), the servers that take
// requests last. When the run's context ends, or any part fails, the layers stop
// from the top down, each one waited for before the next is told to stop: the
// servers have stopped accepting and drained their requests before the recorder
// makes its final flush, and the recorder has flushed before the writers close.
//
//	run := lifecycle.New(ctx)
//	base := run.Layer()
//	base.Go(recorder.Run)        // flushes when its context ends
//	front := run.Layer()
//	front.Go(grpcServer.Serve)   // graceful stop when its context ends
//	return run.Wait()
package lifecycle

import (
	"context"
	"errors"
	"sync"
)

// Run is one service run: its layers and the first error any part returned.
type Run struct {
	parent context.Context
	// stopping is closed when parent ends or a part fails.
	stopping context.Context
	stop     context.CancelFunc

	mu     sync.Mutex
	layers []*Layer
	err    error
}

// New starts a run that stops when ctx ends.
func New(ctx context.Context) *Run {
	stopping, stop := context.WithCancel(ctx)
	return &Run{parent: ctx, stopping: stopping, stop: stop}
}

// Layer opens the next layer up: it is stopped before every layer opened earlier
// and after every layer opened later.
func (r *Run) Layer() *Layer {
	// A layer keeps the run's values (trace, logger) but not its cancellation:
	// only Wait ends it, in order.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.parent))
	l := &Layer{run: r, ctx: ctx, cancel: cancel}
	r.mu.Lock()
	r.layers = append(r.layers, l)
	r.mu.Unlock()
	return l
}

// Stopping is done when the run's context ends or a part fails: the context to
// wait for readiness with before the next layer opens.
func (r *Run) Stopping() context.Context { return r.stopping }

// Wait blocks until the run's context ends or a part fails, stops the layers from
// the newest to the oldest, and returns the first error a part returned (nil
// after a clean stop; context.Canceled counts as clean).
func (r *Run) Wait() error {
	<-r.stopping.Done()
	r.mu.Lock()
	layers := r.layers
	r.mu.Unlock()
	for i := len(layers) - 1; i >= 0; i-- {
		layers[i].cancel()
		layers[i].wg.Wait()
	}
	r.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Stop stops the run as Wait does, without waiting for its context: for a
// service that fails, or is stopped, before it serves. A non-nil err is returned
// unless a part failed first.
func (r *Run) Stop(err error) error {
	if err != nil {
		r.fail(err)
	}
	r.stop()
	return r.Wait()
}

func (r *Run) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.stop()
}

// Layer is a set of parts that start together and stop together.
type Layer struct {
	run    *Run
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Go runs fn until the layer stops. fn must return once its context ends; an
// error other than context.Canceled stops the whole run.
func (l *Layer) Go(fn func(ctx context.Context) error) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := fn(l.ctx); err != nil && !errors.Is(err, context.Canceled) {
			l.run.fail(err)
		}
	}()
}

// OnStop runs fn when the layer stops, alongside the layer's other parts as
// they wind down and before the layers below it are told to stop (giving back
// claims, say). fn must not need the layer's other parts to have returned.
func (l *Layer) OnStop(fn func()) {
	l.Go(func(ctx context.Context) error { <-ctx.Done(); fn(); return nil })
}
