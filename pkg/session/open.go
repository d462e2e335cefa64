package session

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

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
}

// Open returns the machine's current session, or opens a new one (a new trace) when
// there is none, it has been idle for IdleRestart, or opts.New.
func (r *Recorder) Open(ctx context.Context, mac string, opts OpenOptions) *Session {
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	sh := r.shard(mac)
	sh.mu.Lock()
	m := sh.machines[mac]
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

// JoinOrOpen is the machine's active session, or the one Open gives (a recent
// session again, else a new one) when it has none: a packet in the middle of a
// boot (a REQUEST, iPXE's exchange) belongs to the boot under way.
func (r *Recorder) JoinOrOpen(ctx context.Context, mac, site string) *Session {
	if s, ok := r.Join(mac); ok {
		return s
	}
	return r.Open(ctx, mac, OpenOptions{Site: site})
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

// newSpanID returns a random non-zero span ID (math/rand: IDs need to be unique,
// not secret, as in the OTel SDK's own generator).
func newSpanID() trace.SpanID {
	var sid trace.SpanID
	for !sid.IsValid() {
		binary.BigEndian.PutUint64(sid[:], rand.Uint64())
	}
	return sid
}
