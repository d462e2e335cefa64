package httpapi

import (
	"bytes"
	"context"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/strhash"
	"github.com/valyala/fasthttp"
)

// fastWindow is how long a memo of a script answer serves repeats of the same
// request before the full path runs again. Every input of the decision that can
// change is checked on each use (the machine's record, the revisions of the
// jobs, profiles and sites caches, the query, the client's address), so the
// window only bounds what the full path would notice otherwise: a session
// opened meanwhile by another service, an answer a Finish should re-assert.
const fastWindow = time.Second

// fastMemo is a script request's whole answer, kept on the machine's entry after
// the full path answered it as a repeat of its run: a machine asking the same
// thing again within fastWindow gets the same bytes, and its request is counted
// on the entry (fastPending) and handed to the session later. It lives inside
// the entry, and the request is compared by hashes, so that checking it reads
// no memory but the entry's.
type fastMemo struct {
	until int64 // Unix ns; 0: no memo
	mit   *bootapiv1.Machine
	revs  [3]int64
	// query and ip are the 64-bit FNV-1a hashes of the raw query and the
	// client's address (a collision would answer another spelling of the same
	// machine's request with this one's script).
	query, ip    uint64
	seenKey      uint64
	head, script string
	sess         *session.Session
	detail       string
	bytes        int64
	q            params
}

// revisions are the revisions of the caches a decision reads besides the
// machine's record. Read before deciding: any change after that voids a memo.
func (h *Handler) revisions() [3]int64 {
	st := h.cfg.State
	return [3]int64{st.Jobs.Revision(), st.Profiles.Revision(), st.Sites.Revision()}
}

// fastPath answers a script request from the machine's memo, if it holds; it
// reports false (having done nothing) when the full path must run.
func (h *Handler) fastPath(rc *fasthttp.RequestCtx, query []byte) bool {
	if h.spans {
		return false // every request is a span of its own
	}
	raw := rawParam(query, "mac")
	if raw == nil {
		return false
	}
	k, ok := macaddr.Bits(string(raw))
	if !ok {
		return false
	}
	sh := h.hotShard(k)
	sh.mu.RLock()
	e := sh.m[k]
	sh.mu.RUnlock()
	if e == nil {
		return false
	}
	ip := remoteIP(rc)
	now := h.cfg.Now()
	revs := h.revisions()
	qh, iph := strhash.FNV64a(query), strhash.FNV64a(ip)
	e.mu.Lock()
	f := &e.fast
	if now.UnixNano() >= f.until || !e.known || e.mit.Value != f.mit || revs != f.revs || qh != f.query || iph != f.ip {
		e.mu.Unlock()
		return false
	}
	e.fastPending++
	e.fastEnd = now
	seen := e.seenFor == f.mit && e.seenKey == f.seenKey && now.UnixNano() < e.seenUntil
	head, script, m, q := f.head, f.script, f.mit, f.q
	e.mu.Unlock()
	h.Scripts.Add(1)
	writeScript(rc, head, script)
	if !seen {
		h.touch.seen(e, m.GetMac(), m, q, ip, now)
	}
	return true
}

// rawParam returns the raw value of key in a query string, or nil when it is
// absent, repeated, or escaped (the full path parses those).
func rawParam(query []byte, key string) []byte {
	var v []byte
	for len(query) > 0 {
		var kv []byte
		kv, query, _ = bytes.Cut(query, []byte{'&'})
		k, val, _ := bytes.Cut(kv, []byte{'='})
		if string(k) != key {
			continue
		}
		if v != nil || bytes.ContainsAny(val, "%+;") {
			return nil
		}
		v = val
	}
	return v
}

// setFast stores the memo of an answer on e, or clears it (f nil). Requests
// the old memo answered meanwhile go to its session first.
func (e *hotEntry) setFast(f *fastMemo) {
	handOverWith(e, func() {
		if f == nil {
			e.fast = fastMemo{}
		} else {
			e.fast = *f
		}
	})
}

// handOver gives the session the repeats counted on e's memo since they were
// last handed over.
func handOver(e *hotEntry) { handOverWith(e, nil) }

// handOverWith takes the counted repeats, runs then (if set) under e's lock, and
// gives the repeats to the memo's session.
func handOverWith(e *hotEntry, then func()) {
	e.mu.Lock()
	n, end, sess, detail, bytes := e.fastPending, e.fastEnd, e.fast.sess, e.fast.detail, e.fast.bytes
	e.fastPending = 0
	if then != nil {
		then()
	}
	e.mu.Unlock()
	if n > 0 && sess != nil {
		// Within fastWindow of the run's last counted repeat, so within
		// session.RepeatWindow: the run is still in progress unless a hop of
		// another outcome replaced it, and then these go uncounted.
		sess.RepeatN("script", detail, bytes, end, n)
	}
}

// handOverIdle hands over the counts of memos that ran out at now (with all,
// of every memo): machines that stopped asking, whose next full request would
// otherwise never come.
func (h *Handler) handOverIdle(now time.Time, all bool) {
	for i := range h.hot {
		sh := &h.hot[i]
		sh.mu.RLock()
		var due []*hotEntry
		for _, e := range sh.m {
			e.mu.Lock()
			if e.fastPending > 0 && (all || now.UnixNano() >= e.fast.until) {
				due = append(due, e)
			}
			e.mu.Unlock()
		}
		sh.mu.RUnlock()
		for _, e := range due {
			handOver(e)
		}
	}
}

// runHandOver hands over idle memos' counts every fastWindow until ctx ends,
// and all of them then.
func (h *Handler) runHandOver(ctx context.Context) error {
	t := time.NewTicker(fastWindow)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.handOverIdle(time.Now(), true)
			return nil
		case now := <-t.C:
			h.handOverIdle(now, false)
		}
	}
}
