package store

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Reach says whether etcd can commit: whether the etcd member the client talks
// to answers, within a bound, and knows a leader. A site whose WAN link is
// down answers nothing, and a member cut off from its cluster's quorum knows
// no leader (etcd's leader steps down, and its followers stop following, an
// election timeout after losing the quorum); the services then keep what
// they can serve from their caches and refuse what needs a durable write
// (docs/architecture.md, "A site cut off from the core").
//
// The probe is a member's status, which it answers from its own state. A
// linearizable read, the probe before, waits behind every write the member
// has yet to apply: in a boot storm on a small machine it took longer than
// its 5 s bound twice in a row, and a bootapi whose etcd runs in its own
// process withheld the jobs of 62 of 1,000 machines as if cut off.
//
//	r := store.NewReach(st, time.Second, log)
//	go r.Run(ctx)
//	if !r.Online() { ... serve from the cache, refuse writes ... }
type Reach struct {
	st       *Store
	interval time.Duration
	log      *slog.Logger

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

// minProbeBound is the least time a probe waits for its answer: on a loaded
// machine (a boot storm on 2 cores) even a status takes a while, and slow is
// not cut off.
const minProbeBound = 5 * time.Second

// NewReach probes st every interval (default 1s), each probe bounded by the
// interval or minProbeBound, whichever is longer, and logs each change to log
// (nil: slog's default). It starts online: the services start only once etcd
// answered.
func NewReach(st *Store, interval time.Duration, log *slog.Logger) *Reach {
	if interval <= 0 {
		interval = time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Reach{st: st, interval: interval, log: log, change: make(chan struct{}), since: time.Now()}
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

func (r *Reach) set(online bool, why error) {
	if r.online.Load() == online {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.online.Load() == online {
		return
	}
	r.online.Store(online)
	now := time.Now()
	if online {
		r.log.Info("etcd reachable again", "after", now.Sub(r.since).Round(time.Millisecond))
	} else {
		r.log.Warn("etcd unreachable: serving from caches, refusing what needs a write", "probes", offlineAfter, "err", why)
	}
	r.since = now
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
		err := r.probe(ctx)
		if err == nil {
			failed = 0
			r.set(true, nil)
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if failed++; failed >= offlineAfter {
			r.set(false, err)
		}
	}
}

// probe asks the member the client talks to for its status: an error if it
// does not answer within the bound or knows no leader. A client of a member in
// this process (the embedded etcd) asks it directly.
func (r *Reach) probe(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, max(r.interval, minProbeBound))
	defer cancel()
	var leader uint64
	if conn := r.st.cli.ActiveConnection(); conn != nil {
		st, err := pb.NewMaintenanceClient(conn).Status(pctx, &pb.StatusRequest{})
		if err != nil {
			return err
		}
		leader = st.Leader
	} else {
		st, err := r.st.cli.Status(pctx, "")
		if err != nil {
			return err
		}
		leader = st.Leader
	}
	if leader == 0 {
		return errNoLeader
	}
	return nil
}

var errNoLeader = errors.New("the etcd member knows no leader")
