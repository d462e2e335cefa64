package session

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/strhash"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxHops bounds the hops kept on one session: a machine stuck in a retry loop
// must not grow its record without bound. The latest are kept (what the machine
// does now, and the last hop the stall sweep names) and the oldest deleted: each
// recorder cuts a session back to MaxHops once it has recorded another
// trimEvery hops past the bound, so etcd holds at most MaxHops+trimEvery hops
// per recorder. Get reads the latest MaxHops.
const MaxHops = 200

// trimEvery spreads the cuts: one read and one delete per trimEvery hops.
const trimEvery = MaxHops / 4

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
func (h *Hop) End() { h.EndAt(time.Now()) }

// EndAt is End for a hop that ended at now: a hop recorded after the fact
// (StartHopAt), when the session was found only later.
func (h *Hop) EndAt(now time.Time) {
	h.mu.Lock()
	if h.ended {
		h.mu.Unlock()
		return
	}
	h.ended = true
	// Setters check ended, so after this the record is no longer written: no copy.
	rec := &h.rec
	h.mu.Unlock()
	if rec.Bytes > 0 && h.s.r.spans {
		h.span.SetAttributes(attribute.Int64("bootchain.bytes", rec.Bytes))
	}
	h.span.End(trace.WithTimestamp(now))
	if f := h.s.r.cfg.OnHop; f != nil {
		f(rec.GetName(), rec.GetFailed(), now.Sub(h.start))
	}
	if h.s.MAC != "" {
		h.s.r.enqueueHop(h.s, rec, h.span.SpanContext().SpanID(), h.start, now)
	}
}

type pendingHop struct {
	key string
	hop *bootapiv1.Hop
	// failed is when a write of the hop first failed (zero: never).
	failed time.Time
}

// maxPendingHops bounds the hop write queue (per shard).
const maxPendingHops = 50000 / numShards

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
		sh.repeatLocked(rp, end)
		kick = false
	} else {
		if m.hopTrace != tid {
			m.hopTrace, m.hopCount = tid, 0
		}
		if len(sh.hops) >= maxPendingHops {
			sh.mu.Unlock()
			r.Dropped.Add(1)
			return
		}
		m.hopCount++
		if over := m.hopCount - MaxHops; over > 0 && over%trimEvery == 0 {
			sh.trims = append(sh.trims, hopPrefix(s.MAC, tid))
		}
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

// touchEvery is how stale a session's update time may get in etcd while hops keep
// arriving (hops themselves do not rewrite the session record), plus up to half
// of it more, fixed per MAC (touchAfter): sessions opened together are then not
// all touched in the same second.
const touchEvery = 30 * time.Second

// touchAfter is how stale mac's session update time may get.
func touchAfter(mac string) time.Duration {
	return touchEvery + time.Duration(strhash.FNV64a(mac)%uint64(touchEvery/2))
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
