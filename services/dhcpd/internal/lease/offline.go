package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/services/dhcpd/internal/journal"
	"google.golang.org/protobuf/proto"
)

// A site cut off from the core (WAN down, or etcd without quorum) keeps its
// bound leases: a client renewing (or rebooting into) the address it holds
// is answered from this replica's view, the renewal is journaled (fsynced)
// before the ACK and replayed into etcd once etcd commits again. No new
// address is handed out meanwhile: only etcd can tell that no other replica
// gave it to someone else. Docs: docs/dhcpd.md, "Cut off from etcd".

// ErrNotHeld: the client holds no lease of the address that may be renewed
// offline (none, another client's, or its offline grace is used up).
var ErrNotHeld = errors.New("lease: no bound lease of this client to renew while etcd is unreachable")

// Journal records offline renewals durably (journal.Journal).
type Journal interface {
	Append(l *dhcpdv1.Lease) (uint64, error)
}

// minOfflineLease is the shortest lease an offline renewal grants; less grace
// than that left and the client is not renewed (it will look for a server).
const minOfflineLease = time.Minute

// OfflineStats counts what happened while etcd was unreachable and after.
type OfflineStats struct {
	// Renewals: leases renewed offline (journaled, ACKed).
	Renewals atomic.Uint64
	// Replayed: journaled renewals written into etcd; Current: etcd already had
	// them or a later renewal of the same client; Conflicts: another client's
	// newer lease (or the client's own later release) won, and the renewal was
	// dropped.
	Replayed, Current, Conflicts atomic.Uint64
}

// held reports whether l keeps its address from every other client at now:
// while it is live and, for a bound lease, for OfflineGrace past its expiry,
// so that a renewal another replica granted offline is never handed to
// someone else before it is replayed.
func (a *Allocator) held(l *dhcpdv1.Lease, now time.Time) bool {
	if live(l, now) {
		return true
	}
	return l.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND && a.cfg.OfflineGrace > 0 &&
		now.Before(l.GetExpireTime().AsTime().Add(a.cfg.OfflineGrace))
}

// heldByLocked returns the lease of ip that mac holds, preferring this
// process's offline renewal; nil when mac holds none.
func (a *Allocator) heldByLocked(ip netip.Addr, mac string, now time.Time) *dhcpdv1.Lease {
	e := a.leases[ip]
	if e == nil {
		return nil
	}
	for _, l := range []*dhcpdv1.Lease{e.offline, e.l} {
		if l.GetMac() == mac && l.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND && a.held(l, now) {
			return l
		}
	}
	return nil
}

// OfferHeld is the offer for c while etcd is unreachable: the address c holds
// in sub, never a new one. ErrNotHeld when c holds none.
func (a *Allocator) OfferHeld(c Client, sub *Subnet) (*dhcpdv1.Lease, error) {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	ip, ok := a.byMAC[c.MAC]
	if !ok || !sub.Prefix.Contains(ip) {
		return nil, ErrNotHeld
	}
	l := a.heldByLocked(ip, c.MAC, now)
	if l == nil {
		return nil, ErrNotHeld
	}
	return l, nil
}

// RenewOffline renews c's lease of ip while etcd cannot commit: the renewal is
// appended to the journal (durable on return) and held in memory until it is
// replayed. The lease runs the subnet's lease time, but never past the etcd
// lease's expiry plus OfflineGrace, the longest every replica keeps the
// address for c.
func (a *Allocator) RenewOffline(c Client, ip netip.Addr, sub *Subnet, mutate func(*dhcpdv1.Lease)) (*dhcpdv1.Lease, error) {
	if a.cfg.Journal == nil {
		return nil, fmt.Errorf("%w: no journal", ErrNotHeld)
	}
	if !ip.Is4() || !sub.Prefix.Contains(ip) {
		return nil, fmt.Errorf("%w: %s not in %s", ErrNotServed, ip, sub.Prefix)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Now()
	if err := a.waitIdleLocked(context.Background(), ip); err != nil {
		return nil, err
	}
	e := a.leases[ip]
	if e == nil || a.heldByLocked(ip, c.MAC, now) == nil {
		return nil, fmt.Errorf("%w: %s for %s", ErrNotHeld, ip, c.MAC)
	}
	// The bound the other replicas keep: etcd's record of c's lease.
	if e.l.GetMac() != c.MAC || e.l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
		return nil, fmt.Errorf("%w: %s: etcd holds no bound lease of %s", ErrNotHeld, ip, c.MAC)
	}
	leaseTime := sub.LeaseTime
	if leaseTime <= 0 {
		leaseTime = time.Hour
	}
	until := now.Add(leaseTime)
	if limit := e.l.GetExpireTime().AsTime().Add(a.cfg.OfflineGrace); limit.Before(until) {
		until = limit
	}
	if until.Sub(now) < minOfflineLease {
		return nil, fmt.Errorf("%w: %s: offline grace used up", ErrNotHeld, ip)
	}
	l := a.newLease(c, ip, sub, dhcpdv1.LeaseState_LEASE_STATE_BOUND, until, now)
	l.ChainloadTime = e.l.GetChainloadTime()
	if l.Relay == nil {
		l.Relay = e.l.GetRelay()
	}
	if mutate != nil {
		mutate(l)
	}
	a.markBusyLocked(ip)
	a.mu.Unlock()
	_, err := a.cfg.Journal.Append(l)
	a.mu.Lock()
	e = a.leases[ip]
	if e != nil {
		e.busy = false
		if e.wake != nil {
			close(e.wake)
			e.wake = nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("lease: offline renewal of %s not journaled: %w", ip, err)
	}
	if e == nil {
		e = &entry{}
		a.leases[ip] = e
	}
	e.offline = l
	a.Offline.Renewals.Add(1)
	return l, nil
}

// ReplayOutcome is what became of one journaled renewal.
type ReplayOutcome int

// Replay outcomes.
const (
	// Replayed: written into etcd.
	Replayed ReplayOutcome = iota + 1
	// Current: etcd holds this renewal or a later one of the same client.
	Current
	// Superseded: another client's newer lease, or the client's own later
	// release or decline, holds the address; the renewal is dropped.
	Superseded
)

// Replay writes a journaled renewal into etcd with a compare-and-swap on the
// lease's revision, unless etcd holds something newer. An error (etcd still
// failing) leaves the record to replay again.
func (a *Allocator) Replay(ctx context.Context, rec *dhcpdv1.Lease) (ReplayOutcome, *dhcpdv1.Lease, error) {
	ip, err := netip.ParseAddr(rec.GetIp())
	if err != nil || rec.GetMac() == "" {
		return Superseded, nil, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for attempt := 0; attempt < 4; attempt++ {
		if err := a.waitIdleLocked(ctx, ip); err != nil {
			return 0, nil, err
		}
		now := a.cfg.Now()
		var cur *dhcpdv1.Lease
		var prev int64
		if e := a.leases[ip]; e != nil {
			cur, prev = e.l, e.rev
		}
		if out, winner := a.judgeLocked(ip, rec, cur, now); out != 0 {
			a.settleOfflineLocked(ip, rec)
			a.count(out)
			return out, winner, nil
		}
		l := proto.Clone(rec).(*dhcpdv1.Lease)
		l.Server = a.cfg.Server
		a.markBusyLocked(ip)
		res := a.writeLocked(ctx, ip, Write{IP: ip.String(), Lease: l, PrevRev: prev})
		if res.Err == nil {
			a.settleOfflineLocked(ip, rec)
			a.count(Replayed)
			return Replayed, nil, nil
		}
		if !errors.Is(res.Err, ErrConflict) {
			return 0, nil, res.Err
		}
	}
	return 0, nil, fmt.Errorf("%w: %s: replay", ErrConflict, ip)
}

// judgeLocked decides a replay against what etcd holds (cur) without writing:
// 0 means write rec. winner is the lease that won when rec is dropped.
func (a *Allocator) judgeLocked(ip netip.Addr, rec, cur *dhcpdv1.Lease, now time.Time) (ReplayOutcome, *dhcpdv1.Lease) {
	renewed := rec.GetUpdateTime().AsTime()
	if cur != nil {
		later := cur.GetUpdateTime().AsTime().After(renewed)
		switch {
		case cur.GetMac() == rec.GetMac() && cur.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND &&
			!cur.GetExpireTime().AsTime().Before(rec.GetExpireTime().AsTime()):
			return Current, nil
		case cur.GetMac() != rec.GetMac() && (a.held(cur, now) || later):
			return Superseded, cur
		case cur.GetMac() == rec.GetMac() && later && cur.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND:
			// Released or declined after the renewal.
			return Superseded, cur
		}
	}
	// The client took another address since (online, after the renewal):
	// writing this one would give it two.
	if other, ok := a.byMAC[rec.GetMac()]; ok && other != ip {
		if e := a.leases[other]; e != nil && e.l.GetMac() == rec.GetMac() && live(e.l, now) &&
			e.l.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND && e.l.GetUpdateTime().AsTime().After(renewed) {
			return Superseded, e.l
		}
	}
	return 0, nil
}

// settleOfflineLocked forgets the offline renewal of ip that rec replayed (or
// an older one): etcd decides from now on.
func (a *Allocator) settleOfflineLocked(ip netip.Addr, rec *dhcpdv1.Lease) {
	e := a.leases[ip]
	if e == nil || e.offline == nil {
		return
	}
	if e.offline.GetMac() != rec.GetMac() || !e.offline.GetExpireTime().AsTime().After(rec.GetExpireTime().AsTime()) {
		e.offline = nil
	}
}

func (a *Allocator) count(o ReplayOutcome) {
	switch o {
	case Replayed:
		a.Offline.Replayed.Add(1)
	case Current:
		a.Offline.Current.Add(1)
	case Superseded:
		a.Offline.Conflicts.Add(1)
	}
}

// ReplayJournal replays every pending record of j and removes those settled.
// It returns how many are left (etcd failed for them) and the first error.
func (a *Allocator) ReplayJournal(ctx context.Context, j *journal.Journal, onSuperseded func(rec, winner *dhcpdv1.Lease)) (left int, err error) {
	var done []uint64
	for _, r := range j.Pending() {
		out, winner, rerr := a.Replay(ctx, r.Lease)
		if rerr != nil {
			if err == nil {
				err = rerr
			}
			left++
			continue
		}
		if out == Superseded && onSuperseded != nil {
			onSuperseded(r.Lease, winner)
		}
		done = append(done, r.Seq)
	}
	if derr := j.Done(done...); derr != nil && err == nil {
		err = derr
	}
	return left, err
}
