// Regression tests for races and edge cases of offer blocks found in review:
// each failed before its fix.
//
// The replicas here share a MemWriter; busWriter stands in for the watch.
package lease

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// hookWriter is a MemWriter whose WriteBlock runs hook first (the allocator's
// lock is released then, as during a real etcd round trip).
type hookWriter struct {
	*MemWriter
	mu   sync.Mutex
	hook func(BlockWrite)
}

func (h *hookWriter) WriteBlock(ctx context.Context, w BlockWrite) BlockResult {
	h.mu.Lock()
	hook := h.hook
	h.hook = nil
	h.mu.Unlock()
	if hook != nil {
		hook(w)
	}
	return h.MemWriter.WriteBlock(ctx, w)
}

func (h *hookWriter) set(f func(BlockWrite)) { h.mu.Lock(); h.hook = f; h.mu.Unlock() }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func newClock() *clock               { return &clock{t: time.Unix(1_800_000_000, 0)} }
func offersByIP(a *Allocator) map[string]string {
	out := map[string]string{}
	for _, l := range a.Offers() {
		out[l.GetIp()] = l.GetMac()
	}
	return out
}

// MaintainBlocks decides to give a block back and drops the lock for the
// delete; an Offer made meanwhile must not come from that block, or it would
// outlive the claim while another replica claims the block and offers the
// address. (It did, before blocks being given back were marked releasing.)
func TestBlocksReleaseRacesOffer(t *testing.T) {
	ctx := context.Background()
	mem := NewMemWriter()
	hw := &hookWriter{MemWriter: mem}
	clk := newClock()
	sub := subnet(8)
	a := New(Config{Site: "lab", Server: "a", Writer: hw, Now: clk.Now})
	a.SetSubnets([]*Subnet{sub})
	if _, err := a.Offer(ctx, Client{MAC: "m1"}, sub); err != nil {
		t.Fatal(err)
	}
	clk.Add(a.cfg.OfferHold) // idle: MaintainBlocks gives the block back
	var raced *dhcpdv1.Lease
	hw.set(func(w BlockWrite) {
		if w.Block == nil {
			var err error
			raced, err = a.Offer(ctx, Client{MAC: "m2"}, sub) // a returning client's DISCOVER
			if err != nil {
				t.Errorf("offer during release: %v", err)
			}
		}
	})
	if err := a.MaintainBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("a's blocks after release: %d; a's live offers: %v", len(a.Blocks()), offersByIP(a))
	b := New(Config{Site: "lab", Server: "b", Writer: mem, Now: clk.Now})
	b.SetSubnets([]*Subnet{sub})
	if raced != nil {
		offeredAgain(t, b, sub, 8, "b", raced.GetIp(), "a (to m2, during its release)")
	}
}

// MaintainBlocks walks a copy of a.mine; a block taken over by another replica
// while the lock was dropped for an earlier write must be left alone, not
// "released" with the other replica's revision (which deleted its live claim).
func TestBlocksMaintainDeletesForeignClaim(t *testing.T) {
	ctx := context.Background()
	mem := NewMemWriter()
	hw := &hookWriter{MemWriter: mem}
	clk := newClock()
	sub := subnet(16) // two blocks of 8
	a := New(Config{Site: "lab", Server: "a", Writer: hw, Now: clk.Now})
	a.SetSubnets([]*Subnet{sub})
	for i := 0; i < 9; i++ {
		if _, err := a.Offer(ctx, Client{MAC: fmt.Sprintf("m%d", i)}, sub); err != nil {
			t.Fatal(err)
		}
	}
	// A half-used block starts a background claim of the next (prefetch):
	// let it finish, so that the hook below meets MaintainBlocks' write, and
	// a holds two blocks, or three (the pool's .10-.25 spans three blocks of 8).
	testkit.Eventually(t, "the prefetch done", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return !a.prefetching
	})
	if n := len(a.Blocks()); n < 2 {
		t.Fatalf("a holds %d blocks, want 2 or more", n)
	}
	second := a.mine[1]
	clk.Add(a.cfg.OfferHold)
	hw.set(func(w BlockWrite) {
		// Meanwhile replica b takes the second block over (it saw a's claim
		// as run out: clock skew, or a's renewals failed) and the watch tells a.
		mem.mu.Lock()
		cur := mem.blocks[second.first.String()]
		mem.mu.Unlock()
		rec := &dhcpdv1.OfferBlock{Site: "lab", First: second.first.String(), Last: second.last.String(), Server: "b",
			Instance: "b-instance", ExpireTime: timestamppb.New(clk.Now().Add(90 * time.Second))}
		res := mem.WriteBlock(ctx, BlockWrite{First: second.first.String(), Block: rec, PrevRev: cur.rev})
		if res.Err != nil {
			t.Errorf("b's takeover: %v", res.Err)
			return
		}
		a.ApplyBlock(second.first.String(), rec, res.Rev, false)
	})
	_ = a.MaintainBlocks(ctx)
	mem.mu.Lock()
	_, ok := mem.blocks[second.first.String()]
	mem.mu.Unlock()
	if !ok {
		t.Errorf("a's MaintainBlocks deleted b's live claim of %s", second.first)
	}
}

// A put of our own claim that reaches applyBlockLocked after our delete (a
// lagging watch, or a claim whose result is applied late) must be ignored: a
// delete keeps its revision. (When it reset b.rev to 0, the block was "ours"
// again while etcd held no claim.)
func TestBlocksStalePutAfterDelete(t *testing.T) {
	ctx := context.Background()
	mem := NewMemWriter()
	clk := newClock()
	sub := subnet(8)
	a := New(Config{Site: "lab", Server: "a", Writer: mem, Now: clk.Now})
	a.SetSubnets([]*Subnet{sub})
	if _, err := a.Offer(ctx, Client{MAC: "m1"}, sub); err != nil {
		t.Fatal(err)
	}
	rec, rev := a.mine[0].rec, a.mine[0].rev
	clk.Add(a.cfg.OfferHold)
	if err := a.MaintainBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	a.ApplyBlock(sub.Pools[0].Start.String(), rec, rev, false) // the watch's put, late
	la, err := a.Offer(ctx, Client{MAC: "m2"}, sub)
	if err != nil {
		t.Fatal(err)
	}
	b := New(Config{Site: "lab", Server: "b", Writer: mem, Now: clk.Now})
	b.SetSubnets([]*Subnet{sub})
	offeredAgain(t, b, sub, 8, "b", la.GetIp(), "a (to m2, after a late event)")
}

func pool(first string, n int) *Subnet {
	start := netip.MustParseAddr(first)
	end := start
	for i := 1; i < n; i++ {
		end = end.Next()
	}
	return &Subnet{Prefix: netip.MustParsePrefix("198.18.0.0/16"), Pools: []Range{{start, end}}, LeaseTime: time.Hour}
}

// Pool resize: blocks of the old and the new layout overlap under different
// keys, which etcd does not see conflict; the allocator must (odd claims).
func TestBlocksResizeOverlap(t *testing.T) {
	ctx := context.Background()
	mem := NewMemWriter()
	clk := newClock()
	var as []*Allocator
	bus := &busWriter{MemWriter: mem, to: &as}
	small := pool("198.18.0.10", 200) // blocks of 12
	a := New(Config{Site: "lab", Server: "a", Writer: bus, Now: clk.Now})
	b := New(Config{Site: "lab", Server: "b", Writer: bus, Now: clk.Now})
	as = []*Allocator{a, b}
	a.SetSubnets([]*Subnet{small})
	b.SetSubnets([]*Subnet{small})
	for i := 0; i < 30; i++ {
		if _, err := a.Offer(ctx, Client{MAC: fmt.Sprintf("a%d", i)}, small); err != nil {
			t.Fatal(err)
		}
	}
	big := pool("198.18.0.10", 400) // blocks of 25
	a.SetSubnets([]*Subnet{big})
	b.SetSubnets([]*Subnet{big})
	aOffers := offersByIP(a)
	for i := 0; i < 60; i++ {
		l, err := b.Offer(ctx, Client{MAC: fmt.Sprintf("b%d", i)}, big)
		if err != nil {
			t.Fatal(err)
		}
		if m, ok := aOffers[l.GetIp()]; ok {
			t.Errorf("%s offered by a to %s and by b to %s", l.GetIp(), m, l.GetMac())
		}
	}
	for _, bl := range append(a.Blocks(), b.Blocks()...) {
		t.Logf("claim %s-%s by %s", bl.GetFirst(), bl.GetLast(), bl.GetServer())
	}
}

// A shrunk pool: no offer may come from beyond it (a stale block entry's range
// once reached past it).
func TestBlocksShrinkOffersOutsidePool(t *testing.T) {
	ctx := context.Background()
	a := New(Config{Site: "lab", Server: "a", Writer: NewMemWriter()})
	big := pool("198.18.0.10", 200)
	a.SetSubnets([]*Subnet{big})
	if _, err := a.Offer(ctx, Client{MAC: "m"}, big); err != nil {
		t.Fatal(err)
	}
	small := pool("198.18.0.10", 5)
	a.SetSubnets([]*Subnet{small})
	for i := 0; i < 10; i++ {
		l, err := a.Offer(ctx, Client{MAC: fmt.Sprintf("c%d", i)}, small)
		if err != nil {
			break
		}
		if ip := netip.MustParseAddr(l.GetIp()); !small.InPool(ip) {
			_, berr := a.Bind(ctx, Client{MAC: l.GetMac()}, ip, small, nil)
			t.Errorf("offered %s outside pool %v-%v; bind: %v", ip, small.Pools[0].Start, small.Pools[0].End, berr)
		}
	}
}

// A grown pool after the old block was given back: every address must be
// offered (a stale entry's range once left a gap).
func TestBlocksGrowLeavesGap(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	a := New(Config{Site: "lab", Server: "a", Writer: NewMemWriter(), Now: clk.Now})
	p200 := pool("198.18.0.10", 200)
	a.SetSubnets([]*Subnet{p200})
	if _, err := a.Offer(ctx, Client{MAC: "m"}, p200); err != nil {
		t.Fatal(err)
	}
	clk.Add(a.cfg.OfferHold)
	if err := a.MaintainBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	p400 := pool("198.18.0.10", 400)
	a.SetSubnets([]*Subnet{p400})
	n := 0
	for i := 0; i < 400; i++ {
		if _, err := a.Offer(ctx, Client{MAC: fmt.Sprintf("c%d", i)}, p400); err != nil {
			break
		}
		n++
	}
	if n != 400 {
		t.Errorf("only %d of 400 free addresses offered", n)
	}
}

// Offers must list an offer once, also when an expired offer's address went to
// another client before MaintainBlocks swept the first client's entry.
func TestBlocksOffersDuplicate(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	sub := subnet(8)
	a := New(Config{Site: "lab", Server: "a", Writer: NewMemWriter(), Now: clk.Now})
	a.SetSubnets([]*Subnet{sub})
	for i := 0; i < 8; i++ {
		if _, err := a.Offer(ctx, Client{MAC: fmt.Sprintf("m%d", i)}, sub); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(a.cfg.OfferHold + time.Second)
	if _, err := a.Offer(ctx, Client{MAC: "late"}, sub); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, l := range a.Offers() {
		seen[l.GetIp()]++
	}
	for ip, n := range seen {
		if n > 1 {
			t.Errorf("Offers lists %s %d times", ip, n)
		}
	}
}

// offeredAgain has b offer up to n clients (named prefix0...) and reports an
// error for any that gets ip, which another replica offered as what.
func offeredAgain(t *testing.T, b *Allocator, sub *Subnet, n int, prefix, ip, what string) {
	t.Helper()
	for i := 0; i < n; i++ {
		l, err := b.Offer(context.Background(), Client{MAC: fmt.Sprintf("%s%d", prefix, i)}, sub)
		if err != nil {
			return
		}
		if l.GetIp() == ip {
			t.Errorf("%s offered %s and %s offered it to %s", what, ip, b.cfg.Server, l.GetMac())
		}
	}
}

// busWriter forwards every committed block write to all allocators, like the watch.
type busWriter struct {
	*MemWriter
	mu sync.Mutex
	to *[]*Allocator
}

func (w *busWriter) WriteBlock(ctx context.Context, bw BlockWrite) BlockResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	res := w.MemWriter.WriteBlock(ctx, bw)
	if res.Err == nil {
		for _, a := range *w.to {
			a.ApplyBlock(bw.First, bw.Block, res.Rev, bw.Block == nil)
		}
	}
	return res
}

// B's clock runs 45 s ahead of A's. A renews when less than TTL/2 is left,
// every OfferHold/3, so its claim can have 35-45 s left; without ClockSkew, B
// saw it as run out and took the block over while A's offers from it lived.
func TestBlocksClockSkew(t *testing.T) {
	ctx := context.Background()
	mem := NewMemWriter()
	var as []*Allocator
	bus := &busWriter{MemWriter: mem, to: &as}
	ca, cb := newClock(), newClock()
	cb.Add(45 * time.Second)
	sub := subnet(8)
	a := New(Config{Site: "lab", Server: "a", Writer: bus, Now: ca.Now})
	b := New(Config{Site: "lab", Server: "b", Writer: bus, Now: cb.Now})
	as = []*Allocator{a, b}
	a.SetSubnets([]*Subnet{sub})
	b.SetSubnets([]*Subnet{sub})
	if _, err := a.Offer(ctx, Client{MAC: "m0"}, sub); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{10, 10, 10, 10} { // maintenance ticks at +10..+40: no renewal due yet
		ca.Add(d * time.Second)
		cb.Add(d * time.Second)
		if _, err := a.Offer(ctx, Client{MAC: fmt.Sprintf("t%d", ca.Now().Unix())}, sub); err != nil { // in use
			t.Fatal(err)
		}
		if err := a.MaintainBlocks(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ca.Add(9 * time.Second)
	cb.Add(9 * time.Second)
	la, err := a.Offer(ctx, Client{MAC: "m1"}, sub) // 41 s left on the claim: a owns it
	if err != nil {
		t.Fatal(err)
	}
	offeredAgain(t, b, sub, 8, "b", la.GetIp(), "a (to m1, its clock 45 s behind)")
}

type slowFailWriter struct {
	*MemWriter
	d     time.Duration
	mu    sync.Mutex
	calls int
}

func (w *slowFailWriter) WriteBlock(ctx context.Context, bw BlockWrite) BlockResult {
	w.mu.Lock()
	w.calls++
	w.mu.Unlock()
	time.Sleep(w.d)
	return BlockResult{Err: fmt.Errorf("lease: write block %s: %w", bw.First, context.DeadlineExceeded)}
}

// While claims fail (etcd slow: each attempt runs to txnTimeout), the waiters
// must get the claimer's error, not each wake and claim in turn (the n-th
// DISCOVER then waited n claim timeouts).
func TestBlocksClaimWaitersSerialize(t *testing.T) {
	w := &slowFailWriter{MemWriter: NewMemWriter(), d: 100 * time.Millisecond}
	a := New(Config{Site: "lab", Server: "a", Writer: w})
	sub := subnet(64)
	a.SetSubnets([]*Subnet{sub})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var worst time.Duration
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			_, _ = a.Offer(context.Background(), Client{MAC: fmt.Sprintf("m%d", i)}, sub)
			mu.Lock()
			worst = max(worst, time.Since(start))
			mu.Unlock()
		}()
	}
	wg.Wait()
	// The waiters get the claimer's error instead of each claiming in turn.
	if w.calls > 3 {
		t.Errorf("10 DISCOVERs while claims fail made %d claim attempts (slowest offer %v)", w.calls, worst)
	}
}
