package dhcp6

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	serverDUID = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	clientMAC  = net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	peer       = netip.MustParseAddr("fe80::5054:ff:fe12:3456")
)

func testHandler(t testing.TB) *Handler {
	t.Helper()
	st := storetest.New(t)
	pool, _ := ParsePool("fd00:bc::100-fd00:bc::1ff")
	site := &bootapiv1.Site{Name: "lab", BootapiUrl: "http://198.18.0.1:8080", ArtifactUrl: "http://198.18.0.1:8081", TftpServer: "198.18.0.1"}
	return New(Config{Site: "lab", Leases: NewLeases(st, "lab", "t"), Pool: pool, Prefix: netip.MustParsePrefix("fd00:bc::/64"),
		ServerID: serverDUID, Advertise: netip.MustParseAddr("fd00:bc::1"),
		Settings: func() Site { return Site{Record: site, LeaseTime: time.Hour} }})
}

func solicit(t testing.TB, mods ...dhcpv6.Modifier) *dhcpv6.Message {
	t.Helper()
	m, err := dhcpv6.NewSolicit(clientMAC, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var uefiPXE = []dhcpv6.Modifier{
	dhcpv6.WithArchType(iana.EFI_X86_64),
	dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL),
	dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("PXEClient:Arch:00007:UNDI:003016")}}),
}

func handle(t testing.TB, h *Handler, m *dhcpv6.Message) (*dhcpv6.Message, error) {
	t.Helper()
	out, err := h.Handle(context.Background(), m.ToBytes(), peer)
	if err != nil {
		return nil, err
	}
	d, err := dhcpv6.MessageFromBytes(out)
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return d, nil
}

func TestSolicitRequestBindsAndBoots(t *testing.T) {
	h := testHandler(t)
	adv, err := handle(t, h, solicit(t, uefiPXE...))
	if err != nil {
		t.Fatal(err)
	}
	if adv.MessageType != dhcpv6.MessageTypeAdvertise || !adv.Options.ServerID().Equal(serverDUID) {
		t.Fatalf("answer %s", adv.Summary())
	}
	a := adv.Options.OneIANA().Options.OneAddress()
	if a == nil || !h.cfg.Pool.Contains(netip.AddrFrom16([16]byte(a.IPv6Addr.To16()))) {
		t.Fatalf("advertised address %v not in the pool", a)
	}
	if got, want := adv.Options.BootFileURL(), "tftp://[fd00:bc::1]/snponly.efi"; got != want {
		t.Fatalf("boot URL %q, want %q", got, want)
	}
	req, err := dhcpv6.NewRequestFromAdvertise(adv, uefiPXE...)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := handle(t, h, req)
	if err != nil {
		t.Fatal(err)
	}
	ra := rep.Options.OneIANA().Options.OneAddress()
	if rep.MessageType != dhcpv6.MessageTypeReply || ra == nil || !ra.IPv6Addr.Equal(a.IPv6Addr) {
		t.Fatalf("reply %s, want the advertised %s", rep.Summary(), a.IPv6Addr)
	}
	// The Reply left after the bind committed: etcd has it.
	ip, _ := netip.AddrFromSlice(ra.IPv6Addr)
	l := &dhcpdv1.Lease{}
	if _, err := h.cfg.Leases.Store.Get(context.Background(), h.cfg.Leases.Key(ip.Unmap()), l); err != nil {
		t.Fatal(err)
	}
	if l.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND || l.GetMac() != clientMAC.String() {
		t.Fatalf("lease %v, want bound to %s", l, clientMAC)
	}

	// iPXE over IPv6 gets the script URL on bootapi, the IPv6 host in brackets.
	ipxe, err := handle(t, h, solicit(t, dhcpv6.WithUserClass([]byte("iPXE")), dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ipxe.Options.BootFileURL(), "http://[fd00:bc::1]:8080/boot.ipxe"; got != want {
		t.Fatalf("iPXE boot URL %q, want %q", got, want)
	}
	// UEFI HTTP boot over IPv6: the artifact URL and vendor class HTTPClient.
	http, err := handle(t, h, solicit(t, dhcpv6.WithArchType(iana.Arch(16)), dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL),
		dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("HTTPClient:Arch:00016:UNDI:003016")}})))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := http.Options.BootFileURL(), "http://[fd00:bc::1]:8081/artifacts/snponly.efi"; got != want {
		t.Fatalf("HTTP boot URL %q, want %q", got, want)
	}
}

func TestDroppedAndCounted(t *testing.T) {
	h := testHandler(t)
	other := &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 9, 9, 9, 9, 9}}
	adv, err := handle(t, h, solicit(t))
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := dhcpv6.NewRequestFromAdvertise(adv, dhcpv6.WithServerID(other))
	noCID := solicit(t)
	noCID.Options.Del(dhcpv6.OptionClientID)
	withSID := solicit(t, dhcpv6.WithServerID(serverDUID))
	relayed, _ := dhcpv6.EncapsulateRelay(solicit(t), dhcpv6.MessageTypeRelayForward, net.ParseIP("fd00:bc::1"), net.ParseIP("fe80::1"))
	for name, tc := range map[string]struct {
		pkt  []byte
		stat func() uint64
	}{
		"garbage":                    {[]byte{1, 2}, h.Stats.Malformed.Load},
		"truncated option":           {append(solicit(t).ToBytes(), 0, 1, 0, 9), h.Stats.Malformed.Load},
		"solicit without client id":  {noCID.ToBytes(), h.Stats.Malformed.Load},
		"solicit naming a server":    {withSID.ToBytes(), h.Stats.Malformed.Load},
		"request for another server": {foreign.ToBytes(), h.Stats.NotForUs.Load},
		"relayed":                    {relayed.ToBytes(), h.Stats.Relayed.Load},
		"advertise from a server":    {adv.ToBytes(), h.Stats.Unsupported.Load},
	} {
		t.Run(name, func(t *testing.T) {
			before := tc.stat()
			if _, err := h.Handle(context.Background(), tc.pkt, peer); !errors.Is(err, ErrDrop) {
				t.Fatalf("err %v, want ErrDrop", err)
			}
			if tc.stat() != before+1 {
				t.Fatalf("not counted")
			}
		})
	}
}

func TestMACOf(t *testing.T) {
	llt := &dhcpv6.DUIDLLT{HWType: iana.HWTypeEthernet, LinkLayerAddr: clientMAC}
	uuid := &dhcpv6.DUIDUUID{}
	for name, tc := range map[string]struct {
		duid dhcpv6.DUID
		peer netip.Addr
		want string
	}{
		"duid-llt":          {llt, netip.Addr{}, "52:54:00:12:34:56"},
		"duid-uuid, eui-64": {uuid, peer, "52:54:00:12:34:56"},
		"duid-uuid, no eui": {uuid, netip.MustParseAddr("fe80::1"), ""},
	} {
		if got := macOf(tc.duid, tc.peer); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}

// FuzzHandle feeds arbitrary bytes to the DHCPv6 handler: it must never panic,
// and every answer must parse as a DHCPv6 message.
func FuzzHandle(f *testing.F) {
	h := testHandler(f)
	sol := solicit(f, uefiPXE...)
	f.Add(sol.ToBytes())
	if adv, err := handle(f, h, sol); err == nil {
		if req, err := dhcpv6.NewRequestFromAdvertise(adv); err == nil {
			f.Add(req.ToBytes())
		}
	}
	f.Add([]byte{11, 0, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		out, err := h.Handle(context.Background(), pkt, peer)
		if err != nil {
			return
		}
		if _, err := dhcpv6.MessageFromBytes(out); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
	})
}
