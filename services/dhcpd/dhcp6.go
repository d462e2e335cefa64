package dhcpd

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/dhcpd/internal/dhcp6"
	"github.com/bootchain/bootchain/services/dhcpd/internal/ra"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// v6 is the DHCPv6 server of a dhcpd whose Config has a DHCPv6Pool.
type v6 struct {
	conn    *net.UDPConn
	handler *dhcp6.Handler
	leases  *dhcp6.Leases
	cache   *store.Cache[*dhcpdv1.Lease]
	prefix  netip.Prefix
}

// newV6 opens the DHCPv6 socket on the interface and builds the handler.
func (s *Server) newV6() (*v6, error) {
	cfg := s.cfg
	pool, err := dhcp6.ParsePool(cfg.DHCPv6Pool)
	if err != nil {
		return nil, fmt.Errorf("dhcpd: --dhcpv6-pool: %w", err)
	}
	if cfg.Interface == "" {
		return nil, fmt.Errorf("dhcpd: DHCPv6 needs an interface")
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("dhcpd: interface %q: %w", cfg.Interface, err)
	}
	prefix, adv := interface6(ifi, pool)
	if cfg.Advertise6 != "" {
		if adv, err = netip.ParseAddr(cfg.Advertise6); err != nil || !adv.Is6() || adv.Is4In6() {
			return nil, fmt.Errorf("dhcpd: --advertise6 %q: want an IPv6 address", cfg.Advertise6)
		}
	}
	if !adv.IsValid() {
		return nil, fmt.Errorf("dhcpd: DHCPv6: interface %s has no IPv6 address in %s for the boot URLs; give --advertise6", cfg.Interface, prefix)
	}
	port := dhcp6.ServerPort
	if cfg.DHCPv6Port != 0 {
		port = cfg.DHCPv6Port
	}
	conn, err := dhcp6.Listen(cfg.Interface, port)
	if err != nil {
		return nil, fmt.Errorf("dhcpd: %w", err)
	}
	v := &v6{conn: conn, prefix: prefix, leases: dhcp6.NewLeases(cfg.Store, cfg.Site, cfg.Name)}
	v.leases.OfferHold = cfg.OfferHold
	v.cache = store.NewCache(cfg.Store, dhcp6.Prefix(cfg.Site), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} }, s.log)
	v.handler = dhcp6.New(dhcp6.Config{
		Site: cfg.Site, Leases: v.leases, Pool: pool, Prefix: prefix, Advertise: adv,
		ServerID: &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: ifi.HardwareAddr},
		Settings: func() dhcp6.Site {
			sc := s.handler.SiteConfig()
			return dhcp6.Site{Record: sc.Site, LeaseTime: sc.LeaseTime}
		},
		Machines: s.machine, Sessions: s.rec, Logger: s.log.With("proto", "dhcpv6"),
	})
	return v, nil
}

// interface6 is the boot network's IPv6 prefix (the interface's prefix holding
// the pool, else the pool's /64) and the interface's address in it.
func interface6(ifi *net.Interface, pool dhcp6.Pool) (netip.Prefix, netip.Addr) {
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() != nil {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP)
		ones, _ := ipn.Mask.Size()
		if p := netip.PrefixFrom(ip, ones).Masked(); p.Contains(pool.Start) && !ip.IsLinkLocalUnicast() {
			return p, ip
		}
	}
	p, _ := pool.Start.Prefix(64)
	return p, netip.Addr{}
}

// managed is what the router advertisements say: DHCPv6 and the boot
// network's prefix when DHCPv6 is served.
func (s *Server) managed() ra.Managed {
	if s.v6 == nil {
		return ra.Managed{}
	}
	return ra.Managed{Prefix: s.v6.prefix}
}

// feedLeases keeps the DHCPv6 lease index; loaded is closed once the first
// snapshot is applied.
func (v *v6) feedLeases(ctx context.Context, loaded chan<- struct{}) error {
	return followLeases(ctx, v.cache, 1<<12, v.leases.Apply, loaded)
}

// Stats6 is a snapshot of the DHCPv6 server's counters.
type Stats6 struct {
	// On: DHCPv6 is served.
	On bool
	// Received messages, Replied answers (Advertise or Reply).
	Received, Replied uint64
	// Messages by type: Solicit, Request, Renew/Rebind, Release, Decline,
	// Confirm, Information-request.
	Solicits, Requests, Renews, Releases, Declines, Confirms, InfoRequests uint64
	// Dropped: malformed, for another server, relayed (not served),
	// unsupported message types, and binds etcd did not commit.
	Malformed, NotForUs, Relayed, Unsupported, StoreErrors uint64
	// Bound addresses (committed binds) and IA_NAs answered NoAddrsAvail.
	Bound, NoAddrs uint64
}

// Stats6 returns the DHCPv6 counters as they are now.
func (s *Server) Stats6() Stats6 {
	if s.v6 == nil {
		return Stats6{}
	}
	h := &s.v6.handler.Stats
	return Stats6{On: true, Received: h.Received.Load(), Replied: h.Replied.Load(),
		Solicits: h.Solicits.Load(), Requests: h.Requests.Load(), Renews: h.Renews.Load(), Releases: h.Releases.Load(),
		Declines: h.Declines.Load(), Confirms: h.Confirms.Load(), InfoRequests: h.InfoRequests.Load(),
		Malformed: h.Malformed.Load(), NotForUs: h.NotForUs.Load(), Relayed: h.Relayed.Load(), Unsupported: h.Unsupported.Load(),
		StoreErrors: h.StoreErrors.Load(), Bound: h.Bound.Load(), NoAddrs: h.NoAddrs.Load()}
}
