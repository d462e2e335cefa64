// Package session records boot sessions: one machine's attempt to boot, as one W3C
// trace that every service adds its hops to.
//
// The first service that sees a machine opens the session (a root span, stored at
// sessions/<mac> in etcd with a lease TTL); every later step (DHCP, TFTP, script,
// downloads, callbacks) is a Hop: a span that is a child of the session's root and a
// record in etcd, so `bootctl trace <mac>` shows the timeline with no collector.
//
// The session record (the head: trace, state, IP, job) is small and every service
// caches it; each hop is a key of its own under
// sessionhops/<mac>/<trace id>/<start>-<span id>, written blind (no read, no
// compare: the key is unique) in batches, and read back only when someone asks for
// the timeline. Writes are asynchronous: the DHCP and HTTP hot paths never wait.
//
//	s := rec.Open(ctx, mac, session.OpenOptions{IP: ip})
//	ctx, hop := s.StartHop(ctx, "dhcp.discover")
//	defer hop.End()
package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/strhash"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Attribute keys bootchain adds to every hop span, beside OTel's semantic conventions.
const (
	AttrMAC   = attribute.Key("bootchain.mac")
	AttrSite  = attribute.Key("bootchain.site")
	AttrHop   = attribute.Key("bootchain.hop")
	AttrJobID = attribute.Key("bootchain.job_id")
)

// MaxHops bounds the hops kept on one session; the oldest beyond it are dropped
// (a machine stuck in a retry loop must not grow its record without bound).
const MaxHops = 200

// Config configures a Recorder.
type Config struct {
	// Store is the etcd store. Required.
	Store *store.Store
	// Service recording hops: dhcpd, tftpd, bootapi, artifactstore. Required.
	Service string
	// Site this process serves.
	Site string
	// TracerProvider for hop spans; default an SDK provider that exports nothing.
	TracerProvider trace.TracerProvider
	// TTL of a session in etcd after its last write; default 24h.
	TTL time.Duration
	// IdleRestart: a machine seen again after this long with no hop starts a new
	// session; default 10m.
	IdleRestart time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Recorder opens sessions and records hops for one service.
type Recorder struct {
	cfg    Config
	tracer trace.Tracer
	// spans is false for a no-op provider: hops then skip span bookkeeping.
	spans bool
	log   *slog.Logger
	cache *store.Cache[*bootapiv1.BootSession]

	// shards hold everything the hot paths touch, by MAC: a request locks only
	// its machine's shard, so one descheduled lock holder (2 cores shared with
	// everything else) stalls 1/numShards of the requests, not all of them.
	shards [numShards]shard

	// mu guards the writer's state below; lock order: mu, then a shard.
	mu sync.Mutex
	// forceRepeats asks the next write for every dirty repeat run.
	forceRepeats bool
	// started and done count the writes begun and finished (Flush waits for
	// one that begins after it was called); stopped: Run has returned.
	started, done uint64
	stopped       bool
	flushed       *sync.Cond
	kick          chan struct{}

	// Dropped counts session changes not recorded because the write queue was full.
	Dropped atomic.Int64

	leaseMu   sync.Mutex
	lease     clientv3.LeaseID
	leaseTime time.Time
}

// Bounds of the write queue: machines with pending changes (per shard), and changes
// queued for one machine.
const (
	maxPendingSessions   = 20000 / numShards
	maxPendingPerSession = 64
	writeWorkers         = 8
)

// numShards splits the recorder's state by MAC.
const numShards = 64

// A shard is the recorder's state for the machines whose MAC hashes to it.
type shard struct {
	mu sync.Mutex
	// machines is everything the hot paths need about one machine, found with one
	// lookup: its session as etcd has it (kept current by the cache's OnEvent, so
	// no request reads the cache), the local view, the handle, the repeat runs.
	machines map[string]*machine
	pending  map[string][]mutation
	// hops waiting to be written.
	hops []pendingHop
	// dirty are the repeat runs whose count etcd has not seen yet.
	dirty []*repeat
}

// machine is a shard's state for one MAC.
type machine struct {
	// The fields a request for a machine in a loop reads come first, so they
	// share as few cache lines as possible.

	// cached is the session in etcd as the cache last saw it (nil: none), with
	// its update time in Unix ns.
	cached    *bootapiv1.BootSession
	cachedUpd int64
	// local is the session as this process changed it while etcd has not echoed
	// the write back yet, so reads here see it at once.
	local *bootapiv1.BootSession
	// sess is the handle on the session; sessFor the record it was last handed
	// out for: the hot paths hand one out per packet or request without parsing
	// the root again.
	sess    *Session
	sessFor *bootapiv1.BootSession
	// ipFor is the record whose IP hashes to ipHash: a request's address is
	// compared without reading the record's string.
	ipFor  *bootapiv1.BootSession
	ipHash uint64
	// finFor is the record the last Finish was applied to, with its arguments,
	// so a machine re-fetching its menu costs no comparison of the record's
	// strings.
	finFor   *bootapiv1.BootSession
	finState bootapiv1.SessionState
	// runs fold identical hops that follow each other closely into one record
	// (Hop.repeats): the runs in progress, by trace and hop name (a few per
	// machine: one per hop name this service records). The first is usually the
	// only one and lives in run0, in the same allocation as the rest.
	runs []*repeat
	run0 repeat
	// runsArr backs runs until it outgrows it: the slice's array in the same
	// allocation as the rest, not one more cache miss per request.
	runsArr [2]*repeat

	// gone: forgotten, no longer in the shard's map (a Session handle may still
	// point here; it then looks the machine up again).
	gone bool

	// cachedRev is cached's mod revision (or the revision that deleted it);
	// written the revision of local's write: once the cache has seen it, the
	// cache is the truth again.
	cachedRev, written int64
	localUpd           int64
	tp                 string // sess's traceparent
	finHop, finMsg     string
	finTrace           string
	// hopTrace and hopCount bound the hops recorded for one trace (a machine
	// stuck in a loop).
	hopTrace string
	hopCount int
}

// updated is bs's update time in Unix ns; bs is m's cached or local record
// (whose times m keeps beside them: no trip to the Timestamp) or any other.
func (m *machine) updated(bs *bootapiv1.BootSession) int64 {
	switch bs {
	case m.cached:
		return m.cachedUpd
	case m.local:
		return m.localUpd
	}
	return unixNano(bs.GetUpdateTime())
}

func unixNano(ts *timestamppb.Timestamp) int64 {
	if ts == nil {
		return 0
	}
	return ts.AsTime().UnixNano()
}

// maxRuns bounds a machine's repeat runs in progress; the oldest goes first.
const maxRuns = 8

// get returns mac's machine, created when absent. Called with sh.mu held.
func (sh *shard) get(mac string) *machine {
	m := sh.machines[mac]
	if m == nil {
		m = &machine{}
		m.runs = m.runsArr[:0]
		sh.machines[mac] = m
	}
	return m
}

// forget drops mac's machine when nothing about it is left to keep. Called with
// sh.mu held.
func (sh *shard) forget(mac string, m *machine) {
	if m.cached == nil && m.local == nil {
		if _, busy := sh.pending[mac]; !busy {
			delete(sh.machines, mac)
			m.gone = true
		}
	}
}

// run returns the run in progress of hop name in trace, or nil.
func (m *machine) run(tr trace.TraceID, name string) *repeat {
	for _, rp := range m.runs {
		if rp.trace == tr && rp.name == name {
			return rp
		}
	}
	return nil
}

// ipChanged reports whether ip differs from the IP on cur, m's session.
func (m *machine) ipChanged(cur *bootapiv1.BootSession, ip string) bool {
	if m.ipFor != cur {
		m.ipFor, m.ipHash = cur, strhash.FNV64a(cur.GetIp())
	}
	// Equal 64-bit hashes of two addresses are taken as equal addresses (reading
	// the record's string is the cache miss this avoids); a collision would only
	// leave an older IP on the session.
	return strhash.FNV64a(ip) != m.ipHash
}

// newRun returns a run to fill for a new record of hop name in trace tr: run0
// when no run in progress and no unwritten count uses it. Called with the
// shard's lock held.
func (m *machine) newRun(tr trace.TraceID, name string) *repeat {
	r0 := &m.run0
	if r0.dirty {
		return &repeat{} // the writer still needs its count
	}
	for _, o := range m.runs {
		if o == r0 && (o.trace != tr || o.name != name) {
			return &repeat{} // another hop's run in progress
		}
	}
	return r0
}

// setRun makes rp the run of its trace and hop name.
func (m *machine) setRun(rp *repeat) {
	for i, o := range m.runs {
		if o.trace == rp.trace && o.name == rp.name {
			m.runs[i] = rp
			return
		}
	}
	if len(m.runs) >= maxRuns {
		// Runs already dirty are still written from the shard's dirty list.
		oldest := 0
		for i, o := range m.runs {
			if o.last.Before(m.runs[oldest].last) {
				oldest = i
			}
		}
		m.runs[oldest] = rp
		return
	}
	m.runs = append(m.runs, rp)
}

// onCacheEvent keeps each machine's cached session current. It runs under the
// cache's lock (store.Cache.OnEvent): lock order cache, then shard, so nothing
// may call the cache while holding a shard's lock.
func (r *Recorder) onCacheEvent(ev store.Event[*bootapiv1.BootSession]) {
	sh := r.shard(ev.Name)
	sh.mu.Lock()
	if ev.Deleted {
		if m := sh.machines[ev.Name]; m != nil {
			m.cached, m.cachedRev = nil, ev.ModRevision
			sh.forget(ev.Name, m)
		}
	} else {
		m := sh.get(ev.Name)
		m.cached, m.cachedRev, m.cachedUpd = ev.Value, ev.ModRevision, unixNano(ev.Value.GetUpdateTime())
	}
	sh.mu.Unlock()
}

func (r *Recorder) shard(mac string) *shard {
	return &r.shards[strhash.FNV64a(mac)%numShards]
}

// repeatsDue reports whether any shard has a repeat count due for writing at
// now.
func (r *Recorder) repeatsDue(now time.Time) bool {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		due := slices.ContainsFunc(sh.dirty, func(rp *repeat) bool { return now.Sub(rp.written) >= repeatFlush })
		sh.mu.Unlock()
		if due {
			return true
		}
	}
	return false
}

type pendingHop struct {
	key string
	hop *bootapiv1.Hop
}

// A repeat is a run of identical hops of one session: the first is recorded as
// usual, the later ones only raise count, which is written once it is
// repeatFlush old, spread by repeatSpread (and by Flush, and at stop).
type repeat struct {
	// trace and name: the session's trace and the hop's name. These, last and
	// the parts of the first hop a repeat must match (kept here, so checking a
	// repeat reads this struct, not the record too) come first.
	trace trace.TraceID
	name  string
	last  time.Time // end of the latest repeat
	count uint32
	dirty bool
	outcome

	key     string
	first   *bootapiv1.Hop // as recorded; never changed
	written time.Time
}

// outcome is what a hop must share with the first of a run to repeat it (its
// name is part of the run's key). attrs tells whether the hop has attributes,
// which are compared with the first hop's record.
type outcome struct {
	failed, attrs bool
	bytes         int64
	service       string
	detail        string
}

func outcomeOf(h *bootapiv1.Hop) outcome {
	return outcome{failed: h.GetFailed(), attrs: len(h.GetAttributes()) > 0, bytes: h.GetBytes(), service: h.GetService(), detail: h.GetDetail()}
}

// continued returns the run in progress of hop name in trace tr that a hop with
// outcome o (and attributes attrs) ending at end repeats, or nil.
func (m *machine) continued(tr trace.TraceID, name string, o outcome, attrs map[string]string, end time.Time) *repeat {
	rp := m.run(tr, name)
	if rp == nil || end.Sub(rp.last) >= RepeatWindow || rp.outcome != o {
		return nil
	}
	if o.attrs && !maps.Equal(rp.first.GetAttributes(), attrs) {
		return nil
	}
	return rp
}

// RepeatWindow is the most time between the ends of two identical hops for the
// second to be folded into the first as a repeat.
const RepeatWindow = 2 * time.Second

// repeatFlush is how often a growing repeat count is written. A machine in a loop
// repeats every second or two; its count in etcd (what bootctl trace shows) may lag
// by this much, and a crash loses at most this much of it. At 2 s, 10,000 machines
// fetching scripts in a loop cost 5,000 rewrites a second: 10 % of bootapi's
// throughput and 2 ms of its p99 (tools/bench/bootapi).
const repeatFlush = 10 * time.Second

// repeatSpread: due repeat counts are written repeatSpread times per
// repeatFlush, at most 1/repeatSpread of a shard's waiting counts each time.
// Runs that began together (a fleet powering on, a restarted bootapi) then come
// due together but are written spread over repeatFlush rather than in one burst
// (10,000 counts at once took the 64-connection p99 of tools/bench/bootapi over
// 5 ms), and stay spread. The cost: a count may lag by up to twice repeatFlush.
const repeatSpread = 10

// repeatTake says which repeat counts a write takes besides the queued hops and
// session changes.
type repeatTake int

const (
	noRepeats  repeatTake = iota
	dueRepeats            // a share of those older than repeatFlush
	allRepeats            // every one: Flush, and Run's last write
)

// maxPendingHops bounds the hop write queue (per shard).
const maxPendingHops = 50000 / numShards

// touchEvery is how stale a session's update time may get in etcd while hops keep
// arriving (hops themselves do not rewrite the session record), plus up to half
// of it more, fixed per MAC (touchAfter): sessions opened together are then not
// all touched in the same second.
const touchEvery = 30 * time.Second

// touchAfter is how stale mac's session update time may get.
func touchAfter(mac string) time.Duration {
	return touchEvery + time.Duration(strhash.FNV64a(mac)%uint64(touchEvery/2))
}

type mutation func(s *bootapiv1.BootSession) *bootapiv1.BootSession

// New returns a Recorder; call Run.
func New(cfg Config) (*Recorder, error) {
	if cfg.Store == nil {
		return nil, errors.New("session: no store")
	}
	if cfg.Service == "" {
		return nil, errors.New("session: no service name")
	}
	if cfg.TracerProvider == nil {
		// No spans to export: the session makes its own trace and span IDs, which is
		// what ties the hops in etcd together.
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.IdleRestart == 0 {
		cfg.IdleRestart = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Recorder{
		cfg:    cfg,
		tracer: cfg.TracerProvider.Tracer("github.com/bootchain/bootchain/pkg/session"),
		spans:  !isNoop(cfg.TracerProvider),
		log:    cfg.Logger.With("component", "session"),
		kick:   make(chan struct{}, 1),
	}
	for i := range r.shards {
		r.shards[i] = shard{machines: map[string]*machine{}, pending: map[string][]mutation{}}
	}
	r.flushed = sync.NewCond(&r.mu)
	r.cache = store.NewCache(cfg.Store, store.Prefix("sessions"), func() *bootapiv1.BootSession { return &bootapiv1.BootSession{} }, cfg.Logger)
	r.cache.OnEvent(r.onCacheEvent)
	return r, nil
}

// Cache is the watch-fed cache of every session (read-only values).
func (r *Recorder) Cache() *store.Cache[*bootapiv1.BootSession] { return r.cache }

// Run feeds the cache and writes recorded changes until ctx ends; pending writes are
// flushed (bounded by a few seconds) before it returns.
func (r *Recorder) Run(ctx context.Context) error {
	cacheDone := make(chan struct{})
	go func() { r.cache.Run(ctx); close(cacheDone) }()
	var last time.Time
	tick := time.NewTicker(repeatFlush / repeatSpread)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if r.repeatsDue(time.Now()) {
				last = time.Now()
				r.writePending(ctx, dueRepeats)
			}
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			r.writePending(fctx, allRepeats)
			cancel()
			r.mu.Lock()
			r.stopped = true
			r.flushed.Broadcast()
			r.mu.Unlock()
			<-cacheDone
			return nil
		case <-r.kick:
			// Under load, let changes gather for up to gatherFor after the last
			// write: a machine's hops and session changes of that window then share
			// transactions. A lone change after a quiet spell goes at once.
			if wait := gatherFor - time.Since(last); wait > 0 {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
				}
			}
			last = time.Now()
			r.writePending(ctx, noRepeats)
		}
	}
}

// gatherFor is the least time between two writes of recorded changes. Writes are
// asynchronous and nobody waits for them on a hot path; etcd's cost is per
// transaction and per revision, so fewer, fuller batches are much cheaper.
const gatherFor = 20 * time.Millisecond

// WaitReady waits for the first load of the session cache.
func (r *Recorder) WaitReady(ctx context.Context) error { return r.cache.WaitReady(ctx) }

// Flush waits until every change recorded so far is written to etcd: until a
// write that began after the call (and took every repeat count) has finished,
// or Run has returned (after its last write). Changes recorded meanwhile do not
// keep it waiting.
func (r *Recorder) Flush(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.mu.Lock()
		target := r.started + 1
		r.forceRepeats = true
		select {
		case r.kick <- struct{}{}:
		default:
		}
		for r.done < target && !r.stopped && ctx.Err() == nil {
			r.flushed.Wait()
		}
		r.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		// Wake the waiter so the goroutine ends.
		r.mu.Lock()
		r.flushed.Broadcast()
		r.mu.Unlock()
		return ctx.Err()
	}
}

// Get returns the machine's latest session (a copy), as this process knows it.
func (r *Recorder) Get(mac string) (*bootapiv1.BootSession, bool) {
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
	hops, err := r.readHops(context.Background(), mac, out.GetTraceId(), MaxHops)
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

// current is the machine's session as this process knows it (m may be nil).
// Called with sh.mu held.
func (sh *shard) current(mac string, m *machine) *bootapiv1.BootSession {
	if m == nil {
		return nil
	}
	l := m.local
	if l != nil && m.written > 0 && m.cachedRev >= m.written {
		if _, busy := sh.pending[mac]; !busy {
			m.local, m.written, l = nil, 0, nil
		}
	}
	c := m.cached
	switch {
	case l == nil:
		return c
	case c == nil:
		return l
	}
	// Prefer whichever is newer: another process may have opened a later session.
	if c.GetTraceId() != l.GetTraceId() && c.GetStartTime().AsTime().After(l.GetStartTime().AsTime()) {
		return c
	}
	return l
}

// OpenOptions tune Open.
type OpenOptions struct {
	// New forces a new session even if one is active: the firmware started over
	// (a DISCOVER from the PXE ROM, not from iPXE).
	New bool
	// IP of the machine, when known.
	IP string
	// Site of the machine; default the recorder's site.
	Site string
	// Now is the time of the request; default time.Now().
	Now time.Time
	// Last is the handle this caller was given last time for this MAC, if any:
	// Open then finds the machine without looking it up.
	Last *Session
}

// Open returns the machine's current session, or opens a new one (a new trace) when
// there is none, it has been idle for IdleRestart, or opts.New.
func (r *Recorder) Open(ctx context.Context, mac string, opts OpenOptions) *Session {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	l := opts.Last
	last := l != nil && l.r == r && l.isFor(mac)
	var sh *shard
	if last && l.sh != nil {
		sh = l.sh
	} else {
		sh = r.shard(mac)
	}
	sh.mu.Lock()
	var m *machine
	if last {
		m = l.machine(sh)
	} else {
		m = sh.machines[mac]
	}
	cur := sh.current(mac, m)
	// A machine seen again soon is still in the same boot attempt, even after the
	// session reached a verdict (iPXE re-fetching a script after the menu, a retry
	// after a failed download). A new attempt starts with the firmware's DISCOVER
	// (opts.New) or after IdleRestart of silence.
	if cur != nil && !opts.New && now.UnixNano()-m.updated(cur) < int64(r.cfg.IdleRestart) {
		s := m.session(r, sh, cur)
		moved := opts.IP != "" && m.ipChanged(cur, opts.IP)
		sh.mu.Unlock()
		if moved {
			s.SetIP(opts.IP)
		}
		return s
	}
	sh.mu.Unlock()

	site := opts.Site
	if site == "" {
		site = r.cfg.Site
	}
	// The root span is the session itself; it ends at once and every hop is its
	// child, so the trace reads as one boot even though hops come from four services
	// over minutes.
	_, root := r.tracer.Start(ctx, "boot "+mac, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(AttrMAC.String(mac), AttrSite.String(site), attribute.String("bootchain.service", r.cfg.Service)))
	root.End()
	sc := root.SpanContext()
	if !sc.IsValid() {
		// A no-op TracerProvider: make the IDs ourselves so the session still has
		// a trace to carry.
		var tid trace.TraceID
		binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
		binary.BigEndian.PutUint64(tid[8:], rand.Uint64())
		sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: newSpanID(), TraceFlags: trace.FlagsSampled})
	}
	bs := &bootapiv1.BootSession{
		Mac: mac, Site: site, TraceId: sc.TraceID().String(), Traceparent: Format(sc),
		StartTime: timestamppb.New(now), UpdateTime: timestamppb.New(now),
		State: bootapiv1.SessionState_SESSION_STATE_ACTIVE, Ip: opts.IP,
	}
	r.enqueue(mac, bs, func(_ *bootapiv1.BootSession) *bootapiv1.BootSession {
		return proto.Clone(bs).(*bootapiv1.BootSession)
	})
	sh.mu.Lock()
	s := sh.get(mac).session(r, sh, bs)
	sh.mu.Unlock()
	return s
}

// Join returns the machine's active session without opening one.
func (r *Recorder) Join(mac string) (*Session, bool) {
	sh := r.shard(mac)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	m := sh.machines[mac]
	cur := sh.current(mac, m)
	if cur == nil || cur.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE {
		return nil, false
	}
	return m.session(r, sh, cur), true
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

// session is a handle on bs, m's session. Called with sh's lock held.
func (m *machine) session(r *Recorder, sh *shard, bs *bootapiv1.BootSession) *Session {
	if m.sess != nil && m.sessFor == bs {
		return m.sess
	}
	m.sessFor = bs
	tp := bs.GetTraceparent()
	if m.sess == nil || m.tp != tp {
		root, _ := Parse(tp)
		// A Session never changes: one handle serves every request of the session.
		bits, _ := macaddr.Bits(bs.GetMac())
		m.sess, m.tp = &Session{r: r, MAC: bs.GetMac(), root: root, tid: bs.GetTraceId(), m: m, bits: bits, sh: sh}, tp
	}
	return m.sess
}

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
		ms.local, ms.localUpd = next, unixNano(next.GetUpdateTime())
	}
	sh.pending[mac] = append(q, m)
	sh.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Recorder) writePending(ctx context.Context, take repeatTake) {
	r.mu.Lock()
	if r.forceRepeats {
		take = allRepeats
	}
	r.forceRepeats = false
	r.started++
	gen := r.started
	r.mu.Unlock()
	batch := map[string][]mutation{}
	var hops []pendingHop
	now := time.Now()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		maps.Copy(batch, sh.pending)
		if len(sh.pending) > 0 {
			sh.pending = map[string][]mutation{}
		}
		hops = append(hops, sh.takeHops(now, take)...)
		sh.mu.Unlock()
	}
	if len(batch) > 0 || len(hops) > 0 {
		r.writeBatch(ctx, batch, hops)
	}
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
	if err := r.writeHops(ctx, hops); err != nil && ctx.Err() == nil {
		r.log.Warn("boot session hops not recorded", "hops", len(hops), "err", err)
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
				got := r.writeGroup(ctx, group, batch)
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
				m.local, m.written = nil, 0
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
	tctx, cancel := r.cfg.Store.WithTimeout(ctx)
	resp, err := r.cfg.Store.Client().Txn(tctx).If(cmps...).Then(puts...).Commit()
	cancel()
	switch {
	case err != nil:
		// Not written, or written with no answer: as a single write, no retry
		// (one that replaced a record wholesale could undo a later change).
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
			var err error
			rev, err = r.cfg.Store.Get(ctx, key, cur)
			exists = err == nil
			if err != nil && !errors.Is(err, store.ErrNotFound) {
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
		tctx, cancel := r.cfg.Store.WithTimeout(ctx)
		resp, err := cli.Txn(tctx).If(store.Unchanged(key, rev)).Then(clientv3.OpPut(key, string(b), clientv3.WithLease(lease))).Commit()
		cancel()
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
// lease. The keys are unique, so nothing is compared and nothing can conflict.
func (r *Recorder) writeHops(ctx context.Context, hops []pendingHop) error {
	if len(hops) == 0 {
		return nil
	}
	lease, err := r.leaseID(ctx)
	if err != nil {
		return err
	}
	for len(hops) > 0 {
		n := min(len(hops), 64)
		ops := make([]clientv3.Op, 0, n)
		for _, ph := range hops[:n] {
			b, err := proto.Marshal(ph.hop)
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(ph.key, string(b), clientv3.WithLease(lease)))
		}
		tctx, cancel := r.cfg.Store.WithTimeout(ctx)
		_, err := r.cfg.Store.Client().Txn(tctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("write hops: %w", err)
		}
		hops = hops[n:]
	}
	return nil
}

// enqueueHop queues a hop record and, when the session's update time in etcd is
// getting stale, a touch of the session record.
func (r *Recorder) enqueueHop(s *Session, h *bootapiv1.Hop, spanID trace.SpanID, start, end time.Time) {
	tid := s.TraceID()
	tr, name := s.root.TraceID(), h.GetName()
	sh := r.shard(s.MAC)
	sh.mu.Lock()
	m := sh.get(s.MAC)
	kick := true
	if rp := m.continued(tr, name, outcomeOf(h), h.GetAttributes(), end); rp != nil {
		sh.repeatLocked(rp, end, 1)
		kick = false
	} else {
		if m.hopTrace != tid {
			m.hopTrace, m.hopCount = tid, 0
		}
		if len(sh.hops) >= maxPendingHops || m.hopCount >= MaxHops {
			sh.mu.Unlock()
			r.Dropped.Add(1)
			return
		}
		m.hopCount++
		h.SpanId, h.StartTime, h.Duration = spanID.String(), timestamppb.New(start), durationpb.New(end.Sub(start))
		key := store.Key("sessionhops", s.MAC, tid, fmt.Sprintf("%019d-%s", start.UnixNano(), h.SpanId))
		sh.hops = append(sh.hops, pendingHop{key: key, hop: h})
		rp := m.newRun(tr, name)
		*rp = repeat{trace: tr, name: name, key: key, first: h, last: end, written: end, outcome: outcomeOf(h)}
		m.setRun(rp)
	}
	touch := sh.staleLocked(s, m, end)
	sh.mu.Unlock()
	if touch {
		s.touch(end)
		return
	}
	if kick {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// repeatLocked counts n repeats of rp's hop, the last of which ended at end;
// only the count changes, written within repeatFlush. Called with sh.mu held.
func (sh *shard) repeatLocked(rp *repeat, end time.Time, n uint32) {
	rp.count += n
	if end.After(rp.last) {
		rp.last = end
	}
	if !rp.dirty {
		rp.dirty = true
		sh.dirty = append(sh.dirty, rp)
	}
}

// staleLocked reports whether s, m's session, has a hop at end while etcd's
// update time is more than touchAfter older. Called with sh.mu held.
func (sh *shard) staleLocked(s *Session, m *machine, end time.Time) bool {
	cur := sh.current(s.MAC, m)
	if cur == nil {
		return false
	}
	// The MAC's own bound only past the shortest: no hash on most hops.
	age := end.UnixNano() - m.updated(cur)
	return age > int64(touchEvery) && age > int64(touchAfter(s.MAC)) && cur.GetTraceId() == s.TraceID()
}

// touch moves the session's update time up to t.
func (s *Session) touch(t time.Time) {
	ts := timestamppb.New(t)
	s.mutate(func(bs *bootapiv1.BootSession) *bootapiv1.BootSession {
		if ts.AsTime().After(bs.GetUpdateTime().AsTime()) {
			bs.UpdateTime = ts
		}
		return bs
	})
}

// Spans reports whether hops are exported as spans (a TracerProvider that records).
func (r *Recorder) Spans() bool { return r.spans }

// Repeat records a hop named name, with detail and bytes, that ended at end, if
// it repeats the run in progress of that hop on this session (same outcome within
// RepeatWindow, no attributes): the count of the run goes up and nothing is
// allocated. It reports false when it is not a repeat, or when hops are exported
// as spans (each request is then a span of its own): record the hop with StartHop
// and End. A machine looping on one request costs a lookup and a comparison.
func (s *Session) Repeat(name, detail string, bytes int64, end time.Time) bool {
	return s.RepeatN(name, detail, bytes, end, 1)
}

// RepeatN is Repeat for n hops at once, the last of which ended at end: for a
// caller that counted repeats of a run it knows to be in progress (a memo of
// the answer) and hands them over later.
func (s *Session) RepeatN(name, detail string, bytes int64, end time.Time, n uint32) bool {
	if s.r.spans || s.MAC == "" || n == 0 {
		return false
	}
	sh := s.shard()
	sh.mu.Lock()
	m := s.machine(sh)
	var rp *repeat
	if m != nil {
		rp = m.continued(s.root.TraceID(), name, outcome{bytes: bytes, service: s.r.cfg.Service, detail: detail}, nil, end)
	}
	if rp == nil {
		sh.mu.Unlock()
		return false
	}
	sh.repeatLocked(rp, end, n)
	touch := sh.staleLocked(s, m, end)
	sh.mu.Unlock()
	if touch {
		s.touch(end)
	}
	return true
}

// leaseID returns a lease for session keys. One lease serves every write for a tenth
// of the TTL, so etcd holds a handful of leases, not one per machine.
func (r *Recorder) leaseID(ctx context.Context) (clientv3.LeaseID, error) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if r.lease != 0 && time.Since(r.leaseTime) < r.cfg.TTL/10 {
		return r.lease, nil
	}
	tctx, cancel := r.cfg.Store.WithTimeout(ctx)
	defer cancel()
	resp, err := r.cfg.Store.Client().Grant(tctx, int64(r.cfg.TTL/time.Second))
	if err != nil {
		return 0, fmt.Errorf("session lease: %w", err)
	}
	r.lease, r.leaseTime = resp.ID, time.Now()
	return r.lease, nil
}

// Session is a handle on one machine's boot session.
type Session struct {
	r    *Recorder
	MAC  string
	root trace.SpanContext
	tid  string // root's trace ID in hex, when known (saves formatting it per hop)
	// m is the machine whose handle this is (nil for a handle made from a
	// traceparent): the hot paths reach it without a map lookup. bits is the
	// MAC's value (macaddr.Bits), which Open compares instead of the strings.
	m    *machine
	bits uint64
	// sh is the MAC's shard (nil for a handle made from a traceparent): no hash
	// of the MAC per call.
	sh *shard
}

// shard returns the shard of s's MAC.
func (s *Session) shard() *shard {
	if s.sh != nil {
		return s.sh
	}
	return s.r.shard(s.MAC)
}

// isFor reports whether s is a handle for mac, comparing the MACs' values (0:
// not known, never equal).
func (s *Session) isFor(mac string) bool {
	v, ok := macaddr.Bits(mac)
	return ok && v != 0 && v == s.bits
}

// machine returns s's machine in sh (nil: none). Called with sh.mu held.
func (s *Session) machine(sh *shard) *machine {
	if m := s.m; m != nil && !m.gone {
		return m
	}
	return sh.machines[s.MAC]
}

// Traceparent is the W3C traceparent of the session's root span.
func (s *Session) Traceparent() string { return Format(s.root) }

// TraceID is the session's trace ID.
func (s *Session) TraceID() string {
	if s.tid != "" {
		return s.tid
	}
	return s.root.TraceID().String()
}

// Context returns ctx with the session's root as the remote parent span.
func (s *Session) Context(ctx context.Context) context.Context {
	if !s.root.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, s.root)
}

func (s *Session) mutate(m mutation) {
	if s.MAC == "" {
		return
	}
	tid := s.TraceID()
	s.r.enqueue(s.MAC, nil, func(bs *bootapiv1.BootSession) *bootapiv1.BootSession {
		// A change for a session that has since been replaced is dropped: it belongs
		// to a boot attempt that is over.
		if bs == nil || bs.GetTraceId() != tid {
			return bs
		}
		return m(bs)
	})
}

// SetIP records the machine's address on the session.
func (s *Session) SetIP(ip string) {
	s.mutate(func(bs *bootapiv1.BootSession) *bootapiv1.BootSession { bs.Ip = ip; return bs })
}

// SetJob records the job dispatched in this session.
func (s *Session) SetJob(id string) {
	s.mutate(func(bs *bootapiv1.BootSession) *bootapiv1.BootSession { bs.JobId = id; return bs })
}

// Finish ends the session: succeeded, or failed/stalled at hop with message.
func (s *Session) Finish(state bootapiv1.SessionState, hop, message string) {
	sh := s.shard()
	sh.mu.Lock()
	m := s.machine(sh)
	cur := sh.current(s.MAC, m)
	var same bool
	if cur != nil {
		tid := s.TraceID()
		// The same Finish on the same record again: pointers and short strings
		// that are usually the very same ones, not the record's fields.
		same = m.finFor == cur && m.finState == state && m.finHop == hop && m.finMsg == message && m.finTrace == tid
		if !same && cur.GetTraceId() == tid && cur.GetState() == state && cur.GetFailedHop() == hop && cur.GetMessage() == message {
			same = true
			m.finFor, m.finState, m.finHop, m.finMsg, m.finTrace = cur, state, hop, message, tid
		}
	}
	sh.mu.Unlock()
	if same {
		return // nothing new: a machine re-fetching its menu
	}
	now := timestamppb.Now()
	s.mutate(func(bs *bootapiv1.BootSession) *bootapiv1.BootSession {
		bs.State, bs.FailedHop, bs.Message, bs.UpdateTime = state, hop, message, now
		return bs
	})
}

// Hop is one step being recorded. End it exactly once.
type Hop struct {
	s     *Session
	span  trace.Span
	start time.Time
	mu    sync.Mutex
	ended bool
	// rec is the hop's record, allocated with the Hop (one allocation per hop on
	// the hot paths, not two); after End it belongs to the recorder.
	rec bootapiv1.Hop
}

// StartHop starts a hop span (a child of the session root, or of the span already in
// ctx if it belongs to this session) and returns the context carrying it.
func (s *Session) StartHop(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, *Hop) {
	return s.StartHopAt(ctx, name, time.Now(), attrs...)
}

// StartHopAt is StartHop for a hop that started at start.
func (s *Session) StartHopAt(ctx context.Context, name string, start time.Time, attrs ...attribute.KeyValue) (context.Context, *Hop) {
	var span trace.Span
	if s.r.spans {
		if parent := trace.SpanContextFromContext(ctx); !parent.IsValid() || parent.TraceID() != s.root.TraceID() {
			ctx = s.Context(ctx)
		}
		all := make([]attribute.KeyValue, 0, 4+len(attrs))
		all = append(all, AttrMAC.String(s.MAC), AttrHop.String(name), attribute.String("bootchain.service", s.r.cfg.Service))
		if s.r.cfg.Site != "" {
			all = append(all, AttrSite.String(s.r.cfg.Site))
		}
		ctx, span = s.r.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start), trace.WithAttributes(append(all, attrs...)...))
	}
	if span == nil || !span.IsRecording() {
		// A provider that records nothing hands back the parent's context: give
		// the hop an ID of its own so its children and the record still name it.
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: s.root.TraceID(), SpanID: newSpanID(), TraceFlags: s.root.TraceFlags()})
		ctx = trace.ContextWithSpanContext(ctx, sc)
		span = trace.SpanFromContext(ctx)
	}
	h := &Hop{s: s, span: span, start: start}
	// Span ID, start and duration go into the record only when it becomes one
	// (enqueueHop): a repeat folded into an earlier record needs none of them.
	h.rec.Name, h.rec.Service = name, s.r.cfg.Service
	return ctx, h
}

// Span is the hop's span, for attributes and events beyond what Hop records.
func (h *Hop) Span() trace.Span { return h.span }

// SetBytes records how many bytes the hop sent.
func (h *Hop) SetBytes(n int64) {
	h.mu.Lock()
	if !h.ended {
		h.rec.Bytes = n
	}
	h.mu.Unlock()
}

// SetDetail records a short description (file name, address, state).
func (h *Hop) SetDetail(d string) {
	h.mu.Lock()
	if !h.ended {
		h.rec.Detail = d
	}
	h.mu.Unlock()
}

// SetAttr records an attribute on both the span and the session record.
func (h *Hop) SetAttr(key, value string) {
	h.span.SetAttributes(attribute.String(key, value))
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		return
	}
	if h.rec.Attributes == nil {
		h.rec.Attributes = map[string]string{}
	}
	h.rec.Attributes[key] = value
}

// Fail marks the hop failed with err (span status Error).
func (h *Hop) Fail(err error) {
	h.mu.Lock()
	if !h.ended {
		h.rec.Failed = true
		if h.rec.Detail == "" || err != nil {
			h.rec.Detail = strings.TrimSpace(h.rec.Detail + " " + errString(err))
		}
	}
	h.mu.Unlock()
	h.span.RecordError(err)
	h.span.SetStatus(codes.Error, errString(err))
}

func errString(err error) string {
	if err == nil {
		return "failed"
	}
	return err.Error()
}

// End ends the span and records the hop on the session.
func (h *Hop) End() {
	h.mu.Lock()
	if h.ended {
		h.mu.Unlock()
		return
	}
	h.ended = true
	now := time.Now()
	// Setters check ended, so after this the record is no longer written: no copy.
	rec := &h.rec
	h.mu.Unlock()
	if rec.Bytes > 0 && h.s.r.spans {
		h.span.SetAttributes(attribute.Int64("bootchain.bytes", rec.Bytes))
	}
	h.span.End()
	if h.s.MAC != "" {
		h.s.r.enqueueHop(h.s, rec, h.span.SpanContext().SpanID(), h.start, now)
	}
}

// MarkStalled ends every active session whose last hop is older than after: FAILED
// when that hop failed, STALLED otherwise, naming the hop in both cases. It returns
// how many it marked. Any replica may run it; the writes are compare-and-swap.
func (r *Recorder) MarkStalled(after time.Duration, now time.Time) int {
	n := 0
	for _, it := range r.cache.List(nil) {
		bs := it.Value
		// The record's update time trails the hops by at most touchAfter: a cheap
		// first filter before reading the last hop.
		if bs.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE || now.Sub(bs.GetUpdateTime().AsTime()) < after {
			continue
		}
		hops, err := r.readHops(context.Background(), bs.GetMac(), bs.GetTraceId(), 1)
		if err != nil {
			r.log.Warn("stall check", "mac", bs.GetMac(), "err", err)
			continue
		}
		var last *bootapiv1.Hop
		if len(hops) > 0 {
			last = hops[0]
			end := last.GetStartTime().AsTime().Add(last.GetDuration().AsDuration())
			if lr := last.GetLastRepeatTime(); lr != nil && lr.AsTime().After(end) {
				end = lr.AsTime()
			}
			if now.Sub(end) < after {
				continue
			}
		}
		state, hop, msg := stallVerdict(last, after)
		seen := bs.GetUpdateTime().AsTime()
		sh := r.shard(bs.GetMac())
		sh.mu.Lock()
		sess := sh.get(bs.GetMac()).session(r, sh, bs)
		sh.mu.Unlock()
		sess.mutate(func(cur *bootapiv1.BootSession) *bootapiv1.BootSession {
			// Re-check against the latest record: the machine may have moved on.
			if cur.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE || cur.GetUpdateTime().AsTime().After(seen) {
				return cur
			}
			cur.State, cur.FailedHop, cur.Message = state, hop, msg
			return cur
		})
		n++
	}
	return n
}

func stallVerdict(last *bootapiv1.Hop, after time.Duration) (bootapiv1.SessionState, string, string) {
	if last == nil {
		return bootapiv1.SessionState_SESSION_STATE_STALLED, "", fmt.Sprintf("no hop recorded within %s of the session opening", after)
	}
	if last.GetFailed() {
		return bootapiv1.SessionState_SESSION_STATE_FAILED, last.GetName(), fmt.Sprintf("%s (%s) failed: %s", last.GetName(), last.GetService(), last.GetDetail())
	}
	return bootapiv1.SessionState_SESSION_STATE_STALLED, last.GetName(), fmt.Sprintf("no progress for %s after %s (%s) %s", after, last.GetName(), last.GetService(), last.GetDetail())
}

func isNoop(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return true
	}
	return false
}

// newSpanID returns a random non-zero span ID (math/rand: IDs need to be unique,
// not secret, as in the OTel SDK's own generator).
func newSpanID() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}

// head copies a session without its hops. bs may be a shared cache value: it is
// only read.
func head(bs *bootapiv1.BootSession) *bootapiv1.BootSession {
	return &bootapiv1.BootSession{
		Mac: bs.GetMac(), Site: bs.GetSite(), TraceId: bs.GetTraceId(), Traceparent: bs.GetTraceparent(),
		StartTime: bs.GetStartTime(), UpdateTime: bs.GetUpdateTime(), State: bs.GetState(), Ip: bs.GetIp(),
		JobId: bs.GetJobId(), FailedHop: bs.GetFailedHop(), Message: bs.GetMessage(),
	}
}
