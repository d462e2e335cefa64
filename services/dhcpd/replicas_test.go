package dhcpd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
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
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// relay plays a DHCP relay agent (giaddr = its address) in front of several
// dhcpd replicas: it sends each client's packets to the replicas it is told and
// hands every reply, from any replica, to the client waiting for that xid.
type relay struct {
	conn    net.PacketConn
	giaddr  net.IP
	mu      sync.Mutex
	waiters map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func (r *relay) read() {
	buf := make([]byte, 4096)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		r.mu.Lock()
		ch := r.waiters[m.TransactionID]
		r.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

// exchange sends m to every server in to and returns the replies that arrive
// within wait of the first send, retrying twice when none does.
func (r *relay) exchange(m *dhcpv4.DHCPv4, to []*net.UDPAddr, wait time.Duration) []*dhcpv4.DHCPv4 {
	m.GatewayIPAddr = r.giaddr
	ch := make(chan *dhcpv4.DHCPv4, 8)
	r.mu.Lock()
	r.waiters[m.TransactionID] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, m.TransactionID)
		r.mu.Unlock()
	}()
	for try := 0; try < 3; try++ {
		for _, a := range to {
			r.conn.WriteTo(m.ToBytes(), a)
		}
		var out []*dhcpv4.DHCPv4
		t := time.NewTimer(wait)
	collect:
		for {
			select {
			case rep := <-ch:
				out = append(out, rep)
				if len(out) == len(to) {
					break collect
				}
			case <-t.C:
				break collect
			}
		}
		t.Stop()
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// TestReplicasShareAPool runs two complete dhcpd servers (each its own socket)
// on one etcd, serving the same pool at the same time. Many clients, more than
// the pool holds, do DORA through a relay that sends each packet to one or both
// replicas; other clients try to take random pool addresses with a bare
// REQUEST. Afterwards no address may have been ACKed to two clients, and every
// ACK a client received must be a bound lease of that client in etcd.
func TestReplicasShareAPool(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	st := storetest.New(t)
	const (
		poolStart, poolEnd = "198.18.0.10", "198.18.0.209" // 200 addresses
		clients            = 260
		thieves            = 60
	)
	site := &bootapiv1.SiteDhcp{
		LeaseTime: durationpb.New(time.Hour),
		Subnets: []*bootapiv1.DhcpSubnet{{Cidr: "198.18.0.0/24",
			Pools: []*bootapiv1.DhcpPool{{Start: poolStart, End: poolEnd}}}},
	}
	gw := l.BridgeAddr().Addr()
	var addrs []*net.UDPAddr
	for i, port := range []int{10067, 10068} {
		cfg := dhcpd.DefaultConfig()
		cfg.Store, cfg.Site, cfg.Seed, cfg.Name = st, "lab", site, fmt.Sprintf("replica-%d", i)
		// No interface: both replicas serve relayed traffic only, on their own socket.
		cfg.ListenAddr = netip.AddrPortFrom(gw, uint16(port)).String()
		cfg.PXEAddr, cfg.GRPC.Addr, cfg.ServerIP, cfg.HTTPAddr = "-", "127.0.0.1:0", gw.String(), "-"
		var srv *dhcpd.Server
		if err := l.Main().Do(func() (err error) { srv, err = dhcpd.New(cfg); return err }); err != nil {
			t.Fatal(err)
		}
		svc := testkit.Run(t, cfg.Name, srv.Run)
		testkit.WaitClosed(t, svc, cfg.Name+" ready", srv.Ready())
		addrs = append(addrs, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, uint16(port))))
	}

	pc, err := l.Main().ListenPacket("udp4", netip.AddrPortFrom(gw, 67).String())
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{conn: pc, giaddr: gw.AsSlice(), waiters: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	go r.read()
	t.Cleanup(func() { pc.Close() })

	type ack struct {
		mac string
		ip  string
	}
	var (
		mu    sync.Mutex
		acks  []ack
		naks  int
		first = netip.MustParseAddr(poolStart)
	)
	record := func(mac net.HardwareAddr, replies []*dhcpv4.DHCPv4) {
		mu.Lock()
		defer mu.Unlock()
		for _, rep := range replies {
			switch rep.MessageType() {
			case dhcpv4.MessageTypeAck:
				acks = append(acks, ack{mac.String(), rep.YourIPAddr.String()})
			case dhcpv4.MessageTypeNak:
				naks++
			}
		}
	}
	// Each job is one client; 48 run at a time, every packet bounded by retries.
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 48; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				rng := rand.New(rand.NewPCG(uint64(i), 5))
				mac := net.HardwareAddr{0x02, 0x5e, 0, 0, byte(i >> 8), byte(i)}
				// One replica, the other, or both at once.
				var to []*net.UDPAddr
				switch rng.IntN(3) {
				case 0:
					to = addrs[:1]
				case 1:
					to = addrs[1:]
				default:
					to = addrs
				}
				if i >= clients {
					// A thief: INIT-REBOOT style REQUEST for a random pool address.
					want := first
					for n := rng.IntN(200); n > 0; n-- {
						want = want.Next()
					}
					req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
						dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want.AsSlice())))
					record(mac, r.exchange(req, to, time.Second))
					continue
				}
				disc, _ := dhcpv4.NewDiscovery(mac)
				offers := r.exchange(disc, to, time.Second)
				if len(offers) == 0 {
					continue // pool exhausted: no offer is the right answer
				}
				off := offers[rng.IntN(len(offers))]
				req, _ := dhcpv4.NewRequestFromOffer(off)
				// The REQUEST goes to the replicas of the DISCOVER, so a replica may
				// bind an address another replica offered.
				record(mac, r.exchange(req, to, time.Second))
			}
		}()
	}
	order := rand.New(rand.NewPCG(1, 2)).Perm(clients + thieves)
	for _, i := range order {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	// What etcd holds.
	resp, err := st.Client().Get(context.Background(), store.Prefix("leases", "lab"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	bound := map[string]string{} // ip -> mac
	perMAC := map[string][]string{}
	for _, kv := range resp.Kvs {
		ls := &dhcpdv1.Lease{}
		if err := proto.Unmarshal(kv.Value, ls); err != nil {
			t.Fatalf("lease %s: %v", kv.Key, err)
		}
		if ls.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			bound[ls.GetIp()] = ls.GetMac()
			perMAC[ls.GetMac()] = append(perMAC[ls.GetMac()], ls.GetIp())
		}
	}
	ackedTo := map[string]string{} // ip -> mac, from the clients' side
	for _, a := range acks {
		if other, ok := ackedTo[a.ip]; ok && other != a.mac {
			t.Errorf("address %s ACKed to two clients: %s and %s", a.ip, other, a.mac)
		}
		ackedTo[a.ip] = a.mac
		if got := bound[a.ip]; got != a.mac {
			t.Errorf("client %s got an ACK for %s, but etcd has it bound to %q", a.mac, a.ip, got)
		}
	}
	for mac, ips := range perMAC {
		if len(ips) > 1 {
			t.Errorf("client %s holds %d bound leases in etcd: %v", mac, len(ips), ips)
		}
	}
	// The load must really have filled the pool from both replicas, or the test
	// proved nothing.
	servers := map[string]int{}
	for _, kv := range resp.Kvs {
		ls := &dhcpdv1.Lease{}
		proto.Unmarshal(kv.Value, ls)
		if ls.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND {
			servers[ls.GetServer()]++
		}
	}
	t.Logf("%d ACKs for %d addresses, %d NAKs, %d bound leases in etcd, by replica %v", len(acks), len(ackedTo), naks, len(bound), servers)
	if len(ackedTo) < 150 {
		t.Errorf("only %d of 200 addresses were ACKed; want the pool (nearly) full", len(ackedTo))
	}
	if servers["replica-0"] == 0 || servers["replica-1"] == 0 {
		t.Errorf("bound leases by replica = %v; want both replicas binding", servers)
	}
}
