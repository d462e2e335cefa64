package session

import (
	"sync"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/strhash"
)

// An index maps a value of a session record (an IP, a trace ID) to the MACs
// whose session, as etcd has it or as this process changed it, carries that
// value: a lookup by the value then costs the same with ten sessions or a
// hundred thousand. It names machines, not records, so that a record replaced
// by the same value costs the index nothing; a lookup reads the records under
// the machine's shard lock.
//
// Lock order: a machine shard's lock, then an index shard's. The index's locks
// are taken for a map operation and nothing else.
type index struct {
	shards [indexShards]indexShard
}

// indexShards splits an index by value, so that writers of unrelated values
// (the shards of the recorder) do not all meet on one lock.
const indexShards = 16

type indexShard struct {
	mu sync.Mutex
	// macs holds, per value, the MACs indexed under it: usually one.
	macs map[string][]string
}

func (ix *index) init() {
	for i := range ix.shards {
		ix.shards[i].macs = map[string][]string{}
	}
}

func (ix *index) shard(v string) *indexShard {
	return &ix.shards[strhash.FNV64a(v)%indexShards]
}

func (ix *index) add(v, mac string) {
	s := ix.shard(v)
	s.mu.Lock()
	s.macs[v] = append(s.macs[v], mac)
	s.mu.Unlock()
}

func (ix *index) remove(v, mac string) {
	s := ix.shard(v)
	s.mu.Lock()
	macs := s.macs[v]
	for i, m := range macs {
		if m == mac {
			last := len(macs) - 1
			macs[i] = macs[last]
			macs[last] = ""
			macs = macs[:last]
			break
		}
	}
	if len(macs) == 0 {
		delete(s.macs, v)
	} else {
		s.macs[v] = macs
	}
	s.mu.Unlock()
}

// lookup appends the MACs indexed under v to buf.
func (ix *index) lookup(v string, buf []string) []string {
	s := ix.shard(v)
	s.mu.Lock()
	buf = append(buf, s.macs[v]...)
	s.mu.Unlock()
	return buf
}

// move re-indexes mac from the values from to the values to.
func (ix *index) move(mac string, from, to values) {
	for _, v := range from {
		if v != "" && !to.has(v) {
			ix.remove(v, mac)
		}
	}
	for _, v := range to {
		if v != "" && !from.has(v) {
			ix.add(v, mac)
		}
	}
}

// values are the distinct non-empty values one field has on a machine's cached
// and local records: what the machine is indexed under.
type values [2]string

func valuesOf(cached, local string) values {
	if cached == local {
		local = ""
	}
	if cached == "" {
		cached, local = local, ""
	}
	return values{cached, local}
}

func (vs values) has(v string) bool { return v != "" && (vs[0] == v || vs[1] == v) }

// setCached makes bs (nil: none) m's session as etcd has it, at revision rev,
// and keeps the indexes in line. Called with sh.mu held.
func (sh *shard) setCached(mac string, m *machine, bs *bootapiv1.BootSession, rev int64) {
	m.cached, m.cachedRev = bs, rev
	if bs != nil {
		m.cachedUpd = unixNano(bs.GetUpdateTime())
	}
	sh.reindex(mac, m)
}

// setLocal makes bs (nil: none) m's session as this process changed it, and
// keeps the indexes in line. Called with sh.mu held.
func (sh *shard) setLocal(mac string, m *machine, bs *bootapiv1.BootSession) {
	m.local = bs
	if bs != nil {
		m.localUpd = unixNano(bs.GetUpdateTime())
	} else {
		m.written = 0
	}
	sh.reindex(mac, m)
}

// reindex brings the recorder's indexes in line with m's records.
func (sh *shard) reindex(mac string, m *machine) {
	if ips := valuesOf(m.cached.GetIp(), m.local.GetIp()); ips != m.ips {
		sh.byIP.move(mac, m.ips, ips)
		m.ips = ips
	}
	if traces := valuesOf(m.cached.GetTraceId(), m.local.GetTraceId()); traces != m.traces {
		sh.byTrace.move(mac, m.traces, traces)
		m.traces = traces
	}
}
