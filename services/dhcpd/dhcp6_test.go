package dhcpd_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/insomniacslk/dhcp/iana"
)

// The lab's IPv6 boot network: a ULA prefix, never routed anywhere.
const (
	lab6Prefix = "fd00:bc::/64"
	lab6Server = "fd00:bc::1"
	lab6Pool   = "fd00:bc::100-fd00:bc::1ff"
)

// startDHCPD6 runs a dhcpd serving DHCPv6 (and IPv4) on the lab bridge, which
// gets fd00:bc::1/64.
func startDHCPD6(t *testing.T, l *lab.Lab, st *store.Store) *rig {
	t.Helper()
	if _, err := l.Main().IP(context.Background(), "addr", "add", lab6Server+"/64", "dev", l.Bridge(), "nodad"); err != nil {
		t.Fatal(err)
	}
	return startDHCPDWith(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE), func(c *dhcpd.Config) { c.DHCPv6Pool = lab6Pool })
}

// nclient6In is a DHCPv6 client on ns's eth0, once its link-local address is up.
func nclient6In(t *testing.T, ns *lab.Netns) *nclient6.Client {
	t.Helper()
	var c *nclient6.Client
	if !testkit.Poll(testkit.Wait, func() bool {
		return ns.Do(func() (err error) {
			c, err = nclient6.New("eth0", nclient6.WithTimeout(2*time.Second), nclient6.WithRetry(3))
			return err
		}) == nil
	}) {
		t.Fatal("no link-local address on eth0 for the DHCPv6 client")
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var pxe6 = []dhcpv6.Modifier{
	dhcpv6.WithArchType(iana.EFI_X86_64),
	dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL),
	dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("PXEClient:Arch:00007:UNDI:003016")}}),
}

// TestLabDHCPv6 runs insomniacslk's nclient6 against dhcpd in a lab namespace:
// an address from the pool with the boot file URL, the lease in etcd before
// the Reply, a second client another address, the boot session with the
// IPv6 address, a malformed message dropped and counted, and router
// advertisements with the managed flag and the boot network's prefix.
func TestLabDHCPv6(t *testing.T) {
	l := lab.NewT(t, lab.Config{IPv6: true})
	st := storetest.New(t)
	r := startDHCPD6(t, l, st)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if !r.srv.Stats6().On {
		t.Fatal("DHCPv6 off")
	}

	ns := client(t, l, "c1", "")
	c := nclient6In(t, ns)
	adv, err := c.Solicit(ctx, pxe6...)
	if err != nil {
		t.Fatalf("solicit: %v", err)
	}
	rep, err := c.Request(ctx, adv, pxe6...)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	a := rep.Options.OneIANA().Options.OneAddress()
	if rep.MessageType != dhcpv6.MessageTypeReply || a == nil {
		t.Fatalf("reply %s", rep.Summary())
	}
	ip, _ := netip.AddrFromSlice(a.IPv6Addr)
	if ip = ip.Unmap(); !netip.MustParsePrefix(lab6Prefix).Contains(ip) || ip.Less(netip.MustParseAddr("fd00:bc::100")) {
		t.Fatalf("address %s not from the pool", ip)
	}
	if got, want := rep.Options.BootFileURL(), "tftp://["+lab6Server+"]/snponly.efi"; got != want {
		t.Errorf("boot file URL %q, want %q", got, want)
	}
	mac := c.InterfaceAddr().String()
	stored := &dhcpdv1.Lease{}
	if _, err := st.Get(ctx, store.Key("leases6", "lab", ip.String()), stored); err != nil || stored.GetMac() != mac ||
		stored.GetState() != dhcpdv1.LeaseState_LEASE_STATE_BOUND {
		t.Errorf("etcd lease %v, %v", stored, err)
	}

	// A second client: another address.
	c2 := nclient6In(t, client(t, l, "c2", ""))
	adv2, err := c2.Solicit(ctx)
	if err != nil {
		t.Fatalf("second solicit: %v", err)
	}
	rep2, err := c2.Request(ctx, adv2)
	if err != nil {
		t.Fatalf("second request: %v", err)
	}
	if a2 := rep2.Options.OneIANA().Options.OneAddress(); a2 == nil || a2.IPv6Addr.Equal(a.IPv6Addr) {
		t.Fatalf("second client's reply %s (first has %s)", rep2.Summary(), ip)
	}

	// The PXE client's session has its DHCP hops and its IPv6 address.
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
	if !regexp.MustCompile(`^(dhcp\.discover,)+dhcp\.request$`).MatchString(strings.Join(hops, ",")) || bs.GetIp() != ip.String() {
		t.Errorf("session hops %v ip %s, want discover, request and %s", hops, bs.GetIp(), ip)
	}
	if last := bs.GetHops()[len(bs.GetHops())-1]; last.GetDetail() != "reply "+ip.String() || last.GetAttributes()["dhcp.version"] != "6" {
		t.Errorf("request hop %q %v, want detail %q and dhcp.version 6", last.GetDetail(), last.GetAttributes(), "reply "+ip.String())
	}

	// A malformed message is dropped and counted.
	before := r.srv.Stats6().Malformed
	if err := ns.Do(func() error {
		conn, err := net.DialUDP("udp6", nil, &net.UDPAddr{IP: net.ParseIP("ff02::1:2"), Port: 547, Zone: "eth0"})
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte{1, 0, 0, 1, 0, 1, 0, 200})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "malformed DHCPv6 message counted", func() bool { return r.srv.Stats6().Malformed > before })
	mfs, err := r.srv.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var binds float64
	for _, mf := range mfs {
		if mf.GetName() == "bootchain_dhcpd_dhcpv6_binds_total" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "bound" || m.GetLabel()[1].GetValue() == "bound" {
					binds = m.GetCounter().GetValue()
				}
			}
		}
	}
	if binds < 2 {
		t.Errorf("bootchain_dhcpd_dhcpv6_binds_total{result=bound} = %v, want >= 2", binds)
	}

	// Router advertisements: managed flag, the prefix on link, no autoconfiguration, lifetime 0.
	body, ok := routerAdvertisement(t, ns)
	if !ok {
		t.Fatal("no router advertisement")
	}
	if len(body) != 12+32 || body[1]&0x80 == 0 || binary.BigEndian.Uint16(body[2:]) != 0 {
		t.Fatalf("RA body %x: want the managed flag, lifetime 0 and one prefix option", body)
	}
	opt := body[12:]
	p := netip.PrefixFrom(netip.AddrFrom16([16]byte(opt[16:32])), int(opt[2]))
	if opt[0] != 3 || p.String() != lab6Prefix || opt[3] != 0x80 {
		t.Fatalf("RA prefix option %x: want %s on-link, not autonomous", opt, lab6Prefix)
	}
}
