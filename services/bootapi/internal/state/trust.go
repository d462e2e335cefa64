package state

import (
	"context"
	"strings"
	"sync"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/decide"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// leaseIndex is the bound leases of every site by MAC, kept from the leases
// cache's events: the script path asks "does this address hold this MAC's
// lease" without reading etcd.
type leaseIndex struct {
	mu    sync.RWMutex
	byMAC map[string][]heldAddr
	byKey map[string]string // cache name (<site>/<ip>) -> MAC indexed under it
}

type heldAddr struct {
	site, ip string
	expire   time.Time
}

func newLeaseIndex() *leaseIndex {
	return &leaseIndex{byMAC: map[string][]heldAddr{}, byKey: map[string]string{}}
}

func (x *leaseIndex) onEvent(ev store.Event[*dhcpdv1.Lease]) {
	site, ip, _ := strings.Cut(ev.Name, "/")
	x.mu.Lock()
	defer x.mu.Unlock()
	if mac, ok := x.byKey[ev.Name]; ok {
		delete(x.byKey, ev.Name)
		held := x.byMAC[mac]
		for i, h := range held {
			if h.site == site && h.ip == ip {
				held = append(held[:i:i], held[i+1:]...)
				break
			}
		}
		if len(held) == 0 {
			delete(x.byMAC, mac)
		} else {
			x.byMAC[mac] = held
		}
	}
	l := ev.Value
	if ev.Deleted || l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND || l.GetMac() == "" {
		return
	}
	x.byKey[ev.Name] = l.GetMac()
	x.byMAC[l.GetMac()] = append(x.byMAC[l.GetMac()], heldAddr{site: site, ip: ip, expire: l.GetExpireTime().AsTime()})
}

// HoldsLease reports whether ip holds a bound, unexpired lease of mac in site.
func (s *State) HoldsLease(site, mac, ip string, now time.Time) bool {
	s.leaseIdx.mu.RLock()
	defer s.leaseIdx.mu.RUnlock()
	for _, h := range s.leaseIdx.byMAC[mac] {
		if h.site == site && h.ip == ip && now.Before(h.expire) {
			return true
		}
	}
	return false
}

// LeaseSite is the site whose dhcpd leased ip to mac, unexpired at now; "" when
// no site did, or more than one did (then none can be believed).
func (s *State) LeaseSite(mac, ip string, now time.Time) string {
	s.leaseIdx.mu.RLock()
	defer s.leaseIdx.mu.RUnlock()
	site := ""
	for _, h := range s.leaseIdx.byMAC[mac] {
		if h.ip != ip || !now.Before(h.expire) {
			continue
		}
		if site != "" && site != h.site {
			return ""
		}
		site = h.site
	}
	return site
}

// LeaseSiteOfMAC is the site whose dhcpd holds an unexpired lease of mac (at
// any address); "" when none does or several do.
func (s *State) LeaseSiteOfMAC(mac string, now time.Time) string {
	s.leaseIdx.mu.RLock()
	defer s.leaseIdx.mu.RUnlock()
	site := ""
	for _, h := range s.leaseIdx.byMAC[mac] {
		if !now.Before(h.expire) {
			continue
		}
		if site != "" && site != h.site {
			return ""
		}
		site = h.site
	}
	return site
}

// Requester is who sent a script request or report: its source address and,
// for a script request, the boot session it continues.
type Requester struct {
	IP string
	// TraceID is the trace of the machine's current boot session (the proxy-mode
	// rule reads dhcpd's hops in it).
	TraceID string
}

// Trusted applies the per-machine trust rule of mac's site to a request from r:
//
//   - where bootchain's dhcpd is authoritative (and where the site has no DHCP
//     settings), r.IP must hold a bound, unexpired lease of mac in that site;
//   - in proxy mode, r.IP must be the address dhcpd last saw mac request from the
//     site's own DHCP server (its dhcp.offered_ip hop attribute) in the current
//     boot session. This reads etcd, which is why it is asked only when a
//     decision depends on it (a pending job).
//
// why says, when it is false, what did not match (no secret in it).
func (s *State) Trusted(ctx context.Context, site *bootapiv1.Site, mac string, r Requester, now time.Time) (ok bool, why string) {
	if decide.Authoritative(site) {
		if s.HoldsLease(site.GetName(), mac, r.IP, now) {
			return true, ""
		}
		return false, r.IP + " does not hold a lease of " + mac + " at site " + site.GetName()
	}
	seen, err := s.dhcpdAddress(ctx, mac, r.TraceID)
	switch {
	case err != nil:
		return false, "the address dhcpd saw " + mac + " use could not be read: " + err.Error()
	case seen == "":
		return false, "dhcpd saw no DHCP request of " + mac + " in this boot session (proxy mode)"
	case seen != r.IP:
		return false, r.IP + " is not " + seen + ", the address dhcpd saw " + mac + " request (proxy mode)"
	}
	return true, ""
}

// proxyHopScan bounds the hops read for the proxy-mode rule: a session keeps
// at most 200, and dhcpd's requests come before bootapi's few hops.
const proxyHopScan = 200

// dhcpdAddress is the address of dhcpd's latest hop in the boot session
// traceID of mac that names one (dhcp.offered_ip): in proxy mode, the address
// the machine asked the site's DHCP server for. Only dhcpd writes hops of
// service "dhcpd", so a script request cannot set it.
func (s *State) dhcpdAddress(ctx context.Context, mac, traceID string) (string, error) {
	if traceID == "" {
		return "", nil
	}
	tctx, cancel := s.st.WithTimeout(ctx)
	defer cancel()
	resp, err := s.st.Client().Get(tctx, store.Prefix("sessionhops", mac, traceID),
		clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(proxyHopScan))
	if err != nil {
		return "", err
	}
	for _, kv := range resp.Kvs {
		h := &bootapiv1.Hop{}
		if proto.Unmarshal(kv.Value, h) != nil || h.GetService() != "dhcpd" || h.GetFailed() {
			continue
		}
		if ip := h.GetAttributes()["dhcp.offered_ip"]; ip != "" {
			return ip, nil
		}
	}
	return "", nil
}

// ReportFrom reports whether a report for job may come from ip: the address the
// job was dispatched to, or one that holds a lease of the job's machine at its
// site (an installer that took a new lease).
func (s *State) ReportFrom(j *bootapiv1.Job, ip string, now time.Time) bool {
	if j.GetDispatchIp() != "" && j.GetDispatchIp() == ip {
		return true
	}
	return s.HoldsLease(s.siteOf(j.GetMac()), j.GetMac(), ip, now)
}

// siteOf is the site of the machine mac as recorded ("" if unknown or none:
// the caller's default applies).
func (s *State) siteOf(mac string) string {
	it, ok := s.Machines.Get(mac)
	if !ok || it.Value.GetSite() == "" {
		return s.defaultSite
	}
	return it.Value.GetSite()
}

// SetDefaultSite sets the site of machines that name none, for the checks
// that resolve a machine's site outside a decision.
func (s *State) SetDefaultSite(site string) { s.defaultSite = site }
