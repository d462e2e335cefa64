package dhcpd_test

import (
	"context"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// TestLabRenewsWhileEtcdDown: a real client renews, and reboots into, its
// bound lease while etcd is down (the renewal journaled in --data-dir); a new
// client gets nothing meanwhile; once etcd is back the renewal is in etcd.
func TestLabRenewsWhileEtcdDown(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	e := storetest.Start(t)
	st := e.Client(t)
	dataDir := t.TempDir()
	r := startDHCPDWith(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE), func(c *dhcpd.Config) {
		c.DataDir, c.ReachInterval = dataDir, 200*time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := nclient(t, client(t, l, "c1", ""))
	first, err := c.Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ip := first.ACK.YourIPAddr.String()
	var renewed time.Time
	e.Restart(t, func() {
		testkit.EventuallyWithin(t, time.Minute, "dhcpd sees etcd unreachable", r.srv.Offline) // two failed probes of up to 5 s
		// INIT-REBOOT: a REQUEST for the address it holds, answered by
		// broadcast (the client's namespace has no address for a unicast ACK).
		req, err := dhcpv4.New(dhcpv4.WithHwAddr(c.InterfaceAddr()), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(first.ACK.YourIPAddr)), dhcpv4.WithBroadcast(true))
		if err != nil {
			t.Fatal(err)
		}
		ack, err := c.SendAndRead(ctx, nclient4.DefaultServers, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck))
		if err != nil {
			t.Fatalf("renewal while etcd is down: %v", err)
		}
		if got := ack.YourIPAddr.String(); got != ip {
			t.Fatalf("renewal gave %s, want %s", got, ip)
		}
		// A reboot: DISCOVER, REQUEST; the client gets its own address back.
		again, err := c.Request(ctx)
		if err != nil || again.ACK.YourIPAddr.String() != ip {
			t.Fatalf("reboot while etcd is down: %v, %v; want %s", again, err, ip)
		}
		renewed = time.Now().Add(time.Duration(again.ACK.IPAddressLeaseTime(0)))
		nctx, ncancel := context.WithTimeout(ctx, 6*time.Second)
		defer ncancel()
		if got, err := nclient(t, client(t, l, "c2", "")).Request(nctx); err == nil {
			t.Errorf("a new client got %s while etcd was down, want no answer", got.ACK.YourIPAddr)
		}
		if n := r.srv.JournalLen(); n != 2 {
			t.Errorf("journal holds %d renewals, want 2", n)
		}
	})
	testkit.EventuallyWithin(t, 60*time.Second, "journal replayed into etcd", func() bool { return r.srv.JournalLen() == 0 })
	stored := &dhcpdv1.Lease{}
	if _, err := st.Get(ctx, store.Key("leases", "lab", ip), stored); err != nil {
		t.Fatal(err)
	}
	if stored.GetMac() != c.InterfaceAddr().String() || stored.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND ||
		stored.GetExpireTime().AsTime().Before(renewed.Add(-5*time.Second)) {
		t.Errorf("etcd holds %v, want %s bound until about %v", stored, c.InterfaceAddr(), renewed)
	}
	st2 := r.srv.Stats()
	if st2.OfflineRenewals != 2 || st2.Replayed+st2.ReplayCurrent != 2 || st2.ReplayConflicts != 0 || st2.OfflineRefused == 0 {
		t.Errorf("stats: %d offline renewals, %d+%d replayed, %d conflicts, %d refused; want 2, 2, 0, >0",
			st2.OfflineRenewals, st2.Replayed, st2.ReplayCurrent, st2.ReplayConflicts, st2.OfflineRefused)
	}
	// Online again: a new client gets an address.
	if _, err := nclient(t, client(t, l, "c3", "")).Request(ctx); err != nil {
		t.Errorf("new client after etcd is back: %v", err)
	}
}
