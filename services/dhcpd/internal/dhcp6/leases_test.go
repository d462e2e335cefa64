package dhcp6

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

func TestParsePool(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"fd00:bc::100-fd00:bc::1ff", true},
		{"2001:db8::1-2001:db8::1", true},
		{"fd00:bc::1ff-fd00:bc::100", false},
		{"198.18.0.1-198.18.0.9", false},
		{"fd00:bc::1-fd00:bd::1", false},
		{"fd00:bc::1", false},
		{"::ffff:198.18.0.1-::ffff:198.18.0.2", false},
	} {
		if _, err := ParsePool(tc.in); (err == nil) != tc.ok {
			t.Errorf("ParsePool(%q) = %v, want ok %v", tc.in, err, tc.ok)
		}
	}
}

// replica is a Leases fed by its own watch, as a dhcpd replica's.
func replica(t *testing.T, st *store.Store, name string) *Leases {
	t.Helper()
	ls := NewLeases(st, "lab", name)
	c := store.NewCache(st, Prefix("lab"), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} }, nil)
	c.OnEvent(func(ev store.Event[*dhcpdv1.Lease]) { ls.Apply(ev.Name, ev.Value, ev.ModRevision, ev.Deleted) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return ls
}

// Two replicas on one etcd, 40 clients for 24 addresses, every client binding
// through both: no address is ever bound to two clients, and each bind that
// returned is in etcd.
func TestTwoReplicasNeverBindOneAddressTwice(t *testing.T) {
	st := storetest.New(t)
	a, b := replica(t, st, "a"), replica(t, st, "b")
	pool, _ := ParsePool("fd00:bc::100-fd00:bc::117")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for i := range 40 {
		for _, ls := range []*Leases{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := ClientKey([]byte(fmt.Sprintf("duid-%d", i)), [4]byte{0, 0, 0, 1})
				ip, err := ls.Pick(client, netip.Addr{}, pool, time.Now())
				if err != nil {
					return
				}
				_, err = ls.Write(ctx, Bind{IP: ip, Client: client, Expiry: time.Now().Add(time.Hour), State: dhcpdv1.LeaseState_LEASE_STATE_BOUND})
				if errors.Is(err, ErrTaken) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if other, ok := got[ip]; ok && other != string(client) {
					t.Errorf("%s bound to %q and %q", ip, other, client)
				}
				got[ip] = string(client)
			}()
		}
	}
	wg.Wait()
	if len(got) == 0 || len(got) > 24 {
		t.Fatalf("%d addresses bound, want 1..24", len(got))
	}
	for ip, client := range got {
		l := &dhcpdv1.Lease{}
		if _, err := st.Get(ctx, a.Key(ip), l); err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
		if string(l.GetClientId()) != client || l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			t.Errorf("%s in etcd: %v, want bound to %q", ip, l, client)
		}
	}
}

func TestPickKeepsTheClientsAddress(t *testing.T) {
	st := storetest.New(t)
	ls := replica(t, st, "a")
	pool, _ := ParsePool("fd00:bc::100-fd00:bc::101")
	ctx := context.Background()
	c1, c2, c3 := []byte("one"), []byte("two"), []byte("three")
	now := time.Now()
	ip1, err := ls.Pick(c1, netip.Addr{}, pool, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Write(ctx, Bind{IP: ip1, Client: c1, Expiry: now.Add(time.Hour), State: dhcpdv1.LeaseState_LEASE_STATE_BOUND}); err != nil {
		t.Fatal(err)
	}
	if again, _ := ls.Pick(c1, netip.Addr{}, pool, now); again != ip1 {
		t.Fatalf("client's own lease: %s, want %s", again, ip1)
	}
	ip2, err := ls.Pick(c2, ip1, pool, now) // asks for c1's address
	if err != nil || ip2 == ip1 {
		t.Fatalf("second client: %s %v (first has %s)", ip2, err, ip1)
	}
	if _, err := ls.Write(ctx, Bind{IP: ip1, Client: c2, Expiry: now.Add(time.Hour), State: dhcpdv1.LeaseState_LEASE_STATE_BOUND}); !errors.Is(err, ErrTaken) {
		t.Fatalf("bind of another's address: %v, want ErrTaken", err)
	}
	if _, err := ls.Pick(c3, netip.Addr{}, pool, now); !errors.Is(err, ErrExhausted) {
		t.Fatalf("third client in a pool of two with an offer held: %v, want ErrExhausted", err)
	}
	// A release frees the address for others.
	if _, err := ls.Write(ctx, Bind{IP: ip1, Client: c1, Expiry: now, State: dhcpdv1.LeaseState_LEASE_STATE_RELEASED}); err != nil {
		t.Fatal(err)
	}
	if ip, err := ls.Pick(c3, netip.Addr{}, pool, now); err != nil || ip != ip1 {
		t.Fatalf("after release: %s %v, want %s", ip, err, ip1)
	}
}
