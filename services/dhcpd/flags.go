package dhcpd

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/config"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// SeedFlags are the command-line form of a site's DHCP settings, written to the
// site when it has none (see Config.Seed).
type SeedFlags struct {
	Mode       string
	Subnets    config.StringList
	Pools      config.StringList
	Routers    config.StringList
	DNS        config.StringList
	Domain     string
	LeaseTime  time.Duration
	Chainload  bool
	RA         bool
	Unknown    string
	BootFiles  config.StringList
	RelayAddrs config.StringList
}

// AddFlags binds the flags with prefix ("" or "dhcpd-").
func (f *SeedFlags) AddFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&f.Mode, prefix+"mode", "authoritative", "DHCP mode: authoritative (addresses and PXE) or proxy (PXE only, ports 67 and 4011)")
	fs.Var(&f.Subnets, prefix+"subnet", "subnet served, CIDR (repeat or comma-separate; pools go to the subnet containing them)")
	fs.Var(&f.Pools, prefix+"pool", "address range start-end (198.18.0.100-198.18.0.199)")
	fs.Var(&f.Routers, prefix+"router", "router (option 3) of the subnet containing it")
	fs.Var(&f.DNS, prefix+"dns", "DNS servers (option 6) for every subnet")
	fs.StringVar(&f.Domain, prefix+"domain", "", "domain name (option 15)")
	fs.DurationVar(&f.LeaseTime, prefix+"lease-time", time.Hour, "lease time")
	fs.BoolVar(&f.Chainload, prefix+"chainload-own-ipxe", false, "give iPXE ROMs our own iPXE binary before the boot script")
	fs.BoolVar(&f.RA, prefix+"router-advertisements", true, "answer IPv6 router solicitations on the boot network with a lifetime-0 RA (iPXE otherwise waits 13-16 s for an IPv6 router)")
	fs.StringVar(&f.Unknown, prefix+"unknown-clients", "boot", "PXE clients without a machine record: boot or ignore")
	fs.Var(&f.BootFiles, prefix+"boot-file", "boot file override key=file (bios, uefi-x64, uefi-arm64, http-x64, http-arm64)")
	fs.Var(&f.RelayAddrs, prefix+"relay", "accepted relay agent addresses (default: a relay whose giaddr is the packet's source address)")
}

// Given reports whether any subnet was given (the seed is only written then).
func (f *SeedFlags) Given() bool { return len(f.Subnets) > 0 }

// Seed builds the SiteDhcp the flags describe; nil when no subnet was given.
func (f *SeedFlags) Seed() (*bootapiv1.SiteDhcp, error) {
	if !f.Given() && f.Mode != "proxy" {
		return nil, nil
	}
	d := &bootapiv1.SiteDhcp{ChainloadOwnIpxe: f.Chainload, RouterAdvertisements: f.RA, LeaseTime: durationpb.New(f.LeaseTime)}
	switch f.Mode {
	case "authoritative", "":
		d.Mode = bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE
	case "proxy":
		d.Mode = bootapiv1.DhcpMode_DHCP_MODE_PROXY
	default:
		return nil, fmt.Errorf("mode %q: want authoritative or proxy", f.Mode)
	}
	switch f.Unknown {
	case "boot", "":
		d.UnknownClients = bootapiv1.DhcpUnknownClients_DHCP_UNKNOWN_CLIENTS_BOOT
	case "ignore":
		d.UnknownClients = bootapiv1.DhcpUnknownClients_DHCP_UNKNOWN_CLIENTS_IGNORE
	default:
		return nil, fmt.Errorf("unknown-clients %q: want boot or ignore", f.Unknown)
	}
	for _, kv := range f.BootFiles {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("boot-file %q: want key=file", kv)
		}
		if d.BootFiles == nil {
			d.BootFiles = map[string]string{}
		}
		d.BootFiles[k] = v
	}
	d.RelayAddresses = append(d.RelayAddresses, f.RelayAddrs...)
	var prefixes []netip.Prefix
	for _, s := range f.Subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("subnet %q: %w", s, err)
		}
		prefixes = append(prefixes, p.Masked())
		d.Subnets = append(d.Subnets, &bootapiv1.DhcpSubnet{Cidr: p.Masked().String(), DnsServers: f.DNS, DomainName: f.Domain})
	}
	find := func(what, s string) (*bootapiv1.DhcpSubnet, error) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, s, err)
		}
		for i, p := range prefixes {
			if p.Contains(a) {
				return d.Subnets[i], nil
			}
		}
		return nil, fmt.Errorf("%s %s: in no --subnet", what, s)
	}
	for _, p := range f.Pools {
		a, b, ok := strings.Cut(p, "-")
		if !ok {
			return nil, fmt.Errorf("pool %q: want start-end", p)
		}
		sn, err := find("pool", strings.TrimSpace(a))
		if err != nil {
			return nil, err
		}
		sn.Pools = append(sn.Pools, &bootapiv1.DhcpPool{Start: strings.TrimSpace(a), End: strings.TrimSpace(b)})
	}
	for _, r := range f.Routers {
		sn, err := find("router", r)
		if err != nil {
			return nil, err
		}
		sn.Routers = append(sn.Routers, r)
	}
	return d, nil
}

// AddFlags binds the process-level settings with prefix ("" or "dhcpd-").
func (c *Config) AddFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.Interface, prefix+"interface", c.Interface, "interface to serve DHCP on (needs root)")
	fs.StringVar(&c.ListenAddr, prefix+"listen", c.ListenAddr, "DHCP listen address")
	fs.StringVar(&c.PXEAddr, prefix+"pxe-listen", c.PXEAddr, "proxy-mode boot server address (- disables)")
	fs.StringVar(&c.GRPC.Addr, prefix+"grpc-addr", c.GRPC.Addr, "gRPC admin address")
	c.GRPC.AddFlags(fs, prefix+"grpc-")
	fs.StringVar(&c.HTTPAddr, prefix+"http-addr", c.HTTPAddr, "address of /metrics, /healthz and /readyz (- disables)")
	fs.StringVar(&c.DHCPv6Pool, prefix+"dhcpv6-pool", c.DHCPv6Pool, "serve DHCPv6 on the interface with IA_NA addresses start-end (fd00:bc::100-fd00:bc::1ff); empty: IPv4 only")
	fs.StringVar(&c.Advertise6, prefix+"advertise6", c.Advertise6, "IPv6 address of this host in IPv6 clients' boot URLs (default: the interface's address in the pool's prefix)")
	fs.StringVar(&c.ServerIP, prefix+"server-ip", c.ServerIP, "server identifier and next-server (default: the interface's address)")
	fs.StringVar(&c.Name, prefix+"name", c.Name, "replica name written into leases (default: host name)")
	fs.IntVar(&c.Workers, prefix+"workers", c.Workers, "packets answered concurrently")
	fs.DurationVar(&c.OfflineGrace, prefix+"offline-grace", c.OfflineGrace, "how long past its expiry a bound lease stays its client's, on every replica, and how far renewals may go while etcd cannot commit (docs/dhcpd.md)")
	fs.IntVar(&c.ReplyBurst, prefix+"reply-burst", c.ReplyBurst, "most replies sent back to back before arriving requests pace them (0: unpaced)")
	fs.Var(&c.LimitPerMAC, prefix+"limit-per-mac", "packets one client MAC may send: RATE/s,BURST, or off (over it: dropped and counted)")
	fs.Var(&c.LimitPerIP, prefix+"limit-per-ip", "packets one source address (a relay; 0.0.0.0 for local unconfigured clients) may send: RATE/s,BURST, or off")
}
