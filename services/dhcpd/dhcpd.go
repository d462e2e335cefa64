// Package dhcpd is bootchain's DHCP server as a library: addresses from each
// site's pools (authoritative mode) or PXE answers only (proxy mode, ports 67 and
// 4011), boot files chosen per client architecture, leases durable in etcd and
// safe with several replicas, boot sessions opened on the firmware's DISCOVER, an
// optional IPv6 router-advertisement responder, and a gRPC admin API.
//
//	cfg := dhcpd.DefaultConfig()
//	cfg.Store, cfg.Site, cfg.Interface = st, "lab", "br0"
//	srv, err := dhcpd.New(cfg)
//	err = srv.Run(ctx)
//
// The site's DHCP settings live on its Site record (sites/<site>, field dhcp);
// Config.Seed writes them when the site has none. See docs/dhcpd.md.
package dhcpd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/bootchain/bootchain/pkg/daemon"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/lifecycle"
	"github.com/bootchain/bootchain/pkg/opshttp"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/dhcpd/internal/admin"
	"github.com/bootchain/bootchain/services/dhcpd/internal/dhcp6"
	"github.com/bootchain/bootchain/services/dhcpd/internal/journal"
	"github.com/bootchain/bootchain/services/dhcpd/internal/lease"
	"github.com/bootchain/bootchain/services/dhcpd/internal/ra"
	"github.com/bootchain/bootchain/services/dhcpd/internal/server"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Config configures a dhcpd.
type Config struct {
	// Store is the etcd store. Required.
	Store *store.Store
	// Site this dhcpd serves. Required.
	Site string
	// Interface to serve on (bound with SO_BINDTODEVICE); empty serves every
	// interface, which only suits relayed traffic and tests.
	Interface string
	// ListenAddr of the DHCP socket; default ":67".
	ListenAddr string
	// PXEAddr of the proxy-mode boot server socket; default ":4011"; "-" disables.
	PXEAddr string
	// GRPC is the admin API server; default address ":9082".
	GRPC grpcserver.Config
	// HTTPAddr serves /metrics, /healthz and /readyz (operators and probes
	// only; docs/dhcpd.md); default ":9182"; "-" disables.
	HTTPAddr string
	// ServerIP is the server identifier and default next-server; default the
	// interface's first IPv4 address, else Advertise.
	ServerIP string
	// Advertise is this host's address as machines reach it: the default of the
	// site's bootapi, artifactstore and tftpd addresses.
	Advertise string
	// Name of this replica, written into leases; default the host name.
	Name string
	// Workers answering packets concurrently; default 512.
	Workers int
	// ReplyBurst is the most replies sent back to back; beyond it replies are
	// paced by arriving requests (server's pacer explains why). 0 sends without
	// pacing. Default 16.
	ReplyBurst int
	// LeaseWriters bounds the etcd transactions in flight; default 4: 2 and 8
	// were no faster (docs/benchmarks-history.md).
	LeaseWriters int
	// LeaseBatch is the most lease writes per transaction; default 128.
	LeaseBatch int
	// OfferHold is how long an offered address is held; default 30s.
	OfferHold time.Duration
	// ReclaimInterval is how often expired leases are reclaimed; default 10s.
	ReclaimInterval time.Duration
	// ChainloadWindow: see server.Config; default 2m.
	ChainloadWindow time.Duration
	// LimitPerMAC and LimitPerIP bound the packets of one client MAC and of one
	// source address (a relay, or 0.0.0.0 for the unconfigured clients of the
	// local segment); beyond them packets are dropped and counted. Zero limits
	// are off. See docs/dhcpd.md for sizing.
	LimitPerMAC, LimitPerIP ratelimit.Limit
	// DataDir holds the journal of leases renewed while etcd could not commit
	// (docs/dhcpd.md, "Cut off from etcd"); empty: no renewals then.
	DataDir string
	// OfflineGrace keeps every bound lease from other clients this long past
	// its expiry, and bounds the renewals granted while etcd cannot commit;
	// default 1h, negative: none.
	OfflineGrace time.Duration
	// ReachInterval is how often etcd is probed (store.Reach); default 1s.
	ReachInterval time.Duration
	// Seed is written as the site's DHCP settings when the site has none.
	Seed *bootapiv1.SiteDhcp
	// DHCPv6Pool, "start-end" of IPv6 addresses, turns DHCPv6 on (on
	// Interface, which it needs); empty: IPv4 only. See docs/dhcpd.md.
	DHCPv6Pool string
	// DHCPv6Port is the DHCPv6 server port; default 547.
	DHCPv6Port int
	// Advertise6 is this host's IPv6 address as IPv6 clients reach it (the
	// host of their boot URLs); default the interface's address in the pool's
	// prefix.
	Advertise6 string
	// TracerProvider for boot-session hops; default the global one.
	TracerProvider trace.TracerProvider
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Audit records the gRPC API's writes and refused calls; nil: a log of its
	// own on Store, with the default retention.
	Audit *audit.Log
}

// The default rate limits. Per MAC: a machine's whole boot (firmware, iPXE,
// chain-loaded iPXE, installer, each DISCOVER and REQUEST with retransmissions,
// twice when two relays forward each broadcast) stays within the burst, and no
// client retransmits faster than the rate. Per source address: about 2,000
// machines behind one relay, or unconfigured on one segment (they all send
// from 0.0.0.0), powering on together (about 8 packets each within their first
// seconds) stay within the burst, and the rate is far above what a site
// sustains.
var (
	DefaultLimitPerMAC = ratelimit.Limit{Rate: 5, Burst: 40}
	DefaultLimitPerIP  = ratelimit.Limit{Rate: 1000, Burst: 16000}
)

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Site: "default", ListenAddr: ":67", PXEAddr: ":4011", GRPC: grpcserver.Config{Addr: ":9082"}, HTTPAddr: ":9182",
		Workers: 512, ReplyBurst: 16, LeaseWriters: 4, LeaseBatch: 128, OfferHold: 30 * time.Second,
		ReclaimInterval: 10 * time.Second, ChainloadWindow: 2 * time.Minute,
		LimitPerMAC: DefaultLimitPerMAC, LimitPerIP: DefaultLimitPerIP,
		OfflineGrace: time.Hour, ReachInterval: time.Second,
	}
}

// Component is dhcpd as its binary and the launcher run it: its flags and the
// site's seed settings ("dhcpd-" in the launcher), and New from them.
func Component() daemon.Component {
	cfg := DefaultConfig()
	var seed SeedFlags
	return daemon.Component{
		Name: "dhcpd", Advertise: true, DataDir: "/var/lib/bootchain/dhcpd",
		AddFlags: func(fs *flag.FlagSet, prefix string) {
			cfg.AddFlags(fs, prefix)
			seed.AddFlags(fs, prefix)
		},
		New: func(ctx context.Context, env *daemon.Env) (daemon.Service, error) {
			c := cfg
			var err error
			if c.Seed, err = seed.Seed(); err != nil {
				return nil, fmt.Errorf("dhcpd flags: %w", err)
			}
			if env.Advertise != "" {
				c.Advertise = env.Advertise
			}
			c.Store, c.Logger, c.Site, c.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("dhcpd")
			c.Audit, c.DataDir = env.Audit, env.DataDir
			return New(c)
		},
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("dhcpd: no store")
	}
	if c.Site == "" {
		return errors.New("dhcpd: no site")
	}
	if c.ServerIP != "" {
		if a, err := netip.ParseAddr(c.ServerIP); err != nil || !a.Is4() {
			return fmt.Errorf("dhcpd: server IP %q: want an IPv4 address", c.ServerIP)
		}
	}
	if c.Advertise != "" {
		if _, err := netip.ParseAddr(c.Advertise); err != nil {
			return fmt.Errorf("dhcpd: advertise %q: want an IP address", c.Advertise)
		}
	}
	if c.Workers < 0 || c.ReplyBurst < 0 || c.LeaseWriters < 0 || c.LeaseBatch < 0 || c.LeaseBatch > 128 {
		return errors.New("dhcpd: workers, lease writers and batch (<= 128) must not be negative")
	}
	if c.DHCPv6Pool != "" {
		if _, err := dhcp6.ParsePool(c.DHCPv6Pool); err != nil {
			return fmt.Errorf("dhcpd: DHCPv6 %w", err)
		}
	}
	if c.Seed != nil {
		if _, err := server.Compile(&bootapiv1.Site{Dhcp: c.Seed}, server.Defaults{}); err != nil {
			return fmt.Errorf("dhcpd: seed: %w", err)
		}
	}
	return nil
}

// Server is a running dhcpd.
type Server struct {
	cfg      Config
	log      *slog.Logger
	conn     *net.UDPConn
	pxe      *net.UDPConn
	grpc     *grpcserver.Server
	writer   *lease.EtcdWriter
	alloc    *lease.Allocator
	reach    *store.Reach
	journal  *journal.Journal
	handler  *server.Handler
	rec      *session.Recorder
	leases   *store.Cache[*dhcpdv1.Lease]
	blocks   *store.Cache[*dhcpdv1.OfferBlock]
	sites    *store.Cache[*bootapiv1.Site]
	machines *store.Cache[*bootapiv1.Machine]
	defaults server.Defaults

	ready chan struct{}
	ra    *ra.Responder
	v6    *v6
	reg   *prometheus.Registry
	boots *opshttp.Boots
	ops   *opshttp.Server
}

// New opens the sockets and prepares the server; Run serves.
func New(cfg Config) (*Server, error) {
	def := DefaultConfig()
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = def.ListenAddr
	}
	if cfg.PXEAddr == "" {
		cfg.PXEAddr = def.PXEAddr
	}
	if cfg.GRPC.Addr == "" {
		cfg.GRPC.Addr = def.GRPC.Addr
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = def.HTTPAddr
	}
	if cfg.OfferHold == 0 {
		cfg.OfferHold = def.OfferHold
	}
	if cfg.ReclaimInterval == 0 {
		cfg.ReclaimInterval = def.ReclaimInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OfflineGrace == 0 {
		cfg.OfflineGrace = def.OfflineGrace
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("service", "dhcpd", "site", cfg.Site)
	local, err := localPrefixes(cfg.Interface)
	if err != nil {
		return nil, err
	}
	serverIP := netip.Addr{}
	if cfg.ServerIP != "" {
		serverIP = netip.MustParseAddr(cfg.ServerIP)
	} else if cfg.Interface != "" && len(local) > 0 {
		serverIP = local[0].Addr()
	} else if a, err := netip.ParseAddr(cfg.Advertise); err == nil && a.Is4() && !a.IsLoopback() {
		serverIP = a
	}
	adv, _ := netip.ParseAddr(cfg.Advertise)
	if !adv.IsValid() {
		adv = serverIP
	}
	s := &Server{cfg: cfg, log: log, defaults: server.Defaults{Advertise: adv}, ready: make(chan struct{})}
	built := false
	defer func() {
		if !built && s.journal != nil {
			s.journal.Close()
		}
	}()
	s.writer = lease.NewEtcdWriter(cfg.Store, cfg.Site, cfg.LeaseWriters, cfg.LeaseBatch)
	s.writer.Logger = log
	s.reach = store.NewReach(cfg.Store, cfg.ReachInterval, log)
	lcfg := lease.Config{Site: cfg.Site, Server: cfg.Name, Writer: s.writer, OfferHold: cfg.OfferHold, OfflineGrace: max(cfg.OfflineGrace, 0)}
	if cfg.DataDir != "" {
		if s.journal, err = journal.Open(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("dhcpd: %w", err)
		}
		if n := s.journal.Damaged(); n > 0 {
			log.Warn("offline-renewal journal had damaged lines; skipped", "lines", n)
		}
		lcfg.Journal = s.journal
	}
	s.alloc = lease.New(lcfg)
	s.boots = opshttp.NewBoots("dhcpd")
	s.rec, err = session.New(session.Config{Store: cfg.Store, Service: "dhcpd", Site: cfg.Site, TracerProvider: cfg.TracerProvider, Logger: cfg.Logger,
		OnHop: s.boots.OnHop, OnFinish: s.boots.OnFinish})
	if err != nil {
		return nil, err
	}
	s.leases = store.NewCache(cfg.Store, store.Prefix("leases", cfg.Site), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} }, log)
	s.blocks = store.NewCache(cfg.Store, store.Prefix("offerblocks", cfg.Site), func() *dhcpdv1.OfferBlock { return &dhcpdv1.OfferBlock{} }, log)
	s.blocks.OnEvent(func(ev store.Event[*dhcpdv1.OfferBlock]) {
		s.alloc.ApplyBlock(ev.Name, ev.Value, ev.ModRevision, ev.Deleted)
	})
	s.sites = store.NewCache(cfg.Store, store.Prefix("sites"), func() *bootapiv1.Site { return &bootapiv1.Site{} }, log)
	s.machines = store.NewCache(cfg.Store, store.Prefix("machines"), func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, log)
	s.handler = server.New(server.Config{
		Site: cfg.Site, ServerIP: serverIP, Local: local, Alloc: s.alloc, Sessions: s.rec,
		ChainloadWindow: cfg.ChainloadWindow, Logger: log, Machines: s.machine,
		PerMAC: cfg.LimitPerMAC, PerIP: cfg.LimitPerIP, Offline: s.offline,
	})

	udp, err := net.ResolveUDPAddr("udp4", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("dhcpd: listen address %q: %w", cfg.ListenAddr, err)
	}
	if s.conn, err = server4.NewIPv4UDPConn(cfg.Interface, udp); err != nil {
		return nil, fmt.Errorf("dhcpd: listen %s on %q: %w", cfg.ListenAddr, cfg.Interface, err)
	}
	if cfg.PXEAddr != "-" {
		pa, err := net.ResolveUDPAddr("udp4", cfg.PXEAddr)
		if err != nil {
			s.conn.Close()
			return nil, fmt.Errorf("dhcpd: PXE address %q: %w", cfg.PXEAddr, err)
		}
		if s.pxe, err = server4.NewIPv4UDPConn(cfg.Interface, pa); err != nil {
			s.conn.Close()
			return nil, fmt.Errorf("dhcpd: listen %s: %w", cfg.PXEAddr, err)
		}
	}
	if cfg.Interface != "" {
		// Opened now, in the caller's network namespace; the site's
		// router_advertisements flag decides per solicitation whether to answer.
		if s.ra, err = ra.Listen(cfg.Interface, log); err != nil {
			log.Info("no IPv6 router-advertisement responder", "err", err)
			s.ra = nil
		}
	}
	if cfg.DHCPv6Pool != "" {
		if s.v6, err = s.newV6(); err != nil {
			s.closeSockets()
			return nil, err
		}
	}
	gcfg := cfg.GRPC
	if gcfg.Logger == nil {
		gcfg.Logger = log
	}
	if gcfg.Audit = cfg.Audit; cfg.Audit == nil {
		if gcfg.Audit, err = audit.New(audit.Config{Store: cfg.Store, Logger: log}); err != nil {
			s.closeSockets()
			return nil, err
		}
	}
	if gcfg.Auth == nil {
		gcfg.Auth = auth.NewAuthenticator(cfg.Store, log)
	}
	if s.grpc, err = grpcserver.New(gcfg); err != nil {
		s.closeSockets()
		return nil, err
	}
	if s.reg, err = s.newRegistry(); err != nil {
		s.closeSockets()
		s.grpc.Close()
		return nil, fmt.Errorf("dhcpd: metrics: %w", err)
	}
	if cfg.HTTPAddr != "-" {
		if s.ops, err = opshttp.Listen(cfg.HTTPAddr, opshttp.Handler(s.reg, s.readyErr)); err != nil {
			s.closeSockets()
			s.grpc.Close()
			return nil, fmt.Errorf("dhcpd: %w", err)
		}
	}
	dhcpdv1.RegisterLeaseServiceServer(s.grpc.GRPC, &admin.Server{Site: cfg.Site, Store: cfg.Store, Leases: s.leases, Alloc: s.alloc})
	built = true
	return s, nil
}

func (s *Server) closeSockets() {
	s.conn.Close()
	if s.v6 != nil {
		s.v6.conn.Close()
	}
	if s.ra != nil {
		s.ra.Close()
	}
	if s.pxe != nil {
		s.pxe.Close()
	}
}

// localPrefixes are the IPv4 addresses of iface (of every interface when empty).
func localPrefixes(iface string) ([]netip.Prefix, error) {
	var addrs []net.Addr
	var err error
	if iface != "" {
		ifi, ierr := net.InterfaceByName(iface)
		if ierr != nil {
			return nil, fmt.Errorf("dhcpd: interface %q: %w", iface, ierr)
		}
		addrs, err = ifi.Addrs()
	} else {
		addrs, err = net.InterfaceAddrs()
	}
	if err != nil {
		return nil, fmt.Errorf("dhcpd: addresses of %q: %w", iface, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP.To4())
		ones, _ := ipn.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

// Endpoints says where the server listens.
func (s *Server) Endpoints() []string {
	on := s.cfg.Interface
	if on == "" {
		on = "all interfaces"
	}
	out := []string{fmt.Sprintf("dhcp udp %s on %s", s.conn.LocalAddr(), on)}
	if s.pxe != nil {
		out = append(out, fmt.Sprintf("pxe udp %s", s.pxe.LocalAddr()))
	}
	if s.v6 != nil {
		out = append(out, fmt.Sprintf("dhcpv6 udp %s on %s", s.v6.conn.LocalAddr(), on))
	}
	if s.ops != nil {
		out = append(out, "http "+s.ops.Addr().String())
	}
	return append(out, "grpc "+s.grpc.Addr().String())
}

// HTTPAddr is the address of /metrics, /healthz and /readyz (nil when disabled).
func (s *Server) HTTPAddr() net.Addr {
	if s.ops == nil {
		return nil
	}
	return s.ops.Addr()
}

// Metrics is the registry served on /metrics.
func (s *Server) Metrics() *prometheus.Registry { return s.reg }

// readyErr is /readyz: ready once the caches are loaded, the leases applied
// and the sockets serve (Ready).
func (s *Server) readyErr() error {
	select {
	case <-s.ready:
		return nil
	default:
		return errors.New("loading the site, machines and leases from etcd")
	}
}

// GRPCAddr is the admin API's listening address.
func (s *Server) GRPCAddr() net.Addr { return s.grpc.Addr() }

// DHCPAddr is the DHCP socket's address.
func (s *Server) DHCPAddr() net.Addr { return s.conn.LocalAddr() }

// Ready is closed once the caches are loaded and packets are answered.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Stats is a snapshot of a dhcpd's counters.
type Stats struct {
	// Received packets and Replied answers.
	Received, Replied uint64
	// Messages received, by type.
	Discovers, Requests, Releases, Declines, Informs uint64
	// Replies sent, by type.
	Offers, Acks, Naks uint64
	// Packets dropped, by why.
	Malformed, WrongOp, BadHardware, NoMessageType, NoSubnet, NotForUs, NotPXE, UnknownRelay, Unsupported, Overrun uint64
	// Packets dropped by the per-MAC and per-IP rate limits, and recovered
	// panics: packets whose handling panicked (dropped) and lease transactions
	// that did (their writes failed; the clients retransmit).
	LimitedMAC, LimitedIP, Panics uint64
	// Requests left unanswered: no address free, or etcd failed, or etcd was
	// unreachable and the client held no lease to renew.
	Exhausted, StoreErrors, OfflineRefused uint64
	// OfflineRenewals are leases renewed while etcd was unreachable; Replayed,
	// ReplayCurrent and ReplayConflicts what became of them once it was back
	// (written; etcd had them or newer; another lease won).
	OfflineRenewals, Replayed, ReplayCurrent, ReplayConflicts uint64
	// LeaseTxns and LeaseWrites are the etcd transactions and lease writes
	// committed.
	LeaseTxns, LeaseWrites uint64
	// RA says the IPv6 router-advertisement responder runs (an interface with
	// IPv6); the solicitations it answered or ignored, and its advertisements.
	RA                                                                    bool
	RouterSolicitations, RouterSolicitationsIgnored, RouterAdvertisements uint64
}

// Stats returns the counters as they are now.
func (s *Server) Stats() Stats {
	h := &s.handler.Stats
	st := Stats{
		Received: h.Received.Load(), Replied: h.Replied.Load(),
		Discovers: h.Discovers.Load(), Requests: h.Requests.Load(), Releases: h.Releases.Load(), Declines: h.Declines.Load(), Informs: h.Informs.Load(),
		Offers: h.Offers.Load(), Acks: h.Acks.Load(), Naks: h.Naks.Load(),
		Malformed: h.Malformed.Load(), WrongOp: h.WrongOp.Load(), BadHardware: h.BadHardware.Load(), NoMessageType: h.NoMessageType.Load(),
		NoSubnet: h.NoSubnet.Load(), NotForUs: h.NotForUs.Load(), NotPXE: h.NotPXE.Load(), UnknownRelay: h.UnknownRelay.Load(),
		Unsupported: h.Unsupported.Load(), Overrun: h.Overrun.Load(),
		Exhausted: h.Exhausted.Load(), StoreErrors: h.StoreErrors.Load(), OfflineRefused: h.OfflineRefused.Load(),
		OfflineRenewals: s.alloc.Offline.Renewals.Load(), Replayed: s.alloc.Offline.Replayed.Load(),
		ReplayCurrent: s.alloc.Offline.Current.Load(), ReplayConflicts: s.alloc.Offline.Conflicts.Load(),
		LimitedMAC: h.LimitedMAC.Load(), LimitedIP: h.LimitedIP.Load(), Panics: h.Panics.Load(),
	}
	st.LeaseTxns, st.LeaseWrites = s.writer.Stats()
	st.Panics += s.writer.Panics.Load()
	if s.ra != nil {
		st.RA = true
		st.RouterSolicitations = s.ra.Stats.Solicitations.Load()
		st.RouterSolicitationsIgnored = s.ra.Stats.Ignored.Load()
		st.RouterAdvertisements = s.ra.Stats.Advertisements.Load()
	}
	return st
}

// offline reports that etcd cannot commit: only held leases are renewed.
func (s *Server) offline() bool { return s.journal != nil && !s.reach.Online() }

// Offline reports whether dhcpd serves as cut off from etcd (its probe of
// etcd fails and it has a journal).
func (s *Server) Offline() bool { return s.offline() }

// JournalLen is the number of offline renewals not yet replayed into etcd.
func (s *Server) JournalLen() int {
	if s.journal == nil {
		return 0
	}
	return s.journal.Len()
}

// replayEvery is how often replay retries records etcd did not take.
const replayEvery = 5 * time.Second

// replay writes the journaled offline renewals into etcd whenever etcd
// commits: at once when it comes back, then every replayEvery while records
// are left (etcd failed for them).
func (s *Server) replay(ctx context.Context) error {
	if s.journal == nil {
		return nil
	}
	t := time.NewTicker(replayEvery)
	defer t.Stop()
	for {
		changed := s.reach.Changed()
		if s.reach.Online() && s.journal.Len() > 0 {
			n := s.journal.Len()
			left, err := s.alloc.ReplayJournal(ctx, s.journal, func(rec, winner *dhcpdv1.Lease) {
				s.log.Warn("offline renewal dropped: a newer lease holds the address", "ip", rec.GetIp(), "mac", rec.GetMac(),
					"winner_mac", winner.GetMac(), "winner_server", winner.GetServer())
			})
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Warn("offline renewals not all replayed; retrying", "left", left, "err", err)
			case err == nil:
				s.log.Info("offline renewals replayed into etcd", "records", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

// Sessions is the boot-session recorder (for tests: Flush).
func (s *Server) Sessions() *session.Recorder { return s.rec }

func (s *Server) machine(mac string) *bootapiv1.Machine {
	it, ok := s.machines.Get(mac)
	if !ok {
		return nil
	}
	site := it.Value.GetSite()
	if site == "" {
		site = "default"
	}
	if site != s.cfg.Site {
		return nil
	}
	return it.Value
}

// Run serves until ctx ends; it returns nil after a clean stop. It stops in the
// order every service does: the sockets stop taking packets and the answers in
// flight finish, the offer blocks are given back, the session recorder flushes,
// and the lease writer closes last, so every answer sent has its lease written.
func (s *Server) Run(ctx context.Context) error {
	run := lifecycle.New(ctx)
	writes := run.Layer()
	writes.Go(s.writer.Run)
	writes.Go(s.reach.Run)
	if s.journal != nil {
		writes.OnStop(func() { s.journal.Close() })
	}
	for _, c := range []func(context.Context) error{s.leases.Run, s.blocks.Run, s.sites.Run, s.machines.Run} {
		writes.Go(c)
	}
	if s.v6 != nil {
		writes.Go(s.v6.cache.Run)
	}
	record := run.Layer()
	record.Go(s.rec.Run)
	// Stopped (or failed) before serving: the sockets Serve would close.
	if s.ops != nil {
		// Up from the start: /healthz answers and /readyz says 503 while the
		// caches load. It stops after the packet sockets.
		run.Layer().Go(s.ops.Serve)
	}
	stopUnserved := func(err error) error {
		s.closeSockets()
		s.grpc.Close()
		return run.Stop(err)
	}

	seedRev, err := s.seed(run.Stopping())
	if err != nil {
		return stopUnserved(err)
	}
	for _, w := range []func(context.Context) error{s.leases.WaitReady, s.blocks.WaitReady, s.sites.WaitReady, s.machines.WaitReady, s.rec.WaitReady} {
		if w(run.Stopping()) != nil {
			return stopUnserved(nil)
		}
	}
	// The site cache must show our own seed before the first packet.
	if s.sites.WaitRevision(run.Stopping(), seedRev) != nil {
		return stopUnserved(nil)
	}
	s.applySite()

	derive := run.Layer()
	// Give the offer blocks back so other replicas need not wait for the claims
	// to run out; the offers made from them end with this process.
	derive.OnStop(s.releaseBlocks)
	// Until the allocator has the leases etcd holds it would offer taken
	// addresses: the first snapshot is applied before the first packet.
	leasesLoaded := make(chan struct{})
	derive.Go(func(ctx context.Context) error { return s.feedLeases(ctx, leasesLoaded) })
	derive.Go(s.replay)
	derive.Go(s.watchSites)
	derive.Go(s.watchMachines)
	select {
	case <-leasesLoaded:
	case <-run.Stopping().Done():
		return stopUnserved(nil)
	}
	if s.v6 != nil {
		loaded6 := make(chan struct{})
		derive.Go(func(ctx context.Context) error { return s.v6.feedLeases(ctx, loaded6) })
		select {
		case <-loaded6:
		case <-run.Stopping().Done():
			return stopUnserved(nil)
		}
	}

	serve := run.Layer()
	serve.Go(s.reclaim)
	serve.Go(s.grpc.Serve)
	serve.Go(func(ctx context.Context) error {
		return server.Serve(ctx, s.conn, server.ServerPort, s.handler, s.cfg.Workers, s.cfg.ReplyBurst)
	})
	if s.pxe != nil {
		serve.Go(func(ctx context.Context) error {
			return server.Serve(ctx, s.pxe, server.PXEPort, s.handler, 64, s.cfg.ReplyBurst)
		})
	}
	if s.ra != nil {
		serve.Go(func(ctx context.Context) error {
			// DHCPv6 needs the managed flag: advertisements are sent then
			// whatever the site's router_advertisements says.
			return s.ra.Run(ctx, func() bool { return s.v6 != nil || s.handler.SiteConfig().RA }, s.managed)
		})
	}
	if s.v6 != nil {
		serve.Go(func(ctx context.Context) error { return dhcp6.Serve(ctx, s.v6.conn, s.v6.handler, 64) })
	}
	s.log.Info("dhcpd serving", "endpoints", s.Endpoints())
	close(s.ready)
	err = run.Wait()
	s.log.Info("dhcpd stopped", "stats", fmt.Sprintf("%+v", s.Stats()))
	return err
}

func (s *Server) releaseBlocks() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.alloc.ReleaseBlocks(ctx); err != nil {
		s.log.Warn("offer blocks not given back; they free themselves when their claims run out", "err", err)
	}
}

// seed writes Config.Seed as the site's DHCP settings when it has none.
func (s *Server) seed(ctx context.Context) (int64, error) {
	if s.cfg.Seed == nil {
		return 0, nil
	}
	_, rev, err := store.Mutate(ctx, s.cfg.Store, store.Key("sites", s.cfg.Site), func() *bootapiv1.Site { return &bootapiv1.Site{} },
		func(cur *bootapiv1.Site, exists bool) (*bootapiv1.Site, error) {
			if exists && len(cur.GetDhcp().GetSubnets()) > 0 {
				return cur, nil
			}
			if !exists {
				cur.Name = s.cfg.Site
			}
			cur.Dhcp = proto.Clone(s.cfg.Seed).(*bootapiv1.SiteDhcp)
			cur.UpdateTime = timestamppb.Now()
			return cur, nil
		})
	if err != nil {
		return 0, fmt.Errorf("dhcpd: seed site %s: %w", s.cfg.Site, err)
	}
	return rev, nil
}

func (s *Server) applySite() {
	it, _ := s.sites.Get(s.cfg.Site)
	sc, err := server.Compile(it.Value, s.defaults)
	if err != nil {
		s.log.Error("site DHCP settings rejected; keeping the previous ones", "err", err)
		return
	}
	s.handler.SetSite(sc)
}

func (s *Server) watchSites(ctx context.Context) error {
	return s.sites.Follow(ctx, 64, func([]store.Item[*bootapiv1.Site]) error {
		// Anything that changed before the subscription is in the cache already.
		s.applySite()
		return nil
	}, func(batch []store.Event[*bootapiv1.Site]) error {
		for _, ev := range batch {
			if ev.Name == s.cfg.Site {
				s.applySite()
				break
			}
		}
		return nil
	})
}

func (s *Server) watchMachines(ctx context.Context) error {
	// A burst of changes comes as one batch: one recomputation.
	return s.machines.Follow(ctx, 1024,
		func([]store.Item[*bootapiv1.Machine]) error { s.reservations(); return nil },
		func([]store.Event[*bootapiv1.Machine]) error { s.reservations(); return nil })
}

func (s *Server) reservations() {
	r := map[netip.Addr]string{}
	for _, it := range s.machines.List(nil) {
		if s.machine(it.Name) == nil || it.Value.GetIpv4Address() == "" {
			continue
		}
		if a, err := netip.ParseAddr(it.Value.GetIpv4Address()); err == nil && a.Is4() {
			r[a] = it.Value.GetMac()
		}
	}
	s.alloc.SetReservations(r)
}

// feedLeases keeps the allocator's view of the leases etcd holds; loaded is
// closed once the first snapshot is applied.
func (s *Server) feedLeases(ctx context.Context, loaded chan<- struct{}) error {
	return followLeases(ctx, s.leases, 1<<16, s.alloc.Apply, loaded)
}

// followLeases feeds apply from c: its snapshot (then loaded is closed) and
// every change after it.
func followLeases(ctx context.Context, c *store.Cache[*dhcpdv1.Lease], buf int, apply func(string, *dhcpdv1.Lease, int64, bool), loaded chan<- struct{}) error {
	first := true
	return c.Follow(ctx, buf, func(snap []store.Item[*dhcpdv1.Lease]) error {
		for _, it := range snap {
			apply(it.Name, it.Value, it.ModRevision, false)
		}
		if first {
			first = false
			close(loaded)
		}
		return nil
	}, func(batch []store.Event[*dhcpdv1.Lease]) error {
		for _, ev := range batch {
			apply(ev.Name, ev.Value, ev.ModRevision, ev.Deleted)
		}
		return nil
	})
}

func (s *Server) reclaim(ctx context.Context) error {
	t := time.NewTicker(s.cfg.ReclaimInterval)
	defer t.Stop()
	// Offer blocks are renewed well before a claim gets too short to offer from.
	bt := time.NewTicker(s.cfg.OfferHold / 3)
	defer bt.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-bt.C:
			if err := s.alloc.MaintainBlocks(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("offer blocks not renewed", "err", err)
			}
		case <-t.C:
			if n := s.alloc.Reclaim(ctx, 4096); n > 0 {
				s.log.Debug("expired leases reclaimed", "count", n)
			}
		}
	}
}
