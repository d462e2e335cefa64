// Package bootapi is the bootchain service that decides what a machine boots: it
// keeps machines, profiles, one-shot jobs and sites in etcd, renders the iPXE script
// for each MAC over HTTP, takes installer callbacks, and serves the gRPC API that
// bootctl and grpcurl use.
//
// The HTTP server is fasthttp (HTTP/1.x, which is what iPXE and installers speak):
// net/http's per-request overhead was a third of bootapi's CPU per script.
//
//	srv, err := bootapi.New(cfg)
//	err = srv.Run(ctx) // until ctx ends
package bootapi

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/pkg/opshttp"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/lifecycle"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/bootapi/internal/diagnoser"
	"github.com/bootchain/bootchain/services/bootapi/internal/grpcapi"
	"github.com/bootchain/bootchain/services/bootapi/internal/httpapi"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/bootchain/bootchain/services/bootapi/internal/ui"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
)

// Config configures bootapi.
type Config struct {
	// Store is the etcd store. Required.
	Store *store.Store
	// ReachInterval is how often etcd is probed (store.Reach); default 1s.
	ReachInterval time.Duration
	// Site is the default site of machines that name none.
	Site string
	// HTTPAddr serves iPXE scripts and callbacks (":8080"); port 0 picks one.
	HTTPAddr string
	// HTTPSAddr, when set, serves the same endpoints over TLS with HTTPSTLS's
	// certificate and key: installers' callbacks then go there (iPXE keeps
	// HTTP: Debian's iPXE has no TLS).
	HTTPSAddr string
	HTTPSTLS  tlsconf.Files
	// HTTPSPublicURL is the HTTPS listener's base URL as machines reach it;
	// default https://<advertise>:<https port>.
	HTTPSPublicURL string
	// Discovery bounds the machines recorded on their own (cap per site, time
	// to live of records not seen again).
	Discovery state.Discovery
	// GRPC configures the gRPC API (":9080").
	GRPC grpcserver.Config
	// PublicURL is bootapi's HTTP base URL as machines reach it; default
	// http://<advertise>:<http port>.
	PublicURL string
	// CallbackURL is the base URL put on a job's kernel command line for its
	// installer's reports: a load balancer or VIP in front of every replica, so
	// that a report reaches a live one when the replica that served the script
	// is gone. Default the HTTPS listener's URL, else PublicURL. A site's
	// callback_url overrides it for that site's machines.
	CallbackURL string
	// Advertise is the IP used to build PublicURL when it is empty.
	Advertise string
	// Advertise6 is this host's IPv6 address as IPv6 clients reach it:
	// scripts rendered for a client that came over IPv6 name URLs on it
	// wherever the configured ones have an IPv4-literal host (pkg/ip6url).
	// Empty: IPv6 clients get the IPv4 URLs.
	Advertise6 string
	// ArtifactURL is the artifactstore base URL for sites that set none.
	ArtifactURL string
	// DefaultAction when neither a machine nor its site sets one: menu,
	// local-disk, sanboot or shell.
	DefaultAction string
	// MenuTimeout before the menu boots the local disk.
	MenuTimeout time.Duration
	// StallAfter marks a boot session with no progress for this long as stalled.
	StallAfter time.Duration
	// StallAfterStage shortens StallAfter for the stages that should move
	// faster (diagnosis.go).
	StallAfterStage StageTimeouts
	// SweepInterval is how often jobs past their deadline expire and stalled
	// sessions are marked.
	SweepInterval time.Duration
	// HTTPLimitPerIP bounds the HTTP requests of one client IP (zero: off);
	// over it a client gets 429 with Retry-After. See docs/bootapi.md.
	HTTPLimitPerIP ratelimit.Limit
	// MaxBootsInFlight caps each site's boots in flight (jobs dispatched
	// whose installer has not reported: their kernel and initrd downloads);
	// a machine over it gets a script that waits AdmissionRetry to twice that
	// and asks again. 0 (the default) is no cap: in the boot-storm benchmark a
	// cap made the slowest machine of a site finish later, not sooner
	// (docs/benchmarks.md). A dispatch without a report counts for
	// AdmissionHold.
	MaxBootsInFlight int
	AdmissionRetry   time.Duration
	AdmissionHold    time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Audit records the gRPC API's writes and refused calls; nil: a log of its
	// own on Store, with the default retention.
	Audit *audit.Log
	// TracerProvider; default the global one.
	TracerProvider trace.TracerProvider
	// TraceURL is the trace backend's page of one trace for the dashboard's
	// links, {trace_id} standing for the ID; empty: no link.
	TraceURL string
}

// DefaultHTTPLimitPerIP: a machine makes a handful of requests per boot
// (bootstrap, script, a retry, installer reports); hundreds booting at once
// behind one NAT address or proxy stay within the burst.
var DefaultHTTPLimitPerIP = ratelimit.Limit{Rate: 200, Burst: 2000}

// DefaultConfig returns the defaults: HTTP on :8080, gRPC on :9080.
func DefaultConfig() Config {
	return Config{
		Site: "default", HTTPAddr: ":8080", GRPC: grpcserver.Config{Addr: ":9080"},
		Advertise: "127.0.0.1", DefaultAction: "menu", MenuTimeout: 10 * time.Second,
		StallAfter: 5 * time.Minute, SweepInterval: 10 * time.Second, HTTPLimitPerIP: DefaultHTTPLimitPerIP,
		Discovery: state.DefaultDiscovery, StallAfterStage: DefaultStageTimeouts, AdmissionRetry: 5 * time.Second, AdmissionHold: 5 * time.Minute,
	}
}

// AddFlags binds the flags under prefix ("" for the thin main, "bootapi-" in the
// launcher).
func (c *Config) AddFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.HTTPAddr, prefix+"http-addr", c.HTTPAddr, "HTTP address for iPXE scripts and callbacks")
	fs.StringVar(&c.HTTPSAddr, prefix+"https-addr", c.HTTPSAddr, "HTTPS address for installers' callbacks (and scripts); off when empty; needs --"+prefix+"https-tls-cert and --"+prefix+"https-tls-key")
	fs.StringVar(&c.HTTPSTLS.CertFile, prefix+"https-tls-cert", c.HTTPSTLS.CertFile, "certificate (PEM) of the HTTPS listener")
	fs.StringVar(&c.HTTPSTLS.KeyFile, prefix+"https-tls-key", c.HTTPSTLS.KeyFile, "private key (PEM) of the HTTPS listener")
	fs.StringVar(&c.HTTPSPublicURL, prefix+"https-public-url", c.HTTPSPublicURL, "the HTTPS listener's base URL as machines reach it (default https://<advertise>:<https port>)")
	fs.IntVar(&c.Discovery.Cap, prefix+"discovery-cap", c.Discovery.Cap, "most discovered (unregistered) machines recorded per site; 0 records none")
	fs.DurationVar(&c.Discovery.TTL, prefix+"discovery-ttl", c.Discovery.TTL, "delete a discovered machine not seen again for this long (0 keeps them)")
	fs.StringVar(&c.GRPC.Addr, prefix+"grpc-addr", c.GRPC.Addr, "gRPC address of the API")
	c.GRPC.AddFlags(fs, prefix+"grpc-")
	fs.StringVar(&c.PublicURL, prefix+"public-url", c.PublicURL, "bootapi's base URL as machines reach it (default http://<advertise>:<http port>)")
	fs.StringVar(&c.CallbackURL, prefix+"callback-url", c.CallbackURL, "base URL installers report to: a load balancer or VIP in front of every bootapi replica (default the HTTPS public URL, else the public URL; a site's callback_url overrides it)")
	fs.StringVar(&c.Advertise6, prefix+"advertise6", c.Advertise6, "this host's IPv6 address: scripts for IPv6 clients name URLs on it instead of IPv4-literal hosts (empty: the IPv4 URLs)")
	fs.StringVar(&c.ArtifactURL, prefix+"artifact-url", c.ArtifactURL, "artifactstore base URL for sites without one (default http://<advertise>:8081)")
	fs.StringVar(&c.DefaultAction, prefix+"default-action", c.DefaultAction, "what machines without a job or default boot: menu, local-disk, sanboot, shell")
	fs.DurationVar(&c.MenuTimeout, prefix+"menu-timeout", c.MenuTimeout, "menu timeout before booting the local disk")
	fs.DurationVar(&c.StallAfter, prefix+"stall-after", c.StallAfter, "mark a boot session stalled after this long without progress")
	fs.StringVar(&c.TraceURL, prefix+"trace-url", c.TraceURL, "the dashboard's link to a boot's trace, {trace_id} standing for its ID (http://jaeger:16686/trace/{trace_id}); empty: no link")
	c.StallAfterStage.addFlags(fs, prefix)
	fs.Var(&c.HTTPLimitPerIP, prefix+"http-limit-per-ip", "HTTP requests one client IP may send: RATE/s,BURST, or off (over it: 429 with Retry-After)")
	fs.IntVar(&c.MaxBootsInFlight, prefix+"max-boots-in-flight", c.MaxBootsInFlight, "most jobs per site dispatched and not yet reported on (their downloads); over it a machine waits and asks again; 0: no cap")
	fs.DurationVar(&c.AdmissionRetry, prefix+"admission-retry", c.AdmissionRetry, "a machine over --"+prefix+"max-boots-in-flight asks again after this to twice this")
	fs.DurationVar(&c.AdmissionHold, prefix+"admission-hold", c.AdmissionHold, "a dispatch without a report stops counting against --"+prefix+"max-boots-in-flight after this")
}

// Component is bootapi as its binary and the launcher run it: its flags
// ("bootapi-" in the launcher) and New from them.
func Component() daemon.Component {
	cfg := DefaultConfig()
	return daemon.Component{
		Name: "bootapi", Advertise: true,
		AddFlags: cfg.AddFlags,
		New: func(ctx context.Context, env *daemon.Env) (daemon.Service, error) {
			c := cfg
			if env.Advertise != "" {
				c.Advertise = env.Advertise
			}
			c.Store, c.Logger, c.Site, c.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("bootapi")
			c.Audit = env.Audit
			return New(c)
		},
	}
}

var actions = map[string]bootapiv1.Action{
	"menu": bootapiv1.Action_ACTION_MENU, "local-disk": bootapiv1.Action_ACTION_LOCAL_DISK,
	"sanboot": bootapiv1.Action_ACTION_SANBOOT, "shell": bootapiv1.Action_ACTION_SHELL,
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("bootapi: no store")
	}
	if c.HTTPAddr == "" || c.GRPC.Addr == "" {
		return errors.New("bootapi: HTTP and gRPC addresses are required")
	}
	if c.Advertise6 != "" {
		if a, err := netip.ParseAddr(c.Advertise6); err != nil || !a.Is6() || a.Is4In6() {
			return fmt.Errorf("bootapi: advertise6 %q: want an IPv6 address", c.Advertise6)
		}
	}
	if c.MaxBootsInFlight < 0 || c.AdmissionRetry < 0 || c.AdmissionHold < 0 {
		return errors.New("bootapi: max-boots-in-flight, admission-retry and admission-hold must not be negative")
	}
	if _, ok := actions[c.DefaultAction]; !ok {
		return fmt.Errorf("bootapi: default action %q: want menu, local-disk, sanboot or shell", c.DefaultAction)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("bootapi: public URL %q: want http(s)://host[:port]", c.PublicURL)
		}
	}
	if c.CallbackURL != "" {
		u, err := url.Parse(c.CallbackURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("bootapi: callback URL %q: want http(s)://host[:port][/path]", c.CallbackURL)
		}
	}
	if c.HTTPSAddr != "" && (c.HTTPSTLS.CertFile == "" || c.HTTPSTLS.KeyFile == "") {
		return errors.New("bootapi: https-addr needs https-tls-cert and https-tls-key")
	}
	if c.HTTPSPublicURL != "" {
		u, err := url.Parse(c.HTTPSPublicURL)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("bootapi: HTTPS public URL %q: want https://host[:port]", c.HTTPSPublicURL)
		}
	}
	if c.Discovery.Cap < 0 || c.Discovery.TTL < 0 {
		return errors.New("bootapi: discovery-cap and discovery-ttl must not be negative")
	}
	if c.TraceURL != "" {
		u, err := url.Parse(c.TraceURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || !strings.Contains(c.TraceURL, "{trace_id}") {
			return fmt.Errorf("bootapi: trace URL %q: want http(s)://host[:port]/...{trace_id}...", c.TraceURL)
		}
	}
	if c.StallAfter <= 0 || c.SweepInterval <= 0 {
		return errors.New("bootapi: stall-after and sweep interval must be positive")
	}
	return c.StallAfterStage.validate()
}

// Server is a configured bootapi.
type Server struct {
	cfg      Config
	log      *slog.Logger
	state    *state.State
	sessions *session.Recorder
	http     *httpapi.Handler
	reach    *store.Reach
	httpLis  net.Listener
	// httpsLis is the HTTPS listener (TLS inside); nil when off.
	httpsLis    net.Listener
	httpsPublic *url.URL
	grpc        *grpcserver.Server
	public      *url.URL
	// handler is what Run serves over HTTP. The context its requests work in
	// ends with stopRequests, after the HTTP server's graceful shutdown and
	// before the recorder's final flush.
	handler      fasthttp.RequestHandler
	stopRequests context.CancelFunc
	limiter      *ratelimit.Limiter[netip.Addr]
	reg          *prometheus.Registry
	ui           *ui.UI
	// diagnoser fails the jobs of failed and stalled boots.
	diagnoser *diagnoser.Diagnoser
	serving   atomic.Int32 // HTTP(S) servers not yet stopped
}

// httpTimeout bounds the reading of one HTTP request and a keep-alive
// connection's wait for the next.
const httpTimeout = 30 * time.Second

// New validates cfg, opens the listeners and prepares the service.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("service", "bootapi")
	st := state.New(cfg.Store, log)
	st.Discovery = cfg.Discovery
	st.SetDefaultSite(cfg.Site)
	boots := opshttp.NewBoots("bootapi")
	rec, err := session.New(session.Config{Store: cfg.Store, Service: "bootapi", Site: cfg.Site, TracerProvider: cfg.TracerProvider, Logger: log,
		OnHop: boots.OnHop, OnFinish: boots.OnFinish})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("bootapi: listen %s: %w", cfg.HTTPAddr, err)
	}
	public := cfg.PublicURL
	if public == "" {
		_, port, _ := net.SplitHostPort(lis.Addr().String())
		public = "http://" + net.JoinHostPort(cfg.Advertise, port)
	}
	pu, _ := url.Parse(public)
	var httpsLis net.Listener
	var hpu *url.URL
	if cfg.HTTPSAddr != "" {
		tc, err := cfg.HTTPSTLS.Server()
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("bootapi: https: %w", err)
		}
		// Installers do not present client certificates: the token is what
		// authenticates a report.
		tc.ClientAuth, tc.ClientCAs = tls.NoClientCert, nil
		raw, err := net.Listen("tcp", cfg.HTTPSAddr)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("bootapi: listen %s: %w", cfg.HTTPSAddr, err)
		}
		httpsLis = tls.NewListener(raw, tc)
		hp := cfg.HTTPSPublicURL
		if hp == "" {
			_, port, _ := net.SplitHostPort(raw.Addr().String())
			hp = "https://" + net.JoinHostPort(cfg.Advertise, port)
		}
		hpu, _ = url.Parse(hp)
	}
	closeListeners := func() {
		lis.Close()
		if httpsLis != nil {
			httpsLis.Close()
		}
	}
	cbu := hpu
	if cfg.CallbackURL != "" {
		cbu, _ = url.Parse(cfg.CallbackURL)
	}
	artifactURL := cfg.ArtifactURL
	if artifactURL == "" {
		artifactURL = "http://" + net.JoinHostPort(cfg.Advertise, "8081")
	}
	cfg.GRPC.Logger = log
	if cfg.GRPC.Audit = cfg.Audit; cfg.Audit == nil {
		if cfg.GRPC.Audit, err = audit.New(audit.Config{Store: cfg.Store, Logger: log}); err != nil {
			closeListeners()
			return nil, err
		}
	}
	if cfg.GRPC.Auth == nil {
		cfg.GRPC.Auth = auth.NewAuthenticator(cfg.Store, log)
	}
	gs, err := grpcserver.New(cfg.GRPC)
	if err != nil {
		closeListeners()
		return nil, err
	}
	diag := diagnoser.New(diagnoser.Config{Store: cfg.Store, Sessions: rec, State: st, Timeouts: cfg.StallAfterStage.diagnosis(cfg.StallAfter), Logger: log})
	grpcapi.New(st, rec, nil).EnableDiagnosis(diag.Diagnose).EnablePreview(grpcapi.PreviewConfig{
		// Configured as the script endpoint's renderer, so that a preview
		// renders what a machine gets.
		Renderer: script.NewRenderer(script.RendererConfig{
			PublicURL: pu, CallbackURL: cbu, ArtifactURL: artifactURL, MenuTimeout: cfg.MenuTimeout, Profiles: st.Profiles,
		}),
		DefaultSite: cfg.Site, DefaultAction: actions[cfg.DefaultAction],
	}).Register(gs.GRPC)
	grpcapi.NewAudit(cfg.Store).Register(gs.GRPC)
	grpcapi.NewCredentials(cfg.Store, cfg.GRPC.Auth).Register(gs.GRPC)
	reg := prometheus.NewRegistry()
	dash := ui.New(ui.Config{
		Sessions: rec.Cache(), Jobs: st.Jobs, Machines: st.Machines, Session: rec.Get,
		Auth: cfg.GRPC.Auth, TraceURL: cfg.TraceURL, DefaultSite: cfg.Site, Logger: log,
	})
	reach := store.NewReach(cfg.Store, cfg.ReachInterval, log)
	h := httpapi.New(httpapi.Config{
		State: st, Sessions: rec, PublicURL: pu, CallbackURL: cbu, ArtifactURL: artifactURL, DefaultSite: cfg.Site,
		DefaultAction: actions[cfg.DefaultAction], MenuTimeout: cfg.MenuTimeout, Logger: log,
		Audit: cfg.GRPC.Audit, Metrics: reg, UI: dash.Handle,
		Offline:    func() bool { return !reach.Online() },
		Admission:  httpapi.AdmissionConfig{Max: cfg.MaxBootsInFlight, Retry: cfg.AdmissionRetry, Hold: cfg.AdmissionHold},
		Advertise6: advertise6(cfg.Advertise6),
	})
	// GRUB's configs, which tftpd fetches for the machines it serves, are
	// answered by the same handler as iPXE's scripts.
	grpcapi.NewBootConfig(st, h, cfg.Site).Register(gs.GRPC)
	limiter := ratelimit.New[netip.Addr](ratelimit.Config{Limit: cfg.HTTPLimitPerIP})
	if err := registerMetrics(reg, h, limiter, boots, rec.Collectors(), diag.Diagnoses); err != nil {
		closeListeners()
		gs.Close()
		return nil, fmt.Errorf("bootapi: metrics: %w", err)
	}
	requests, stop := context.WithCancel(context.Background())
	return &Server{
		reg: reg, ui: dash, reach: reach, diagnoser: diag,
		cfg: cfg, log: log, state: st, sessions: rec, http: h, httpLis: lis, httpsLis: httpsLis, httpsPublic: hpu, grpc: gs, public: pu,
		handler: httpapi.Limit(h.RequestHandler(requests), limiter), stopRequests: stop, limiter: limiter,
	}, nil
}

// advertise6 is the validated Config.Advertise6 (invalid when empty).
func advertise6(s string) netip.Addr {
	a, _ := netip.ParseAddr(s)
	return a
}

// HTTPAddr is where the HTTP endpoint listens.
func (s *Server) HTTPAddr() net.Addr { return s.httpLis.Addr() }

// HTTPSAddr is where the HTTPS endpoint listens; nil when it is off.
func (s *Server) HTTPSAddr() net.Addr {
	if s.httpsLis == nil {
		return nil
	}
	return s.httpsLis.Addr()
}

// HTTPSPublicURL is the HTTPS base URL rendered into jobs' callbacks; "" when
// the HTTPS listener is off.
func (s *Server) HTTPSPublicURL() string {
	if s.httpsPublic == nil {
		return ""
	}
	return s.httpsPublic.String()
}

// GRPCAddr is where the gRPC API listens.
func (s *Server) GRPCAddr() net.Addr { return s.grpc.Addr() }

// PublicURL is the base URL rendered into scripts.
func (s *Server) PublicURL() string { return s.public.String() }

// Endpoints describes the listeners for the launcher.
func (s *Server) Endpoints() []string {
	eps := []string{"http " + s.HTTPAddr().String() + " (scripts: " + s.public.JoinPath("boot.ipxe").String() + ", dashboard: " + s.public.JoinPath("ui").String() + "/)"}
	if s.httpsLis != nil {
		eps = append(eps, "https "+s.HTTPSAddr().String()+" (callbacks: "+s.httpsPublic.JoinPath("ipxe", "v1", "report").String()+")")
	}
	return append(eps, "grpc "+s.GRPCAddr().String())
}

// Handler is the HTTP handler Run serves (for tests and embedding).
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

// Metrics is the registry served on the HTTP endpoint's /metrics.
func (s *Server) Metrics() *prometheus.Registry { return s.reg }

// HTTPLimited is how many HTTP requests the per-IP limit refused; HTTPPanics
// how many panicked (answered 500).
func (s *Server) HTTPLimited() uint64 { return s.limiter.Limited.Load() }

// HTTPPanics: see HTTPLimited.
func (s *Server) HTTPPanics() int64 { return s.http.Panics.Load() }

// WaitLeases waits until bootapi's view of dhcpd's leases has seen etcd
// revision rev (a lease written at rev), for tests and tools that write leases
// as dhcpd does.
func (s *Server) WaitLeases(ctx context.Context, rev int64) error {
	return s.state.Leases.WaitRevision(ctx, rev)
}

// WaitLeases6 is WaitLeases for dhcpd's DHCPv6 leases (leases6/).
func (s *Server) WaitLeases6(ctx context.Context, rev int64) error {
	return s.state.Leases6.WaitRevision(ctx, rev)
}

// FlushSessions waits until every boot-session change recorded so far is in etcd.
func (s *Server) FlushSessions(ctx context.Context) error { return s.sessions.Flush(ctx) }

// SessionsDropped is how many session records were dropped because etcd did not
// keep up (the spans were still exported).
func (s *Server) SessionsDropped() int64 { return s.sessions.Dropped.Load() }

// Run serves until ctx ends. The HTTP and gRPC servers start once the caches have
// loaded, so no request is answered from an empty cache. They stop first: they
// stop accepting and the requests in flight finish (within a bound); then the
// session recorder makes its final flush, so every hop a request recorded is
// written, and the caches stop last.
func (s *Server) Run(ctx context.Context) error {
	run := lifecycle.New(ctx)
	base := run.Layer()
	base.Go(s.state.Run)
	base.Go(s.reach.Run)
	record := run.Layer()
	record.Go(s.sessions.Run)
	if s.state.WaitReady(run.Stopping()) != nil || s.sessions.WaitReady(run.Stopping()) != nil {
		// Stopped before the caches loaded: nothing was served.
		s.httpLis.Close()
		if s.httpsLis != nil {
			s.httpsLis.Close()
		}
		s.grpc.Close()
		s.stopRequests()
		return run.Stop(nil)
	}
	serve := run.Layer()
	serve.Go(s.sweep)
	serve.Go(s.ui.Run)
	serve.Go(s.diagnoser.Run)
	serve.Go(s.grpc.Serve)
	serve.Go(func(ctx context.Context) error { return s.serveHTTP(ctx, s.httpLis, "http") })
	if s.httpsLis != nil {
		serve.Go(func(ctx context.Context) error { return s.serveHTTP(ctx, s.httpsLis, "https") })
	}
	s.log.Info("bootapi serving", "http", s.HTTPAddr().String(), "grpc", s.GRPCAddr().String(), "public_url", s.public.String())
	err := run.Wait()
	s.log.Info("bootapi stopped", "scripts", s.http.Scripts.Load(), "dispatches", s.http.Dispatches.Load(),
		"withheld", s.http.Withheld.Load(), "reports", s.http.Reports.Load(), "rejected", s.http.Rejected.Load(), "sessions_dropped", s.sessions.Dropped.Load(),
		"limited", s.limiter.Limited.Load(), "panics", s.http.Panics.Load())
	return err
}

// Offline reports whether bootapi serves as cut off from etcd (its probe of
// etcd fails): pending jobs withheld, reports answered 503.
func (s *Server) Offline() bool { return !s.reach.Online() }

// serveHTTP serves the HTTP endpoint on lis until ctx ends, then shuts it down
// gracefully; requests that outlive the shutdown's bound have their work stopped
// (once every listener's server has stopped).
func (s *Server) serveHTTP(ctx context.Context, lis net.Listener, name string) error {
	s.serving.Add(1)
	defer func() {
		if s.serving.Add(-1) == 0 {
			s.stopRequests()
		}
	}()
	srv := &fasthttp.Server{
		Handler:      s.handler,
		ErrorHandler: httpapi.ReadError,
		// net/http sent no Server header.
		NoDefaultServerHeader: true,
		// The whole request, header and body (a report's form: 64 KiB at most),
		// where net/http's ReadHeaderTimeout bounded the header alone; and the
		// wait for a keep-alive connection's next request. nginx's defaults are
		// 60 s and 75 s. The two are equal so that the listener can leave a
		// busy connection's deadline where it is (httpapi.DeadlineSlack).
		ReadTimeout: httpTimeout,
		IdleTimeout: httpTimeout,
		// A client that stops reading its answer holds the connection no
		// longer than this (scripts are small: one write).
		WriteTimeout: httpTimeout,
		// fasthttp reads the body before the handler runs, so the report's limit
		// is the server's: a larger body gets a 413 naming it.
		MaxRequestBodySize: httpapi.MaxBodySize,
		// The read buffer bounds the request header, URL included (431 past it):
		// iPXE's config URL carries five SMBIOS strings percent-encoded, which
		// can pass fasthttp's default 4 KiB.
		ReadBufferSize: 16 << 10,
		// net/http's ParseForm ignored multipart bodies; fasthttp would parse
		// (and refuse malformed) ones before the handler.
		DisablePreParseMultipartForm: true,
		Logger:                       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(httpapi.Listener(lis)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bootapi %s: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.ShutdownWithContext(sctx)
	// Shutdown closes only the listeners Serve has registered: if ctx ended
	// before Serve began, this close is what stops it.
	lis.Close()
	<-errc
	return nil
}

// sweep expires jobs past their deadline and marks stalled sessions.
func (s *Server) sweep(ctx context.Context) error {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		if n, err := s.state.ExpireJobs(ctx, now); err != nil && ctx.Err() == nil {
			s.log.Warn("job expiry sweep", "err", err)
		} else if n > 0 {
			s.log.Info("jobs expired", "count", n)
		}
		if n, err := s.state.ExpireDiscovered(ctx, now, s.cfg.Discovery.TTL); err != nil && ctx.Err() == nil {
			s.log.Warn("discovered machines sweep", "err", err)
		} else if n > 0 {
			s.log.Info("discovered machines expired", "count", n, "ttl", s.cfg.Discovery.TTL)
		}
		s.sweepSessions(ctx)
	}
}
