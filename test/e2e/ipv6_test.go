package e2e

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// TestChainUEFIIPv6 boots OVMF with PXE over IPv4 off, so that its first boot
// option is PXE over IPv6: the router advertisement's managed flag, DHCPv6
// from dhcpd (an IA_NA address from fd00:bc::/64, option 59
// tftp://[fd00:bc::1]/snponly.efi) and TFTP over IPv6. The lab is dual-stack,
// and Debian's snponly.efi configures IPv4 first: iPXE's DHCP, the script, the
// kernel, initrd and callbacks go over IPv4 (docs/firmware.md, IPv6). One
// boot, one session, one trace, to succeeded.
func TestChainUEFIIPv6(t *testing.T) {
	_, _, s := bootIPv6(t, chainOpts{}, "52:54:00:bc:e2:06", "pxe6")
	hops := s.GetHops()
	if len(hops) < 3 {
		t.Fatalf("session hops %v", hopNames(s))
	}
	// The firmware's exchange was DHCPv6, for an address of the IPv6 pool.
	for i, want := range []struct{ name, detail string }{{"dhcp.discover", "advertise fd00:bc::"}, {"dhcp.request", "reply fd00:bc::"}} {
		h := hops[i]
		if h.GetName() != want.name || !strings.HasPrefix(h.GetDetail(), want.detail) || h.GetAttributes()["dhcp.version"] != "6" {
			t.Errorf("hop %d: %s %q %v, want %s over DHCPv6 (%q...)", i, h.GetName(), h.GetDetail(), h.GetAttributes(), want.name, want.detail)
		}
	}
	// tftpd found the session by the client's IPv6 address: the download of
	// the boot program is a hop of it.
	var tftp bool
	for _, h := range hops {
		if h.GetName() == "tftp" && strings.Contains(h.GetDetail(), "snponly.efi") && !h.GetFailed() {
			tftp = true
		}
	}
	if !tftp {
		t.Errorf("no successful tftp hop of snponly.efi in the session:\n%s", describeSession(s))
	}
}

// TestChainUEFIIPv6Only boots as TestChainUEFIIPv6 on a boot network where
// nothing answers DHCPv4 (the site's IPv4 subnet has no pool), as an
// IPv6-only site runs: iPXE configures by DHCPv6 alone and fetches the script
// (option 59), kernel and initrd from [fd00:bc::1]; bootapi puts iPXE's address
// on the kernel command line (bootchain.ip6=) and the installer reports from it
// to the IPv6 callback URL. Every script, artifact and callback hop came from
// that one IPv6 address; one session, one trace, job succeeded.
func TestChainUEFIIPv6Only(t *testing.T) {
	ctx, e, s := bootIPv6(t, chainOpts{noPool4: true}, "52:54:00:bc:e2:07", "pxe6only")
	// DHCP: iPXE asks DHCPv4 too, and nothing answers it; every exchange
	// that was answered is DHCPv6.
	count := map[string]int{}
	for _, h := range s.GetHops() {
		switch name := h.GetName(); {
		case strings.HasPrefix(name, "dhcp.") || name == "ipxe.dhcp":
			if v := h.GetAttributes()["dhcp.version"]; v != "6" && !h.GetFailed() {
				t.Errorf("%s hop answered over DHCP version %q, want 6 only: %s", name, v, h.GetDetail())
			}
		case name == "script" || name == "artifact" || name == "callback":
			count[name]++
		}
	}
	if count["script"] < 1 || count["artifact"] < 2 || count["callback"] < 2 {
		t.Errorf("hops script/artifact/callback %v, want >= 1/2/2:\n%s", count, describeSession(s))
	}
	// The trace's script, artifact and callback hops all came from one
	// address of the IPv6 pool: the session's (iPXE's DHCPv6 lease), which
	// the installer took from bootchain.ip6=.
	spans := e.checkTrace(ctx, s, "e2e/vmlinuz", "e2e/initrd.gz")
	pool := netip.MustParsePrefix("fd00:bc::/64")
	machine := netip.MustParseAddr(s.GetIp())
	if !pool.Contains(machine) {
		t.Errorf("session IP %s, want an address of %s", machine, pool)
	}
	seen := map[string]int{}
	for _, sp := range spans {
		name := sp.Attrs["bootchain.hop"]
		if name != "script" && name != "artifact" && name != "callback" {
			continue
		}
		seen[name]++
		if a := hopClient(sp.Attrs["client.address"]); a != machine {
			t.Errorf("%s span %s from %q, want the machine's %s", name, sp.Attrs["url.path"], sp.Attrs["client.address"], machine)
		}
	}
	if seen["script"] < 1 || seen["artifact"] < 2 || seen["callback"] < 2 {
		t.Errorf("spans script/artifact/callback %v, want >= 1/2/2", seen)
	}
	t.Logf("machine %s: spans %v", machine, seen)
}

// bootIPv6 starts a chain env with o and dhcpd's and bootapi's IPv6 on
// fd00:bc::/64 (the bridge fd00:bc::1), and boots OVMF with PXE over IPv4
// off, so that it PXE-boots over IPv6, through a job to succeeded.
func bootIPv6(t *testing.T, o chainOpts, macs, name string) (context.Context, *chainEnv, *bootapiv1.BootSession) {
	t.Helper()
	rd := chainPrereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	t.Cleanup(cancel)
	o.args = append(o.args, "--dhcpd-dhcpv6-pool", "fd00:bc::100-fd00:bc::1ff", "--dhcpd-advertise6", "fd00:bc::1", "--bootapi-advertise6", "fd00:bc::1")
	e := newChainEnv(t, ctx, rd, o)
	if _, err := e.l.Main().IP(ctx, "addr", "add", "fd00:bc::1/64", "dev", e.l.Bridge(), "nodad"); err != nil {
		t.Fatal(err)
	}
	watch, job := e.provisionJob(ctx, macs)
	s, _ := e.bootJob(ctx, macs, watch, job, VMConfig{Name: name, ExtraArgs: []string{"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no"}})
	return ctx, e, s
}

// hopClient is a hop's client.address (an address, or address:port as
// artifactstore records it); invalid when neither.
func hopClient(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr()
	}
	a, _ := netip.ParseAddr(s)
	return a
}
