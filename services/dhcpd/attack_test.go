package dhcpd_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// TestLabAttacker: from its own namespace on the boot network, an attacker
// names another subnet's relay as giaddr and floods DISCOVERs from one MAC. The
// spoofed relay gets nothing and no address of that subnet is offered; the flood
// is answered up to the per-MAC burst; both are counted; a real client still
// gets its lease.
func TestLabAttacker(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	st := storetest.New(t)
	s := seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE)
	s.Subnets = append(s.Subnets, &bootapiv1.DhcpSubnet{Cidr: "198.18.5.0/24",
		Pools: []*bootapiv1.DhcpPool{{Start: "198.18.5.10", End: "198.18.5.20"}}})
	r := startDHCPD(t, l, st, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	attacker := client(t, l, "evil", "198.18.0.66/24")
	var conn net.PacketConn
	if err := attacker.Do(func() (err error) { conn, err = net.ListenPacket("udp4", "198.18.0.66:67"); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	server := &net.UDPAddr{IP: net.IPv4(198, 18, 0, 1), Port: 67}
	evil := net.HardwareAddr{0x52, 0x54, 0, 0x66, 0x66, 0x66}

	// A spoofed relay: no answer reaches it, nothing is offered from 198.18.5.0/24.
	d, _ := dhcpv4.NewDiscovery(evil, dhcpv4.WithGatewayIP(net.ParseIP("198.18.5.1")))
	for i := 0; i < 3; i++ {
		if _, err := conn.WriteTo(d.ToBytes(), server); err != nil {
			t.Fatal(err)
		}
	}
	waitStat(t, ctx, r, "UnknownRelay", func(s dhcpdStats) bool { return s.UnknownRelay >= 3 })
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, _, err := conn.ReadFrom(make([]byte, 1500)); err == nil {
		t.Fatal("the spoofed relay got an answer")
	}

	// A DISCOVER flood from one MAC.
	const flood = 300
	f, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x52, 0x54, 0, 0x66, 0x66, 0x67})
	for i := 0; i < flood; i++ {
		if _, err := conn.WriteTo(f.ToBytes(), server); err != nil {
			t.Fatal(err)
		}
	}
	burst := dhcpd.DefaultLimitPerMAC.Burst
	waitStat(t, ctx, r, "LimitedMAC", func(s dhcpdStats) bool { return s.LimitedMAC+s.Overrun >= uint64(flood-burst) })
	if st := r.srv.Stats(); st.Offers > uint64(burst) {
		t.Fatalf("%d offers during a flood from one MAC, want at most the burst %d", st.Offers, burst)
	}

	// A real client is still served.
	c := nclient(t, client(t, l, "c1", ""))
	if _, err := c.Request(ctx); err != nil {
		t.Fatalf("DORA during the attack: %v", err)
	}
	for ip, le := range listedLeases(t, ctx, st) {
		if le.GetMac() == evil.String() || net.ParseIP(ip).To4()[2] == 5 {
			t.Errorf("lease %s for %s written during the attack", ip, le.GetMac())
		}
	}
}

type dhcpdStats = dhcpd.Stats

func waitStat(t *testing.T, ctx context.Context, r *rig, what string, ok func(dhcpdStats) bool) {
	t.Helper()
	for !ok(r.srv.Stats()) {
		select {
		case <-ctx.Done():
			t.Fatalf("%s never counted: %+v", what, r.srv.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func listedLeases(t *testing.T, ctx context.Context, st *store.Store) map[string]*dhcpdv1.Lease {
	t.Helper()
	out := map[string]*dhcpdv1.Lease{}
	prefix := store.Prefix("leases", "lab")
	resp, err := st.Client().Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		v := &dhcpdv1.Lease{}
		if err := proto.Unmarshal(kv.Value, v); err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(string(kv.Key), prefix)] = v
	}
	return out
}
