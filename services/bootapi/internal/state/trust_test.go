package state

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The lease index follows a lease through its life: offered (not held),
// bound, moved to another MAC, released, deleted.
func TestLeaseIndex(t *testing.T) {
	s := &State{leaseIdx: newLeaseIndex()}
	now := time.Now()
	const a, b, ip = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "198.18.0.10"
	ev := func(mac string, st dhcpdv1.LeaseState, deleted bool) {
		s.leaseIdx.onEvent(store.Event[*dhcpdv1.Lease]{Item: store.Item[*dhcpdv1.Lease]{Name: "lab/" + ip,
			Value: &dhcpdv1.Lease{Ip: ip, Mac: mac, State: st, ExpireTime: timestamppb.New(now.Add(time.Hour))}}, Deleted: deleted})
	}
	holds := func(step, mac string, want bool) {
		t.Helper()
		if got := s.HoldsLease("lab", mac, ip, now); got != want {
			t.Errorf("%s: HoldsLease(%s) = %v, want %v", step, mac, got, want)
		}
	}
	ev(a, dhcpdv1.LeaseState_LEASE_STATE_OFFERED, false)
	holds("offered", a, false)
	ev(a, dhcpdv1.LeaseState_LEASE_STATE_BOUND, false)
	holds("bound", a, true)
	if s.HoldsLease("other", a, ip, now) || s.HoldsLease("lab", a, "198.18.0.11", now) {
		t.Error("bound: held at another site or address")
	}
	if s.HoldsLease("lab", a, ip, now.Add(2*time.Hour)) {
		t.Error("held after its expiry")
	}
	ev(b, dhcpdv1.LeaseState_LEASE_STATE_BOUND, false)
	holds("moved", a, false)
	holds("moved", b, true)
	ev(b, dhcpdv1.LeaseState_LEASE_STATE_RELEASED, false)
	holds("released", b, false)
	ev(b, dhcpdv1.LeaseState_LEASE_STATE_BOUND, false)
	ev(b, dhcpdv1.LeaseState_LEASE_STATE_BOUND, true)
	holds("deleted", b, false)
	if len(s.leaseIdx.byMAC) != 0 || len(s.leaseIdx.byKey) != 0 {
		t.Errorf("index not empty after the delete: %v %v", s.leaseIdx.byMAC, s.leaseIdx.byKey)
	}
}

// The discovered count: records from the cache and claims, the cap, a
// registration freeing a place.
func TestDiscoveredIndexCap(t *testing.T) {
	x := newDiscoveredIndex()
	machine := func(mac string, discovered, deleted bool) {
		x.onMachine(store.Event[*bootapiv1.Machine]{Item: store.Item[*bootapiv1.Machine]{Name: mac,
			Value: &bootapiv1.Machine{Mac: mac, Site: "lab", Discovered: discovered}}, Deleted: deleted})
	}
	machine("m1", true, false)
	if !x.claim("m2", "lab", 2) {
		t.Fatal("second place refused")
	}
	if x.claim("m3", "lab", 2) {
		t.Fatal("claim past the cap")
	}
	if !x.claim("m2", "lab", 2) || !x.claim("m3", "other", 2) {
		t.Fatal("a counted MAC, or another site, refused")
	}
	machine("m1", false, false) // registered
	if !x.claim("m4", "lab", 2) {
		t.Fatal("a registration did not free a place")
	}
	x.unclaim("m4")
	machine("m2", true, true) // deleted
	if len(x.bySite["lab"]) != 0 {
		t.Fatalf("lab still counts %v", x.bySite["lab"])
	}
}

// A DHCPv6 lease dhcpd writes (leases6/<site>/<ip>) holds its MAC's lease for
// the trust rule as an IPv4 lease does.
func TestLeaseIndexIPv6(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st := storetest.New(t)
	s := New(st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	defer func() { stop(); <-done }()
	if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	const mac, ip = "52:54:00:00:00:0a", "fd00:bc::105"
	now := time.Now()
	rev, err := st.Create(ctx, store.Key("leases6", "lab", ip), &dhcpdv1.Lease{Ip: ip, Mac: mac,
		State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, ExpireTime: timestamppb.New(now.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Leases6.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if !s.HoldsLease("lab", mac, ip, now) || s.LeaseSite(mac, ip, now) != "lab" {
		t.Fatalf("IPv6 lease of %s at %s not held", mac, ip)
	}
	if s.HoldsLease("lab", mac, "fd00:bc::106", now) {
		t.Fatal("another IPv6 address holds the lease")
	}
}
