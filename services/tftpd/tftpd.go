// Package tftpd serves the iPXE binaries (and other boot files) over TFTP for one
// site, from artifactstore through a local disk cache.
//
// Read requests on UDP 69 are checked (path, mode, options, caps on concurrent and
// per-client transfers) before pin/tftp serves them; writes are refused. Files come
// from artifactstore's gRPC Read stream and are cached on disk by sha256, verified
// before first use, refreshed when etcd reports the artifact changed and served from
// the cache while artifactstore is unreachable. Each transfer is a "tftp" hop of the
// client's boot session. A gRPC admin API (bootchain.tftpd.v1) lists and evicts the
// cache and reports transfer statistics.
//
//	cfg := tftpd.DefaultConfig()
//	cfg.Store, cfg.DataDir = st, "/var/lib/bootchain/tftpd"
//	srv, err := tftpd.New(cfg)
//	err = srv.Run(ctx)
package tftpd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/bootchain/bootchain/pkg/daemon"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/lifecycle"
	"github.com/bootchain/bootchain/pkg/opshttp"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/tftpd/internal/admin"
	"github.com/bootchain/bootchain/services/tftpd/internal/cache"
	"github.com/bootchain/bootchain/services/tftpd/internal/filemap"
	"github.com/bootchain/bootchain/services/tftpd/internal/source"
	"github.com/bootchain/bootchain/services/tftpd/internal/transfer"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Config configures tftpd.
type Config struct {
	// Addr is the TFTP request port (UDP).
	Addr string
	// GRPC is the admin API server (default address ":9083"); an empty Addr
	// disables it.
	GRPC grpcserver.Config
	// HTTPAddr serves /metrics, /healthz and /readyz (operators and probes
	// only; docs/tftpd.md); default ":9183"; empty or "-" disables.
	HTTPAddr string
	// ArtifactStore is artifactstore's gRPC address.
	ArtifactStore string
	// ArtifactStoreTLS are the client TLS files for artifactstore.
	ArtifactStoreTLS tlsconf.Files
	// ArtifactStoreToken is the bearer token tftpd presents to artifactstore
	// (role service), unless its client certificate names it.
	ArtifactStoreToken string
	// ArtifactStoreTokenFile holds ArtifactStoreToken (read at New when the
	// token is not given).
	ArtifactStoreTokenFile string
	// BootAPI is bootapi's gRPC address, asked for GRUB's per-machine
	// configs (docs/tftpd.md, "GRUB"); empty or "-": tftpd serves no GRUB
	// names.
	BootAPI string
	// BootAPITLS are the client TLS files for bootapi.
	BootAPITLS tlsconf.Files
	// BootAPIToken is the bearer token (role service) presented to bootapi,
	// unless its client certificate names tftpd; default ArtifactStoreToken.
	BootAPIToken string
	// BootAPITokenFile holds BootAPIToken.
	BootAPITokenFile string
	// DataDir holds the cache (blobs/ and index.json). Required.
	DataDir string
	// Site this tftpd serves; its file map is read from tftp/<site>/map.
	Site string
	// Map is the file-name map from the command line: "name=artifact,prefix*=artprefix".
	// The etcd map is laid over it; the well-known iPXE names map to themselves.
	Map string
	// SinglePort serves every transfer from the request port (NAT, firewalls).
	SinglePort bool
	// MaxBlksize caps the negotiated blksize; the interface MTU caps it too.
	MaxBlksize int
	// Timeout waiting for an ACK before sending a packet again.
	Timeout time.Duration
	// Retries: sends of one packet before a transfer fails.
	Retries int
	// MaxTransfers caps concurrent transfers; 0 means no cap.
	MaxTransfers int
	// MaxPerClient caps concurrent transfers per client IP; 0 means no cap.
	MaxPerClient int
	// LimitPerIP bounds the read requests one client IP may send (zero: off);
	// requests over it are dropped and counted. See docs/tftpd.md for sizing.
	LimitPerIP ratelimit.Limit
	// FetchTimeout bounds fetching an artifact that is not cached.
	FetchTimeout time.Duration
	// RefreshWait bounds how long a request for a changed artifact waits for the new
	// content before the cached one is served.
	RefreshWait time.Duration
	// Warm fetches the mapped artifacts at start.
	Warm bool
	// Anticipate > 1 is the sender window: that many blocks are sent before
	// waiting for their ACKs, taken cumulatively; after a timeout the sender
	// resends the first unacknowledged block and walks the rest lock-step
	// (pin/tftp's "anticipate" sender with bootchain's go-back-N patch,
	// third_party/pin-tftp). Not RFC 7440: no windowsize is negotiated, and
	// lock-step clients need none. 0 is lock-step, as RFC 1350. Default 8.
	Anticipate int

	// Store is the etcd store (sessions, file map, artifact watch). Required.
	Store *store.Store
	// TracerProvider for transfer spans; default otel's global.
	TracerProvider trace.TracerProvider
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Audit records the gRPC API's writes and refused calls; nil: a log of its
	// own on Store, with the default retention.
	Audit *audit.Log
	// Source overrides the artifactstore client (tests).
	Source source.Source
}

// DefaultConfig returns the defaults: TFTP on :69, admin on :9083,
// artifactstore on 127.0.0.1:9081.
func DefaultConfig() Config {
	return Config{
		Addr: ":69", GRPC: grpcserver.Config{Addr: ":9083"}, HTTPAddr: ":9183", ArtifactStore: "127.0.0.1:9081", BootAPI: "127.0.0.1:9080", Site: "default",
		MaxBlksize: 1468, Timeout: time.Second, Retries: 5, MaxTransfers: 4096, MaxPerClient: 8, Anticipate: 8,
		FetchTimeout: 20 * time.Second, RefreshWait: time.Second, Warm: true,
		LimitPerIP: DefaultLimitPerIP,
	}
}

// DefaultLimitPerIP: a machine asks for a file 2 to 4 times (UEFI's tsize
// probe, retransmissions, a second file), and a site behind one NAT address
// may boot hundreds at once: they stay within the burst; the rate is far above
// any site's sustained need.
var DefaultLimitPerIP = ratelimit.Limit{Rate: 200, Burst: 2000}

// AddFlags binds the configuration to flags named prefix+name ("tftpd-" in the
// launcher, "" in the tftpd binary).
func (c *Config) AddFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.Addr, prefix+"addr", c.Addr, "TFTP listen address (UDP)")
	fs.StringVar(&c.GRPC.Addr, prefix+"grpc-addr", c.GRPC.Addr, "gRPC admin API address")
	c.GRPC.AddFlags(fs, prefix+"grpc-")
	fs.StringVar(&c.HTTPAddr, prefix+"http-addr", c.HTTPAddr, "address of /metrics, /healthz and /readyz (- disables)")
	fs.StringVar(&c.ArtifactStore, prefix+"artifactstore", c.ArtifactStore, "artifactstore gRPC address")
	c.ArtifactStoreTLS.AddClientFlags(fs, prefix+"artifactstore-")
	fs.StringVar(&c.ArtifactStoreTokenFile, prefix+"artifactstore-token-file", c.ArtifactStoreTokenFile, "file holding the bearer token (role service) presented to artifactstore")
	fs.StringVar(&c.BootAPI, prefix+"bootapi", c.BootAPI, "bootapi gRPC address, asked for GRUB's per-machine configs (- disables the GRUB names)")
	c.BootAPITLS.AddClientFlags(fs, prefix+"bootapi-")
	fs.StringVar(&c.BootAPITokenFile, prefix+"bootapi-token-file", c.BootAPITokenFile, "file holding the bearer token (role service) presented to bootapi (default: the artifactstore one)")
	fs.StringVar(&c.Map, prefix+"map", c.Map, "file-name map: name=artifact,... (a name ending in * maps a prefix); laid under the etcd map tftp/<site>/map")
	fs.BoolVar(&c.SinglePort, prefix+"single-port", c.SinglePort, "serve every transfer from the request port (NAT/firewalled sites)")
	fs.IntVar(&c.MaxBlksize, prefix+"max-blksize", c.MaxBlksize, "largest blksize offered (the interface MTU caps it too)")
	fs.DurationVar(&c.Timeout, prefix+"timeout", c.Timeout, "wait for an ACK before sending a packet again")
	fs.IntVar(&c.Retries, prefix+"retries", c.Retries, "sends of one packet before a transfer fails")
	fs.IntVar(&c.MaxTransfers, prefix+"max-transfers", c.MaxTransfers, "cap on concurrent transfers (0: none)")
	fs.IntVar(&c.MaxPerClient, prefix+"max-per-client", c.MaxPerClient, "cap on concurrent transfers per client IP (0: none)")
	fs.Var(&c.LimitPerIP, prefix+"limit-per-ip", "read requests one client IP may send: RATE/s,BURST, or off (over it: dropped and counted)")
	fs.DurationVar(&c.FetchTimeout, prefix+"fetch-timeout", c.FetchTimeout, "bound on fetching an artifact that is not cached")
	fs.DurationVar(&c.RefreshWait, prefix+"refresh-wait", c.RefreshWait, "wait for a changed artifact before serving the cached copy")
	fs.BoolVar(&c.Warm, prefix+"warm", c.Warm, "fetch the mapped artifacts at start")
	fs.IntVar(&c.Anticipate, prefix+"anticipate", c.Anticipate, "sender window: blocks sent before waiting for their ACKs (0: lock-step); see docs/tftpd.md")
}

// Component is tftpd as its binary and the launcher run it: its flags
// ("tftpd-" in the launcher) and New from them.
func Component() daemon.Component {
	cfg := DefaultConfig()
	return daemon.Component{
		Name: "tftpd", DataDir: "/var/lib/bootchain/tftpd",
		AddFlags: cfg.AddFlags,
		New: func(ctx context.Context, env *daemon.Env) (daemon.Service, error) {
			c := cfg
			c.DataDir = env.DataDir
			c.Store, c.Logger, c.Site, c.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("tftpd")
			c.Audit = env.Audit
			return New(c)
		},
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("no etcd store"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("no data dir"))
	}
	if c.Addr == "" {
		errs = append(errs, errors.New("no TFTP address"))
	}
	if c.ArtifactStore == "" && c.Source == nil {
		errs = append(errs, errors.New("no artifactstore address"))
	}
	if c.MaxBlksize < 512 || c.MaxBlksize > 65464 {
		errs = append(errs, fmt.Errorf("max-blksize %d: want 512..65464", c.MaxBlksize))
	}
	if c.Timeout <= 0 || c.Timeout > time.Minute {
		errs = append(errs, fmt.Errorf("timeout %s: want >0 and at most 1m", c.Timeout))
	}
	if c.Retries < 1 || c.Retries > 50 {
		errs = append(errs, fmt.Errorf("retries %d: want 1..50", c.Retries))
	}
	if c.Anticipate < 0 || c.Anticipate > 60 {
		errs = append(errs, fmt.Errorf("anticipate %d: want 0..60", c.Anticipate))
	}
	if c.MaxTransfers < 0 || c.MaxPerClient < 0 {
		errs = append(errs, errors.New("transfer caps must not be negative"))
	}
	if _, err := filemap.Parse(c.Map); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tftpd: %w", err)
	}
	return nil
}

// Server is a tftpd ready to Run.
type Server struct {
	cfg  Config
	log  *slog.Logger
	grpc *grpcserver.Server
	conn *grpc.ClientConn
	// bootcfg asks bootapi for GRUB's configs (on bootConn); nil: no GRUB names.
	bootcfg  bootapiv1.BootConfigServiceClient
	bootConn *grpc.ClientConn
	// GRUB configs bootapi rendered, and requests for one that failed.
	grubConfigs, grubFailures atomic.Int64
	cache                     *cache.Cache
	transfers                 *transfer.Server
	sessions                  *session.Recorder
	maps                      *store.Cache[*tftpdv1.FileMap]
	artifacts                 *store.Cache[*artifactstorev1.Artifact]
	leases                    *store.Cache[*dhcpdv1.Lease]
	admin                     *admin.Service
	base                      *filemap.Map
	current                   atomic.Pointer[filemap.Map]
	reg                       *prometheus.Registry
	boots                     *opshttp.Boots
	ops                       *opshttp.Server
	// loaded is set once the file map, lease and artifact caches hold etcd's
	// snapshot (/readyz).
	loaded atomic.Bool
}

// New listens on the TFTP and gRPC ports and prepares the service.
func New(cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	log := cfg.Logger.With("service", "tftpd", "site", cfg.Site)
	s := &Server{cfg: cfg, log: log}
	var closers []func()
	defer func() {
		if err != nil {
			for _, c := range closers {
				c()
			}
		}
	}()
	s.base, _ = filemap.Parse(cfg.Map)
	s.current.Store(s.base)

	src := cfg.Source
	if src == nil {
		if cfg.ArtifactStoreToken == "" && cfg.ArtifactStoreTokenFile != "" {
			if cfg.ArtifactStoreToken, err = auth.ReadTokenFile(cfg.ArtifactStoreTokenFile); err != nil {
				return nil, fmt.Errorf("tftpd: %w", err)
			}
		}
		s.conn, err = grpcclient.Dial(cfg.ArtifactStore, cfg.ArtifactStoreTLS, grpcclient.WithToken(cfg.ArtifactStoreToken))
		if err != nil {
			return nil, fmt.Errorf("tftpd: %w", err)
		}
		closers = append(closers, func() { s.conn.Close() })
		src = source.NewGRPC(s.conn)
	}
	if cfg.BootAPI != "" && cfg.BootAPI != "-" {
		token := cfg.BootAPIToken
		if token == "" && cfg.BootAPITokenFile != "" {
			if token, err = auth.ReadTokenFile(cfg.BootAPITokenFile); err != nil {
				return nil, fmt.Errorf("tftpd: %w", err)
			}
		}
		if token == "" {
			token = cfg.ArtifactStoreToken
		}
		s.bootConn, err = grpcclient.Dial(cfg.BootAPI, cfg.BootAPITLS, grpcclient.WithToken(token))
		if err != nil {
			return nil, fmt.Errorf("tftpd: bootapi: %w", err)
		}
		closers = append(closers, func() { s.bootConn.Close() })
		s.bootcfg = bootapiv1.NewBootConfigServiceClient(s.bootConn)
	}
	s.cache, err = cache.New(cache.Config{
		Dir: filepath.Join(cfg.DataDir, "cache"), Source: src, FetchTimeout: cfg.FetchTimeout,
		RefreshWait: cfg.RefreshWait, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("tftpd: %w", err)
	}
	s.boots = opshttp.NewBoots("tftpd")
	s.sessions, err = session.New(session.Config{Store: cfg.Store, Service: "tftpd", Site: cfg.Site, TracerProvider: cfg.TracerProvider, Logger: log,
		OnHop: s.boots.OnHop, OnFinish: s.boots.OnFinish})
	if err != nil {
		return nil, fmt.Errorf("tftpd: %w", err)
	}
	s.maps = store.NewCache(cfg.Store, store.Prefix("tftp", cfg.Site), func() *tftpdv1.FileMap { return &tftpdv1.FileMap{} }, log)
	s.leases = store.NewCache(cfg.Store, store.Prefix("leases", cfg.Site), func() *dhcpdv1.Lease { return &dhcpdv1.Lease{} }, log)
	s.artifacts = store.NewCache(cfg.Store, store.Prefix("artifacts"), func() *artifactstorev1.Artifact { return &artifactstorev1.Artifact{} }, log)

	ua, err := net.ResolveUDPAddr("udp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("tftpd: %s: %w", cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("tftpd: listen %s: %w", cfg.Addr, err)
	}
	closers = append(closers, func() { udp.Close() })
	// A boot storm arrives at once: let the kernel queue it rather than drop it.
	_ = udp.SetReadBuffer(4 << 20)
	s.transfers, err = transfer.New(transfer.Config{
		Conn: udp, SinglePort: cfg.SinglePort, MaxBlksize: cfg.MaxBlksize, Timeout: cfg.Timeout,
		Retries: cfg.Retries, MaxTransfers: cfg.MaxTransfers, MaxPerClient: cfg.MaxPerClient, Anticipate: cfg.Anticipate,
		PerIP:   cfg.LimitPerIP,
		Resolve: s.resolve, Open: s.open, Sessions: s.sessions, MACByIP: s.macByIP,
		Tracer: cfg.TracerProvider.Tracer("github.com/bootchain/bootchain/services/tftpd"), Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("tftpd: %w", err)
	}
	s.admin = &admin.Service{Cache: s.cache, Transfers: s.transfers, Site: cfg.Site}
	if cfg.GRPC.Addr != "" {
		gcfg := cfg.GRPC
		if gcfg.Logger == nil {
			gcfg.Logger = log
		}
		if gcfg.Audit = cfg.Audit; cfg.Audit == nil {
			if gcfg.Audit, err = audit.New(audit.Config{Store: cfg.Store, Logger: log}); err != nil {
				return nil, fmt.Errorf("tftpd: %w", err)
			}
		}
		if gcfg.Auth == nil {
			gcfg.Auth = auth.NewAuthenticator(cfg.Store, log)
		}
		s.grpc, err = grpcserver.New(gcfg)
		if err != nil {
			return nil, fmt.Errorf("tftpd: %w", err)
		}
		tftpdv1.RegisterTftpServiceServer(s.grpc.GRPC, s.admin)
		closers = append(closers, s.grpc.Close)
	}
	if s.reg, err = s.newRegistry(); err != nil {
		return nil, fmt.Errorf("tftpd: metrics: %w", err)
	}
	if cfg.HTTPAddr != "" && cfg.HTTPAddr != "-" {
		if s.ops, err = opshttp.Listen(cfg.HTTPAddr, opshttp.Handler(s.reg, s.readyErr)); err != nil {
			return nil, fmt.Errorf("tftpd: %w", err)
		}
	}
	return s, nil
}

// Addr is the TFTP request port's address.
func (s *Server) Addr() *net.UDPAddr { return s.transfers.Addr() }

// GRPCAddr is the admin API's address (nil when disabled).
func (s *Server) GRPCAddr() net.Addr {
	if s.grpc == nil {
		return nil
	}
	return s.grpc.Addr()
}

// Stats returns the transfer counters (what the admin API's GetTransferStats says).
func (s *Server) Stats() *tftpdv1.TransferStats {
	resp, _ := s.admin.GetTransferStats(context.Background(), &tftpdv1.GetTransferStatsRequest{})
	return resp.GetStats()
}

// Limits returns the read requests dropped by the per-IP rate limit and the
// requests and transfers dropped by a recovered panic (the admin API's
// TransferStats counts the former in dropped).
func (s *Server) Limits() (limited, panics int64) {
	st := s.transfers.Stats()
	return st.Limited, st.Panics
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

// readyErr is /readyz: the sockets are bound from New on; ready once the
// caches hold etcd's snapshot (the file map decides what is served).
func (s *Server) readyErr() error {
	if !s.loaded.Load() {
		return errors.New("loading the file map, leases and artifacts from etcd")
	}
	return nil
}

// Sessions is the boot-session recorder (tests flush it).
func (s *Server) Sessions() *session.Recorder { return s.sessions }

// Endpoints describes where the service listens.
func (s *Server) Endpoints() []string {
	out := []string{"tftp udp " + s.Addr().String()}
	if s.grpc != nil {
		out = append(out, "grpc "+s.grpc.Addr().String())
	}
	if s.ops != nil {
		out = append(out, "http "+s.ops.Addr().String())
	}
	return out
}

// Run serves until ctx ends; it returns nil after a clean stop. The request
// port and the admin API stop first and the transfers in flight finish; then the
// session recorder flushes their hops, and the caches and the artifactstore
// connection close.
func (s *Server) Run(ctx context.Context) error {
	run := lifecycle.New(ctx)
	if s.conn != nil {
		run.Layer().OnStop(func() { s.conn.Close() })
	}
	if s.bootConn != nil {
		run.Layer().OnStop(func() { s.bootConn.Close() })
	}
	if s.ops != nil {
		// Stops after the request port: probes see the shutdown through.
		run.Layer().Go(s.ops.Serve)
	}
	base := run.Layer()
	base.Go(s.maps.Run)
	base.Go(s.artifacts.Run)
	base.Go(s.leases.Run)
	base.Go(s.cache.Run)
	record := run.Layer()
	record.Go(s.sessions.Run)
	serve := run.Layer()
	serve.Go(s.watchMap)
	serve.Go(s.watchArtifacts)
	serve.Go(s.transfers.Run)
	serve.Go(func(ctx context.Context) error {
		for _, w := range []func(context.Context) error{s.maps.WaitReady, s.leases.WaitReady, s.artifacts.WaitReady} {
			if w(ctx) != nil {
				return nil
			}
		}
		s.loaded.Store(true)
		return nil
	})
	if s.grpc != nil {
		serve.Go(s.grpc.Serve)
	}
	if s.cfg.Warm {
		serve.Go(func(ctx context.Context) error {
			if s.maps.WaitReady(ctx) == nil {
				s.cache.Warm(ctx, s.current.Load().Artifacts())
			}
			return nil
		})
	}
	s.log.Info("tftpd serving", "tftp", s.Addr().String(), "single_port", s.cfg.SinglePort, "artifactstore", s.cfg.ArtifactStore)
	return run.Wait()
}

// macByIP returns the MAC of the client holding ip by dhcpd's lease (leases/<site>/<ip>).
func (s *Server) macByIP(ip string) (string, bool) {
	it, ok := s.leases.Get(ip)
	if !ok || it.Value.GetMac() == "" {
		return "", false
	}
	switch it.Value.GetState() {
	case dhcpdv1.LeaseState_LEASE_STATE_OFFERED, dhcpdv1.LeaseState_LEASE_STATE_BOUND:
		return it.Value.GetMac(), true
	}
	return "", false
}

// watchMap keeps the current map = command-line map overlaid by tftp/<site>/map.
func (s *Server) watchMap(ctx context.Context) error {
	apply := func() {
		m := s.base
		if it, ok := s.maps.Get("map"); ok {
			m = filemap.Overlay(s.base, filemap.FromProto(it.Value))
		}
		s.current.Store(m)
	}
	return s.maps.Follow(ctx, 16,
		func([]store.Item[*tftpdv1.FileMap]) error { apply(); return nil },
		func([]store.Event[*tftpdv1.FileMap]) error { apply(); return nil })
}

// watchArtifacts marks cached artifacts stale when etcd says their content changed or
// they were deleted; the cache fetches the new content in the background.
func (s *Server) watchArtifacts(ctx context.Context) error {
	if s.artifacts.WaitReady(ctx) != nil {
		return nil
	}
	return s.artifacts.Follow(ctx, 256, func(snap []store.Item[*artifactstorev1.Artifact]) error {
		// Whatever changed while we were not watching (or not running).
		have := map[string]string{}
		for _, it := range snap {
			have[it.Name] = it.Value.GetSha256()
		}
		for _, name := range s.cache.Names() {
			sha, _ := s.cache.SHA256(name)
			if have[name] != sha {
				s.cache.Changed(name, have[name])
			}
		}
		return nil
	}, func(batch []store.Event[*artifactstorev1.Artifact]) error {
		for _, ev := range batch {
			sha, cached := s.cache.SHA256(ev.Name)
			if cached && (ev.Deleted || ev.Value.GetSha256() != sha) {
				s.log.Info("artifact changed; refreshing cache", "artifact", ev.Name, "deleted", ev.Deleted)
				want := ""
				if !ev.Deleted {
					want = ev.Value.GetSha256()
				}
				s.cache.Changed(ev.Name, want)
			}
		}
		return nil
	})
}
