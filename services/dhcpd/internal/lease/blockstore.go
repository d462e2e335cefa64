package lease

import (
	"context"
	"fmt"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// BlockKey is the etcd key of the offer block of site starting at first.
func BlockKey(site, first string) string { return store.Key("offerblocks", site, first) }

// BlockWrite puts (or, with Block nil, deletes) the offer block starting at First
// if its key is still at PrevRev (0: the key must not exist).
type BlockWrite struct {
	First   string
	Block   *dhcpdv1.OfferBlock
	PrevRev int64
}

// BlockResult is the outcome of a BlockWrite. On ErrConflict, Current and
// CurrentRev are what the key holds now (nil and 0 when it is gone).
type BlockResult struct {
	Rev        int64
	Current    *dhcpdv1.OfferBlock
	CurrentRev int64
	Err        error
}

// WriteBlock claims, renews or gives back an offer block with one transaction
// that compares the key's revision. Claims are rare (one per block of addresses,
// and a renewal a minute), so they are not batched like lease writes.
func (e *EtcdWriter) WriteBlock(ctx context.Context, w BlockWrite) BlockResult {
	key := BlockKey(e.site, w.First)
	cmp := store.Unchanged(key, w.PrevRev)
	op := clientv3.OpDelete(key)
	if w.Block != nil {
		b, err := proto.Marshal(w.Block)
		if err != nil {
			return BlockResult{Err: fmt.Errorf("lease: encode block %s: %w", w.First, err)}
		}
		op = clientv3.OpPut(key, string(b))
	}
	tctx, cancel := context.WithTimeout(ctx, txnTimeout)
	defer cancel()
	resp, err := e.cli.Txn(tctx).If(cmp).Then(op).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return BlockResult{Err: fmt.Errorf("lease: write block %s: %w", w.First, err)}
	}
	if resp.Succeeded {
		return BlockResult{Rev: resp.Header.Revision}
	}
	res := BlockResult{Err: fmt.Errorf("%w: block %s", ErrConflict, w.First)}
	if rr := resp.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
		cur := &dhcpdv1.OfferBlock{}
		if proto.Unmarshal(rr.Kvs[0].Value, cur) == nil {
			res.Current = cur
		}
		res.CurrentRev = rr.Kvs[0].ModRevision
	}
	return res
}

// WriteBlock applies w if its compare holds.
func (m *MemWriter) WriteBlock(_ context.Context, w BlockWrite) BlockResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.blocks[w.First]
	if (!ok && w.PrevRev != 0) || (ok && cur.rev != w.PrevRev) {
		return BlockResult{Current: cur.b, CurrentRev: cur.rev, Err: fmt.Errorf("%w: block %s", ErrConflict, w.First)}
	}
	m.rev++
	if w.Block == nil {
		delete(m.blocks, w.First)
	} else {
		m.blocks[w.First] = memBlock{b: proto.Clone(w.Block).(*dhcpdv1.OfferBlock), rev: m.rev}
	}
	return BlockResult{Rev: m.rev}
}

type memBlock struct {
	b   *dhcpdv1.OfferBlock
	rev int64
}
