package state

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/strhash"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Facts are what a machine reported about itself in a script request, already
// bounded and cleaned, and the address it asked from.
type Facts struct {
	IP, Arch, Platform, UUID, Serial, Manufacturer, Product string
}

// same compares stored facts with f without building a message (the common
// case on the script path).
func (f Facts) same(s *bootapiv1.MachineFacts) bool {
	return s.GetIp() == f.IP && s.GetArch() == f.Arch && s.GetPlatform() == f.Platform &&
		s.GetUuid() == f.UUID && s.GetSerial() == f.Serial &&
		s.GetManufacturer() == f.Manufacturer && s.GetProduct() == f.Product
}

func (f Facts) proto() *bootapiv1.MachineFacts {
	return &bootapiv1.MachineFacts{Ip: f.IP, Arch: f.Arch, Platform: f.Platform, Uuid: f.UUID, Serial: f.Serial,
		Manufacturer: f.Manufacturer, Product: f.Product}
}

// Sightings records machine sightings (last seen, facts) and discovered
// machines off the request path: coalesced per machine, bounded in memory, and
// written in shared transactions by Run.
type Sightings struct {
	st  *State
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	pending map[string]sighting
	kick    chan struct{}
	// Dropped counts sightings not queued because the queue was full.
	Dropped atomic.Int64
}

type sighting struct {
	facts *bootapiv1.MachineFacts
	site  string
	isNew bool
}

// maxPendingSightings bounds the queue: a fleet powering on while etcd is slow
// must not grow bootapi's memory without end.
const maxPendingSightings = 65536

func newSightings(st *State, log *slog.Logger, now func() time.Time) *Sightings {
	return &Sightings{st: st, log: log, now: now, pending: map[string]sighting{}, kick: make(chan struct{}, 1)}
}

// Discovered records an unknown machine in site (a discovered record), unless
// it is registered by the time the write happens. It reports false, recording
// nothing, when the site has its cap of discovered machines (State.Discovery)
// or the queue is full.
func (t *Sightings) Discovered(mac, site string) bool {
	if !t.st.discovered.claim(mac, site, t.st.Discovery.Cap) {
		return false
	}
	if !t.add(mac, sighting{site: site, isNew: true}) {
		t.st.discovered.unclaim(mac)
		return false
	}
	return true
}

// Seen records that mac asked at the time at with facts. m is the machine's
// record as the request found it (nil when unknown): a record that already
// says so, seen within sightingEvery, needs no write.
func (t *Sightings) Seen(mac string, m *bootapiv1.Machine, f Facts, at time.Time) {
	if last := m.GetLastSeenTime(); last != nil && f.same(m.GetFacts()) &&
		at.Sub(last.AsTime()) < sightingEvery(mac) {
		return
	}
	t.add(mac, sighting{facts: f.proto()})
}

// sightingEvery is how often a machine that keeps asking has its last-seen
// time rewritten: a minute and up to 30 s more, fixed per MAC, so that
// machines first seen together (a fleet powering on) do not all come due in
// the same second every minute.
func sightingEvery(mac string) time.Duration {
	return time.Minute + time.Duration(strhash.FNV64a(mac)%uint64(30*time.Second))
}

// add queues a sighting; it reports false when the queue was full and the
// sighting is dropped.
func (t *Sightings) add(mac string, s sighting) bool {
	t.mu.Lock()
	old, ok := t.pending[mac]
	if !ok && len(t.pending) >= maxPendingSightings {
		t.mu.Unlock()
		t.Dropped.Add(1)
		return false
	}
	t.pending[mac] = s.over(old)
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
	return true
}

// run writes the queued sightings until ctx ends, then writes what is still
// queued: State.Run stops after the HTTP server, so the last requests' sightings
// (a discovered machine among them) are kept, within stopFlush.
func (t *Sightings) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopFlush)
			defer cancel()
			t.writePending(fctx, fctx)
			return nil
		case <-t.kick:
		}
		// The transaction under way when the stop comes is finished (each etcd
		// call is bounded by the store's timeout); the rest goes back to the
		// queue for the last flush.
		t.writePending(context.WithoutCancel(ctx), ctx)
	}
}

// stopFlush bounds the last write of queued sightings at stop.
const stopFlush = 5 * time.Second

// writePending writes every queued sighting, sightingBatch to a transaction,
// with ctx; once stop ends, what is not yet written is queued again.
func (t *Sightings) writePending(ctx, stop context.Context) {
	t.mu.Lock()
	batch := t.pending
	t.pending = map[string]sighting{}
	t.mu.Unlock()
	macs := make([]string, 0, len(batch))
	for mac := range batch {
		macs = append(macs, mac)
	}
	for len(macs) > 0 {
		if stop.Err() != nil {
			t.requeue(macs, batch)
			return
		}
		n := min(len(macs), sightingBatch)
		t.writeBatch(ctx, macs[:n], batch)
		macs = macs[n:]
	}
}

// requeue puts back the sightings of macs not written, under any newer ones.
func (t *Sightings) requeue(macs []string, batch map[string]sighting) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, mac := range macs {
		t.pending[mac] = t.pending[mac].over(batch[mac])
	}
}

// over is s queued on top of an older sighting of the same machine: s's facts
// and site where it has them, and a discovery stays a discovery.
func (s sighting) over(old sighting) sighting {
	if s.facts == nil {
		s.facts = old.facts
	}
	s.isNew = s.isNew || old.isNew
	if s.site == "" {
		s.site = old.site
	}
	return s
}

// sightingBatch is how many sightings share one transaction: a fleet powering on
// together (or a bootapi restart) sees thousands of machines within seconds, and
// one fsynced transaction each would make etcd the bottleneck.
const sightingBatch = 64

// writeBatch records the sightings of macs in one transaction, each compared with
// the machine's revision in the cache. When a compare fails (the cache was behind
// a write), each sighting of the batch is written on its own.
func (t *Sightings) writeBatch(ctx context.Context, macs []string, batch map[string]sighting) {
	now := timestamppb.New(t.now())
	cmps := make([]clientv3.Cmp, 0, len(macs))
	puts := make([]clientv3.Op, 0, len(macs))
	var alone []string
	for _, mac := range macs {
		s := batch[mac]
		key := store.Key("machines", mac)
		it, exists := t.st.Machines.Get(mac)
		var m *bootapiv1.Machine
		if exists {
			m = proto.Clone(it.Value).(*bootapiv1.Machine) // cache values are shared: change a copy
		} else {
			m = &bootapiv1.Machine{}
		}
		if m = s.apply(m, exists, mac, now); m == nil {
			// Not in the cache and not new: deleted, or the cache is behind; etcd decides.
			alone = append(alone, mac)
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.log.Warn("machine sighting not recorded", "mac", mac, "err", err)
			continue
		}
		cmps = append(cmps, store.Unchanged(key, it.ModRevision)) // 0 when not cached
		puts = append(puts, clientv3.OpPut(key, string(b)))
	}
	if len(puts) > 0 {
		tctx, cancel := t.st.Store().WithTimeout(ctx)
		resp, err := t.st.Store().Client().Txn(tctx).If(cmps...).Then(puts...).Commit()
		cancel()
		if err != nil || !resp.Succeeded {
			alone = macs
		}
	}
	for _, mac := range alone {
		err := t.write(ctx, mac, batch[mac])
		if err != nil && batch[mac].isNew {
			// Not written: the cap counts records, not attempts.
			t.st.discovered.unclaim(mac)
		}
		if err != nil && ctx.Err() == nil {
			t.log.Warn("machine sighting not recorded", "mac", mac, "err", err)
		}
	}
}

// apply records the sighting on m (exists: m is the stored record). It returns nil
// when there is nothing to write: a machine that is gone and was not discovered
// here is not resurrected.
func (s sighting) apply(m *bootapiv1.Machine, exists bool, mac string, now *timestamppb.Timestamp) *bootapiv1.Machine {
	if !exists {
		if !s.isNew {
			return nil
		}
		m.Mac, m.Site, m.Discovered, m.CreateTime, m.UpdateTime = mac, s.site, true, now, now
	}
	if s.facts != nil {
		m.Facts = s.facts
	}
	m.LastSeenTime = now
	return m
}

func (t *Sightings) write(ctx context.Context, mac string, s sighting) error {
	now := timestamppb.New(t.now())
	_, _, err := store.Mutate(ctx, t.st.Store(), store.Key("machines", mac), func() *bootapiv1.Machine { return &bootapiv1.Machine{} },
		func(m *bootapiv1.Machine, exists bool) (*bootapiv1.Machine, error) {
			return s.apply(m, exists, mac, now), nil
		})
	return err
}
