//go:build linux

package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bootchain/bootchain/test/lab"
)

// SiteConfig describes a site.
type SiteConfig struct {
	// ChainloadOwnIPXE is dhcpd's --chainload-own-ipxe (a BIOS NIC's iPXE ROM
	// gets our undionly.kpxe first).
	ChainloadOwnIPXE bool
	// DHCPArgs are further dhcpd flags.
	DHCPArgs []string
}

// Site is one site: a namespace with its boot network and its dhcpd, tftpd and
// artifactstore replica.
type Site struct {
	// Name is the site's name (its record in etcd).
	Name string
	// N numbers the site (1, 2, ...): its boot network is 198.18.N.0/24.
	N  int
	NS *lab.Netns
	// Bridge is the boot network's bridge in NS ("br0"); Addr its address, the
	// site's router and the address of its services.
	Bridge string
	Addr   netip.Addr
	// Uplink is the site's address on the core network.
	Uplink netip.Addr
	// DHCPD, TFTPD and Replica are the site's processes.
	DHCPD, TFTPD, Replica *Proc

	f     *Fleet
	ntaps int
}

// AddSite creates a site: its namespace routed to the core, its record (bootapi
// at the VIP, artifacts from its own replica, tftpd for next-server), and its
// replica, tftpd and dhcpd, waiting until each is ready.
func (f *Fleet) AddSite(ctx context.Context, name string, cfg SiteConfig) (*Site, error) {
	f.mu.Lock()
	n := len(f.sites) + 1
	f.mu.Unlock()
	if n > 99 {
		return nil, fmt.Errorf("fleet: too many sites")
	}
	s := &Site{
		Name: name, N: n, Bridge: "br0", f: f,
		Addr:   netip.AddrFrom4([4]byte{198, 18, byte(n), 1}),
		Uplink: netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + n)}),
	}
	ns, err := f.Lab.AddNetns(ctx, "s"+strconv.Itoa(n))
	if err != nil {
		return nil, err
	}
	s.NS = ns
	if err := f.Lab.AddVeth(ctx, lab.Endpoint{NS: f.Core, Name: "vsite" + strconv.Itoa(n), Master: f.Lab.Bridge()},
		lab.Endpoint{NS: ns, Name: "wan", Addr: netip.PrefixFrom(s.Uplink, 24)}); err != nil {
		return nil, err
	}
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(n), 0}), 24)
	steps := [][]string{
		// A fixed MAC (lab.BridgeMAC says why): taps join it later.
		{"link", "add", s.Bridge, "address", lab.BridgeMAC([3]byte{0xf1, 0xee, byte(n)}), "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"},
		{"addr", "add", netip.PrefixFrom(s.Addr, 24).String(), "dev", s.Bridge},
		{"link", "set", s.Bridge, "up"},
		// Other sites through the core's router.
		{"route", "add", "198.18.0.0/15", "via", CoreAddr.String()},
	}
	for _, st := range steps {
		if _, err := ns.IP(ctx, st...); err != nil {
			return nil, err
		}
	}
	if err := ns.Do(func() error { return writeSysctl("net/ipv4/ip_forward", "1") }); err != nil {
		return nil, err
	}
	for _, core := range append([]*lab.Netns{f.Core}, f.API...) {
		if _, err := core.IP(ctx, "route", "add", subnet.String(), "via", s.Uplink.String()); err != nil {
			return nil, err
		}
	}

	addr := s.Addr.String()
	public := "http://" + VIP.String() + ":8080"
	if out, err := f.Bootctl(ctx, "sites", "put", name, "--bootapi-url", public, "--callback-url", public,
		"--artifact-url", "http://"+addr+":8081", "--tftp", addr); err != nil {
		return nil, fmt.Errorf("fleet: sites put %s: %w: %s", name, err, out)
	}
	hosts := []string{addr, s.Uplink.String()}
	for _, svc := range []string{"artifactstore", "tftpd", "dhcpd"} {
		dir, err := f.bundle(svc+"-"+name, name, hosts...)
		if err != nil {
			return nil, err
		}
		var args []string
		var ready string
		switch svc {
		case "artifactstore":
			args = []string{"--origin", OriginAddr.String() + ":9081", "--data-dir", filepath.Join(f.dir, name, svc)}
			ready = "http://" + addr + ":8081/healthz"
		case "tftpd":
			args = []string{"--artifactstore", addr + ":9081", "--data-dir", filepath.Join(f.dir, name, svc)}
			ready = "http://" + addr + ":9183/readyz"
		case "dhcpd":
			pool := fmt.Sprintf("198.18.%d.100-198.18.%d.199", n, n)
			args = []string{"--interface", s.Bridge, "--subnet", subnet.String(), "--pool", pool,
				"--router", addr, "--server-ip", addr, "--name", "dhcpd-" + name,
				"--data-dir", filepath.Join(f.dir, name, svc)}
			if cfg.ChainloadOwnIPXE {
				args = append(args, "--chainload-own-ipxe")
			}
			args = append(args, cfg.DHCPArgs...)
			ready = "http://" + addr + ":9182/readyz"
		}
		args = append([]string{"--site", name, "--pki-dir", dir}, args...)
		p := f.newProc(name+"/"+svc, ns, f.cfg.Bins[svc], args, ready)
		if err := p.Start(ctx); err != nil {
			return nil, err
		}
		switch svc {
		case "artifactstore":
			s.Replica = p
		case "tftpd":
			s.TFTPD = p
		case "dhcpd":
			s.DHCPD = p
		}
	}
	f.mu.Lock()
	f.sites[name] = s
	f.mu.Unlock()
	return s, nil
}

// Site returns the named site, or nil.
func (f *Fleet) Site(name string) *Site {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sites[name]
}

// AddTap creates a tap on the site's boot network for a VM (QEMU then runs in
// s.NS).
func (s *Site) AddTap(ctx context.Context) (string, error) {
	s.ntaps++
	name := "tap" + strconv.Itoa(s.ntaps)
	for _, st := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"link", "set", name, "master", s.Bridge},
		{"link", "set", name, "up"},
	} {
		if _, err := s.NS.IP(ctx, st...); err != nil {
			return "", err
		}
	}
	return name, nil
}

// Cut takes the site's WAN link down (its "wan" veth, inside the site's
// namespace): the connected route to the core and the route to other sites
// go with it, so nothing of the core (etcd, bootapi, the origin) is reachable
// from the site and the site is unreachable from the core. The site's boot
// network, its services and its machines stay up. Restore undoes it.
func (s *Site) Cut(ctx context.Context) error {
	_, err := s.NS.IP(ctx, "link", "set", "wan", "down")
	return err
}

// Restore brings the site's WAN link back up and its route to other sites
// through the core's router (the kernel removed it with the link).
func (s *Site) Restore(ctx context.Context) error {
	if _, err := s.NS.IP(ctx, "link", "set", "wan", "up"); err != nil {
		return err
	}
	// The gateway is reachable once the link has its carrier again.
	var err error
	for i := 0; i < 50; i++ {
		if _, err = s.NS.IP(ctx, "route", "replace", "198.18.0.0/15", "via", CoreAddr.String()); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("fleet: restore route of %s: %w", s.Name, err)
}
