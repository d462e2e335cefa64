package session

import "time"

// Hops whose write failed (etcd unreachable: a site cut off from the core, or
// etcd without quorum) are written again, so a boot's timeline survives an
// outage: every hopRetryEvery, for at most hopRetryFor after the first
// failure, and at most maxRetryHops of them; past either bound a hop is
// dropped and counted (Dropped). A hop is a put of a key of its own, so
// writing it twice (a write that committed but whose answer was lost) changes
// nothing. Session records are not retried: their changes are applied to
// whatever etcd holds, and one applied twice could undo a later one.
const (
	hopRetryEvery = 2 * time.Second
	hopRetryFor   = 10 * time.Minute
	maxRetryHops  = 20000
)

// retryDue reports whether failed hops wait and their next try is due.
func (r *Recorder) retryDue(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.retry) > 0 && !now.Before(r.retryAt)
}

// takeRetryLocked hands the failed hops to the next write when their try is
// due (or all is set: the final flush). Called with r.mu held.
func (r *Recorder) takeRetryLocked(now time.Time, all bool) []pendingHop {
	if len(r.retry) == 0 || (!all && now.Before(r.retryAt)) {
		return nil
	}
	out := r.retry
	r.retry = nil
	return out
}

// keepForRetry queues hops whose write failed at now for another try.
func (r *Recorder) keepForRetry(hops []pendingHop, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	at := make(map[string]int, len(r.retry))
	for i, ph := range r.retry {
		at[ph.key] = i
	}
	for _, ph := range hops {
		if ph.failed.IsZero() {
			ph.failed = now
		}
		if i, ok := at[ph.key]; ok {
			// A newer record of the same key (a repeat count) replaces the
			// queued one: one transaction must not name a key twice.
			ph.failed = r.retry[i].failed
			r.retry[i] = ph
			continue
		}
		if now.Sub(ph.failed) > hopRetryFor || len(r.retry) >= maxRetryHops {
			r.Dropped.Add(1)
			continue
		}
		at[ph.key] = len(r.retry)
		r.retry = append(r.retry, ph)
	}
	r.retryAt = now.Add(hopRetryEvery)
}

// withRetries adds the retried hops to hops, leaving out those whose key a
// newer record in hops replaces (a repeat count): one transaction must not
// name a key twice.
func withRetries(hops, retry []pendingHop) []pendingHop {
	if len(retry) == 0 {
		return hops
	}
	newer := make(map[string]bool, len(hops))
	for _, ph := range hops {
		newer[ph.key] = true
	}
	out := make([]pendingHop, 0, len(hops)+len(retry))
	for _, ph := range retry {
		if !newer[ph.key] {
			out = append(out, ph)
		}
	}
	return append(out, hops...)
}
