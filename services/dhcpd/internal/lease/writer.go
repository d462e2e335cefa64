package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// ErrConflict means the lease changed since the revision the write compared against.
var ErrConflict = errors.New("lease: changed concurrently")

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

// Writer makes lease changes durable.
type Writer interface {
	Write(ctx context.Context, w Write) Result
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
}

type pending struct {
	w    Write
	done chan Result
}

// NewEtcdWriter writes leases of site under leases/<site>/. workers bounds the
// transactions in flight; maxBatch the keys per transaction (etcd's --max-txn-ops,
// 128 by default).
func NewEtcdWriter(st *store.Store, site string, workers, maxBatch int) *EtcdWriter {
	if workers <= 0 {
		workers = 8
	}
	if maxBatch <= 0 || maxBatch > 128 {
		maxBatch = 128
	}
	return &EtcdWriter{cli: st.Client(), st: st, site: site, maxBatch: maxBatch, workers: workers,
		queue: make(chan *pending, 4*workers*maxBatch)}
}

// Key is the etcd key of the lease of ip at site.
func Key(site, ip string) string { return store.Key("leases", site, ip) }

// Write queues w and waits until it is committed (or conflicts).
func (e *EtcdWriter) Write(ctx context.Context, w Write) Result {
	p := &pending{w: w, done: make(chan Result, 1)}
	select {
	case e.queue <- p:
	case <-ctx.Done():
		return Result{Err: ctx.Err()}
	}
	select {
	case r := <-p.done:
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

// Run commits queued writes until ctx ends.
func (e *EtcdWriter) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := 0; i < e.workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.work(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (e *EtcdWriter) work(ctx context.Context) {
	batch := make([]*pending, 0, e.maxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-e.queue:
			batch = append(batch[:0], p)
		}
		// Take whatever else is waiting: under load the queue fills while the other
		// workers' transactions are being fsynced.
	drain:
		for len(batch) < e.maxBatch {
			select {
			case p := <-e.queue:
				batch = append(batch, p)
			default:
				break drain
			}
		}
		e.commit(ctx, batch)
	}
}

func (e *EtcdWriter) commit(ctx context.Context, batch []*pending) {
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

// commitOnce runs one transaction and returns the writes to retry.
func (e *EtcdWriter) commitOnce(ctx context.Context, todo []*pending) []*pending {
	cmps := make([]clientv3.Cmp, 0, len(todo))
	puts := make([]clientv3.Op, 0, len(todo))
	gets := make([]clientv3.Op, 0, len(todo))
	for _, p := range todo {
		key := Key(e.site, p.w.IP)
		b, err := proto.Marshal(p.w.Lease)
		if err != nil {
			p.done <- Result{Err: fmt.Errorf("lease: encode %s: %w", p.w.IP, err)}
			continue
		}
		if p.w.PrevRev == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", p.w.PrevRev))
		}
		puts = append(puts, clientv3.OpPut(key, string(b)))
		gets = append(gets, clientv3.OpGet(key))
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := e.cli.Txn(tctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	cancel()
	if err != nil {
		for _, p := range todo {
			p.done <- Result{Err: fmt.Errorf("lease: write %s: %w", p.w.IP, err)}
		}
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
			p.done <- Result{Rev: resp.Header.Revision}
		}
		return nil
	}
	var retry []*pending
	for i, p := range todo {
		var cur *dhcpdv1.Lease
		var curRev int64
		if rr := resp.Responses[i].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
			cur = &dhcpdv1.Lease{}
			if err := proto.Unmarshal(rr.Kvs[0].Value, cur); err != nil {
				cur = nil
			}
			curRev = rr.Kvs[0].ModRevision
		}
		if curRev == p.w.PrevRev {
			retry = append(retry, p)
			continue
		}
		p.done <- Result{Current: cur, CurrentRev: curRev, Err: fmt.Errorf("%w: %s", ErrConflict, p.w.IP)}
	}
	return retry
}

// MemWriter keeps leases in memory with the same compare semantics as EtcdWriter:
// for the fuzz target and unit tests of the packet logic.
type MemWriter struct {
	mu   sync.Mutex
	rev  int64
	data map[string]memItem
}

type memItem struct {
	l   *dhcpdv1.Lease
	rev int64
}

// NewMemWriter returns an empty MemWriter.
func NewMemWriter() *MemWriter { return &MemWriter{data: map[string]memItem{}} }

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
