package store

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reach says whether etcd can commit: a linearizable read answered within a
// bound. A site whose WAN link is down, or an etcd cluster without quorum,
// answers no such read; the services then keep what they can serve from their
// caches and refuse what needs a durable write (docs/architecture.md, "A site
// cut off from the core").
//
//	r := store.NewReach(st, time.Second)
//	go r.Run(ctx)
//	if !r.Online() { ... serve from the cache, refuse writes ... }
type Reach struct {
	st       *Store
	interval time.Duration

	online atomic.Bool
	mu     sync.Mutex
	// change is closed and replaced whenever online flips.
	change chan struct{}
	// since is when online last flipped.
	since time.Time
}

// offlineAfter is how many probes in a row must fail before etcd counts as
// unreachable: one lost packet or a leader election does not cut a site off.
const offlineAfter = 2

// minProbeBound is the least time a probe waits for its answer. A loaded etcd
// (a boot storm on a small machine: its fsyncs and the services' CPU on the
// same cores) answers linearizable reads in seconds; slow is not cut off, and
// counting it so withheld every job and refused every new lease in the middle
// of a storm.
const minProbeBound = 5 * time.Second

// NewReach probes st every interval (default 1s), each probe bounded by the
// interval or minProbeBound, whichever is longer. It starts online: the
// services start only once etcd answered.
func NewReach(st *Store, interval time.Duration) *Reach {
	if interval <= 0 {
		interval = time.Second
	}
	r := &Reach{st: st, interval: interval, change: make(chan struct{}), since: time.Now()}
	r.online.Store(true)
	return r
}

// Online reports whether the last probes reached a quorum.
func (r *Reach) Online() bool { return r.online.Load() }

// Changed is closed when Online next changes.
func (r *Reach) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.change
}

// Since is when Online last changed.
func (r *Reach) Since() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.since
}

func (r *Reach) set(online bool) {
	if r.online.Load() == online {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.online.Load() == online {
		return
	}
	r.online.Store(online)
	r.since = time.Now()
	close(r.change)
	r.change = make(chan struct{})
}

// Run probes until ctx ends; it returns nil.
func (r *Reach) Run(ctx context.Context) error {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if r.probe(ctx) {
			failed = 0
			r.set(true)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if failed++; failed >= offlineAfter {
			r.set(false)
		}
	}
}

// probe is one linearizable read: it needs the leader to confirm it still
// leads a quorum (ReadIndex), which is what a write needs too.
func (r *Reach) probe(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), max(r.interval, minProbeBound))
	defer cancel()
	_, err := r.st.cli.Get(pctx, Root+"reach", clientv3.WithCountOnly())
	return err == nil
}
