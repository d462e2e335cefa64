package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// blockSpan is the number of addresses per block of sub: a sixteenth of its
// pools, so a few replicas share even a small pool, within [8, 1024] (at 20,000
// offers/s a replica claims a block every 50 ms), rounded down to a power of two
// and never more than the subnet. Blocks are aligned to the subnet, so blocks of
// two layouts (a pool resized) either nest or do not meet.
func blockSpan(sub *Subnet) uint32 {
	var pools uint64
	for _, r := range sub.Pools {
		if r.Start.Compare(r.End) <= 0 {
			pools += uint64(r.Size())
		}
	}
	n := uint64(8)
	for n*2 <= min(pools/16, 1024) {
		n *= 2
	}
	return uint32(min(n, uint64(1)<<(32-sub.Prefix.Bits())))
}

// block is one offer block, as etcd holds its claim, plus this replica's use of it.
type block struct {
	first, last netip.Addr
	// rec is the claim as seen in etcd (nil: none); rev is the revision of the
	// last change seen, a put or a delete, so that older events are ignored.
	rec *dhcpdv1.OfferBlock
	rev int64
	// odd: the claim's range is not a block of the current layout (a subnet
	// re-sized, or a replica with another configuration). Nobody offers from an
	// odd claim of their own; a live odd claim of another keeps every block it
	// overlaps from being offered or claimed here.
	odd bool
	// releasing: this replica is giving the block back; no more offers from it.
	releasing bool
	// used is when this replica last offered an address of the block.
	used time.Time
	// next is the offset where the search for a free address resumes.
	next uint32
	// full: the last search found no free address; MaintainBlocks and
	// freedLocked clear it.
	full bool
}

func (b *block) size() uint32 { return be32(b.last.As4()) - be32(b.first.As4()) + 1 }

func (b *block) expiry() time.Time { return b.rec.GetExpireTime().AsTime() }

func (b *block) overlaps(o *block) bool {
	return !b.last.Less(o.first) && !o.last.Less(b.first)
}

func newInstance() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// blockLocked returns the block of sub that holds ip (nil: ip is not in sub's
// pools), creating its entry.
func (a *Allocator) blockLocked(sub *Subnet, ip netip.Addr) *block {
	if !sub.InPool(ip) {
		return nil
	}
	n := blockSpan(sub)
	base := be32(sub.Prefix.Masked().Addr().As4())
	first := base + (be32(ip.As4())-base)/n*n
	return a.blockAtLocked(first, first+n-1)
}

// blockAtLocked returns the entry of the block [first, last] of the current
// layout. An entry at that address made for another range (a claim's) takes
// the layout's range when nobody holds it any more.
func (a *Allocator) blockAtLocked(first, last uint32) *block {
	f := fromU32(first)
	b := a.blocks[f]
	if b == nil {
		b = &block{first: f, last: fromU32(last)}
		a.blocks[f] = b
	}
	if b.rec == nil && (b.odd || b.last != fromU32(last)) {
		b.last, b.odd = fromU32(last), false
	}
	return b
}

// classifyLocked sets b.odd from the current layout and keeps a.odd, the odd
// claims, in step.
func (a *Allocator) classifyLocked(b *block) {
	odd := false
	if b.rec != nil {
		odd = true
		for _, sub := range a.subnets {
			if !sub.Prefix.Contains(b.first) {
				continue
			}
			n := blockSpan(sub)
			base := be32(sub.Prefix.Masked().Addr().As4())
			f := be32(b.first.As4())
			odd = (f-base)%n != 0 || b.last != fromU32(f+n-1)
			break
		}
	}
	b.odd = odd
	switch i := slices.Index(a.odd, b); {
	case i >= 0 && !odd:
		a.odd = slices.Delete(a.odd, i, i+1)
	case i < 0 && odd:
		a.odd = append(a.odd, b)
	}
}

// coveredLocked reports whether a live odd claim of another process overlaps b.
func (a *Allocator) coveredLocked(b *block, now time.Time) bool {
	for _, o := range a.odd {
		if o != b && o.overlaps(b) && a.theirsLocked(o, now) {
			return true
		}
	}
	return false
}

// theirsLocked reports whether another process holds b's claim. Its expiry is
// the holder's clock: it counts as live for ClockSkew longer, so a holder whose
// clock is behind ours by up to that still has its block to itself.
func (a *Allocator) theirsLocked(b *block, now time.Time) bool {
	return b.rec != nil && b.rec.GetInstance() != a.instance && now.Before(b.expiry().Add(a.cfg.ClockSkew))
}

// ownsLocked reports whether this process holds b long enough to offer from it:
// an offer made now must expire before the claim does.
func (a *Allocator) ownsLocked(b *block, now time.Time) bool {
	return b != nil && !b.odd && !b.releasing && b.rec.GetInstance() == a.instance &&
		b.expiry().Sub(now) > a.cfg.OfferHold && !a.coveredLocked(b, now)
}

// foreignLocked reports whether another process holds b, or a block overlapping it.
func (a *Allocator) foreignLocked(b *block, now time.Time) bool {
	return b != nil && (a.theirsLocked(b, now) || a.coveredLocked(b, now))
}

// freeInLocked returns a free pool address of b for mac, resuming after the last one.
func (a *Allocator) freeInLocked(sub *Subnet, b *block, mac string, now time.Time) (netip.Addr, bool) {
	n, first := b.size(), be32(b.first.As4())
	for i := uint32(0); i < n; i++ {
		off := (b.next + i) % n
		if ip := fromU32(first + off); sub.InPool(ip) && a.usableLocked(ip, mac, now) {
			b.next = off + 1
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// claimableLocked returns the next block of sub, from the subnet's cursor, that
// no process holds (or this one holds too briefly to offer from) and that has a
// free pool address for mac.
func (a *Allocator) claimableLocked(sub *Subnet, mac string, now time.Time) *block {
	if len(sub.Pools) == 0 {
		return nil
	}
	n := blockSpan(sub)
	base := be32(sub.Prefix.Masked().Addr().As4())
	lo, hi := uint32(0), uint32(0)
	for i, r := range sub.Pools {
		s, e := be32(r.Start.As4()), be32(r.End.As4())
		if e < s || !sub.Prefix.Contains(r.Start) || !sub.Prefix.Contains(r.End) {
			continue
		}
		if i == 0 || s < lo {
			lo = s
		}
		hi = max(hi, e)
	}
	if hi < lo || hi == 0 {
		return nil
	}
	lo, hi = (lo-base)/n, (hi-base)/n // block indexes within the subnet
	total := hi - lo + 1
	from := a.cursor[sub.Prefix]
	for i := range total {
		k := (from + i) % total
		first := base + (lo+k)*n
		overlapsPool := false
		for _, r := range sub.Pools {
			if be32(r.Start.As4()) <= first+n-1 && first <= be32(r.End.As4()) {
				overlapsPool = true
				break
			}
		}
		if !overlapsPool {
			continue
		}
		b := a.blockAtLocked(first, first+n-1)
		if a.foreignLocked(b, now) || a.ownsLocked(b, now) || b.odd {
			continue
		}
		next := b.next
		_, ok := a.freeInLocked(sub, b, mac, now)
		b.next = next // the address is taken once the claim is made
		if ok {
			a.cursor[sub.Prefix] = k + 1
			return b
		}
	}
	return nil
}

// claim is a block claim in flight; err is its outcome once done is closed.
type claim struct {
	done chan struct{}
	err  error
}

// waitClaim stands for "a claim is in flight: wait for it, then look again".
var waitClaim = &block{}

// claimLocked claims (or renews) b for this process. a.mu is held on entry and on
// return; it is released while etcd writes. One claim is in flight at a time:
// others wait for it, get its error if it failed, and else look again, as it may
// have been all they needed.
func (a *Allocator) claimLocked(ctx context.Context, b *block, now time.Time) error {
	if c := a.claiming; c != nil {
		a.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
		}
		a.mu.Lock()
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.err != nil && !errors.Is(c.err, ErrConflict) {
			return c.err
		}
		return nil
	}
	if b == waitClaim {
		return nil
	}
	if a.closed {
		return ErrClosed
	}
	c := &claim{done: make(chan struct{})}
	a.claiming = c
	defer func() {
		a.claiming = nil
		close(c.done)
	}()
	c.err = a.writeBlockLocked(ctx, b, a.claimRecord(b, now))
	if nb := a.blocks[b.first]; c.err == nil && nb != nil {
		nb.used, nb.full, nb.releasing = now, false, false
	}
	return c.err
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
	if a.claiming != nil || a.closed {
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
	if b.rec == nil {
		prev = 0 // absent (b.rev is then the delete's revision)
	}
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
	if deleted {
		rec = nil
	}
	var last netip.Addr
	if rec != nil {
		var err error
		if last, err = netip.ParseAddr(rec.GetLast()); err != nil || !last.Is4() || last.Less(first) {
			return // not a claim this version wrote: leave it alone
		}
	}
	b := a.blocks[first]
	if b == nil {
		if rec == nil {
			return
		}
		b = &block{first: first, last: last}
		a.blocks[first] = b
	}
	// Revisions order puts and deletes alike: a late event never undoes a newer
	// one (a delete keeps its revision as b.rev).
	if rev != 0 && rev <= b.rev {
		return
	}
	wasMine := b.rec.GetInstance() == a.instance && b.rec != nil
	b.rec, b.rev = rec, rev
	if rec != nil {
		b.last = last
	}
	a.classifyLocked(b)
	mine := rec != nil && rec.GetInstance() == a.instance
	if wasMine && !mine {
		if i := slices.Index(a.mine, b); i >= 0 {
			a.mine = slices.Delete(a.mine, i, i+1)
		}
		// Taken from us (not given back): our offers from it are void, as
		// someone else now offers its addresses.
		if !b.releasing {
			a.dropOffersInLocked(b)
		}
		b.full = false
	}
	if mine && !wasMine {
		a.mine = append(a.mine, b)
	}
}

// dropOffersInLocked forgets this process's offers of b's addresses.
func (a *Allocator) dropOffersInLocked(b *block) {
	for ip := b.first; ip.IsValid() && !b.last.Less(ip); ip = ip.Next() {
		if e := a.leases[ip]; e != nil && e.local != nil {
			a.dropOfferLocked(ip, e.local.GetMac())
		}
	}
}

// relayoutLocked re-classifies every claim after the subnets changed. (Entries
// nobody holds take the new layout's range when next looked up; they are kept,
// with the revision of their last delete.)
func (a *Allocator) relayoutLocked() {
	for _, b := range a.blocks {
		a.classifyLocked(b)
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
	return a.eachMineLocked(func(b *block) error {
		b.full = false // look again: addresses free up without telling their block
		switch {
		case now.Sub(b.used) >= a.cfg.OfferHold:
			// Every offer from it has run out.
			return a.releaseLocked(ctx, b)
		case b.odd || b.releasing:
			return nil // runs out unrenewed; given back once idle
		case b.expiry().Sub(now) < a.cfg.BlockTTL/2:
			return a.writeBlockLocked(ctx, b, a.claimRecord(b, now))
		}
		return nil
	})
}

// eachMineLocked runs fn on every block this process holds, skipping those
// that changed hands while fn dropped the lock for an earlier one, and joins
// the errors other than ErrConflict.
func (a *Allocator) eachMineLocked(fn func(*block) error) error {
	var errs []error
	for _, b := range slices.Clone(a.mine) {
		if b.rec == nil || b.rec.GetInstance() != a.instance {
			continue
		}
		if err := fn(b); err != nil && !errors.Is(err, ErrConflict) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// releaseLocked gives b back. It offers nothing more from then on: the delete
// drops the lock, and an offer made meanwhile would outlive the claim.
func (a *Allocator) releaseLocked(ctx context.Context, b *block) error {
	b.releasing = true
	return a.writeBlockLocked(ctx, b, nil)
}

// ReleaseBlocks gives back every block this process holds, when it stops; its
// offers end with it, and it claims nothing more.
func (a *Allocator) ReleaseBlocks(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for c := a.claiming; c != nil; c = a.claiming {
		a.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
		}
		a.mu.Lock()
		if ctx.Err() != nil {
			break
		}
	}
	for mac, ip := range a.offered {
		a.dropOfferLocked(ip, mac)
	}
	return a.eachMineLocked(func(b *block) error { return a.releaseLocked(ctx, b) })
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
	if e.l == nil && e.offline == nil && !e.busy {
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
	for mac, ip := range a.offered {
		if e := a.leases[ip]; e != nil && live(e.local, now) && e.local.GetMac() == mac {
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
		if b := a.blockLocked(sub, ip); a.ownsLocked(b, now) {
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
		if b.full || !sub.Prefix.Contains(b.first) || !a.ownsLocked(b, now) {
			continue
		}
		if ip, ok := a.freeInLocked(sub, b, c.MAC, now); ok {
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
