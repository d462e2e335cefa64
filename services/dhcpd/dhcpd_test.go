package dhcpd_test

import (
	"context"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func seed(mode bootapiv1.DhcpMode) *bootapiv1.SiteDhcp {
	return &bootapiv1.SiteDhcp{
		Mode: mode, LeaseTime: durationpb.New(time.Hour), RouterAdvertisements: true,
		Subnets: []*bootapiv1.DhcpSubnet{{Cidr: "198.18.0.0/24", Routers: []string{"198.18.0.1"},
			Pools: []*bootapiv1.DhcpPool{{Start: "198.18.0.100", End: "198.18.0.199"}}}},
	}
}

type rig struct {
	lab *lab.Lab
	st  *store.Store
	srv *dhcpd.Server
	cc  *grpc.ClientConn
	// stop ends the server and waits for Run to return.
	stop func()
}

// startDHCPD runs a dhcpd on the lab bridge (198.18.0.1/24) in the lab's main namespace.
func startDHCPD(t *testing.T, l *lab.Lab, st *store.Store, s *bootapiv1.SiteDhcp) *rig {
	t.Helper()
	return startDHCPDWith(t, l, st, s, nil)
}

// startDHCPDWith is startDHCPD with more of the Config set by more.
func startDHCPDWith(t *testing.T, l *lab.Lab, st *store.Store, s *bootapiv1.SiteDhcp, more func(*dhcpd.Config)) *rig {
	t.Helper()
	cfg := dhcpd.DefaultConfig()
	cfg.Store, cfg.Site, cfg.Interface, cfg.Seed, cfg.Name = st, "lab", l.Bridge(), s, "t"
	cfg.GRPC.Addr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Advertise = "198.18.0.1"
	if more != nil {
		more(&cfg)
	}
	var srv *dhcpd.Server
	if err := l.Main().Do(func() (err error) { srv, err = dhcpd.New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	svc := testkit.Run(t, "dhcpd", srv.Run)
	testkit.WaitClosed(t, svc, "dhcpd ready", srv.Ready())
	addr := srv.GRPCAddr().String()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(testkit.AdminToken(t, st))),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return l.Main().DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{lab: l, st: st, srv: srv, cc: cc}
	// The client goes first: its connection would otherwise hold up the
	// server's graceful stop.
	t.Cleanup(func() { cc.Close() })
	r.stop = func() { cc.Close(); svc.Stop() }
	return r
}

// client adds a namespace with a veth on the bridge and returns it.
func client(t *testing.T, l *lab.Lab, name string, addr string) *lab.Netns {
	t.Helper()
	ctx := context.Background()
	ns, err := l.AddNetns(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	c := lab.Endpoint{NS: ns, Name: "eth0"}
	if addr != "" {
		c.Addr = netip.MustParsePrefix(addr)
	}
	if err := l.AddVeth(ctx, c, lab.Endpoint{NS: l.Main(), Name: "v" + name, Master: l.Bridge()}); err != nil {
		t.Fatal(err)
	}
	return ns
}

func nclient(t *testing.T, ns *lab.Netns) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	if err := ns.Do(func() (err error) {
		c, err = nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var pxeMods = []dhcpv4.Modifier{
	dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
	dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
}

func TestLabAuthoritative(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	st := storetest.New(t)
	r := startDHCPD(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A PXE firmware client (nclient4 with PXE options): address, boot file, session.
	c := nclient(t, client(t, l, "c1", ""))
	lease, err := c.Request(ctx, pxeMods...)
	if err != nil {
		t.Fatalf("nclient4 DORA: %v", err)
	}
	ack := lease.ACK
	if !netip.MustParsePrefix("198.18.0.0/24").Contains(netip.MustParseAddr(ack.YourIPAddr.String())) {
		t.Fatalf("address %s", ack.YourIPAddr)
	}
	if ack.BootFileName != "snponly.efi" || ack.ServerIPAddr.String() != "198.18.0.1" {
		t.Errorf("boot file %q next-server %s", ack.BootFileName, ack.ServerIPAddr)
	}
	mac := c.InterfaceAddr().String()
	// The lease is durable in etcd before the ACK went out.
	stored := &dhcpdv1.Lease{}
	if _, err := st.Get(ctx, store.Key("leases", "lab", ack.YourIPAddr.String()), stored); err != nil || stored.GetMac() != mac ||
		stored.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
		t.Errorf("etcd lease %v, %v", stored, err)
	}

	// Debian's busybox udhcpc, a plain client: an address, no session.
	ns2 := client(t, l, "c2", "")
	out, err := ns2.Run(ctx, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-s", "/bin/true", "-t", "4", "-T", "2")
	if err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`lease of (198\.18\.0\.\d+) obtained`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("udhcpc output:\n%s", out)
	}
	if string(m[1]) == ack.YourIPAddr.String() {
		t.Errorf("two clients got %s", m[1])
	}

	// gRPC admin sees both.
	cli := dhcpdv1.NewLeaseServiceClient(r.cc)
	list, err := cli.ListLeases(ctx, &dhcpdv1.ListLeasesRequest{State: dhcpdv1.LeaseState_LEASE_STATE_BOUND})
	if err != nil || len(list.GetLeases()) != 2 {
		t.Fatalf("ListLeases = %v, %v", list, err)
	}
	pools, err := cli.ListPools(ctx, &dhcpdv1.ListPoolsRequest{})
	if err != nil || len(pools.GetPools()) != 1 || pools.GetPools()[0].GetBound() != 2 || pools.GetPools()[0].GetFree() != 98 {
		t.Errorf("ListPools = %v, %v", pools, err)
	}

	// The PXE client has a session with its DHCP hops and its address; the plain one none.
	if err := r.srv.Sessions().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	bs, ok := r.srv.Sessions().Get(ctx, mac)
	if !ok {
		t.Fatal("no boot session for the PXE client")
	}
	var hops []string
	for _, h := range bs.GetHops() {
		hops = append(hops, h.GetName())
	}
	// nclient4 may retransmit its DISCOVER: one or more discovers, then the request.
	if !regexp.MustCompile(`^(dhcp\.discover,)+dhcp\.request$`).MatchString(strings.Join(hops, ",")) || bs.GetIp() != ack.YourIPAddr.String() {
		t.Errorf("session hops %v ip %s", hops, bs.GetIp())
	}
	udhcpcMAC := ""
	for _, le := range list.GetLeases() {
		if le.GetMac() != mac {
			udhcpcMAC = le.GetMac()
		}
	}
	if _, ok := r.srv.Sessions().Get(ctx, udhcpcMAC); ok {
		t.Errorf("plain client %s got a session", udhcpcMAC)
	}

	// A caller limited to another site sees no lease and releases none; a
	// viewer of this site sees them and releases none.
	other := r.as(t, testkit.Token(t, r.st, auth.RoleAdmin, "elsewhere"))
	if l, err := other.ListLeases(ctx, &dhcpdv1.ListLeasesRequest{}); err != nil || len(l.GetLeases()) != 0 {
		t.Errorf("other site's admin lists %v, %v", l, err)
	}
	if _, err := other.ReleaseLease(ctx, &dhcpdv1.ReleaseLeaseRequest{Ip: ack.YourIPAddr.String()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("other site's admin releases: %v", err)
	}
	viewer := r.as(t, testkit.Token(t, r.st, auth.RoleViewer, "lab"))
	if l, err := viewer.ListLeases(ctx, &dhcpdv1.ListLeasesRequest{State: dhcpdv1.LeaseState_LEASE_STATE_BOUND}); err != nil || len(l.GetLeases()) != 2 {
		t.Errorf("this site's viewer lists %v, %v", l, err)
	}
	if _, err := viewer.ReleaseLease(ctx, &dhcpdv1.ReleaseLeaseRequest{Ip: ack.YourIPAddr.String()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("viewer releases: %v", err)
	}

	// Release through the API.
	rel, err := cli.ReleaseLease(ctx, &dhcpdv1.ReleaseLeaseRequest{Ip: ack.YourIPAddr.String()})
	if err != nil || rel.GetLease().GetState() != dhcpdv1.LeaseState_LEASE_STATE_RELEASED {
		t.Errorf("ReleaseLease = %v, %v", rel, err)
	}
}

func TestLabRestartKeepsLeases(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	dir := t.TempDir()
	start := func() (*closeOnce, *store.Store) {
		e, err := etcdembed.Start(context.Background(), etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		t.Cleanup(func() { once.Do(e.Close) })
		st, err := store.Open(context.Background(), store.Config{Endpoints: e.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return &closeOnce{e, &once}, st
	}
	e, st := start()
	r := startDHCPD(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := nclient(t, client(t, l, "c1", ""))
	first, err := c.Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Stop dhcpd and etcd, start both again on the same data.
	r.stop()
	st.Close()
	e.Close()
	e, st = start()
	stored := &dhcpdv1.Lease{}
	if _, err := st.Get(ctx, store.Key("leases", "lab", first.ACK.YourIPAddr.String()), stored); err != nil ||
		stored.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND || stored.GetMac() != c.InterfaceAddr().String() {
		t.Fatalf("after restart: %v, %v", stored, err)
	}
	startDHCPD(t, l, st, nil)
	// Another client must not get the address; the owner gets it back.
	other := nclient(t, client(t, l, "c2", ""))
	o, err := other.Request(ctx)
	if err != nil || o.ACK.YourIPAddr.Equal(first.ACK.YourIPAddr) {
		t.Fatalf("other client: %v, %v", o, err)
	}
	again, err := c.Request(ctx)
	if err != nil || !again.ACK.YourIPAddr.Equal(first.ACK.YourIPAddr) {
		t.Fatalf("owner after restart: %v, %v (had %s)", again, err, first.ACK.YourIPAddr)
	}
}

func TestLabProxyMode(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	st := storetest.New(t)
	startDHCPD(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_PROXY))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns := client(t, l, "c1", "198.18.0.50/24")
	c := nclient(t, ns)
	offer, err := c.DiscoverOffer(ctx, pxeMods...)
	if err != nil {
		t.Fatal(err)
	}
	if !offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "snponly.efi" || offer.ClassIdentifier() != "PXEClient" {
		t.Errorf("proxy offer: %v", offer)
	}
	// Boot server request to port 4011.
	var conn net.PacketConn
	if err := ns.Do(func() (err error) { conn, err = net.ListenPacket("udp4", "198.18.0.50:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(c.InterfaceAddr()), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.ParseIP("198.18.0.50"))}, pxeMods...)...)
	var ack *dhcpv4.DHCPv4
	buf := make([]byte, 1500)
	for try := 0; try < 5 && ack == nil; try++ {
		if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: net.ParseIP("198.18.0.1"), Port: 4011}); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			continue
		}
		ack, _ = dhcpv4.FromBytes(buf[:n])
	}
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "snponly.efi" {
		t.Fatalf("4011 answer: %v", ack)
	}
	// A plain DHCP client gets nothing from a proxy.
	plain := nclient(t, client(t, l, "c2", ""))
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	if o, err := plain.DiscoverOffer(sctx); err == nil {
		t.Errorf("proxy offered to a plain client: %v", o)
	}
}

func TestLabRouterAdvertisement(t *testing.T) {
	l := lab.NewT(t, lab.Config{IPv6: true})
	st := storetest.New(t)
	r := startDHCPD(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE))
	if !r.srv.Stats().RA {
		t.Fatal("no RA responder")
	}
	body, ok := routerAdvertisement(t, client(t, l, "c1", ""))
	if !ok {
		t.Fatalf("no router advertisement; responder stats: %d solicitations", r.srv.Stats().RouterSolicitations)
	}
	if len(body) != 12 || body[2] != 0 || body[3] != 0 {
		t.Fatalf("RA body %x: want router lifetime 0 and no options", body)
	}
}

// routerAdvertisement sends router solicitations from ns's eth0 until an
// advertisement comes back, and returns its body (after the ICMPv6 header).
func routerAdvertisement(t *testing.T, ns *lab.Netns) ([]byte, bool) {
	t.Helper()
	var c *icmp.PacketConn
	if err := ns.Do(func() (err error) { c, err = icmp.ListenPacket("ip6:ipv6-icmp", "::"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := c.IPv6PacketConn()
	p.SetMulticastHopLimit(255)
	rs, _ := (&icmp.Message{Type: ipv6.ICMPTypeRouterSolicitation, Body: &icmp.RawBody{Data: make([]byte, 4)}}).Marshal(nil)
	buf := make([]byte, 1500)
	var body []byte
	answered := testkit.Poll(testkit.Wait, func() bool {
		// The client's link-local address may still be coming up: retry the solicitation.
		// The zone is resolved in the calling thread's namespace: send from inside it.
		if err := ns.Do(func() error {
			_, err := c.WriteTo(rs, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: "eth0"})
			return err
		}); err != nil {
			t.Logf("send RS: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return false
			}
			if m, err := icmp.ParseMessage(58, buf[:n]); err == nil && m.Type == ipv6.ICMPTypeRouterAdvertisement {
				body = m.Body.(*icmp.RawBody).Data
				return true
			}
		}
	})
	return body, answered
}

type closeOnce struct {
	e    *etcdembed.Etcd
	once *sync.Once
}

func (c *closeOnce) Close() { c.once.Do(c.e.Close) }

// bearer presents a token over the lab's plaintext loopback connection.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// as is a lease client on r's gRPC API presenting token.
func (r *rig) as(t *testing.T, token string) dhcpdv1.LeaseServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+r.srv.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(token)),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return r.lab.Main().DialContext(ctx, "tcp", a) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return dhcpdv1.NewLeaseServiceClient(cc)
}
