package session

import (
	"context"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Session is a handle on one machine's boot session.
type Session struct {
	r    *Recorder
	MAC  string
	root trace.SpanContext
	tid  string // root's trace ID in hex, when known (saves formatting it per hop)
	// m is the machine whose handle this is (nil for a handle made from a
	// traceparent): the hot paths reach it without a map lookup.
	m *machine
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
	if f := s.r.cfg.OnFinish; f != nil {
		f(state)
	}
	now := timestamppb.Now()
	s.mutate(func(bs *bootapiv1.BootSession) *bootapiv1.BootSession {
		bs.State, bs.FailedHop, bs.Message, bs.UpdateTime = state, hop, message, now
		return bs
	})
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
