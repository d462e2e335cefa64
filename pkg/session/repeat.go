package session

import (
	"maps"
	"slices"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"go.opentelemetry.io/otel/trace"
)

// RepeatWindow is the most time between the ends of two identical hops for the
// second to be folded into the first as a repeat.
const RepeatWindow = 2 * time.Second

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

// maxRuns bounds a machine's repeat runs in progress; the oldest goes first.
const maxRuns = 8

// run returns the run in progress of hop name in trace, or nil.
func (m *machine) run(tr trace.TraceID, name string) *repeat {
	for _, rp := range m.runs {
		if rp.trace == tr && rp.name == name {
			return rp
		}
	}
	return nil
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

// repeatLocked counts n repeats of rp's hop, the last of which ended at end;
// only the count changes, written within repeatFlush. Called with sh.mu held.
func (sh *shard) repeatLocked(rp *repeat, end time.Time) {
	rp.count++
	if end.After(rp.last) {
		rp.last = end
	}
	if !rp.dirty {
		rp.dirty = true
		sh.dirty = append(sh.dirty, rp)
	}
}

// Repeat records a hop named name, with detail and bytes, that ended at end, if
// it repeats the run in progress of that hop on this session (same outcome within
// RepeatWindow, no attributes): the count of the run goes up and nothing is
// allocated. It reports false when it is not a repeat, or when hops are exported
// as spans (each request is then a span of its own): record the hop with StartHop
// and End. A machine looping on one request costs a lookup and a comparison.
func (s *Session) Repeat(name, detail string, bytes int64, end time.Time) bool {
	if s.r.spans || s.MAC == "" {
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
	sh.repeatLocked(rp, end)
	touch := sh.staleLocked(s, m, end)
	sh.mu.Unlock()
	if touch {
		s.touch(end)
	}
	return true
}

// repeatFlush is how often a growing repeat count is written. A machine in a loop
// repeats every second or two; its count in etcd (what bootctl trace shows) may lag
// by this much, and a crash loses at most this much of it. Shorter, and a fleet
// looping on its scripts costs etcd a rewrite per machine every few seconds.
const repeatFlush = 10 * time.Second

// repeatSpread: due repeat counts are written repeatSpread times per
// repeatFlush, at most 1/repeatSpread of a shard's waiting counts each time.
// Runs that began together (a fleet powering on, a restarted bootapi) then come
// due together but are written spread over repeatFlush rather than in one burst
// that would stall the requests waiting on etcd behind it, and stay spread. The
// cost: a count may lag by up to twice repeatFlush.
const repeatSpread = 10

// repeatTake says which repeat counts a write takes besides the queued hops and
// session changes.
type repeatTake int

const (
	noRepeats  repeatTake = iota
	dueRepeats            // a share of those older than repeatFlush
	allRepeats            // every one: Flush, and Run's last write
)

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
