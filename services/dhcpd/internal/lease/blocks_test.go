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
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func allBlocks(t *testing.T, st *store.Store) map[string]*dhcpdv1.OfferBlock {
	return listed(t, st, store.Prefix("offerblocks", "lab"), func() *dhcpdv1.OfferBlock { return &dhcpdv1.OfferBlock{} })
}

// Offers from two replicas at once, with no binds to free anything: no address
// may be offered twice, no offer is written to etcd, and the claims in etcd are
// disjoint blocks of the pool, each held by one of the replicas.
func TestReplicasNeverOfferOneAddressTwice(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.New(t)
	const poolSize = 250
	sub := subnet(poolSize)
	reps := []*Allocator{replica(t, ctx, st, "a", sub), replica(t, ctx, st, "b", sub)}
	var mu sync.Mutex
	offered := map[string]string{} // ip -> mac
	var wg sync.WaitGroup
	for r, a := range reps {
		for i := 0; i < 150; i++ { // 300 clients for 250 addresses: the pool runs out
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := Client{MAC: fmt.Sprintf("52:54:00:%02x:%02x:%02x", r, i>>8, i&0xff)}
				l, err := a.Offer(ctx, c, sub)
				if err != nil {
					return
				}
				// The same client asking again gets the same offer.
				if again, err := a.Offer(ctx, c, sub); err != nil || again.GetIp() != l.GetIp() {
					t.Errorf("%s offered %s, then %v (%v)", c.MAC, l.GetIp(), again.GetIp(), err)
				}
				mu.Lock()
				defer mu.Unlock()
				if other, ok := offered[l.GetIp()]; ok {
					t.Errorf("%s offered to %s and %s", l.GetIp(), other, c.MAC)
				}
				offered[l.GetIp()] = c.MAC
			}()
		}
	}
	wg.Wait()
	if len(offered) < poolSize*8/10 {
		t.Errorf("only %d of %d addresses offered", len(offered), poolSize)
	}
	if got := allLeases(t, st); len(got) != 0 {
		t.Errorf("offers wrote %d lease records", len(got))
	}
	holders := map[string]bool{}
	var spans [][2]netip.Addr
	for first, b := range allBlocks(t, st) {
		holders[b.GetServer()] = true
		f, l := netip.MustParseAddr(first), netip.MustParseAddr(b.GetLast())
		for _, s := range spans {
			if !(l.Less(s[0]) || s[1].Less(f)) {
				t.Errorf("blocks %s-%s and %s-%s overlap", f, l, s[0], s[1])
			}
		}
		spans = append(spans, [2]netip.Addr{f, l})
	}
	if !holders["a"] || !holders["b"] {
		t.Errorf("block holders %v, want both replicas", holders)
	}
	// Every offer lies in a block of the replica that made it.
	for _, a := range reps {
		for _, o := range a.Offers() {
			ip := netip.MustParseAddr(o.GetIp())
			found := false
			for _, b := range a.Blocks() {
				if !ip.Less(netip.MustParseAddr(b.GetFirst())) && !netip.MustParseAddr(b.GetLast()).Less(ip) {
					found = true
				}
			}
			if !found {
				t.Errorf("replica %s offered %s outside its blocks", a.cfg.Server, ip)
			}
		}
	}
}

// A claim keeps another replica out of a block until it is given back (idle, or
// on stop) or runs out (the holder crashed).
func TestOfferBlockLifecycle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.New(t)
	// One block: eight addresses, aligned to eight.
	sub := &Subnet{Prefix: netip.MustParsePrefix("198.18.0.0/16"), LeaseTime: time.Hour,
		Pools: []Range{{netip.MustParseAddr("198.18.0.16"), netip.MustParseAddr("198.18.0.23")}}}
	a, b := replica(t, ctx, st, "a", sub), replica(t, ctx, st, "b", sub)
	start := time.Now()
	var mu sync.Mutex
	clock := map[*Allocator]time.Time{a: start, b: start}
	for _, r := range []*Allocator{a, b} {
		r.cfg.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock[r] }
	}
	advance := func(r *Allocator, d time.Duration) { mu.Lock(); clock[r] = clock[r].Add(d); mu.Unlock() }
	if _, err := a.Offer(ctx, Client{MAC: "m1"}, sub); err != nil {
		t.Fatal(err)
	}
	// b learns of a's claims through its watch.
	testkit.Eventually(t, "b sees a's claim", func() bool {
		_, err := b.Offer(ctx, Client{MAC: "m2"}, sub)
		return err != nil
	})

	// Still in use: renewed, not given back.
	advance(a, a.cfg.BlockTTL/2+time.Second)
	if _, err := a.Offer(ctx, Client{MAC: "m3"}, sub); err != nil {
		t.Fatal(err)
	}
	if err := a.MaintainBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	bl := allBlocks(t, st)[sub.Pools[0].Start.String()]
	if bl.GetServer() != "a" || !bl.GetExpireTime().AsTime().After(clock[a].Add(a.cfg.BlockTTL/2)) {
		t.Fatalf("after maintenance the block is %v", bl)
	}

	// Idle for OfferHold: given back, and b can claim it.
	advance(a, a.cfg.OfferHold)
	if err := a.MaintainBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	if got := allBlocks(t, st); len(got) != 0 {
		t.Fatalf("idle block not given back: %v", got)
	}
	if len(a.Offers()) != 0 {
		t.Errorf("a still holds offers %v", a.Offers())
	}
	var l *dhcpdv1.Lease
	testkit.Eventually(t, "b claims the free block", func() bool {
		var err error
		l, err = b.Offer(ctx, Client{MAC: "m2"}, sub)
		return err == nil
	})
	bound, err := b.Bind(ctx, Client{MAC: "m2"}, netip.MustParseAddr(l.GetIp()), sub, nil)
	if err != nil {
		t.Fatal(err)
	}

	// b "crashes": its claim stands until it runs out, then a takes the block over.
	testkit.Eventually(t, "a sees b's claim", func() bool {
		_, err := a.Offer(ctx, Client{MAC: "m4"}, sub)
		return err != nil
	})
	advance(a, a.cfg.BlockTTL)
	l, err = a.Offer(ctx, Client{MAC: "m4"}, sub)
	if err != nil {
		t.Fatalf("offer after b's claim ran out: %v", err)
	}
	if l.GetIp() == bound.GetIp() {
		t.Errorf("offered m2's bound address %s to m4", l.GetIp())
	}
	if bl := allBlocks(t, st)[sub.Pools[0].Start.String()]; bl.GetServer() != "a" {
		t.Errorf("block after takeover: %v", bl)
	}

	// Stopping gives every block back.
	if err := a.ReleaseBlocks(ctx); err != nil {
		t.Fatal(err)
	}
	if got := allBlocks(t, st); len(got) != 0 {
		t.Errorf("blocks after ReleaseBlocks: %v", got)
	}
}

func TestBlockSpan(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		pool   int
		want   uint32
	}{{"198.18.0.0/16", 1, 8}, {"198.18.0.0/16", 250, 8}, {"198.18.0.0/16", 256, 16}, {"198.18.0.0/16", 4096, 256},
		{"198.18.0.0/15", 100000, 1024}, {"198.18.0.0/30", 2, 4}, {"198.18.0.0/32", 1, 1}} {
		sub := &Subnet{Prefix: netip.MustParsePrefix(tc.prefix), Pools: []Range{{Start: netip.MustParseAddr("198.18.0.0")}}}
		sub.Pools[0].End = fromU32(be32(sub.Pools[0].Start.As4()) + uint32(tc.pool) - 1)
		if got := blockSpan(sub); got != tc.want {
			t.Errorf("blockSpan(%s, pool of %d) = %d, want %d", tc.prefix, tc.pool, got, tc.want)
		}
	}
}

// fresh must notice a change in any field a write would store, or a
// retransmitted REQUEST would skip a needed write.
func TestFreshComparesEveryField(t *testing.T) {
	now := time.Now()
	cur := &dhcpdv1.Lease{Ip: "198.18.0.10", Mac: "m", State: dhcpdv1.LeaseState_LEASE_STATE_BOUND,
		ExpireTime: timestamppb.New(now.Add(time.Hour)), UpdateTime: timestamppb.New(now), Server: "a"}
	if !fresh(cur, proto.Clone(cur).(*dhcpdv1.Lease), time.Hour, now) {
		t.Fatal("an identical lease is not fresh")
	}
	renewed := map[protoreflect.Name]bool{"expire_time": true, "update_time": true, "server": true}
	var check func(msg protoreflect.Message, path string, set func(func(protoreflect.Message)) *dhcpdv1.Lease)
	check = func(msg protoreflect.Message, path string, set func(func(protoreflect.Message)) *dhcpdv1.Lease) {
		fields := msg.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			name := path + string(fd.Name())
			if path == "" && renewed[fd.Name()] {
				continue
			}
			if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() != "google.protobuf.Timestamp" {
				// Present but empty, then each of its fields set.
				next := set(func(m protoreflect.Message) { m.Set(fd, m.NewField(fd)) })
				if fresh(cur, next, time.Hour, now) {
					t.Errorf("%s: presence change not noticed", name)
				}
				check(msg.NewField(fd).Message(), name+".", func(inner func(protoreflect.Message)) *dhcpdv1.Lease {
					return set(func(m protoreflect.Message) {
						sub := m.Mutable(fd).Message()
						inner(sub)
					})
				})
				continue
			}
			var v protoreflect.Value
			switch fd.Kind() {
			case protoreflect.StringKind:
				v = protoreflect.ValueOfString("changed")
			case protoreflect.BytesKind:
				v = protoreflect.ValueOfBytes([]byte("changed"))
			case protoreflect.EnumKind:
				v = protoreflect.ValueOfEnum(fd.Enum().Values().Get(fd.Enum().Values().Len() - 1).Number())
			case protoreflect.MessageKind: // Timestamp
				v = protoreflect.ValueOfMessage(timestamppb.New(now.Add(time.Minute)).ProtoReflect())
			default:
				t.Errorf("%s: kind %v not covered by this test", name, fd.Kind())
				continue
			}
			next := set(func(m protoreflect.Message) { m.Set(fd, v) })
			if name == "state" {
				continue // a bound lease that is no longer bound is never fresh anyway
			}
			if fresh(cur, next, time.Hour, now) {
				t.Errorf("%s changed, but fresh says no write is needed", name)
			}
		}
	}
	check(cur.ProtoReflect(), "", func(fn func(protoreflect.Message)) *dhcpdv1.Lease {
		next := proto.Clone(cur).(*dhcpdv1.Lease)
		fn(next.ProtoReflect())
		return next
	})
}

// An address freed in a block this replica went through is offered again at
// once, not after the block is given back.
func TestFreedAddressInFullBlock(t *testing.T) {
	ctx := context.Background()
	a := New(Config{Site: "lab", Writer: NewMemWriter()})
	sub := subnet(8)
	a.SetSubnets([]*Subnet{sub})
	var ips []netip.Addr
	for i := range 8 {
		c := Client{MAC: fmt.Sprintf("m%d", i)}
		l, err := a.Offer(ctx, c, sub)
		if err != nil {
			t.Fatal(err)
		}
		ip := netip.MustParseAddr(l.GetIp())
		if _, err := a.Bind(ctx, c, ip, sub, nil); err != nil {
			t.Fatal(err)
		}
		ips = append(ips, ip)
	}
	if _, err := a.Offer(ctx, Client{MAC: "late"}, sub); err == nil {
		t.Fatal("offer from a full pool")
	}
	if _, err := a.Release(ctx, ips[3], "m3"); err != nil {
		t.Fatal(err)
	}
	l, err := a.Offer(ctx, Client{MAC: "late"}, sub)
	if err != nil || l.GetIp() != ips[3].String() {
		t.Fatalf("after a release: %v, %v; want %s", l, err, ips[3])
	}
}
