//go:build linux

package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bootchain/bootchain/test/lab"
)

func TestDnsmasqConfig(t *testing.T) {
	base := DnsmasqConfig{
		Dir:          "/d",
		Interface:    "br0",
		RangeStart:   netip.MustParseAddr("198.18.0.100"),
		RangeEnd:     netip.MustParseAddr("198.18.0.200"),
		TFTPRoot:     "/tftp",
		BIOSBootFile: "undionly.kpxe",
		UEFIBootFile: "ipxe.efi",
		IPXEScript:   "http://198.18.0.1/boot.ipxe",
	}
	tuned := base
	tuned.NoPing, tuned.IPXENoProxyDHCP, tuned.RouterAdvertise = true, true, true

	tests := map[string]struct {
		cfg      DnsmasqConfig
		want     []string
		dontWant []string
		wantErr  bool
	}{
		"stock": {
			cfg: base,
			want: []string{"port=0", "interface=br0", "dhcp-range=198.18.0.100,198.18.0.200,255.255.255.0,3600s",
				"dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe", "dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi",
				"dhcp-boot=tag:ipxe,http://198.18.0.1/boot.ipxe", "enable-tftp", "tftp-root=/tftp"},
			dontWant: []string{"no-ping", "175,", "enable-ra", "ra-param"},
		},
		"tuned": {
			cfg:  tuned,
			want: []string{"no-ping", "dhcp-option-force=tag:ipxe,175,b0:01:01", "enable-ra", "dhcp-range=2001:2::,ra-only,64,1h", "ra-param=br0,60,0"},
		},
		"arm64": {
			cfg: func() DnsmasqConfig { c := base; c.ARM64BootFile = "grubaa64.efi"; return c }(),
			want: []string{"dhcp-match=set:arm64,option:client-arch,11", "dhcp-boot=tag:!ipxe,tag:arm64,grubaa64.efi",
				"dhcp-boot=tag:!ipxe,tag:!efi64,tag:!arm64,undionly.kpxe"},
		},
		"no range": {cfg: DnsmasqConfig{Dir: "/d", Interface: "br0"}, wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			conf, err := tc.cfg.Config()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Config() error = %v, wantErr %v", err, tc.wantErr)
			}
			lines := map[string]bool{}
			for _, l := range strings.Split(conf, "\n") {
				lines[l] = true
			}
			for _, w := range tc.want {
				if !lines[w] {
					t.Errorf("config lacks line %q:\n%s", w, conf)
				}
			}
			for _, d := range tc.dontWant {
				if strings.Contains(conf, d) {
					t.Errorf("config contains %q:\n%s", d, conf)
				}
			}
		})
	}
}

// routerSolicit sends one router solicitation on ifname from inside ns and returns
// the router lifetime of the first router advertisement received within wait.
func routerSolicit(ns *lab.Netns, ifname string, wait time.Duration) (lifetime time.Duration, err error) {
	err = ns.Do(func() error {
		c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		defer c.Close()
		raw, err := c.(*net.IPConn).SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		// RFC 4861: neighbour discovery is sent and accepted with hop limit 255 only.
		if err := raw.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_MULTICAST_HOPS, 255)
		}); err != nil || serr != nil {
			return errors.Join(err, serr)
		}
		rs := []byte{133, 0, 0, 0, 0, 0, 0, 0} // type, code, checksum (kernel fills), reserved
		if _, err := c.WriteTo(rs, &net.IPAddr{IP: net.ParseIP("ff02::2"), Zone: ifname}); err != nil {
			return fmt.Errorf("send RS: %w", err)
		}
		c.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 1500)
		for i := 0; i < 100; i++ {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("no router advertisement: %w", err)
			}
			if n >= 16 && buf[0] == 134 {
				lifetime = time.Duration(binary.BigEndian.Uint16(buf[6:8])) * time.Second
				return nil
			}
		}
		return errors.New("no router advertisement among 100 ICMPv6 packets")
	})
	return lifetime, err
}

// TestDnsmasqAnswersRouterSolicitation checks the tuned dnsmasq's IPv6 part: a router
// solicitation (as iPXE sends one while "Configuring") gets a router advertisement
// with router lifetime 0 at once.
func TestDnsmasqAnswersRouterSolicitation(t *testing.T) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("dnsmasq not installed (scripts/install-deps.sh)")
	}
	l := lab.NewT(t, lab.Config{IPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := l.AddNetns(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddVeth(ctx, lab.Endpoint{NS: l.Main(), Name: "vc", Master: l.Bridge()}, lab.Endpoint{NS: client, Name: "eth0"}); err != nil {
		t.Fatal(err)
	}
	d, err := StartDnsmasq(ctx, l, l.Main(), DnsmasqConfig{
		Dir:             l.Dir() + "/dnsmasq",
		Interface:       l.Bridge(),
		RangeStart:      netip.MustParseAddr("198.18.0.100"),
		RangeEnd:        netip.MustParseAddr("198.18.0.200"),
		RouterAdvertise: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The bridge has carrier (the veth is up), so its link-local address exists.
	// dnsmasq may still be joining ff02::2; a few solicitations, each waiting 1s.
	var lifetime time.Duration
	start := time.Now()
	for i := 0; i < 5; i++ {
		if lifetime, err = routerSolicit(client, "eth0", time.Second); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("%v\ndnsmasq log:\n%s", err, d.Log())
	}
	t.Logf("router advertisement after %v", time.Since(start).Round(time.Millisecond))
	if lifetime != 0 {
		t.Errorf("router lifetime %v, want 0", lifetime)
	}
	if !strings.Contains(d.Log(), "RTR-SOLICIT(br0)") {
		t.Errorf("dnsmasq did not log the solicitation:\n%s", d.Log())
	}
}
