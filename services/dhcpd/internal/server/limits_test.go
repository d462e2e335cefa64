package server

import (
	"context"
	"github.com/bootchain/bootchain/internal/testkit"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/services/dhcpd/internal/lease"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

func relayed(t *testing.T, h *Handler, hw net.HardwareAddr, giaddr string, src string) *Reply {
	t.Helper()
	d, _ := dhcpv4.NewDiscovery(hw, dhcpv4.WithGatewayIP(net.ParseIP(giaddr)))
	return h.Handle(context.Background(), d.ToBytes(), netip.MustParseAddrPort(src), ServerPort)
}

// An attacker on the segment names a relay's address as giaddr: without a relay
// list only a giaddr that is the packet's source is a relay; with one, only the
// listed relays are.
func TestSpoofedGiaddr(t *testing.T) {
	h := newHandler(t, testSite(nil), nil)
	if r := relayed(t, h, mac(1), "198.18.5.1", "198.18.0.66:68"); r != nil {
		t.Fatalf("spoofed giaddr answered, to %s", r.Dst)
	}
	if r := relayed(t, h, mac(1), "198.18.5.1", "0.0.0.0:68"); r != nil {
		t.Fatalf("spoofed giaddr from 0.0.0.0 answered, to %s", r.Dst)
	}
	if got := h.Stats.UnknownRelay.Load(); got != 2 {
		t.Fatalf("UnknownRelay = %d, want 2", got)
	}
	if h.cfg.Alloc.Len() != 0 {
		t.Fatalf("spoofed relay got %d offers recorded", h.cfg.Alloc.Len())
	}
	if r := relayed(t, h, mac(2), "198.18.5.1", "198.18.5.1:67"); r == nil {
		t.Fatal("relay sending from its giaddr not answered")
	}

	listed := newHandler(t, testSite(func(d *bootapiv1.SiteDhcp) { d.RelayAddresses = []string{"198.18.5.1"} }), nil)
	// Listed: trusted whatever interface it sends from.
	if r := relayed(t, listed, mac(3), "198.18.5.1", "198.18.99.1:67"); r == nil {
		t.Fatal("listed relay not answered")
	}
	// Unlisted: refused even when giaddr is the source.
	if r := relayed(t, listed, mac(4), "198.18.6.1", "198.18.6.1:67"); r != nil {
		t.Fatal("unlisted relay answered")
	}
	if got := listed.Stats.UnknownRelay.Load(); got != 1 {
		t.Fatalf("UnknownRelay = %d, want 1", got)
	}
}

func limitedHandler(t *testing.T, perMAC, perIP ratelimit.Limit) *Handler {
	alloc := lease.New(lease.Config{Site: "lab", Server: "t", Writer: lease.NewMemWriter()})
	h := New(Config{Site: "lab", ServerIP: serverIP, Local: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}, Alloc: alloc,
		PerMAC: perMAC, PerIP: perIP})
	sc, err := Compile(testSite(nil), Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	h.SetSite(sc)
	return h
}

// A DISCOVER flood from one MAC is answered up to its burst; other clients
// keep being answered.
func TestDiscoverFloodOneMAC(t *testing.T) {
	// A rate this low refills nothing while the test runs: the counts are exact.
	h := limitedHandler(t, ratelimit.Limit{Rate: 1e-6, Burst: 5}, ratelimit.Limit{})
	answered := 0
	for i := 0; i < 1000; i++ {
		d, _ := dhcpv4.NewDiscovery(mac(1))
		if exchange(t, h, d, ServerPort) != nil {
			answered++
		}
	}
	if answered != 5 || h.Stats.LimitedMAC.Load() != 995 {
		t.Fatalf("flood: %d answered, %d limited; want 5, 995", answered, h.Stats.LimitedMAC.Load())
	}
	if offer, ack := dora(t, h, mac(2)); offer == nil || ack == nil {
		t.Fatal("another client not served during the flood")
	}
}

// A flood of random MACs from one source is bounded by the per-IP limit; a
// client from another source (a relay) is still served.
func TestFloodOneIP(t *testing.T) {
	h := limitedHandler(t, ratelimit.Limit{Rate: 1e-6, Burst: 5}, ratelimit.Limit{Rate: 1e-6, Burst: 20})
	for i := 0; i < 500; i++ {
		d, _ := dhcpv4.NewDiscovery(mac(100 + i))
		h.Handle(context.Background(), d.ToBytes(), netip.MustParseAddrPort("198.18.0.66:68"), ServerPort)
	}
	if got := h.Stats.LimitedIP.Load(); got != 480 {
		t.Fatalf("LimitedIP = %d, want 480", got)
	}
	if r := relayed(t, h, mac(3), "198.18.5.1", "198.18.5.1:67"); r == nil {
		t.Fatal("relay not served during another source's flood")
	}
}

// A panic while handling one packet drops that packet only: Serve keeps
// answering on the same socket.
func TestServeSurvivesPanic(t *testing.T) {
	h := newHandler(t, testSite(func(d *bootapiv1.SiteDhcp) { d.Mode = bootapiv1.DhcpMode_DHCP_MODE_PROXY }), nil)
	h.log = slog.New(slog.DiscardHandler)
	h.testHook = func(m *dhcpv4.DHCPv4) {
		if m.ClientHWAddr.String() == mac(66).String() {
			panic("forced by the test")
		}
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, conn, PXEPort, h, 4, 0) }()
	defer func() { cancel(); <-done }()
	cl, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	request := func(hw net.HardwareAddr) []byte {
		req, _ := dhcpv4.New(dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(net.ParseIP("127.0.0.1")))
		for _, m := range pxe(iana.EFI_X86_64) {
			m(req)
		}
		return req.ToBytes()
	}
	for i := 0; i < 3; i++ {
		if _, err := cl.Write(request(mac(66))); err != nil {
			t.Fatal(err)
		}
	}
	// Retransmit until answered: UDP on loopback may still drop.
	buf := make([]byte, 1500)
	for try := 0; ; try++ {
		if try == 50 {
			t.Fatal("no answer after the panics")
		}
		if _, err := cl.Write(request(mac(7))); err != nil {
			t.Fatal(err)
		}
		_ = cl.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := cl.Read(buf)
		if err != nil {
			continue
		}
		ack, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || ack.ClientHWAddr.String() != mac(7).String() {
			t.Fatalf("answer %v, %v", ack, err)
		}
		break
	}
	// Four workers: the good packet may be answered before the last of the
	// panicking ones is handled.
	testkit.Eventually(t, "three panics counted", func() bool { return h.Stats.Panics.Load() == 3 })
	if got := h.Stats.Panics.Load(); got != 3 {
		t.Fatalf("Panics = %d, want 3", got)
	}
}
