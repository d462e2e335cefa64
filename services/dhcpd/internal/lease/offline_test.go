package lease

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/dhcpd/internal/journal"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func bindOnline(t *testing.T, ctx context.Context, a *Allocator, mac string, sub *Subnet) netip.Addr {
	t.Helper()
	o, err := a.Offer(ctx, Client{MAC: mac}, sub)
	if err != nil {
		t.Fatalf("offer %s: %v", mac, err)
	}
	ip := netip.MustParseAddr(o.GetIp())
	if _, err := a.Bind(ctx, Client{MAC: mac}, ip, sub, nil); err != nil {
		t.Fatalf("bind %s: %v", mac, err)
	}
	return ip
}

// TestOfflineRenewalReplaysIntoEtcd: with etcd down, a bound lease renews
// (journaled), a new client gets nothing; once etcd is back the journal is
// replayed with compare-and-swap: the renewal lands in etcd once, a renewal
// whose address another client's newer lease took is dropped and counted, and
// a second replay writes nothing.
func TestOfflineRenewalReplaysIntoEtcd(t *testing.T) {
	ctx := context.Background()
	e := storetest.Start(t)
	st := e.Client(t)
	sub := subnet(32)
	j, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	a := replicaWith(t, ctx, st, sub, Config{Site: "lab", Server: "dhcpd-1", OfflineGrace: time.Hour, Journal: j})
	const m1, m2, m3, m4 = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04"
	ip1, ip2 := bindOnline(t, ctx, a, m1, sub), bindOnline(t, ctx, a, m2, sub)
	before := allLeases(t, st)[ip1.String()]

	var r1, r2 *dhcpdv1.Lease
	e.Restart(t, func() {
		var err error
		if r1, err = a.RenewOffline(Client{MAC: m1}, ip1, sub, nil); err != nil {
			t.Fatalf("offline renewal of %s: %v", m1, err)
		}
		if r2, err = a.RenewOffline(Client{MAC: m2}, ip2, sub, nil); err != nil {
			t.Fatalf("offline renewal of %s: %v", m2, err)
		}
		if _, err := a.RenewOffline(Client{MAC: m3}, ip1, sub, nil); !errors.Is(err, ErrNotHeld) {
			t.Errorf("offline renewal of another client's address: err %v, want ErrNotHeld", err)
		}
		if _, err := a.OfferHeld(Client{MAC: m3}, sub); !errors.Is(err, ErrNotHeld) {
			t.Errorf("offline offer to a new client: err %v, want ErrNotHeld", err)
		}
		if l, err := a.OfferHeld(Client{MAC: m1}, sub); err != nil || l.GetIp() != ip1.String() {
			t.Errorf("offline offer to %s (a reboot): %v, %v; want its own %s", m1, l, err, ip1)
		}
		// Held for m1: no other client may bind it, here or on a replica.
		if !a.heldByLocked(ip1, m1, time.Now()).GetExpireTime().AsTime().After(before.GetExpireTime().AsTime().Add(-time.Second)) {
			t.Errorf("offline renewal not held in memory")
		}
	})
	if j.Len() != 2 {
		t.Fatalf("journal holds %d records, want 2", j.Len())
	}
	// While it was cut off, another replica (reconnected first) gave ip2 to m4:
	// that newer lease must win over m2's renewal.
	taken := &dhcpdv1.Lease{Ip: ip2.String(), Mac: m4, State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, Site: "lab",
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour)), UpdateTime: timestamppb.New(time.Now().Add(time.Second)), Server: "dhcpd-2"}
	rev := keyRev(t, st, Key("lab", ip2.String()))
	if _, err := st.Update(ctx, Key("lab", ip2.String()), taken, rev); err != nil {
		t.Fatalf("another replica's lease: %v", err)
	}

	testkit.Eventually(t, "journal replayed", func() bool {
		left, err := a.ReplayJournal(ctx, j, nil)
		return err == nil && left == 0
	})
	if j.Len() != 0 {
		t.Errorf("journal holds %d records after replay, want 0", j.Len())
	}
	got := allLeases(t, st)
	if g := got[ip1.String()]; g.GetMac() != m1 || !g.GetExpireTime().AsTime().Equal(r1.GetExpireTime().AsTime()) {
		t.Errorf("etcd holds %v for %s, want %s's offline renewal until %v", g, ip1, m1, r1.GetExpireTime().AsTime())
	}
	if g := got[ip2.String()]; g.GetMac() != m4 {
		t.Errorf("etcd holds %v for %s, want the newer lease of %s (m2's renewal until %v dropped)", g, ip2, m4, r2.GetExpireTime().AsTime())
	}
	if n := a.Offline.Renewals.Load(); n != 2 {
		t.Errorf("renewals counted %d, want 2", n)
	}
	if r, c := a.Offline.Replayed.Load(), a.Offline.Conflicts.Load(); r != 1 || c != 1 {
		t.Errorf("replayed %d, conflicts %d; want 1, 1", r, c)
	}
	// A duplicate of a replayed record (another replica's journal, a replay
	// interrupted before Done) writes nothing.
	revBefore := keyRev(t, st, Key("lab", ip1.String()))
	if out, _, err := a.Replay(ctx, r1); err != nil || out != Current {
		t.Errorf("second replay: %v, %v; want Current", out, err)
	}
	if rv := keyRev(t, st, Key("lab", ip1.String())); rv != revBefore {
		t.Errorf("second replay wrote the lease again (revision %d -> %d)", revBefore, rv)
	}
	// No address is bound to two clients, no client holds two.
	byMAC := map[string]string{}
	for ip, l := range allLeases(t, st) {
		if l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			continue
		}
		if other, ok := byMAC[l.GetMac()]; ok {
			t.Errorf("%s holds %s and %s", l.GetMac(), other, ip)
		}
		byMAC[l.GetMac()] = ip
	}
}

func keyRev(t *testing.T, st *store.Store, key string) int64 {
	t.Helper()
	resp, err := st.Client().Get(context.Background(), key)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("get %s: %v", key, err)
	}
	return resp.Kvs[0].ModRevision
}

// TestBoundLeaseHeldThroughOfflineGrace: an expired bound lease keeps its
// address from other clients for OfflineGrace (another replica may have
// renewed it offline), is not reclaimed meanwhile, and is free after.
func TestBoundLeaseHeldThroughOfflineGrace(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	sub := subnet(1)
	sub.LeaseTime = time.Minute
	a := New(Config{Site: "lab", Server: "d", Writer: NewMemWriter(), OfflineGrace: time.Hour, Now: clock})
	a.SetSubnets([]*Subnet{sub})
	ip := bindOnline(t, ctx, a, "52:54:00:00:00:01", sub)
	now = now.Add(30 * time.Minute) // expired 29 minutes ago
	if _, err := a.Bind(ctx, Client{MAC: "52:54:00:00:00:02"}, ip, sub, nil); !errors.Is(err, ErrTaken) {
		t.Errorf("bind by another client within the grace: %v, want ErrTaken", err)
	}
	if n := a.Reclaim(ctx, 0); n != 0 {
		t.Errorf("reclaimed %d within the grace, want 0", n)
	}
	now = now.Add(31 * time.Minute) // past expiry + grace
	if n := a.Reclaim(ctx, 0); n != 1 {
		t.Errorf("reclaimed %d after the grace, want 1", n)
	}
	if _, err := a.Bind(ctx, Client{MAC: "52:54:00:00:00:02"}, ip, sub, nil); err != nil {
		t.Errorf("bind by another client after the grace: %v", err)
	}
}

// TestOfflineRenewalCarriesChainloadMark: the chain-load mark of an answer
// given while etcd cannot commit is what ByMAC reports, so that the iPXE the
// client then runs is known as the one chain-loaded (not given iPXE again, in a
// loop). Found by the fleet's TestSitePartition.
func TestOfflineRenewalCarriesChainloadMark(t *testing.T) {
	ctx := context.Background()
	sub := subnet(1)
	j, err := journal.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	a := New(Config{Site: "lab", Server: "d", Writer: NewMemWriter(), OfflineGrace: time.Hour, Journal: j})
	a.SetSubnets([]*Subnet{sub})
	const mac = "52:54:00:00:00:01"
	ip := bindOnline(t, ctx, a, mac, sub)
	if l, ok := a.ByMAC(mac); !ok || l.GetChainloadTime() != nil {
		t.Fatalf("before: %v, %v; want a lease without a chain-load time", l, ok)
	}
	at := timestamppb.New(time.Now())
	if _, err := a.RenewOffline(Client{MAC: mac}, ip, sub, func(l *dhcpdv1.Lease) { l.ChainloadTime = at }); err != nil {
		t.Fatal(err)
	}
	if l, ok := a.ByMAC(mac); !ok || !l.GetChainloadTime().AsTime().Equal(at.AsTime()) {
		t.Errorf("after an offline renewal marked at %v: ByMAC %v, %v", at.AsTime(), l, ok)
	}
	if l, ok := a.ByMAC("52:54:00:00:00:02"); ok {
		t.Errorf("ByMAC of another client: %v", l)
	}
}
