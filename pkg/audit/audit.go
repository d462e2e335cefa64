// Package audit is bootchain's audit log: who changed what, from where, when, and
// at which etcd revision. Every gRPC write, every call refused for want of a
// credential or a permission, and every job dispatch and installer callback on
// bootapi's HTTP side is one event at /bootchain/v1/audit/<unix nanos>-<random>,
// kept under an etcd lease for the retention period.
//
//	log, err := audit.New(audit.Config{Store: st})
//	srv, err := grpcserver.New(grpcserver.Config{Addr: ":9080", Audit: log})
//	err = log.Record(ctx, audit.Event{Action: audit.ActionDispatch, Resource: mac})
//
// Record returns once the event is in etcd: a write's answer waits for its event,
// so an answered write is never missing from the log, also after a crash.
// Concurrent events share one etcd transaction (group commit), and the events
// waiting for a transaction are bounded (Config.MaxPending).
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Prefix is where events are stored.
var Prefix = store.Prefix("audit")

// DefaultRetention is how long events are kept unless configured otherwise.
const DefaultRetention = 30 * 24 * time.Hour

// Actions of bootapi's HTTP side (gRPC events carry the full method).
const (
	ActionDispatch = "http.dispatch"
	ActionCallback = "http.callback"
)

// Anonymous is the identity of a caller that presented no credential.
const Anonymous = "anonymous"

// OutcomeOK is the outcome of an action that succeeded.
const OutcomeOK = "OK"

// Errors returned by Record.
var (
	ErrFull = errors.New("audit: too many events waiting to be written")
)

// Event is one audited action.
type Event struct {
	// Time of the action; zero: when Record is called.
	Time time.Time
	// Identity is who: auth.Identity.String(), Anonymous, or "machine:<mac>".
	Identity string
	// Action is what: a gRPC full method, ActionDispatch, ActionCallback.
	Action string
	// Resource is the object acted on (a name, MAC or id).
	Resource string
	// Site of the object, when known.
	Site string
	// Peer is from where: the caller's ip:port.
	Peer string
	// Outcome is OutcomeOK or a gRPC status code's name.
	Outcome string
	// Revision is the etcd revision of the last write the action committed.
	Revision int64
	// Detail is free text: an error message, a job's id and state. Never a secret.
	Detail string
}

// Bounds of an event's fields, so that no caller can make an event large.
const (
	maxField  = 256
	maxDetail = 1024
)

func (e Event) proto() *bootapiv1.AuditEvent {
	return &bootapiv1.AuditEvent{
		Time:     timestamppb.New(e.Time),
		Identity: clip(e.Identity, maxField), Action: clip(e.Action, maxField),
		Resource: clip(e.Resource, maxField), Site: clip(e.Site, maxField),
		Peer: clip(e.Peer, maxField), Outcome: clip(e.Outcome, maxField),
		Revision: e.Revision, Detail: clip(e.Detail, maxDetail),
	}
}

// clip makes s valid UTF-8 (proto strings must be) of at most n bytes.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Config configures a Log.
type Config struct {
	// Store is the etcd store. Required.
	Store *store.Store
	// Retention is how long an event is kept (at least; at most Retention/30
	// longer, see Log); default DefaultRetention.
	Retention time.Duration
	// MaxPending bounds the events waiting to be written; a Record beyond it
	// waits for room. Default 1024.
	MaxPending int
	// DeniedPerSecond and DeniedBurst bound the events of refused calls, which
	// anyone who reaches a port can cause: default 20 a second, bursts of 200.
	// Refusals beyond are counted and the count is noted on the next one recorded.
	DeniedPerSecond float64
	DeniedBurst     int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Log writes audit events.
//
// Each event is put under a lease shared by all events of one time bucket
// (Retention/30, between 1s and 24h): a lease is granted at the first event of
// a bucket with TTL Retention plus one bucket, so every event lives at least
// Retention and at most one bucket longer, and a 30-day log needs about 31
// leases rather than one per event.
type Log struct {
	cfg    Config
	log    *slog.Logger
	bucket time.Duration
	slots  chan struct{} // one per event waiting to be written

	mu       sync.Mutex
	next     *batch // events waiting for the next transaction
	flushing bool   // a goroutine is writing batches

	leaseMu     sync.Mutex
	leaseBucket time.Time
	lease       clientv3.LeaseID

	denied deniedLimiter
}

type batch struct {
	keys []string
	vals []string
	done chan struct{}
	err  error // set before done is closed
}

// New returns a Log.
func New(cfg Config) (*Log, error) {
	if cfg.Store == nil {
		return nil, errors.New("audit: no store")
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Retention < time.Second {
		return nil, fmt.Errorf("audit: retention %v: want at least 1s", cfg.Retention)
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1024
	}
	if cfg.DeniedPerSecond <= 0 {
		cfg.DeniedPerSecond = 20
	}
	if cfg.DeniedBurst <= 0 {
		cfg.DeniedBurst = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	bucket := min(max(cfg.Retention/30, time.Second), 24*time.Hour)
	return &Log{
		cfg: cfg, log: cfg.Logger.With("component", "audit"), bucket: bucket,
		slots:  make(chan struct{}, cfg.MaxPending),
		denied: deniedLimiter{rate: cfg.DeniedPerSecond, burst: float64(cfg.DeniedBurst), tokens: float64(cfg.DeniedBurst)},
	}, nil
}

// Retention is how long events are kept.
func (l *Log) Retention() time.Duration { return l.cfg.Retention }

// RecordRefused is Record for a refused action that anyone on the network can
// cause (a callback with a wrong token): within the refusals' rate limit it is
// written, beyond it only counted, and the count is noted on the next one
// written. It reports whether the event was written.
func (l *Log) RecordRefused(ctx context.Context, ev Event) (bool, error) {
	ok, skipped := l.denied.allow(time.Now())
	if !ok {
		return false, nil
	}
	if skipped > 0 {
		ev.Detail = strings.TrimSpace(ev.Detail + " (" + strconv.FormatInt(skipped, 10) + " earlier refusals not recorded: rate limit)")
	}
	return true, l.Record(ctx, ev)
}

// eventKey is the key of an event at t: keys sort by time, and the random part
// keeps two events of one nanosecond (or of two replicas) apart.
func eventKey(t time.Time) string {
	return fmt.Sprintf("%s%020d-%08x", Prefix, t.UnixNano(), rand.Uint32())
}

// Record writes ev and returns once it is in etcd, or with ctx's error (the event
// is then still being written: a batch is tried for writeRetryFor). Fields are clipped to bounded sizes.
func (l *Log) Record(ctx context.Context, ev Event) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Identity == "" {
		ev.Identity = Anonymous
	}
	b, err := proto.Marshal(ev.proto())
	if err != nil {
		return fmt.Errorf("audit: encode: %w", err)
	}
	select {
	case l.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrFull, ctx.Err())
	}
	l.mu.Lock()
	if l.next == nil {
		l.next = &batch{done: make(chan struct{})}
	}
	bt := l.next
	bt.keys = append(bt.keys, eventKey(ev.Time))
	bt.vals = append(bt.vals, string(b))
	if !l.flushing {
		l.flushing = true
		go l.flush()
	}
	l.mu.Unlock()
	select {
	case <-bt.done:
		return bt.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush writes batches until none is waiting. While one transaction is in
// flight the next batch fills, so under load each transaction carries many
// events and a caller waits for at most two.
func (l *Log) flush() {
	for {
		l.mu.Lock()
		bt := l.next
		l.next = nil
		if bt == nil {
			l.flushing = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		bt.err = l.write(bt)
		if bt.err != nil {
			l.log.Error("audit events not written", "events", len(bt.keys), "err", bt.err)
		}
		for range bt.keys {
			<-l.slots
		}
		close(bt.done)
	}
}

// maxOps stays within etcd's default --max-txn-ops (128).
const maxOps = 128

// writeRetryFor is how long a batch is tried again while etcd elects a leader
// or stalls (a boot storm on a small machine held commits for over 7 s): its
// events' callers may have stopped waiting, but the events are still written.
// A put of an event's own key applied twice changes nothing. While a batch is
// tried, new events wait for room (Config.MaxPending).
const writeRetryFor = 2 * time.Minute

func (l *Log) write(bt *batch) error {
	// Not the callers' contexts: the batch holds many callers' events, and the
	// writes must not be reported as theirs (store.Revisions). The client's:
	// a closed store ends the tries.
	ctx := l.cfg.Store.Client().Ctx()
	for i := 0; i < len(bt.keys); i += maxOps {
		keys, vals := bt.keys[i:min(i+maxOps, len(bt.keys))], bt.vals[i:min(i+maxOps, len(bt.vals))]
		_, err := store.RetryTransient(ctx, writeRetryFor, func() (err error) {
			for attempt := 0; attempt < 2; attempt++ {
				var lease clientv3.LeaseID
				if lease, err = l.leaseFor(ctx, time.Now(), attempt > 0); err != nil {
					return err
				}
				ops := make([]clientv3.Op, len(keys))
				for j := range keys {
					ops[j] = clientv3.OpPut(keys[j], vals[j], clientv3.WithLease(lease))
				}
				tctx, cancel := l.cfg.Store.WithTimeout(ctx)
				_, err = l.cfg.Store.Client().Txn(tctx).Then(ops...).Commit()
				cancel()
				// A lease that expired or was lost with etcd's data is granted anew.
				if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
					return err
				}
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("audit: write %d events: %w", len(keys), err)
		}
	}
	return nil
}

// leaseFor returns the lease of now's bucket, granting it if needed (or if
// renew: the cached one was not found).
func (l *Log) leaseFor(ctx context.Context, now time.Time, renew bool) (clientv3.LeaseID, error) {
	b := now.Truncate(l.bucket)
	l.leaseMu.Lock()
	defer l.leaseMu.Unlock()
	if !renew && l.lease != 0 && b.Equal(l.leaseBucket) {
		return l.lease, nil
	}
	ttl := int64((l.cfg.Retention + l.bucket + time.Second - 1) / time.Second)
	tctx, cancel := l.cfg.Store.WithTimeout(ctx)
	defer cancel()
	resp, err := l.cfg.Store.Client().Grant(tctx, ttl)
	if err != nil {
		return 0, fmt.Errorf("audit: grant lease: %w", err)
	}
	l.lease, l.leaseBucket = resp.ID, b
	return resp.ID, nil
}

// deniedLimiter is a token bucket for the events of refused calls.
type deniedLimiter struct {
	mu         sync.Mutex
	rate       float64
	burst      float64
	tokens     float64
	last       time.Time
	suppressed int64
}

// allow reports whether a refusal at now may be recorded, and how many were not
// since the last one that was.
func (d *deniedLimiter) allow(now time.Time) (bool, int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.last.IsZero() {
		d.tokens = min(d.burst, d.tokens+now.Sub(d.last).Seconds()*d.rate)
	}
	d.last = now
	if d.tokens < 1 {
		d.suppressed++
		return false, 0
	}
	d.tokens--
	n := d.suppressed
	d.suppressed = 0
	return true, n
}
