package lease

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

func subnet(n int) *Subnet {
	start := netip.MustParseAddr("198.18.0.10")
	end := start
	for i := 1; i < n; i++ {
		end = end.Next()
	}
	return &Subnet{Prefix: netip.MustParsePrefix("198.18.0.0/16"), Pools: []Range{{start, end}}, LeaseTime: time.Hour}
}

// replica is one dhcpd's allocator, fed by its own watch-fed cache like the service.
func replica(t *testing.T, ctx context.Context, st *store.Store, name string, sub *Subnet) *Allocator {
	t.Helper()
	return replicaWith(t, ctx, st, sub, Config{Site: "lab", Server: name})
}

// replicaWith is replica with more of its Config (its Writer is made here).
func replicaWith(t *testing.T, ctx context.Context, st *store.Store, sub *Subnet, cfg Config) *Allocator {
	t.Helper()
	name := cfg.Server
	w := NewEtcdWriter(st, "lab", 8, 128)
	testkit.Run(t, name+" lease writer", w.Run)
	cfg.Writer = w
	a := New(cfg)
	a.SetSubnets([]*Subnet{sub})
	c := store.NewCache(st, store.Prefix("leases", "lab"), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} }, nil)
	testkit.Run(t, name+" leases cache", c.Run)
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	blocks := store.NewCache(st, store.Prefix("offerblocks", "lab"), func() *dhcpdv1.OfferBlock { return &dhcpdv1.OfferBlock{} }, nil)
	blocks.OnEvent(func(ev store.Event[*dhcpdv1.OfferBlock]) { a.ApplyBlock(ev.Name, ev.Value, ev.ModRevision, ev.Deleted) })
	testkit.Run(t, name+" offer blocks cache", blocks.Run)
	if err := blocks.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	snap, ev, cancel := c.Subscribe(1 << 16)
	for _, it := range snap {
		a.Apply(it.Name, it.Value, it.ModRevision, false)
	}
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for e := range ev {
			a.Apply(e.Name, e.Value, e.ModRevision, e.Deleted)
		}
	}()
	// Only ending the subscription closes ev; the caches stop after it.
	t.Cleanup(func() { cancel(); <-fed })
	return a
}

// listed returns the values under prefix in etcd, by the rest of their key.
func listed[T proto.Message](t *testing.T, st *store.Store, prefix string, newT func() T) map[string]T {
	t.Helper()
	resp, err := st.Client().Get(context.Background(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]T{}
	for _, kv := range resp.Kvs {
		v := newT()
		if err := proto.Unmarshal(kv.Value, v); err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(string(kv.Key), prefix)] = v
	}
	return out
}

func allLeases(t *testing.T, st *store.Store) map[string]*dhcpdv1.Lease {
	return listed(t, st, store.Prefix("leases", "lab"), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} })
}

// Two replicas on one etcd, many clients at once, each DORA sent to both replicas
// (as broadcast DHCP is): no address may end up bound to two MACs, and every
// granted bind must be in etcd.
func TestTwoReplicasNeverShareAnAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := storetest.New(t)
	const clients, poolSize = 300, 250 // more clients than addresses: contention and exhaustion
	sub := subnet(poolSize)
	reps := []*Allocator{replica(t, ctx, st, "a", sub), replica(t, ctx, st, "b", sub)}
	type grant struct{ ip, mac, by string }
	var mu sync.Mutex
	var grants []grant
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < clients; i++ {
		for r, a := range reps {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c := Client{MAC: fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)}
				l, err := a.Offer(ctx, c, sub)
				if err != nil {
					return
				}
				ip := netip.MustParseAddr(l.GetIp())
				b, err := a.Bind(ctx, c, ip, sub, nil)
				if err != nil {
					return
				}
				mu.Lock()
				grants = append(grants, grant{b.GetIp(), c.MAC, fmt.Sprint(r)})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	owner := map[string]string{}
	for _, g := range grants {
		if o, ok := owner[g.ip]; ok && o != g.mac {
			t.Errorf("%s granted to %s and %s", g.ip, o, g.mac)
		}
		owner[g.ip] = g.mac
	}
	if len(owner) < poolSize*9/10 {
		t.Errorf("only %d of %d addresses granted", len(owner), poolSize)
	}
	stored := allLeases(t, st)
	for ip, mac := range owner {
		l := stored[ip]
		if l.GetMac() != mac || l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			t.Errorf("granted %s to %s but etcd holds %v", ip, mac, l)
		}
	}
	t.Logf("%d grants of %d addresses", len(grants), len(owner))
}

func TestBatchConflictRetriesOnlyConflicting(t *testing.T) {
	st := storetest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := NewEtcdWriter(st, "lab", 1, 128)
	// A key that exists: a create of it must conflict, the others must succeed.
	if _, err := st.Put(ctx, Key("lab", "198.18.0.5"), &dhcpdv1.Lease{Ip: "198.18.0.5", Mac: "other"}); err != nil {
		t.Fatal(err)
	}
	batch := make([]*pending, 0, 10)
	for i := 0; i < 10; i++ {
		ip := fmt.Sprintf("198.18.0.%d", i)
		batch = append(batch, &pending{w: Write{IP: ip, Lease: &dhcpdv1.Lease{Ip: ip, Mac: "me"}}, done: make(chan Result, 1)})
	}
	w.commit(ctx, batch)
	for i, p := range batch {
		r := <-p.done
		if (i == 5) != (r.Err != nil) {
			t.Errorf("write %d: %v", i, r.Err)
		}
		if i == 5 && r.Current.GetMac() != "other" {
			t.Errorf("conflict reports %v", r.Current)
		}
	}
	txns, writes := w.Stats()
	if txns != 2 || writes != 9 {
		t.Errorf("txns=%d writes=%d, want 2 and 9", txns, writes)
	}
}

func TestReclaimAndQuarantine(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	a := New(Config{Site: "lab", Writer: NewMemWriter(), Now: clock, Quarantine: time.Minute})
	sub := subnet(2)
	sub.LeaseTime = time.Minute
	a.SetSubnets([]*Subnet{sub})
	ctx := context.Background()
	l, _ := a.Offer(ctx, Client{MAC: "m1"}, sub)
	if _, err := a.Bind(ctx, Client{MAC: "m1"}, netip.MustParseAddr(l.GetIp()), sub, nil); err != nil {
		t.Fatal(err)
	}
	l2, _ := a.Offer(ctx, Client{MAC: "m2"}, sub)
	if _, err := a.Decline(ctx, netip.MustParseAddr(l2.GetIp()), "m2", sub); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Offer(ctx, Client{MAC: "m3"}, sub); err == nil {
		t.Fatal("offer with one address bound and one quarantined")
	}
	now = now.Add(2 * time.Minute)
	if n := a.Reclaim(ctx, 0); n != 2 {
		t.Errorf("reclaimed %d, want 2", n)
	}
	got, _, _ := a.Lookup(netip.MustParseAddr(l.GetIp()))
	if got.GetState() != dhcpdv1.LeaseState_LEASE_STATE_EXPIRED {
		t.Errorf("state %v", got.GetState())
	}
	if _, err := a.Offer(ctx, Client{MAC: "m3"}, sub); err != nil {
		t.Errorf("offer after reclaim: %v", err)
	}
}

func TestQueuedTooLongIsNotWritten(t *testing.T) {
	st := storetest.New(t)
	w := NewEtcdWriter(st, "lab", 1, 128)
	ip := "198.18.0.9"
	p := &pending{w: Write{IP: ip, Lease: &dhcpdv1.Lease{Ip: ip, Mac: "me"}}, deadline: time.Now().Add(-time.Second), done: make(chan Result, 1)}
	w.commit(context.Background(), []*pending{p})
	if r := <-p.done; !errors.Is(r.Err, ErrTimeout) {
		t.Fatalf("expired write: %v, want ErrTimeout", r.Err)
	}
	if got := allLeases(t, st); len(got) != 0 {
		t.Fatalf("etcd holds %v after an expired write", got)
	}
}
