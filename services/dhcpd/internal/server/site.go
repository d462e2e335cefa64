package server

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/services/dhcpd/internal/lease"
	"google.golang.org/protobuf/proto"
)

// Subnet is a served subnet with the options its clients get.
type Subnet struct {
	*lease.Subnet
	Mask    net.IPMask
	Routers []net.IP
	DNS     []net.IP
	Domain  string
}

// SiteConfig is a site's DHCP settings, parsed and checked once per change.
type SiteConfig struct {
	// Site is the record with bootapi_url, artifact_url and tftp_server defaulted.
	Site       *bootapiv1.Site
	Proxy      bool
	Subnets    []*Subnet
	Relays     map[netip.Addr]bool
	NextServer netip.Addr
	LeaseTime  time.Duration
	Quarantine time.Duration
	RA         bool
}

// Defaults fill what a site record leaves empty.
type Defaults struct {
	// Advertise is this host's address as machines reach it.
	Advertise netip.Addr
	// BootAPIURL and ArtifactURL default to http://<Advertise>:8080 and :8081.
	BootAPIURL, ArtifactURL string
}

// Compile checks and parses site's DHCP settings.
func Compile(site *bootapiv1.Site, def Defaults) (*SiteConfig, error) {
	s := site
	if s == nil {
		s = &bootapiv1.Site{}
	}
	s = cloneSite(s)
	adv := def.Advertise
	if s.BootapiUrl == "" {
		s.BootapiUrl = def.BootAPIURL
		if s.BootapiUrl == "" && adv.IsValid() {
			s.BootapiUrl = fmt.Sprintf("http://%s:8080", adv)
		}
	}
	if s.ArtifactUrl == "" {
		s.ArtifactUrl = def.ArtifactURL
		if s.ArtifactUrl == "" && adv.IsValid() {
			s.ArtifactUrl = fmt.Sprintf("http://%s:8081", adv)
		}
	}
	if s.TftpServer == "" && adv.IsValid() {
		s.TftpServer = adv.String()
	}
	d := s.GetDhcp()
	sc := &SiteConfig{Site: s, Proxy: d.GetMode() == bootapiv1.DhcpMode_DHCP_MODE_PROXY, Relays: map[netip.Addr]bool{},
		LeaseTime: time.Hour, Quarantine: 10 * time.Minute, RA: d.GetRouterAdvertisements()}
	if lt := d.GetLeaseTime(); lt != nil && lt.AsDuration() > 0 {
		sc.LeaseTime = lt.AsDuration()
	}
	if q := d.GetDeclineQuarantine(); q != nil && q.AsDuration() > 0 {
		sc.Quarantine = q.AsDuration()
	}
	if s.TftpServer != "" {
		ns, err := netip.ParseAddr(s.TftpServer)
		if err != nil || !ns.Is4() {
			// A host name: next-server needs an address; option 66 still carries the name.
			ns = adv
		}
		sc.NextServer = ns
	}
	for i, r := range d.GetRelayAddresses() {
		a, err := netip.ParseAddr(r)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("dhcp.relay_addresses[%d]: %q is not an IPv4 address", i, r)
		}
		sc.Relays[a] = true
	}
	for i, sn := range d.GetSubnets() {
		p, err := netip.ParsePrefix(sn.GetCidr())
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("dhcp.subnets[%d].cidr: %q is not an IPv4 CIDR", i, sn.GetCidr())
		}
		p = p.Masked()
		out := &Subnet{Subnet: &lease.Subnet{Prefix: p, LeaseTime: sc.LeaseTime}, Mask: net.CIDRMask(p.Bits(), 32), Domain: sn.GetDomainName()}
		if lt := sn.GetLeaseTime(); lt != nil && lt.AsDuration() > 0 {
			out.LeaseTime = lt.AsDuration()
		}
		for j, pool := range sn.GetPools() {
			a, err1 := netip.ParseAddr(pool.GetStart())
			b, err2 := netip.ParseAddr(pool.GetEnd())
			if err1 != nil || err2 != nil || !p.Contains(a) || !p.Contains(b) || b.Less(a) {
				return nil, fmt.Errorf("dhcp.subnets[%d].pools[%d]: %s-%s is not a range inside %s", i, j, pool.GetStart(), pool.GetEnd(), p)
			}
			out.Pools = append(out.Pools, lease.Range{Start: a, End: b})
		}
		for j, r := range sn.GetRouters() {
			ip := net.ParseIP(r).To4()
			if ip == nil {
				return nil, fmt.Errorf("dhcp.subnets[%d].routers[%d]: %q is not an IPv4 address", i, j, r)
			}
			out.Routers = append(out.Routers, ip)
		}
		for j, r := range sn.GetDnsServers() {
			ip := net.ParseIP(r).To4()
			if ip == nil {
				return nil, fmt.Errorf("dhcp.subnets[%d].dns_servers[%d]: %q is not an IPv4 address", i, j, r)
			}
			out.DNS = append(out.DNS, ip)
		}
		sc.Subnets = append(sc.Subnets, out)
	}
	return sc, nil
}

// LeaseSubnets are the subnets as the allocator sees them.
func (sc *SiteConfig) LeaseSubnets() []*lease.Subnet {
	out := make([]*lease.Subnet, 0, len(sc.Subnets))
	for _, s := range sc.Subnets {
		out = append(out, s.Subnet)
	}
	return out
}

// containing returns the subnet that contains ip.
func (sc *SiteConfig) containing(ip netip.Addr) *Subnet {
	for _, s := range sc.Subnets {
		if s.Prefix.Contains(ip) {
			return s
		}
	}
	return nil
}

func cloneSite(s *bootapiv1.Site) *bootapiv1.Site {
	return proto.Clone(s).(*bootapiv1.Site)
}
