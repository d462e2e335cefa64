package session

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"github.com/bootchain/bootchain/pkg/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Attribute keys bootchain adds to every hop span, beside OTel's semantic conventions.
const (
	AttrMAC   = attribute.Key("bootchain.mac")
	AttrSite  = attribute.Key("bootchain.site")
	AttrHop   = attribute.Key("bootchain.hop")
	AttrJobID = attribute.Key("bootchain.job_id")
)

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
	// OnHop, when set, sees every hop that ends (metrics): its name, whether
	// it failed and how long it took. It runs on the request's goroutine and
	// must be quick.
	OnHop func(name string, failed bool, d time.Duration)
	// OnFinish, when set, sees every session this process finishes, with the
	// state it finished in (metrics); a repeat of the same Finish is not seen.
	OnFinish func(state bootapiv1.SessionState)
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
	// byIP and byTrace find machines by their session's IP and trace ID.
	byIP, byTrace index

	// mu guards the writer's state below; lock order: mu, then a shard.
	mu sync.Mutex
	// forceRepeats asks the next write for every dirty repeat run.
	forceRepeats bool
	// retry are hops whose write failed (etcd unreachable), written again
	// from retryAt on, for at most hopRetryFor (retry.go).
	retry   []pendingHop
	retryAt time.Time
	// started and done count the writes begun and finished (Flush waits for
	// one that begins after it was called); stopped: Run has returned.
	started, done uint64
	stopped       bool
	flushed       *sync.Cond
	kick          chan struct{}

	// Dropped counts session changes and hops not recorded because the write
	// queue was full.
	Dropped atomic.Int64
	// Panics counts recovered panics of the writer (their changes are lost).
	Panics atomic.Int64
	// Retries counts etcd calls of the writer tried again after a transient
	// failure (a leader election).
	Retries atomic.Int64
	// testHook, when set, sees every group of machines written (tests force
	// panics).
	testHook func(macs []string)
	// faultHook, when set, runs before each etcd call of the writer; an error
	// it returns stands for the call's (tests fake an election).
	faultHook func() error

	leaseMu   sync.Mutex
	lease     clientv3.LeaseID
	leaseTime time.Time

	metrics *metrics
}

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
		cfg:     cfg,
		tracer:  cfg.TracerProvider.Tracer("github.com/bootchain/bootchain/pkg/session"),
		spans:   !isNoop(cfg.TracerProvider),
		log:     cfg.Logger.With("component", "session"),
		kick:    make(chan struct{}, 1),
		metrics: newMetrics(cfg.Service),
	}
	for i := range r.shards {
		r.shards[i] = shard{machines: map[string]*machine{}, pending: map[string][]mutation{}, byIP: &r.byIP, byTrace: &r.byTrace}
	}
	r.byIP.init()
	r.byTrace.init()
	r.flushed = sync.NewCond(&r.mu)
	r.cache = store.NewCache(cfg.Store, store.Prefix("sessions"), func() *bootapiv1.BootSession { return &bootapiv1.BootSession{} }, cfg.Logger)
	r.cache.OnEvent(r.onCacheEvent)
	return r, nil
}

// Cache is the watch-fed cache of every session (read-only values).
func (r *Recorder) Cache() *store.Cache[*bootapiv1.BootSession] { return r.cache }

// Spans reports whether hops are exported as spans (a TracerProvider that records).
func (r *Recorder) Spans() bool { return r.spans }

// Run feeds the cache and writes recorded changes until ctx ends; pending writes are
// flushed (bounded by a few seconds) before it returns.
func (r *Recorder) Run(ctx context.Context) error {
	cacheDone := make(chan struct{})
	go func() { r.cache.Run(ctx); close(cacheDone) }()
	// Writes outlive ctx: a batch taken from the queue when the stop comes is
	// written (each etcd call bounded by the store's timeout), not dropped, and
	// the final flush below then writes whatever is left.
	wctx := context.WithoutCancel(ctx)
	var last time.Time
	tick := time.NewTicker(repeatFlush / repeatSpread)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if r.repeatsDue(time.Now()) || r.retryDue(time.Now()) {
				last = time.Now()
				r.writePending(wctx, dueRepeats)
			}
		case <-ctx.Done():
			// The last flush outlives ctx (it is why Run waits), keeping its values.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			r.writePending(fctx, allRepeats)
			cancel()
			r.mu.Lock()
			// Hops the final flush could not write either are lost with the process.
			r.Dropped.Add(int64(len(r.retry)))
			r.retry = nil
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
			r.writePending(wctx, noRepeats)
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

func isNoop(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case noop.TracerProvider, *noop.TracerProvider:
		return true
	}
	return false
}
