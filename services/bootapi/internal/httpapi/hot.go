package httpapi

import (
	"sync"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
)

// hotShards split the per-machine entries by MAC, each with its own lock.
const hotShards = 16

// maxUnknown bounds a shard's entries for MACs with no machine record (memos
// of unknown machines asking for scripts); past it they are dropped.
const maxUnknown = 100000 / hotShards

type hotShard struct {
	mu sync.RWMutex
	// m is keyed by the MAC's 48-bit value (macaddr.Bits): the key compares
	// without reading a string elsewhere in memory.
	m       map[uint64]*hotEntry
	unknown int // entries with known false
}

// hotEntry is what the script path needs of one machine, in one place: a
// request reads this struct and the session recorder's, not a map per fact.
//
// mit and known mirror the machines cache: the cache's OnEvent sets them under
// the cache's lock, before any reader can see the change, so they are never
// behind what Machines.Get would return. The rest is memo: the menu's rendered
// title lines and what they were rendered from, the last sighting that needed no
// write, the session handle. The *Machine fields are the record a memo was
// checked against: the same pointer means the same record (cache values are
// never changed in place), so a memo holds without reading the record's strings
// again.
type hotEntry struct {
	mu sync.Mutex

	mit   store.Item[*bootapiv1.Machine]
	known bool
	// sess is the session handle the last request got (session.OpenOptions.Last).
	sess *session.Session

	headFor        *bootapiv1.Machine
	hostname, site string
	head           string

	seenFor   *bootapiv1.Machine
	seenKey   uint64 // hash of the request's facts and address
	seenUntil int64  // Unix ns until which the record's last-seen time is fresh

	// fast is the memo of the last answer (fast.go); fastPending counts the
	// requests it answered that the session has not been given yet, the last
	// of which ended at fastEnd.
	fast        fastMemo
	fastPending uint32
	fastEnd     time.Time
}

// load returns the machine's record (known false: none) and the last session
// handle.
func (e *hotEntry) load() (store.Item[*bootapiv1.Machine], bool, *session.Session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mit, e.known, e.sess
}

func (e *hotEntry) setSession(s *session.Session) {
	e.mu.Lock()
	e.sess = s
	e.mu.Unlock()
}

func (h *Handler) hotShard(k uint64) *hotShard {
	return &h.hot[(k*0x9e3779b97f4a7c15)>>60%hotShards]
}

// hotEntry returns mac's entry (mac is canonical), created when absent: a MAC
// with no record.
func (h *Handler) hotEntry(mac string) *hotEntry {
	k, _ := macaddr.Bits(mac)
	sh := h.hotShard(k)
	sh.mu.RLock()
	e := sh.m[k]
	sh.mu.RUnlock()
	if e != nil {
		return e
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e = sh.m[k]; e == nil {
		e = sh.addLocked(k)
	}
	return e
}

// addLocked adds an entry for a MAC with no record, first dropping the other
// such entries if there are too many.
func (sh *hotShard) addLocked(k uint64) *hotEntry {
	if sh.unknown >= maxUnknown {
		for k, e := range sh.m {
			e.mu.Lock()
			known := e.known
			e.mu.Unlock()
			if !known {
				delete(sh.m, k)
			}
		}
		sh.unknown = 0
	}
	e := &hotEntry{}
	sh.m[k] = e
	sh.unknown++
	return e
}

// onMachine mirrors a change of the machines cache into the machine's entry.
// It runs under the cache's lock (store.Cache.OnEvent), which is taken before
// a hot shard's: the request path never holds a shard's lock while reading a
// cache.
func (h *Handler) onMachine(ev store.Event[*bootapiv1.Machine]) {
	k, ok := macaddr.Bits(ev.Name)
	if !ok {
		return // not a canonical MAC: no request can name it
	}
	sh := h.hotShard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[k]
	if e == nil {
		if ev.Deleted {
			return
		}
		e = sh.addLocked(k)
	}
	e.mu.Lock()
	was := e.known
	if ev.Deleted {
		e.mit, e.known = store.Item[*bootapiv1.Machine]{}, false
	} else {
		e.mit, e.known = ev.Item, true
	}
	now := e.known
	e.mu.Unlock()
	switch {
	case was && !now:
		sh.unknown++
	case !was && now:
		sh.unknown--
	}
}

// menuHead renders (once per machine, hostname and site) the menu's title lines;
// a changed hostname or site renders again.
func (e *hotEntry) menuHead(m *bootapiv1.Machine, site string) (string, error) {
	e.mu.Lock()
	if e.head != "" && e.site == site && (e.headFor == m || e.hostname == m.GetHostname()) {
		e.headFor = m
		head := e.head
		e.mu.Unlock()
		return head, nil
	}
	e.mu.Unlock()
	head, err := script.MenuHead(m.GetMac(), m.GetHostname(), site)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.headFor, e.hostname, e.site, e.head = m, m.GetHostname(), site, head
	e.mu.Unlock()
	return head, nil
}
