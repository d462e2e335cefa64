package session

import (
	"sync"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"

	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/strhash"
	"google.golang.org/protobuf/types/known/timestamppb"
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
	// trims are the hop prefixes of sessions to cut back to their latest
	// MaxHops hops.
	trims []string
	// byIP and byTrace are the recorder's indexes (index.go), which every
	// change of a machine's records updates (setCached, setLocal).
	byIP, byTrace *index
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
	// ips and traces are the IPs and trace IDs m is indexed under.
	ips, traces values
	// hopTrace and hopCount count the hops recorded for one trace, to cut its
	// oldest ones when it passes MaxHops (a machine stuck in a loop).
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

// forget drops mac's machine when nothing about it is left to keep (with no
// records it is in no index). Called with sh.mu held.
func (sh *shard) forget(mac string, m *machine) {
	if m.cached == nil && m.local == nil {
		if _, busy := sh.pending[mac]; !busy {
			delete(sh.machines, mac)
			m.gone = true
		}
	}
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

// onCacheEvent keeps each machine's cached session current. It runs under the
// cache's lock (store.Cache.OnEvent): lock order cache, then shard, so nothing
// may call the cache while holding a shard's lock.
func (r *Recorder) onCacheEvent(ev store.Event[*bootapiv1.BootSession]) {
	sh := r.shard(ev.Name)
	sh.mu.Lock()
	if ev.Deleted {
		if m := sh.machines[ev.Name]; m != nil {
			sh.setCached(ev.Name, m, nil, ev.ModRevision)
			sh.forget(ev.Name, m)
		}
	} else {
		m := sh.get(ev.Name)
		sh.setCached(ev.Name, m, ev.Value, ev.ModRevision)
	}
	sh.mu.Unlock()
}

func (r *Recorder) shard(mac string) *shard {
	return &r.shards[strhash.FNV64a(mac)%numShards]
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
			sh.setLocal(mac, m, nil)
			l = nil
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
		m.sess, m.tp = &Session{r: r, MAC: bs.GetMac(), root: root, tid: bs.GetTraceId(), m: m, sh: sh}, tp
	}
	return m.sess
}

// head copies a session without its hops. bs may be a shared cache value: it is
// only read.
func head(bs *bootapiv1.BootSession) *bootapiv1.BootSession {
	return &bootapiv1.BootSession{
		Mac: bs.GetMac(), Site: bs.GetSite(), TraceId: bs.GetTraceId(), Traceparent: bs.GetTraceparent(),
		StartTime: bs.GetStartTime(), UpdateTime: bs.GetUpdateTime(), State: bs.GetState(), Ip: bs.GetIp(),
		JobId: bs.GetJobId(), FailedHop: bs.GetFailedHop(), Message: bs.GetMessage(), Diagnosis: bs.GetDiagnosis(),
	}
}
