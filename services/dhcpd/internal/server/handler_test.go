package server

import (
	"context"
	"net"
	"net/netip"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/services/dhcpd/internal/lease"
	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"google.golang.org/protobuf/types/known/durationpb"
)

var (
	serverIP = netip.MustParseAddr("198.18.0.1")
	client   = netip.MustParseAddrPort("0.0.0.0:68")
)

func testSite(mut func(*bootapiv1.SiteDhcp)) *bootapiv1.Site {
	d := &bootapiv1.SiteDhcp{
		LeaseTime: durationpb.New(3600e9),
		Subnets: []*bootapiv1.DhcpSubnet{
			{Cidr: "198.18.0.0/24", Pools: []*bootapiv1.DhcpPool{{Start: "198.18.0.100", End: "198.18.0.102"}}, Routers: []string{"198.18.0.1"}},
			{Cidr: "198.18.5.0/24", Pools: []*bootapiv1.DhcpPool{{Start: "198.18.5.10", End: "198.18.5.20"}}},
			{Cidr: "198.18.6.0/24", Pools: []*bootapiv1.DhcpPool{{Start: "198.18.6.10", End: "198.18.6.20"}}},
		},
	}
	if mut != nil {
		mut(d)
	}
	return &bootapiv1.Site{Name: "lab", BootapiUrl: "http://198.18.0.1:8080", ArtifactUrl: "http://198.18.0.1:8081", TftpServer: "198.18.0.1", Dhcp: d}
}

func newHandler(t testing.TB, site *bootapiv1.Site, machines map[string]*bootapiv1.Machine) *Handler {
	t.Helper()
	alloc := lease.New(lease.Config{Site: "lab", Server: "t", Writer: lease.NewMemWriter()})
	h := New(Config{Site: "lab", ServerIP: serverIP, Local: []netip.Prefix{netip.MustParsePrefix("198.18.0.1/24")}, Alloc: alloc,
		Machines: func(mac string) *bootapiv1.Machine { return machines[mac] }})
	sc, err := Compile(site, Defaults{})
	if err != nil {
		t.Fatal(err)
	}
	h.SetSite(sc)
	return h
}

func mac(i int) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)} }

func pxe(arch iana.Arch) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
}

func ipxeMods(arch iana.Arch) []dhcpv4.Modifier {
	return append(pxe(arch), dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")),
		dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{0xb1, 0x05, 0x01, 0x10, 0xec, 0x81, 0x39}))
}

func exchange(t testing.TB, h *Handler, req *dhcpv4.DHCPv4, port int) *dhcpv4.DHCPv4 {
	t.Helper()
	r := h.Handle(context.Background(), req.ToBytes(), client, port)
	if r == nil {
		return nil
	}
	resp, err := dhcpv4.FromBytes(r.Data)
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return resp
}

func dora(t testing.TB, h *Handler, hw net.HardwareAddr, mods ...dhcpv4.Modifier) (*dhcpv4.DHCPv4, *dhcpv4.DHCPv4) {
	t.Helper()
	d, _ := dhcpv4.NewDiscovery(hw, mods...)
	offer := exchange(t, h, d, ServerPort)
	if offer == nil {
		return nil, nil
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer, mods...)
	return offer, exchange(t, h, req, ServerPort)
}

func TestDORA(t *testing.T) {
	h := newHandler(t, testSite(nil), nil)
	offer, ack := dora(t, h, mac(1))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("offer = %v", offer)
	}
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("ack = %v", ack)
	}
	if got := ack.YourIPAddr.String(); got != "198.18.0.100" {
		t.Errorf("yiaddr = %s", got)
	}
	if ack.BootFileName != "" {
		t.Errorf("plain client got boot file %q", ack.BootFileName)
	}
	l, _, ok := h.cfg.Alloc.Lookup(netip.MustParseAddr("198.18.0.100"))
	if !ok || l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND || l.GetMac() != mac(1).String() {
		t.Errorf("lease = %v", l)
	}
	// Same client again: same address (affinity), no new address used.
	_, ack2 := dora(t, h, mac(1))
	if ack2 == nil || !ack2.YourIPAddr.Equal(ack.YourIPAddr) {
		t.Errorf("second DORA = %v", ack2)
	}
}

func TestExhaustionAndNAK(t *testing.T) {
	h := newHandler(t, testSite(nil), nil)
	for i := 0; i < 3; i++ {
		if _, ack := dora(t, h, mac(i)); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("client %d: %v", i, ack)
		}
	}
	d, _ := dhcpv4.NewDiscovery(mac(99))
	if r := exchange(t, h, d, ServerPort); r != nil {
		t.Errorf("offer from an exhausted pool: %v", r)
	}
	if h.Stats.Exhausted.Load() != 1 {
		t.Errorf("exhausted = %d", h.Stats.Exhausted.Load())
	}
	// INIT-REBOOT for an address another client holds: NAK.
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(99)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.0.100"))))
	if r := exchange(t, h, req, ServerPort); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for a taken address: %v", r)
	}
	// An address of another network: NAK.
	req2, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(98)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.1.2.3"))))
	if r := exchange(t, h, req2, ServerPort); r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for a foreign address: %v", r)
	}
}

func TestReleaseDeclineRenewInform(t *testing.T) {
	h := newHandler(t, testSite(nil), nil)
	_, ack := dora(t, h, mac(1))
	ip := ack.YourIPAddr
	// RENEW: unicast from ciaddr, answered to ciaddr.
	renew, _ := dhcpv4.NewRenewFromAck(ack)
	r := h.Handle(context.Background(), renew.ToBytes(), netip.AddrPortFrom(addrOf(ip), 68), ServerPort)
	if r == nil || r.Dst != netip.AddrPortFrom(addrOf(ip), 68) {
		t.Fatalf("renew reply = %+v", r)
	}
	// RELEASE frees it.
	rel, _ := dhcpv4.NewReleaseFromACK(ack)
	exchange(t, h, rel, ServerPort)
	l, _, _ := h.cfg.Alloc.Lookup(addrOf(ip))
	if l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_RELEASED {
		t.Errorf("after release: %v", l)
	}
	// DECLINE quarantines: the next client does not get that address.
	_, ack = dora(t, h, mac(2))
	dec, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ack.YourIPAddr)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP.AsSlice())))
	exchange(t, h, dec, ServerPort)
	l, _, _ = h.cfg.Alloc.Lookup(addrOf(ack.YourIPAddr))
	if l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_DECLINED {
		t.Fatalf("after decline: %v", l)
	}
	for i := 3; i < 6; i++ {
		if _, a := dora(t, h, mac(i)); a != nil && a.YourIPAddr.Equal(ack.YourIPAddr) {
			t.Errorf("client %d got the quarantined address", i)
		}
	}
	// INFORM: options, no address.
	inf, _ := dhcpv4.NewInform(mac(7), net.ParseIP("198.18.0.50"))
	resp := exchange(t, h, inf, ServerPort)
	if resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck || !resp.YourIPAddr.IsUnspecified() || len(resp.Router()) != 1 {
		t.Errorf("inform = %v", resp)
	}
}

func TestRelay(t *testing.T) {
	h := newHandler(t, testSite(nil), nil)
	for _, tc := range []struct{ giaddr, want string }{{"198.18.5.1", "198.18.5.10"}, {"198.18.6.1", "198.18.6.10"}} {
		rai := dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.AgentCircuitIDSubOption, []byte("port-7")),
			dhcpv4.OptGeneric(dhcpv4.AgentRemoteIDSubOption, []byte("switch-1")))
		mods := []dhcpv4.Modifier{dhcpv4.WithGatewayIP(net.ParseIP(tc.giaddr)), dhcpv4.WithOption(rai)}
		d, _ := dhcpv4.NewDiscovery(mac(1), mods...)
		r := h.Handle(context.Background(), d.ToBytes(), netip.MustParseAddrPort(tc.giaddr+":67"), ServerPort)
		if r == nil || r.Dst != netip.MustParseAddrPort(tc.giaddr+":67") {
			t.Fatalf("relayed offer = %+v", r)
		}
		offer, _ := dhcpv4.FromBytes(r.Data)
		if offer.YourIPAddr.String() != tc.want || offer.RelayAgentInfo() == nil {
			t.Fatalf("offer %s, option 82 %v", offer.YourIPAddr, offer.RelayAgentInfo())
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer, mods...)
		r = h.Handle(context.Background(), req.ToBytes(), netip.MustParseAddrPort(tc.giaddr+":67"), ServerPort)
		var ack *dhcpv4.DHCPv4
		if r != nil {
			ack, _ = dhcpv4.FromBytes(r.Data)
		}
		if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("ack = %v", ack)
		}
		l, _, _ := h.cfg.Alloc.Lookup(netip.MustParseAddr(tc.want))
		if diff := cmp.Diff([]string{tc.giaddr, "port-7", "switch-1", netip.MustParsePrefix(tc.want + "/24").Masked().String()},
			[]string{l.GetGiaddr(), string(l.GetRelay().GetCircuitId()), string(l.GetRelay().GetRemoteId()), l.GetSubnet()}); diff != "" {
			t.Errorf("lease relay info (-want +got):\n%s", diff)
		}
	}
	// A relay outside every subnet gets nothing.
	d, _ := dhcpv4.NewDiscovery(mac(2), dhcpv4.WithGatewayIP(net.ParseIP("198.18.9.1")))
	if r := exchange(t, h, d, ServerPort); r != nil {
		t.Errorf("unknown relay answered: %v", r)
	}
}

func TestBootAnswers(t *testing.T) {
	machines := map[string]*bootapiv1.Machine{
		mac(10).String(): {Mac: mac(10).String(), NetbootDisabled: true},
		mac(11).String(): {Mac: mac(11).String(), BootFile: "special.efi"},
		mac(12).String(): {Mac: mac(12).String(), Ipv4Address: "198.18.0.150"},
	}
	http := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003001")), dhcpv4.WithOption(dhcpv4.OptClientArch(16))}
	for _, tc := range []struct {
		name   string
		site   func(*bootapiv1.SiteDhcp)
		hw     net.HardwareAddr
		mods   []dhcpv4.Modifier
		file   string
		vendor string
		ip     string
		has175 bool
	}{
		{name: "bios", hw: mac(1), mods: pxe(iana.INTEL_X86PC), file: "undionly.kpxe", vendor: ""},
		{name: "uefi x64", hw: mac(2), mods: pxe(iana.EFI_X86_64), file: "snponly.efi"},
		{name: "uefi x64 snponly", hw: mac(2), mods: pxe(iana.EFI_X86_64), file: "snponly.efi",
			site: func(d *bootapiv1.SiteDhcp) { d.BootFiles = map[string]string{"uefi-x64": "snponly.efi"} }},
		{name: "uefi arm64", hw: mac(3), mods: pxe(iana.EFI_ARM64), file: "grubaa64.efi"},
		{name: "http boot", hw: mac(4), mods: http, file: "http://198.18.0.1:8081/artifacts/snponly.efi", vendor: "HTTPClient"},
		{name: "ipxe gets script", hw: mac(5), mods: ipxeMods(iana.EFI_X86_64), file: "http://198.18.0.1:8080/boot.ipxe", has175: true},
		{name: "netboot disabled", hw: mac(10), mods: pxe(iana.EFI_X86_64), file: ""},
		{name: "machine override", hw: mac(11), mods: pxe(iana.EFI_X86_64), file: "special.efi"},
		{name: "reservation", hw: mac(12), mods: pxe(iana.EFI_X86_64), file: "snponly.efi", ip: "198.18.0.150"},
		{name: "unknown ignored", hw: mac(6), mods: pxe(iana.EFI_X86_64), file: "",
			site: func(d *bootapiv1.SiteDhcp) {
				d.UnknownClients = bootapiv1.DhcpUnknownClients_DHCP_UNKNOWN_CLIENTS_IGNORE
			}},
		{name: "known not ignored", hw: mac(11), mods: pxe(iana.EFI_X86_64), file: "special.efi",
			site: func(d *bootapiv1.SiteDhcp) {
				d.UnknownClients = bootapiv1.DhcpUnknownClients_DHCP_UNKNOWN_CLIENTS_IGNORE
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler(t, testSite(tc.site), machines)
			_, ack := dora(t, h, tc.hw, tc.mods...)
			if ack == nil {
				t.Fatal("no ack")
			}
			if ack.BootFileName != tc.file {
				t.Errorf("boot file = %q, want %q", ack.BootFileName, tc.file)
			}
			if tc.file != "" && (ack.ServerIPAddr.String() != "198.18.0.1" || ack.TFTPServerName() != "198.18.0.1") {
				t.Errorf("next-server %s, option 66 %q", ack.ServerIPAddr, ack.TFTPServerName())
			}
			if tc.vendor != "" && ack.ClassIdentifier() != tc.vendor {
				t.Errorf("vendor class = %q", ack.ClassIdentifier())
			}
			if tc.ip != "" && ack.YourIPAddr.String() != tc.ip {
				t.Errorf("ip = %s, want %s", ack.YourIPAddr, tc.ip)
			}
			got175 := ack.Options.Get(dhcpv4.GenericOptionCode(175))
			if tc.has175 && string(got175) != string(noPXEDHCP) {
				t.Errorf("option 175 = %x, want b00101", got175)
			}
		})
	}
}

func TestChainloadOwnIPXE(t *testing.T) {
	h := newHandler(t, testSite(func(d *bootapiv1.SiteDhcp) { d.ChainloadOwnIpxe = true }), nil)
	// The ROM (iPXE, BIOS) asks first: it gets our undionly.kpxe.
	_, ack := dora(t, h, mac(1), ipxeMods(iana.INTEL_X86PC)...)
	if ack == nil || ack.BootFileName != "undionly.kpxe" {
		t.Fatalf("ROM answer = %v", ack)
	}
	// The iPXE we loaded asks next: it gets the script.
	_, ack = dora(t, h, mac(1), ipxeMods(iana.INTEL_X86PC)...)
	if ack == nil || ack.BootFileName != "http://198.18.0.1:8080/boot.ipxe" {
		t.Fatalf("chain-loaded answer = %v", ack)
	}
	// An iPXE that carries our marker user class skips the chain-load.
	_, ack = dora(t, h, mac(2), append(pxe(iana.EFI_X86_64), dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("bootchain-iPXE")))...)
	if ack == nil || ack.BootFileName != "http://198.18.0.1:8080/boot.ipxe" {
		t.Fatalf("marked iPXE answer = %v", ack)
	}
}

func TestProxyMode(t *testing.T) {
	h := newHandler(t, testSite(func(d *bootapiv1.SiteDhcp) { d.Mode = bootapiv1.DhcpMode_DHCP_MODE_PROXY }), nil)
	// A plain client gets nothing.
	d, _ := dhcpv4.NewDiscovery(mac(1))
	if r := exchange(t, h, d, ServerPort); r != nil {
		t.Errorf("proxy answered a plain client: %v", r)
	}
	d, _ = dhcpv4.NewDiscovery(mac(2), pxe(iana.EFI_X86_64)...)
	offer := exchange(t, h, d, ServerPort)
	if offer == nil || !offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "snponly.efi" || offer.ClassIdentifier() != "PXEClient" {
		t.Fatalf("proxy offer = %v", offer)
	}
	// Boot server request on 4011, answered to the sender.
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(net.ParseIP("198.18.0.77")))
	for _, m := range pxe(iana.EFI_X86_64) {
		m(req)
	}
	src := netip.MustParseAddrPort("198.18.0.77:4011")
	r := h.Handle(context.Background(), req.ToBytes(), src, PXEPort)
	if r == nil || r.Dst != src {
		t.Fatalf("4011 reply = %+v", r)
	}
	ack, _ := dhcpv4.FromBytes(r.Data)
	if ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "snponly.efi" || !ack.YourIPAddr.IsUnspecified() {
		t.Errorf("4011 ack = %v", ack)
	}
	if h.cfg.Alloc.Len() != 0 {
		t.Errorf("proxy mode wrote %d leases", h.cfg.Alloc.Len())
	}
}

func TestBadInput(t *testing.T) {
	h := newHandler(t, testSite(nil), nil)
	good, _ := dhcpv4.NewDiscovery(mac(1))
	reply := good.ToBytes()
	reply[0] = 2 // BOOTREPLY
	absurd := append([]byte{}, good.ToBytes()[:240]...)
	absurd = append(absurd, 53, 1, 1, 12, 255, 'x') // option 12 claims 255 bytes
	for name, b := range map[string][]byte{"empty": nil, "short": make([]byte, 100), "reply op": reply, "absurd option": absurd, "huge": make([]byte, 70000)} {
		if r := h.Handle(context.Background(), b, client, ServerPort); r != nil {
			t.Errorf("%s: answered", name)
		}
	}
	if h.Stats.WrongOp.Load() != 1 || h.Stats.Malformed.Load() < 3 {
		t.Errorf("stats: %s", h.Stats.String())
	}
}

func FuzzHandle(f *testing.F) {
	d, _ := dhcpv4.NewDiscovery(mac(1), ipxeMods(iana.EFI_X86_64)...)
	f.Add(d.ToBytes(), uint16(67))
	r, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithGatewayIP(net.ParseIP("198.18.5.1")),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.18.5.10"))))
	f.Add(r.ToBytes(), uint16(4011))
	auth := newHandler(f, testSite(nil), nil)
	prox := newHandler(f, testSite(func(d *bootapiv1.SiteDhcp) { d.Mode = bootapiv1.DhcpMode_DHCP_MODE_PROXY; d.ChainloadOwnIpxe = true }), nil)
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		p := ServerPort
		if port%2 == 1 {
			p = PXEPort
		}
		for _, h := range []*Handler{auth, prox} {
			if r := h.Handle(context.Background(), b, client, p); r != nil {
				if _, err := dhcpv4.FromBytes(r.Data); err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
			}
		}
	})
}
