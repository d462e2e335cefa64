package session

import (
	"context"
	"fmt"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/protobuf/proto"
)

// Get returns a copy of the machine's latest session as this process knows it,
// with its latest MaxHops hops, read from etcd within ctx. Hops that could not
// be read are logged and left out.
func (r *Recorder) Get(ctx context.Context, mac string) (*bootapiv1.BootSession, bool) {
	sh := r.shard(mac)
	sh.mu.Lock()
	s := sh.current(mac, sh.machines[mac])
	if s == nil {
		sh.mu.Unlock()
		return nil, false
	}
	out := proto.Clone(s).(*bootapiv1.BootSession)
	sh.mu.Unlock()
	// The hops are read from etcd outside the lock: no hot path waits for them.
	hops, err := r.readHops(ctx, mac, out.GetTraceId(), MaxHops)
	if err != nil {
		r.log.Warn("boot session hops not read", "mac", mac, "err", err)
	}
	out.Hops = hops
	return out, true
}

func hopPrefix(mac, traceID string) string { return store.Prefix("sessionhops", mac, traceID) }

// readHops reads the latest n hops of a session, oldest first.
func (r *Recorder) readHops(ctx context.Context, mac, traceID string, n int64) ([]*bootapiv1.Hop, error) {
	ctx, cancel := r.cfg.Store.WithTimeout(ctx)
	defer cancel()
	resp, err := r.cfg.Store.Client().Get(ctx, hopPrefix(mac, traceID), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(n))
	if err != nil {
		return nil, fmt.Errorf("read hops: %w", err)
	}
	hops := make([]*bootapiv1.Hop, 0, len(resp.Kvs))
	for i := len(resp.Kvs) - 1; i >= 0; i-- {
		h := &bootapiv1.Hop{}
		if err := proto.Unmarshal(resp.Kvs[i].Value, h); err != nil {
			continue
		}
		hops = append(hops, h)
	}
	return hops, nil
}

// FindByIP returns a copy of the session that has ip, in any state: of the
// records that carry it (as etcd has them, or as this process changed them and
// etcd has not echoed yet) the one updated last. On equal update times a
// record from etcd comes before a local one, then the lower MAC.
func (r *Recorder) FindByIP(ip string) (*bootapiv1.BootSession, bool) {
	if ip == "" {
		return nil, false
	}
	var (
		buf       [4]string
		best      *bootapiv1.BootSession
		bestU     int64
		bestLocal bool
	)
	macs := r.byIP.lookup(ip, buf[:0])
	slices.Sort(macs)
	for _, mac := range macs {
		sh := r.shard(mac)
		sh.mu.Lock()
		if m := sh.machines[mac]; m != nil {
			sh.current(mac, m) // drops a local view etcd has caught up with
			for i, bs := range [2]*bootapiv1.BootSession{m.cached, m.local} {
				if bs == nil || bs.GetIp() != ip {
					continue
				}
				local := i == 1
				// MACs come in order: on a tie the lower one stays.
				if u := m.updated(bs); best == nil || u > bestU || (u == bestU && bestLocal && !local) {
					best, bestU, bestLocal = proto.Clone(bs).(*bootapiv1.BootSession), u, local
				}
			}
		}
		sh.mu.Unlock()
	}
	return best, best != nil
}

// FromTraceparent returns a handle on the session whose root is traceparent (as
// carried in a URL or a header). The MAC may be empty when not known; it is
// then the MAC of the session with that trace ID (empty when there is none: the
// handle's hops are then not recorded).
func (r *Recorder) FromTraceparent(traceparent, mac string) (*Session, bool) {
	sc, err := Parse(traceparent)
	if err != nil {
		return nil, false
	}
	if mac == "" {
		mac = r.macOfTrace(sc.TraceID().String())
	}
	return &Session{r: r, MAC: mac, root: sc}, true
}

// macOfTrace returns the MAC of the session with trace ID tid: one this process
// changed first, else one as etcd has it ("" when none). Trace IDs are random,
// so two machines with one is not expected; the lower MAC wins if it happens.
func (r *Recorder) macOfTrace(tid string) string {
	var buf [2]string
	macs := r.byTrace.lookup(tid, buf[:0])
	slices.Sort(macs)
	var fromCache string
	for _, mac := range macs {
		sh := r.shard(mac)
		sh.mu.Lock()
		m := sh.machines[mac]
		if m != nil {
			sh.current(mac, m) // drops a local view etcd has caught up with
		}
		local := m != nil && m.local.GetTraceId() == tid
		if m != nil && !local && fromCache == "" && m.cached.GetTraceId() == tid {
			fromCache = m.cached.GetMac()
		}
		sh.mu.Unlock()
		if local {
			return mac
		}
	}
	return fromCache
}

// Hops reads the latest MaxHops hops of the session of mac with trace traceID
// from etcd, oldest first (a diagnosis reads them for a session it has from the
// cache).
func (r *Recorder) Hops(ctx context.Context, mac, traceID string) ([]*bootapiv1.Hop, error) {
	return r.readHops(ctx, mac, traceID, MaxHops)
}
