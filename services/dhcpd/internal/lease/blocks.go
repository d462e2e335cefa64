package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Offer blocks.
//
// An OFFER is a proposal, not a grant, so dhcpd does not write one lease record
// per OFFER. Instead each replica claims blocks of pool addresses through etcd
// transactions that compare the block key's revision (offerblocks/<site>/<first>),
// and offers the free addresses of its own blocks from memory. Two replicas never
// offer one address to two clients, because an address is offered only by the
// holder of its block (or, for a client's own live lease and a machine's fixed
// address, only to that client), and binding an address is still a lease write
// that compares revisions, so an ACK is as safe as before. Halving etcd's writes
// per lease is what this buys: an OFFER no longer waits for an fsync.
//
// A claim lasts BlockTTL and is renewed by MaintainBlocks while the replica offers
// from it; a block idle for OfferHold is given back. A replica that stops gives
// its blocks back (ReleaseBlocks); one that crashes loses its in-memory offers
// with it, and its blocks become free when their claims run out.

// blockSize is the number of addresses per block of a pool of n addresses: a
// sixteenth of the pool, so a few replicas share even a small pool, within
// [8, 1024]: at 20,000 offers/s a replica claims a block every 50 ms.
func blockSize(n uint32) uint32 {
	switch b := n / 16; {
	case n <= 8:
		return n
	case b < 8:
		return 8
	case b > 1024:
		return 1024
	default:
		return b
	}
}

// block is one offer block, as etcd holds its claim, plus this replica's use of it.
type block struct {
	first, last netip.Addr
	// rec and rev are the claim as seen in etcd; nil and 0 when unclaimed.
	rec *dhcpdv1.OfferBlock
	rev int64
	// used is when this replica last offered an address of the block.
	used time.Time
	// next is the offset where the search for a free address resumes.
	next uint32
	// full: the last search found no free address; skipped until claimed again.
	full bool
}

func (b *block) size() uint32 { return be32(b.last.As4()) - be32(b.first.As4()) + 1 }

func (b *block) expiry() time.Time { return b.rec.GetExpireTime().AsTime() }

func newInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// blockLocked returns the block of sub's pools that holds ip, creating its entry.
func (a *Allocator) blockLocked(sub *Subnet, ip netip.Addr) *block {
	for _, r := range sub.Pools {
		if !r.Contains(ip) {
			continue
		}
		start, end := be32(r.Start.As4()), be32(r.End.As4())
		n := blockSize(r.Size())
		first := start + (be32(ip.As4())-start)/n*n
		return a.blockAtLocked(first, min(first+n-1, end))
	}
	return nil
}

func (a *Allocator) blockAtLocked(first, last uint32) *block {
	f := fromU32(first)
	b := a.blocks[f]
	if b == nil {
		b = &block{first: f, last: fromU32(last)}
		a.blocks[f] = b
	}
	return b
}

// ownsLocked reports whether this process holds b long enough to offer from it:
// an offer made now must expire before the claim does.
func (a *Allocator) ownsLocked(b *block, now time.Time) bool {
	return b != nil && b.rec.GetInstance() == a.instance && b.expiry().Sub(now) > a.cfg.OfferHold
}

// foreignLocked reports whether another process holds b.
func (a *Allocator) foreignLocked(b *block, now time.Time) bool {
	return b != nil && b.rec != nil && b.rec.GetInstance() != a.instance && now.Before(b.expiry())
}

// freeInLocked returns a free address of b for mac, resuming after the last one.
func (a *Allocator) freeInLocked(b *block, mac string, now time.Time) (netip.Addr, bool) {
	n, first := b.size(), be32(b.first.As4())
	for i := uint32(0); i < n; i++ {
		off := (b.next + i) % n
		if ip := fromU32(first + off); a.usableLocked(ip, mac, now) {
			b.next = off + 1
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// claimableLocked returns the next block of sub, from the subnet's cursor, that
// no process holds (or this one holds too briefly to offer from) and that has a
// free address for mac.
func (a *Allocator) claimableLocked(sub *Subnet, mac string, now time.Time) *block {
	var total uint32
	for _, r := range sub.Pools {
		if r.Start.Compare(r.End) <= 0 {
			total += (r.Size() + blockSize(r.Size()) - 1) / blockSize(r.Size())
		}
	}
	from := a.cursor[sub.Prefix]
	for i := range total {
		k := (from + i) % total
		var b *block
		for j := k; b == nil; {
			for _, r := range sub.Pools {
				if r.Start.Compare(r.End) > 0 {
					continue
				}
				n := blockSize(r.Size())
				if nb := (r.Size() + n - 1) / n; j >= nb {
					j -= nb
					continue
				}
				first := be32(r.Start.As4()) + j*n
				b = a.blockAtLocked(first, min(first+n-1, be32(r.End.As4())))
				break
			}
		}
		if a.foreignLocked(b, now) || a.ownsLocked(b, now) {
			continue
		}
		next := b.next
		_, ok := a.freeInLocked(b, mac, now)
		b.next = next // the address is taken once the claim is made
		if ok {
			a.cursor[sub.Prefix] = k + 1
			return b
		}
	}
	return nil
}

// waitClaim stands for "a claim is in flight: wait for it, then look again".
var waitClaim = &block{}

// claimLocked claims (or renews) b for this process. a.mu is held on entry and on
// return; it is released while etcd writes. One claim is in flight at a time:
// others wait for it and then look again, as it may have been all they needed.
func (a *Allocator) claimLocked(ctx context.Context, b *block, now time.Time) error {
	if b == waitClaim && a.claiming == nil {
		return nil
	}
	if ch := a.claiming; ch != nil {
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		a.mu.Lock()
		return ctx.Err()
	}
	ch := make(chan struct{})
	a.claiming = ch
	defer func() {
		a.claiming = nil
		close(ch)
	}()
	err := a.writeBlockLocked(ctx, b, a.claimRecord(b, now))
	if err == nil {
		b.used, b.full = now, false
	}
	return err
}

// spareLocked reports whether, besides b, this process holds a block it has not
// gone through.
func (a *Allocator) spareLocked(b *block, now time.Time) bool {
	for _, m := range a.mine {
		if m != b && !m.full && m.next < m.size() && a.ownsLocked(m, now) {
			return true
		}
	}
	return false
}

// prefetch claims the next block in the background once the current one is half
// gone, so that offers do not wait for a claim's commit under load.
func (a *Allocator) prefetch(sub *Subnet) {
	ctx, cancel := context.WithTimeout(context.Background(), txnTimeout)
	defer cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	defer func() { a.prefetching = false }()
	now := a.cfg.Now()
	if a.claiming != nil {
		return
	}
	if b := a.claimableLocked(sub, "", now); b != nil {
		_ = a.claimLocked(ctx, b, now) // on failure the next offer claims in the foreground
	}
}

func (a *Allocator) claimRecord(b *block, now time.Time) *dhcpdv1.OfferBlock {
	return &dhcpdv1.OfferBlock{
		Site: a.cfg.Site, First: b.first.String(), Last: b.last.String(),
		Server: a.cfg.Server, Instance: a.instance, ExpireTime: timestamppb.New(now.Add(a.cfg.BlockTTL)),
	}
}

// writeBlockLocked writes rec (nil: deletes) at b's key, comparing the revision
// held, and folds the outcome into the view. ErrConflict means someone else
// changed the block; the view then holds their claim.
func (a *Allocator) writeBlockLocked(ctx context.Context, b *block, rec *dhcpdv1.OfferBlock) error {
	prev := b.rev
	a.mu.Unlock()
	res := a.cfg.Writer.WriteBlock(ctx, BlockWrite{First: b.first.String(), Block: rec, PrevRev: prev})
	a.mu.Lock()
	switch {
	case res.Err == nil:
		a.applyBlockLocked(b.first, rec, res.Rev, rec == nil)
	case errors.Is(res.Err, ErrConflict):
		a.applyBlockLocked(b.first, res.Current, res.CurrentRev, res.Current == nil)
	}
	return res.Err
}

// ApplyBlock records an offer-block claim as seen in etcd (from the watch).
func (a *Allocator) ApplyBlock(first string, rec *dhcpdv1.OfferBlock, rev int64, deleted bool) {
	ip, err := netip.ParseAddr(first)
	if err != nil || !ip.Is4() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applyBlockLocked(ip, rec, rev, deleted)
}

func (a *Allocator) applyBlockLocked(first netip.Addr, rec *dhcpdv1.OfferBlock, rev int64, deleted bool) {
	b := a.blocks[first]
	if b == nil {
		if deleted || rec == nil {
			return
		}
		last, err := netip.ParseAddr(rec.GetLast())
		if err != nil || !last.Is4() || last.Less(first) {
			return
		}
		b = &block{first: first, last: last}
		a.blocks[first] = b
	}
	if rev != 0 && rev <= b.rev && !deleted {
		return
	}
	if deleted || rec == nil {
		b.rec, b.rev = nil, 0
	} else {
		b.rec, b.rev = rec, rev
	}
	mine := b.rec.GetInstance() == a.instance
	for i, m := range a.mine {
		if m == b {
			if !mine {
				a.mine = append(a.mine[:i], a.mine[i+1:]...)
			}
			return
		}
	}
	if mine {
		a.mine = append(a.mine, b)
	}
}

// MaintainBlocks renews the claims this replica offers from, gives back those it
// has not offered from for OfferHold (every offer from them has expired by then),
// and forgets offers that ran out. Call it more often than BlockTTL/2 - OfferHold
// (the service does every OfferHold/3).
func (a *Allocator) MaintainBlocks(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Now()
	for mac, ip := range a.offered {
		if e := a.leases[ip]; e == nil || e.local == nil || !live(e.local, now) {
			a.dropOfferLocked(ip, mac)
		}
	}
	var errs []error
	for _, b := range append([]*block(nil), a.mine...) {
		var rec *dhcpdv1.OfferBlock
		switch {
		case now.Sub(b.used) >= a.cfg.OfferHold:
			rec = nil
		case b.expiry().Sub(now) < a.cfg.BlockTTL/2:
			rec = a.claimRecord(b, now)
		default:
			continue
		}
		if err := a.writeBlockLocked(ctx, b, rec); err != nil && !errors.Is(err, ErrConflict) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReleaseBlocks gives back every block this process holds, when it stops; its
// offers end with it.
func (a *Allocator) ReleaseBlocks(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for _, b := range append([]*block(nil), a.mine...) {
		if err := a.writeBlockLocked(ctx, b, nil); err != nil && !errors.Is(err, ErrConflict) {
			errs = append(errs, err)
		}
	}
	for mac, ip := range a.offered {
		a.dropOfferLocked(ip, mac)
	}
	return errors.Join(errs...)
}

// Blocks returns the offer blocks held by this process.
func (a *Allocator) Blocks() []*dhcpdv1.OfferBlock {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*dhcpdv1.OfferBlock, 0, len(a.mine))
	for _, b := range a.mine {
		out = append(out, b.rec)
	}
	return out
}

// offerLocked offers ip to c from memory, or returns the client's current lease
// or offer of ip when it still has more than half of OfferHold to run. b is the
// block the offer comes from (nil for a fixed address).
func (a *Allocator) offerLocked(c Client, ip netip.Addr, sub *Subnet, b *block, now time.Time) *dhcpdv1.Lease {
	e := a.leases[ip]
	if e == nil {
		e = &entry{}
		a.leases[ip] = e
	}
	for _, cur := range []*dhcpdv1.Lease{e.l, e.local} {
		if live(cur, now) && cur.GetMac() == c.MAC && cur.GetState() != dhcpdv1.LeaseState_LEASE_STATE_DECLINED &&
			cur.GetExpireTime().AsTime().Sub(now) > a.cfg.OfferHold/2 {
			return cur
		}
	}
	until := now.Add(a.cfg.OfferHold)
	if e.l.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND && e.l.GetMac() == c.MAC && e.l.GetExpireTime().AsTime().After(until) {
		until = e.l.GetExpireTime().AsTime()
	}
	if old, ok := a.offered[c.MAC]; ok && old != ip {
		a.dropOfferLocked(old, c.MAC)
	}
	e.local = a.newLease(c, ip, sub, dhcpdv1.LeaseState_LEASE_STATE_OFFERED, until, now)
	a.offered[c.MAC] = ip
	if b != nil {
		b.used = now
	}
	return e.local
}

// dropOfferLocked forgets mac's offer of ip from memory.
func (a *Allocator) dropOfferLocked(ip netip.Addr, mac string) {
	if cur, ok := a.offered[mac]; ok && cur == ip {
		delete(a.offered, mac)
	}
	e := a.leases[ip]
	if e == nil || e.local == nil || e.local.GetMac() != mac {
		return
	}
	e.local = nil
	if e.l == nil && !e.busy {
		delete(a.leases, ip)
	}
	a.freedLocked(ip)
}

// freedLocked notes that ip may be free again, so that its block, if this
// process went through it, is searched again.
func (a *Allocator) freedLocked(ip netip.Addr) {
	for _, sub := range a.subnets {
		if sub.InPool(ip) {
			if b := a.blockLocked(sub, ip); b != nil {
				b.full = false
			}
			return
		}
	}
}

// Offers returns the offers this process holds in memory (they are not in etcd).
func (a *Allocator) Offers() []*dhcpdv1.Lease {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.cfg.Now()
	var out []*dhcpdv1.Lease
	for _, ip := range a.offered {
		if e := a.leases[ip]; e != nil && live(e.local, now) {
			out = append(out, e.local)
		}
	}
	return out
}

// Offer picks an address for c in sub and holds it for OfferHold, in this
// order: the machine's fixed address, the client's live lease, its current offer,
// its last address, the address it asked for, then a free address of a block this
// replica holds or claims. Only claiming a block writes to etcd.
func (a *Allocator) Offer(ctx context.Context, c Client, sub *Subnet) (*dhcpdv1.Lease, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for conflicts := 0; conflicts < 8; {
		now := a.cfg.Now()
		l, claim := a.pickLocked(c, sub, now)
		if l != nil {
			return l, nil
		}
		if claim == nil {
			return nil, fmt.Errorf("%w: %s", ErrExhausted, sub.Prefix)
		}
		err := a.claimLocked(ctx, claim, now)
		switch {
		case errors.Is(err, ErrConflict):
			conflicts++
		case err != nil:
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: %s: too many conflicts", ErrExhausted, sub.Prefix)
}

// pickLocked returns the offer for c, or the block to claim before one can be made.
func (a *Allocator) pickLocked(c Client, sub *Subnet, now time.Time) (*dhcpdv1.Lease, *block) {
	usable := func(ip netip.Addr) bool {
		return ip.IsValid() && sub.Prefix.Contains(ip) && a.usableLocked(ip, c.MAC, now)
	}
	// A fixed address is only ever offered to its machine: no block needed.
	if usable(c.Reserved) {
		return a.offerLocked(c, c.Reserved, sub, nil, now), nil
	}
	last, hasLast := a.byMAC[c.MAC]
	// The client's live lease: nobody else may take it while it lives.
	if hasLast && usable(last) {
		if e := a.leases[last]; e != nil && live(e.l, now) && e.l.GetMac() == c.MAC &&
			e.l.GetExpireTime().AsTime().Sub(now) > a.cfg.OfferHold/2 {
			return e.l, nil
		}
	}
	if ip, ok := a.offered[c.MAC]; ok && usable(ip) {
		if b := a.blockLocked(sub, ip); b == nil || a.ownsLocked(b, now) {
			return a.offerLocked(c, ip, sub, b, now), nil
		}
	}
	for _, ip := range []netip.Addr{last, c.Requested} {
		if !ip.IsValid() || !sub.InPool(ip) || !usable(ip) {
			continue
		}
		switch b := a.blockLocked(sub, ip); {
		case a.ownsLocked(b, now):
			return a.offerLocked(c, ip, sub, b, now), nil
		case !a.foreignLocked(b, now):
			return nil, b
		}
	}
	for _, b := range a.mine {
		if b.full || !a.ownsLocked(b, now) || !sub.InPool(b.first) {
			continue
		}
		if ip, ok := a.freeInLocked(b, c.MAC, now); ok {
			if b.next > b.size()/2 && !a.prefetching && a.claiming == nil && !a.spareLocked(b, now) {
				a.prefetching = true
				go a.prefetch(sub)
			}
			return a.offerLocked(c, ip, sub, b, now), nil
		}
		b.full = true
	}
	if a.claiming != nil {
		return nil, waitClaim
	}
	return nil, a.claimableLocked(sub, c.MAC, now)
}
