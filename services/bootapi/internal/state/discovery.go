package state

import (
	"context"
	"sync"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Discovery bounds the machines bootapi records on its own: a loop of random
// MACs must not fill etcd (after which dhcpd could write no lease).
type Discovery struct {
	// Cap is the most discovered (unregistered) machines per site; 0: none is
	// recorded.
	Cap int
	// TTL: a discovered record not seen again for this long is deleted; 0 keeps
	// them.
	TTL time.Duration
}

// DefaultDiscovery: a site's worth of unregistered machines, and a week for an
// operator to register one that stopped asking.
var DefaultDiscovery = Discovery{Cap: 10000, TTL: 7 * 24 * time.Hour}

// discoveredIndex is the discovered machines of each site: those in the
// machines cache, plus those this replica queued and has not seen written yet
// (so that a burst of new MACs cannot pass the cap before the cache catches up).
type discoveredIndex struct {
	mu     sync.Mutex
	bySite map[string]map[string]bool // site -> mac -> true
	siteOf map[string]string          // mac -> site it is counted in
}

func newDiscoveredIndex() *discoveredIndex {
	return &discoveredIndex{bySite: map[string]map[string]bool{}, siteOf: map[string]string{}}
}

func (x *discoveredIndex) removeLocked(mac string) {
	site, ok := x.siteOf[mac]
	if !ok {
		return
	}
	delete(x.siteOf, mac)
	delete(x.bySite[site], mac)
	if len(x.bySite[site]) == 0 {
		delete(x.bySite, site)
	}
}

func (x *discoveredIndex) addLocked(mac, site string) {
	x.removeLocked(mac)
	if x.bySite[site] == nil {
		x.bySite[site] = map[string]bool{}
	}
	x.bySite[site][mac] = true
	x.siteOf[mac] = site
}

// onMachine follows the machines cache: a discovered record counts in its
// site; a registered or deleted one does not.
func (x *discoveredIndex) onMachine(ev store.Event[*bootapiv1.Machine]) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if ev.Deleted || !ev.Value.GetDiscovered() {
		x.removeLocked(ev.Name)
		return
	}
	x.addLocked(ev.Name, ev.Value.GetSite())
}

// claim counts mac in site if the site is under max; it reports false when
// the cap is reached. A MAC already counted is always let through.
func (x *discoveredIndex) claim(mac, site string, max int) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.siteOf[mac] == site && x.bySite[site][mac] {
		return true
	}
	if len(x.bySite[site]) >= max {
		return false
	}
	x.addLocked(mac, site)
	return true
}

// unclaim forgets a claim whose record was not written.
func (x *discoveredIndex) unclaim(mac string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(mac)
}

// Discovered counts the discovered machines of site (records and claims).
func (s *State) Discovered(site string) int {
	s.discovered.mu.Lock()
	defer s.discovered.mu.Unlock()
	return len(s.discovered.bySite[site])
}

// ExpireDiscovered deletes the discovered records last seen (or created, if
// never seen) before now-ttl, except those with an unfinished job. Any replica
// may run it: each delete compares the record's revision, so a machine seen or
// registered meanwhile stays.
func (s *State) ExpireDiscovered(ctx context.Context, now time.Time, ttl time.Duration) (int, error) {
	if ttl <= 0 {
		return 0, nil
	}
	cutoff := now.Add(-ttl)
	n := 0
	for _, it := range s.Machines.List(func(it store.Item[*bootapiv1.Machine]) bool {
		m := it.Value
		if !m.GetDiscovered() {
			return false
		}
		last := m.GetLastSeenTime()
		if last == nil {
			last = m.GetCreateTime()
		}
		return last != nil && last.AsTime().Before(cutoff)
	}) {
		if _, busy := s.ActiveJob(it.Name); busy {
			continue
		}
		// The record at the revision read, and still no job: a job created
		// meanwhile (CreateJob checks the machine exists) keeps its machine.
		key := store.Key("machines", it.Name)
		tctx, cancel := s.st.WithTimeout(ctx)
		resp, err := s.st.Client().Txn(tctx).If(
			clientv3.Compare(clientv3.ModRevision(key), "=", it.ModRevision),
			clientv3.Compare(clientv3.CreateRevision(activeKey(it.Name)), "=", 0),
		).Then(clientv3.OpDelete(key)).Commit()
		cancel()
		switch {
		case err != nil:
			return n, err
		case resp.Succeeded:
			n++
		}
		// Otherwise seen, registered, deleted or given a job meanwhile: the next
		// sweep looks again.
	}
	return n, nil
}
