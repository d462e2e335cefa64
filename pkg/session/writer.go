package session

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type mutation func(s *bootapiv1.BootSession) *bootapiv1.BootSession

// Bounds of the write queue: machines with pending changes (per shard), and changes
// queued for one machine.
const (
	maxPendingSessions   = 20000 / numShards
	maxPendingPerSession = 64
	writeWorkers         = 8
)

// enqueue applies m to the local view at once and queues it for etcd. open is the
// session to start from when neither local nor cached state exists (nil for changes
// that need an existing session).
func (r *Recorder) enqueue(mac string, open *bootapiv1.BootSession, m mutation) {
	sh := r.shard(mac)
	sh.mu.Lock()
	q, queued := sh.pending[mac]
	if (!queued && len(sh.pending) >= maxPendingSessions) || (len(q) >= maxPendingPerSession && open == nil) {
		// etcd is not keeping up: drop the record (the span is still exported)
		// rather than grow without bound.
		sh.mu.Unlock()
		r.Dropped.Add(1)
		return
	}
	ms := sh.get(mac)
	base := sh.current(mac, ms)
	if open != nil {
		base = nil
	}
	// The local view answers "which session, in what state" at once; it keeps no
	// hops, so a busy machine does not copy its whole history on every hop.
	var next *bootapiv1.BootSession
	if base != nil {
		next = m(head(base))
	} else {
		next = m(nil)
	}
	if next != nil {
		next.Hops = nil
		sh.setLocal(mac, ms, next)
	}
	sh.pending[mac] = append(q, m)
	sh.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// safely runs f; a panic in it is logged with its stack and counted (Panics)
// instead of ending the process.
func (r *Recorder) safely(what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			r.Panics.Add(1)
			r.log.Error("panic "+what+"; the changes are lost", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	f()
}

func (r *Recorder) writePending(ctx context.Context, take repeatTake) {
	r.mu.Lock()
	if r.forceRepeats {
		take = allRepeats
	}
	r.forceRepeats = false
	r.started++
	gen := r.started
	retry := r.takeRetryLocked(time.Now(), take == allRepeats)
	r.mu.Unlock()
	batch := map[string][]mutation{}
	var (
		hops  []pendingHop
		trims []string
	)
	now := time.Now()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		maps.Copy(batch, sh.pending)
		if len(sh.pending) > 0 {
			sh.pending = map[string][]mutation{}
		}
		hops = append(hops, sh.takeHops(now, take)...)
		trims = append(trims, sh.trims...)
		sh.trims = nil
		sh.mu.Unlock()
	}
	hops = withRetries(hops, retry)
	// A panic loses this batch, not the process (in bootchain up: etcd and
	// every service) nor Flush's count of finished writes.
	r.safely("writing boot sessions", func() {
		if len(batch) > 0 || len(hops) > 0 {
			r.writeBatch(ctx, batch, hops)
		}
		// After the hops: a cut counts the ones just written.
		for _, prefix := range trims {
			if err := r.trimHops(ctx, prefix); err != nil && ctx.Err() == nil {
				r.log.Warn("boot session hops not cut", "prefix", prefix, "err", err)
			}
		}
	})
	r.mu.Lock()
	r.done = gen
	r.flushed.Broadcast()
	r.mu.Unlock()
}

// takeHops hands the shard's queued hops to the writer, with the repeat counts
// take asks for. Called with sh.mu held.
func (sh *shard) takeHops(now time.Time, take repeatTake) []pendingHop {
	hops := sh.hops
	sh.hops = nil
	if take == noRepeats {
		return hops
	}
	keep := sh.dirty[:0]
	var at map[string]int // hop key -> index in hops, once a repeat is written
	share := (len(sh.dirty) + repeatSpread - 1) / repeatSpread
	for _, rp := range sh.dirty {
		if take == dueRepeats && (share == 0 || now.Sub(rp.written) < repeatFlush) {
			keep = append(keep, rp)
			continue
		}
		share--
		rec := proto.Clone(rp.first).(*bootapiv1.Hop)
		rec.Repeats, rec.LastRepeatTime = rp.count, timestamppb.New(rp.last)
		if at == nil {
			at = make(map[string]int, len(hops))
			for i, ph := range hops {
				at[ph.key] = i
			}
		}
		// The first hop of the run may still be waiting here: one transaction must
		// not name a key twice, so the repeat record takes its place.
		if i, ok := at[rp.key]; ok {
			hops[i].hop = rec
		} else {
			at[rp.key] = len(hops)
			hops = append(hops, pendingHop{key: rp.key, hop: rec})
		}
		rp.dirty, rp.written = false, now
	}
	clear(sh.dirty[len(keep):])
	sh.dirty = keep
	return hops
}

// writeBatch writes hops, then each machine's session changes, and notes the
// revisions written so the local views can give way to the cache.
func (r *Recorder) writeBatch(ctx context.Context, batch map[string][]mutation, hops []pendingHop) {
	if left, err := r.writeHops(ctx, hops); err != nil {
		if ctx.Err() == nil {
			r.log.Warn("boot session hops not recorded; retrying", "hops", len(left), "err", err)
		}
		r.keepForRetry(left, time.Now())
	}
	revs := make(map[string]int64, len(batch))
	var revMu sync.Mutex
	macs := slices.Collect(maps.Keys(batch))
	work := make(chan []string)
	var wg sync.WaitGroup
	for w := 0; w < min(writeWorkers, (len(macs)+sessionBatch-1)/sessionBatch); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for group := range work {
				var got map[string]int64
				r.safely("writing boot sessions", func() { got = r.writeGroup(ctx, group, batch) })
				if got == nil {
					// It panicked: none written (their local views are dropped below).
					got = make(map[string]int64, len(group))
					for _, mac := range group {
						got[mac] = 0
					}
				}
				revMu.Lock()
				maps.Copy(revs, got)
				revMu.Unlock()
			}
		}()
	}
	for len(macs) > 0 {
		n := min(len(macs), sessionBatch)
		work <- macs[:n]
		macs = macs[n:]
	}
	close(work)
	wg.Wait()
	for mac, rev := range revs {
		sh := r.shard(mac)
		sh.mu.Lock()
		if m := sh.machines[mac]; m != nil {
			if rev != 0 {
				m.written = rev
			} else if _, more := sh.pending[mac]; !more {
				// Not written: forget the local view rather than keep a state etcd
				// never got.
				sh.setLocal(mac, m, nil)
				sh.forget(mac, m)
			}
		}
		sh.mu.Unlock()
	}
}

// sessionBatch is how many machines' session changes share one transaction: a
// fleet powering on opens thousands of sessions within seconds, and etcd's cost
// is per transaction far more than per key.
const sessionBatch = 64

// writeGroup writes the session changes of macs in one transaction, each
// session compared with its revision in the cache (or with its absence). When
// a compare fails (the cache was behind another writer), each machine's
// changes are written on their own (write), from etcd's copy. It returns the
// revision each session was written at (0: not written).
func (r *Recorder) writeGroup(ctx context.Context, macs []string, batch map[string][]mutation) map[string]int64 {
	if r.testHook != nil {
		r.testHook(macs)
	}
	revs := make(map[string]int64, len(macs))
	alone := func(macs []string) {
		for _, mac := range macs {
			rev, err := r.write(ctx, mac, batch[mac])
			if err != nil && ctx.Err() == nil {
				r.log.Warn("boot session not recorded", "mac", mac, "err", err)
			}
			revs[mac] = rev
		}
	}
	if len(macs) == 1 {
		alone(macs)
		return revs
	}
	lease, err := r.leaseID(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("boot sessions not recorded", "sessions", len(macs), "err", err)
		}
		for _, mac := range macs {
			revs[mac] = 0
		}
		return revs
	}
	cmps := make([]clientv3.Cmp, 0, len(macs))
	puts := make([]clientv3.Op, 0, len(macs))
	var written, unsure []string
	for _, mac := range macs {
		key := store.Key("sessions", mac)
		var s *bootapiv1.BootSession
		it, cached := r.cache.Get(mac)
		if cached {
			s = proto.Clone(it.Value).(*bootapiv1.BootSession)
		}
		cmp := store.Unchanged(key, it.ModRevision) // 0 when not cached
		for _, m := range batch[mac] {
			s = m(s)
		}
		if s == nil {
			if !cached {
				// Nothing to change in no session: etcd may have one the
				// cache has not seen yet.
				unsure = append(unsure, mac)
			} else {
				revs[mac] = 0
			}
			continue
		}
		s.Hops = nil // hops are keys of their own
		b, err := proto.Marshal(s)
		if err != nil {
			r.log.Warn("boot session not recorded", "mac", mac, "err", err)
			revs[mac] = 0
			continue
		}
		cmps, puts = append(cmps, cmp), append(puts, clientv3.OpPut(key, string(b), clientv3.WithLease(lease)))
		written = append(written, mac)
	}
	alone(unsure)
	if len(puts) == 0 {
		return revs
	}
	// Retried as it is, compares included: if a try that got no answer was
	// applied, the next one's compares fail and each machine is written from
	// etcd's copy (alone), as after any lost race.
	var resp *clientv3.TxnResponse
	err = r.retryEtcd(ctx, func() (err error) {
		tctx, cancel := r.cfg.Store.WithTimeout(ctx)
		defer cancel()
		start := time.Now()
		resp, err = r.cfg.Store.Client().Txn(tctx).If(cmps...).Then(puts...).Commit()
		r.observe("sessions", start, err)
		return err
	})
	switch {
	case err != nil:
		// Not written within the retry budget.
		if ctx.Err() == nil {
			r.log.Warn("boot sessions not recorded", "sessions", len(written), "err", err)
		}
		for _, mac := range written {
			revs[mac] = 0
		}
	case !resp.Succeeded:
		alone(written)
	default:
		for _, mac := range written {
			revs[mac] = resp.Header.Revision
		}
	}
	return revs
}

// write writes one machine's session changes with compare-and-swap, retrying
// from etcd's copy when another writer got there first.
func (r *Recorder) write(ctx context.Context, mac string, muts []mutation) (int64, error) {
	lease, err := r.leaseID(ctx)
	if err != nil {
		return 0, err
	}
	key := store.Key("sessions", mac)
	cli := r.cfg.Store.Client()
	for attempt := 0; attempt < 16; attempt++ {
		var (
			cur    *bootapiv1.BootSession
			rev    int64
			exists bool
		)
		if it, ok := r.cache.Get(mac); ok && attempt == 0 {
			// Start from the cache: usually current, and a stale copy only costs a
			// failed compare and one more round.
			cur, rev, exists = proto.Clone(it.Value).(*bootapiv1.BootSession), it.ModRevision, true
		} else {
			cur = &bootapiv1.BootSession{}
			err := r.retryEtcd(ctx, func() (err error) {
				rev, err = r.cfg.Store.Get(ctx, key, cur)
				if errors.Is(err, store.ErrNotFound) {
					return nil
				}
				return err
			})
			exists = err == nil && rev != 0
			if err != nil {
				return 0, err
			}
		}
		var s *bootapiv1.BootSession
		if exists {
			s = cur
		}
		for _, m := range muts {
			s = m(s)
		}
		if s == nil {
			return 0, nil
		}
		s.Hops = nil // hops are keys of their own
		b, err := proto.Marshal(s)
		if err != nil {
			return 0, err
		}
		// A try applied without an answer makes the next one's compare fail:
		// the loop then starts again from etcd's copy.
		var resp *clientv3.TxnResponse
		err = r.retryEtcd(ctx, func() (err error) {
			tctx, cancel := r.cfg.Store.WithTimeout(ctx)
			defer cancel()
			start := time.Now()
			resp, err = cli.Txn(tctx).If(store.Unchanged(key, rev)).Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease))).Commit()
			r.observe("sessions", start, err)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("write session: %w", err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		if err := store.RetryWait(ctx, attempt); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("write session %s: %w", mac, store.ErrConflict)
}

// writeHops puts hops in transactions of up to 64 keys, each with the session
// lease, up to writeWorkers transactions at a time: etcd commits the
// transactions in flight together (one raft round, one WAL fsync), while one
// at a time would make a fleet's first contact wait on a round trip per 64
// hops, and its sessions, written after them, wait behind. The keys are
// unique, so nothing is compared and nothing can conflict. It returns the
// hops not written when it fails.
func (r *Recorder) writeHops(ctx context.Context, hops []pendingHop) ([]pendingHop, error) {
	if len(hops) == 0 {
		return nil, nil
	}
	lease, err := r.leaseID(ctx)
	if err != nil {
		return hops, err
	}
	var (
		mu    sync.Mutex
		left  []pendingHop
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, writeWorkers)
	for len(hops) > 0 {
		n := min(len(hops), 64)
		chunk := hops[:n]
		hops = hops[n:]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := r.writeHopChunk(ctx, lease, chunk); err != nil {
				mu.Lock()
				left = append(left, chunk...)
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return left, first
}

// writeHopChunk puts hops in one transaction.
func (r *Recorder) writeHopChunk(ctx context.Context, lease clientv3.LeaseID, hops []pendingHop) error {
	ops := make([]clientv3.Op, 0, len(hops))
	for _, ph := range hops {
		b, err := proto.Marshal(ph.hop)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(ph.key, string(b), clientv3.WithLease(lease)))
	}
	// Unique keys, nothing compared: writing them again is harmless.
	err := r.retryEtcd(ctx, func() error {
		tctx, cancel := r.cfg.Store.WithTimeout(ctx)
		defer cancel()
		start := time.Now()
		_, err := r.cfg.Store.Client().Txn(tctx).Then(ops...).Commit()
		r.observe("hops", start, err)
		return err
	})
	if err != nil {
		return fmt.Errorf("write hops: %w", err)
	}
	return nil
}

// leaseID returns a lease for session keys. One lease serves every write for a tenth
// of the TTL, so etcd holds a handful of leases, not one per machine.
func (r *Recorder) leaseID(ctx context.Context) (clientv3.LeaseID, error) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if r.lease != 0 && time.Since(r.leaseTime) < r.cfg.TTL/10 {
		return r.lease, nil
	}
	var resp *clientv3.LeaseGrantResponse
	err := r.retryEtcd(ctx, func() (err error) {
		tctx, cancel := r.cfg.Store.WithTimeout(ctx)
		defer cancel()
		resp, err = r.cfg.Store.Client().Grant(tctx, int64(r.cfg.TTL/time.Second))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("session lease: %w", err)
	}
	r.lease, r.leaseTime = resp.ID, time.Now()
	return r.lease, nil
}

// trimHops deletes the hops under prefix (one session's) but the latest
// MaxHops. Hop keys sort by start time.
func (r *Recorder) trimHops(ctx context.Context, prefix string) error {
	tctx, cancel := r.cfg.Store.WithTimeout(ctx)
	defer cancel()
	cli := r.cfg.Store.Client()
	resp, err := cli.Get(tctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(MaxHops+1))
	if err != nil {
		return fmt.Errorf("read hop keys: %w", err)
	}
	if len(resp.Kvs) <= MaxHops {
		return nil
	}
	// Everything from the prefix up to (not including) the oldest hop kept.
	if _, err := cli.Delete(tctx, prefix, clientv3.WithRange(string(resp.Kvs[MaxHops-1].Key))); err != nil {
		return fmt.Errorf("delete old hops: %w", err)
	}
	return nil
}

// retryBudget bounds how long retryEtcd tries one etcd call: longer than an
// election of a cluster that keeps its quorum (etcd's election timeout, 1 s by
// default, plus a round or two), short enough that the writer, which waits
// meanwhile, catches up from its bounded queues.
const retryBudget = 10 * time.Second

// retryEtcd runs op, one etcd call, again while it fails the way etcd fails
// during a leader election (store.RetryTransient): a hop or a session state
// dropped then would be lost for good although etcd is back a second later.
func (r *Recorder) retryEtcd(ctx context.Context, op func() error) error {
	n, err := store.RetryTransient(ctx, retryBudget, func() error {
		if r.faultHook != nil {
			if err := r.faultHook(); err != nil {
				return err
			}
		}
		return op()
	})
	r.Retries.Add(int64(n))
	return err
}
