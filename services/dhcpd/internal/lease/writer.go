package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// ErrConflict means the lease changed since the revision the write compared against.
var ErrConflict = errors.New("lease: changed concurrently")

// ErrTimeout means a write waited in the queue longer than QueueWait and was
// dropped unwritten: the client has retransmitted by then.
var ErrTimeout = errors.New("lease: write queued too long")

// QueueWait is how long a write may wait for a transaction before it is dropped.
// It replaces a timer per packet: a DHCP client retransmits after 4 s.
const QueueWait = 3 * time.Second

// txnTimeout bounds one etcd transaction.
const txnTimeout = 10 * time.Second

// Write is one lease change: put Lease at IP if the key is still at PrevRev (0: the
// key must not exist).
type Write struct {
	IP      string
	Lease   *dhcpdv1.Lease
	PrevRev int64
}

// Result of a Write. On ErrConflict, Current and CurrentRev are what the key holds
// now (nil and 0 when it is gone), so the caller can update its view at once.
type Result struct {
	Rev        int64
	Current    *dhcpdv1.Lease
	CurrentRev int64
	Err        error
}

// Writer makes lease changes and offer-block claims durable.
type Writer interface {
	Write(ctx context.Context, w Write) Result
	WriteBlock(ctx context.Context, w BlockWrite) BlockResult
}

// EtcdWriter gathers concurrent lease writes into etcd transactions: each
// transaction carries up to MaxBatch keys, each with its own mod_revision compare,
// so a burst of DHCP packets costs a few fsyncs, not one per packet. When a
// transaction fails its compares, the keys that really conflict get ErrConflict
// and the rest are retried at once in a smaller transaction.
type EtcdWriter struct {
	cli      *clientv3.Client
	st       *store.Store
	site     string
	maxBatch int
	workers  int
	queue    chan *pending

	mu      sync.Mutex
	txns    uint64
	written uint64

	// Logger logs recovered panics; nil logs nothing.
	Logger *slog.Logger
	// Panics counts transactions that panicked (their writes failed).
	Panics atomic.Uint64
	// OnTxn, when set, sees every lease transaction: how long etcd took and
	// whether it failed (metrics).
	OnTxn func(d time.Duration, err error)
	// testHook, when set, sees the first write of every batch (tests force
	// panics).
	testHook func(Write)
}

type pending struct {
	w        Write
	deadline time.Time
	done     chan Result
	// gen numbers this use of the (pooled) pending; answered is the latest
	// gen answered. Gens only grow, so answered >= gen says this use has its
	// result even after the pending went back to the pool and was reused.
	gen      uint64
	answered atomic.Uint64
}

// pendingGen numbers the uses of pendings.
var pendingGen atomic.Uint64

// answer sends the write's result; only the writer calls it, once per use.
func (p *pending) answer(r Result) {
	p.answered.Store(p.gen)
	p.done <- r
}

// ErrPanic is the result of writes whose transaction panicked.
var ErrPanic = errors.New("lease: write failed (internal error; see the log)")

// pendings are reused: a Write under load allocates neither the record nor its
// channel. Only a pending whose result was received goes back.
var pendings = sync.Pool{New: func() any { return &pending{done: make(chan Result, 1)} }}

// NewEtcdWriter writes leases of site under leases/<site>/. workers bounds the
// transactions in flight; maxBatch the keys per transaction (etcd's --max-txn-ops,
// 128 by default).
func NewEtcdWriter(st *store.Store, site string, workers, maxBatch int) *EtcdWriter {
	if workers <= 0 {
		workers = 2
	}
	if maxBatch <= 0 || maxBatch > 128 {
		maxBatch = 128
	}
	return &EtcdWriter{cli: st.Client(), st: st, site: site, maxBatch: maxBatch, workers: workers,
		queue: make(chan *pending, 4*workers*maxBatch)}
}

// Key is the etcd key of the lease of ip at site.
func Key(site, ip string) string { return store.Key("leases", site, ip) }

// Write queues w and waits until it is committed, conflicts, or waited QueueWait
// in the queue (ErrTimeout). ctx ends the wait early (shutdown); the write may
// still be committed then.
func (e *EtcdWriter) Write(ctx context.Context, w Write) Result {
	p := pendings.Get().(*pending)
	p.w, p.deadline, p.gen = w, time.Now().Add(QueueWait), pendingGen.Add(1)
	select {
	case e.queue <- p:
	case <-ctx.Done():
		p.w = Write{}
		pendings.Put(p)
		return Result{Err: ctx.Err()}
	}
	select {
	case r := <-p.done:
		p.w = Write{}
		pendings.Put(p)
		return r
	case <-ctx.Done():
		return Result{Err: ctx.Err()}
	}
}

// Stats returns how many transactions and lease writes were committed.
func (e *EtcdWriter) Stats() (txns, writes uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.txns, e.written
}

// QueueLen is the number of writes waiting in the queue for a transaction.
func (e *EtcdWriter) QueueLen() int { return len(e.queue) }

// linger is how long a small batch waits for company while another transaction
// is in flight. With nothing in flight a write goes out at once.
const linger = 2 * time.Millisecond

// Run commits queued writes until ctx ends. It is a group commit: writes gather
// while transactions are in flight (at most workers of them), and a new
// transaction starts when a slot is free and either nothing is in flight, the
// batch is worth a transaction (an eighth of MaxBatch), or its oldest write has
// lingered. Light load gets one-write transactions at once; heavy load gets full
// batches, a few in flight, and etcd's raft folds their fsyncs together.
func (e *EtcdWriter) Run(ctx context.Context) error {
	done := make(chan struct{}, e.workers)
	inflight := 0
	var batch []*pending
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed, lingered := false, false
	worth := max(e.maxBatch/4, 1)
	for {
		for len(batch) > 0 && inflight < e.workers && (inflight == 0 || lingered || len(batch) >= worth) {
			n := min(len(batch), e.maxBatch)
			b := make([]*pending, n)
			copy(b, batch)
			batch = append(batch[:0], batch[n:]...)
			inflight++
			go func() {
				e.safeCommit(ctx, b)
				done <- struct{}{}
			}()
			if len(batch) == 0 {
				lingered = false
			}
		}
		if len(batch) > 0 && !armed && !lingered {
			timer.Reset(linger)
			armed = true
		}
		select {
		case p := <-e.queue:
			batch = append(batch, p)
		drain:
			for len(batch) < 4*e.maxBatch {
				select {
				case p := <-e.queue:
					batch = append(batch, p)
				default:
					break drain
				}
			}
		case <-done:
			inflight--
		case <-timer.C:
			armed = false
			lingered = len(batch) > 0
		case <-ctx.Done():
			for ; inflight > 0; inflight-- {
				<-done
			}
			for _, p := range batch {
				p.answer(Result{Err: ctx.Err()})
			}
			return nil
		}
	}
}

// safeCommit is commit with a panic failing the batch's unanswered writes (the
// clients retransmit) instead of ending the process, which in bootchain up
// also runs etcd.
func (e *EtcdWriter) safeCommit(ctx context.Context, batch []*pending) {
	gens := make([]uint64, len(batch))
	for i, p := range batch {
		gens[i] = p.gen
	}
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		e.Panics.Add(1)
		if e.Logger != nil {
			e.Logger.Error("panic writing leases; the batch failed", "panic", r, "stack", string(debug.Stack()))
		}
		for i, p := range batch {
			if p.answered.Load() < gens[i] {
				p.answer(Result{Err: ErrPanic})
			}
		}
	}()
	if e.testHook != nil {
		e.testHook(batch[0].w)
	}
	e.commit(ctx, batch)
}

func (e *EtcdWriter) commit(ctx context.Context, batch []*pending) {
	// Writes that waited past their deadline are dropped unwritten (zero: none).
	now := time.Now()
	live := make([]*pending, 0, len(batch))
	for _, p := range batch {
		if !p.deadline.IsZero() && now.After(p.deadline) {
			p.answer(Result{Err: fmt.Errorf("%w: %s", ErrTimeout, p.w.IP)})
			continue
		}
		live = append(live, p)
	}
	batch = live
	// etcd rejects a transaction that names a key twice; a second write of the same
	// key goes into the next round.
	var later []*pending
	seen := make(map[string]bool, len(batch))
	todo := batch[:0:0]
	for _, p := range batch {
		if seen[p.w.IP] {
			later = append(later, p)
			continue
		}
		seen[p.w.IP] = true
		todo = append(todo, p)
	}
	for len(todo) > 0 {
		todo = e.commitOnce(ctx, todo)
	}
	if len(later) > 0 {
		e.commit(ctx, later)
	}
}

// commitOnce runs one transaction and returns the writes to retry. The
// transaction carries only the compares and the puts: no else-branch (it would
// travel through raft and the WAL with every batch) and no read-back. Only when
// a compare fails are the keys read, in a separate read-only transaction.
func (e *EtcdWriter) commitOnce(ctx context.Context, todo []*pending) []*pending {
	cmps := make([]clientv3.Cmp, 0, len(todo))
	puts := make([]clientv3.Op, 0, len(todo))
	keys := make([]string, 0, len(todo))
	sent := todo[:0:0]
	for _, p := range todo {
		key := Key(e.site, p.w.IP)
		b, err := proto.Marshal(p.w.Lease)
		if err != nil {
			p.answer(Result{Err: fmt.Errorf("lease: encode %s: %w", p.w.IP, err)})
			continue
		}
		cmps = append(cmps, store.Unchanged(key, p.w.PrevRev))
		puts = append(puts, clientv3.OpPut(key, string(b)))
		keys = append(keys, key)
		sent = append(sent, p)
	}
	if len(sent) == 0 {
		return nil
	}
	todo = sent
	tctx, cancel := context.WithTimeout(ctx, txnTimeout)
	defer cancel()
	start := time.Now()
	resp, err := e.cli.Txn(tctx).If(cmps...).Then(puts...).Commit()
	if e.OnTxn != nil {
		e.OnTxn(time.Since(start), err)
	}
	if err != nil {
		e.fail(todo, err)
		return nil
	}
	e.mu.Lock()
	e.txns++
	if resp.Succeeded {
		e.written += uint64(len(todo))
	}
	e.mu.Unlock()
	if resp.Succeeded {
		for _, p := range todo {
			p.answer(Result{Rev: resp.Header.Revision})
		}
		return nil
	}
	gets := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		gets[i] = clientv3.OpGet(k)
	}
	cur, err := e.cli.Txn(tctx).Then(gets...).Commit()
	if err != nil {
		e.fail(todo, err)
		return nil
	}
	var retry []*pending
	for i, p := range todo {
		var l *dhcpdv1.Lease
		var curRev int64
		if rr := cur.Responses[i].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
			l = &dhcpdv1.Lease{}
			if err := proto.Unmarshal(rr.Kvs[0].Value, l); err != nil {
				l = nil
			}
			curRev = rr.Kvs[0].ModRevision
		}
		if curRev == p.w.PrevRev {
			retry = append(retry, p)
			continue
		}
		p.answer(Result{Current: l, CurrentRev: curRev, Err: fmt.Errorf("%w: %s", ErrConflict, p.w.IP)})
	}
	return retry
}

func (e *EtcdWriter) fail(todo []*pending, err error) {
	for _, p := range todo {
		p.answer(Result{Err: fmt.Errorf("lease: write %s: %w", p.w.IP, err)})
	}
}

// MemWriter keeps leases in memory with the same compare semantics as EtcdWriter:
// for the fuzz target and unit tests of the packet logic.
type MemWriter struct {
	mu     sync.Mutex
	rev    int64
	data   map[string]memItem
	blocks map[string]memBlock
}

type memItem struct {
	l   *dhcpdv1.Lease
	rev int64
}

// NewMemWriter returns an empty MemWriter.
func NewMemWriter() *MemWriter {
	return &MemWriter{data: map[string]memItem{}, blocks: map[string]memBlock{}}
}

// Write applies w if its compare holds.
func (m *MemWriter) Write(_ context.Context, w Write) Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.data[w.IP]
	if (!ok && w.PrevRev != 0) || (ok && cur.rev != w.PrevRev) {
		return Result{Current: cur.l, CurrentRev: cur.rev, Err: fmt.Errorf("%w: %s", ErrConflict, w.IP)}
	}
	m.rev++
	m.data[w.IP] = memItem{l: proto.Clone(w.Lease).(*dhcpdv1.Lease), rev: m.rev}
	return Result{Rev: m.rev}
}
