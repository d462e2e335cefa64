package store

import (
	"context"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Revisions collects the etcd revisions of the writes made with one context: the
// audit log asks for the revision of what a gRPC call changed without every
// handler passing it up. The store's etcd client reports every committed write
// (Put, Delete, a transaction whose taken branch writes) to the Revisions of the
// context it was made with, including writes made through Client() directly.
// Writes a background goroutine makes with its own context are not seen unless
// it passes their revisions on (ReportRevision).
type Revisions struct {
	last  atomic.Int64
	count atomic.Int64
}

type revisionsKey struct{}

// WithRevisions returns a context whose writes are reported to the returned
// Revisions.
func WithRevisions(ctx context.Context) (context.Context, *Revisions) {
	r := &Revisions{}
	return context.WithValue(ctx, revisionsKey{}, r), r
}

// Last is the highest revision a write with the context committed; 0 for none.
func (r *Revisions) Last() int64 { return r.last.Load() }

// Count is how many committed writes were reported.
func (r *Revisions) Count() int64 { return r.count.Load() }

func (r *Revisions) add(rev int64) {
	r.count.Add(1)
	for {
		cur := r.last.Load()
		if rev <= cur || r.last.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// ReportRevision attributes a write committed at rev to ctx, for a writer that
// commits a caller's change on a context of its own (a batching goroutine).
func ReportRevision(ctx context.Context, rev int64) { reportRevision(ctx, rev) }

// reportRevision tells ctx's Revisions, if any, about a committed write.
func reportRevision(ctx context.Context, rev int64) {
	if r, ok := ctx.Value(revisionsKey{}).(*Revisions); ok && rev > 0 {
		r.add(rev)
	}
}

// revisionKV reports writes' revisions; it wraps a client's KV the way etcd's
// namespace package does, so that every caller of Client() is covered.
type revisionKV struct{ clientv3.KV }

// reportWrites makes cli's writes report their revisions. A client wrapped once
// is left as it is.
func reportWrites(cli *clientv3.Client) {
	if _, ok := cli.KV.(revisionKV); !ok {
		cli.KV = revisionKV{cli.KV}
	}
}

func (kv revisionKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	resp, err := kv.KV.Put(ctx, key, val, opts...)
	if err == nil {
		reportRevision(ctx, resp.Header.Revision)
	}
	return resp, err
}

func (kv revisionKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	resp, err := kv.KV.Delete(ctx, key, opts...)
	if err == nil && resp.Deleted > 0 {
		reportRevision(ctx, resp.Header.Revision)
	}
	return resp, err
}

func (kv revisionKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	resp, err := kv.KV.Do(ctx, op)
	if err != nil {
		return resp, err
	}
	switch {
	case resp.Put() != nil:
		reportRevision(ctx, resp.Put().Header.Revision)
	case resp.Del() != nil && resp.Del().Deleted > 0:
		reportRevision(ctx, resp.Del().Header.Revision)
	case resp.Txn() != nil:
		reportRevision(ctx, resp.Txn().Header.Revision)
	}
	return resp, err
}

func (kv revisionKV) Txn(ctx context.Context) clientv3.Txn {
	return &revisionTxn{Txn: kv.KV.Txn(ctx), ctx: ctx}
}

// revisionTxn remembers whether each branch writes, so that a read-only
// transaction, or a failed compare-and-swap without an Else, reports nothing.
type revisionTxn struct {
	clientv3.Txn
	ctx                   context.Context
	thenWrites, elseWrite bool
}

func writes(ops []clientv3.Op) bool {
	for _, op := range ops {
		if op.IsPut() || op.IsDelete() || op.IsTxn() {
			return true
		}
	}
	return false
}

func (t *revisionTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *revisionTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.thenWrites = writes(ops)
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *revisionTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.elseWrite = writes(ops)
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *revisionTxn) Commit() (*clientv3.TxnResponse, error) {
	resp, err := t.Txn.Commit()
	if err == nil && ((resp.Succeeded && t.thenWrites) || (!resp.Succeeded && t.elseWrite)) {
		reportRevision(t.ctx, resp.Header.Revision)
	}
	return resp, err
}
