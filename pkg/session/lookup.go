package session

import (
	"context"
	"fmt"

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

// readHops reads the last n hops of a session, oldest first.
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

// FindByIP returns the active session of the machine that has ip, newest first.
func (r *Recorder) FindByIP(ip string) (*bootapiv1.BootSession, bool) {
	if ip == "" {
		return nil, false
	}
	var best *bootapiv1.BootSession
	consider := func(s *bootapiv1.BootSession) {
		if s.GetIp() == ip && (best == nil || s.GetUpdateTime().AsTime().After(best.GetUpdateTime().AsTime())) {
			best = s
		}
	}
	for _, it := range r.cache.List(nil) {
		consider(it.Value)
	}
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for _, m := range sh.machines {
			if m.local != nil {
				consider(m.local)
			}
		}
		sh.mu.Unlock()
	}
	if best != nil {
		// Local entries are replaced, never changed in place: a copy outside the
		// lock is safe.
		best = proto.Clone(best).(*bootapiv1.BootSession)
	}
	return best, best != nil
}

// FromTraceparent returns a handle on the session whose root is traceparent (as
// carried in a URL or a header). The MAC may be empty when not known; hops are then
// matched to the session with that trace ID.
func (r *Recorder) FromTraceparent(traceparent, mac string) (*Session, bool) {
	sc, err := Parse(traceparent)
	if err != nil {
		return nil, false
	}
	if mac == "" {
		tid := sc.TraceID().String()
		for _, it := range r.cache.List(nil) {
			if it.Value.GetTraceId() == tid {
				mac = it.Value.GetMac()
				break
			}
		}
		for i := range r.shards {
			sh := &r.shards[i]
			sh.mu.Lock()
			for name, m := range sh.machines {
				if m.local != nil && m.local.GetTraceId() == tid {
					mac = name
				}
			}
			sh.mu.Unlock()
		}
	}
	return &Session{r: r, MAC: mac, root: sc}, true
}
