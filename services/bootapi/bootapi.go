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
	"errors"
	"flag"
	"fmt"
	"github.com/bootchain/bootchain/pkg/daemon"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/lifecycle"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/grpcapi"
	"github.com/bootchain/bootchain/services/bootapi/internal/httpapi"
	"github.com/bootchain/bootchain/services/bootapi/internal/script"
	"github.com/bootchain/bootchain/services/bootapi/internal/state"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
)

// Config configures bootapi.
type Config struct {
	// Store is the etcd store. Required.
	Store *store.Store
	// Site is the default site of machines that name none.
	Site string
	// HTTPAddr serves iPXE scripts and callbacks (":8080"); port 0 picks one.
	HTTPAddr string
	// GRPC configures the gRPC API (":9080").
	GRPC grpcserver.Config
	// PublicURL is bootapi's HTTP base URL as machines reach it; default
	// http://<advertise>:<http port>.
	PublicURL string
	// Advertise is the IP used to build PublicURL when it is empty.
	Advertise string
	// ArtifactURL is the artifactstore base URL for sites that set none.
	ArtifactURL string
	// DefaultAction when neither a machine nor its site sets one: menu,
	// local-disk, sanboot or shell.
	DefaultAction string
	// MenuTimeout before the menu boots the local disk.
	MenuTimeout time.Duration
	// StallAfter marks a boot session with no progress for this long as stalled.
	StallAfter time.Duration
	// SweepInterval is how often jobs past their deadline expire and stalled
	// sessions are marked.
	SweepInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// TracerProvider; default the global one.
	TracerProvider trace.TracerProvider
}

// DefaultConfig returns the defaults: HTTP on :8080, gRPC on :9080.
func DefaultConfig() Config {
	return Config{
		Site: "default", HTTPAddr: ":8080", GRPC: grpcserver.Config{Addr: ":9080"},
		Advertise: "127.0.0.1", DefaultAction: "menu", MenuTimeout: 10 * time.Second,
		StallAfter: 5 * time.Minute, SweepInterval: 10 * time.Second,
	}
}

// AddFlags binds the flags under prefix ("" for the thin main, "bootapi-" in the
// launcher).
func (c *Config) AddFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.HTTPAddr, prefix+"http-addr", c.HTTPAddr, "HTTP address for iPXE scripts and callbacks")
	fs.StringVar(&c.GRPC.Addr, prefix+"grpc-addr", c.GRPC.Addr, "gRPC address of the API")
	c.GRPC.AddFlags(fs, prefix+"grpc-")
	fs.StringVar(&c.PublicURL, prefix+"public-url", c.PublicURL, "bootapi's base URL as machines reach it (default http://<advertise>:<http port>)")
	fs.StringVar(&c.ArtifactURL, prefix+"artifact-url", c.ArtifactURL, "artifactstore base URL for sites without one (default http://<advertise>:8081)")
	fs.StringVar(&c.DefaultAction, prefix+"default-action", c.DefaultAction, "what machines without a job or default boot: menu, local-disk, sanboot, shell")
	fs.DurationVar(&c.MenuTimeout, prefix+"menu-timeout", c.MenuTimeout, "menu timeout before booting the local disk")
	fs.DurationVar(&c.StallAfter, prefix+"stall-after", c.StallAfter, "mark a boot session stalled after this long without progress")
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
	if _, ok := actions[c.DefaultAction]; !ok {
		return fmt.Errorf("bootapi: default action %q: want menu, local-disk, sanboot or shell", c.DefaultAction)
	}
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("bootapi: public URL %q: want http(s)://host[:port]", c.PublicURL)
		}
	}
	if c.StallAfter <= 0 || c.SweepInterval <= 0 {
		return errors.New("bootapi: stall-after and sweep interval must be positive")
	}
	return nil
}

// Server is a configured bootapi.
type Server struct {
	cfg      Config
	log      *slog.Logger
	state    *state.State
	sessions *session.Recorder
	http     *httpapi.Handler
	httpLis  net.Listener
	grpc     *grpcserver.Server
	public   *url.URL
	// handler is what Run serves over HTTP. The context its requests work in
	// ends with stopRequests, after the HTTP server's graceful shutdown and
	// before the recorder's final flush.
	handler      fasthttp.RequestHandler
	stopRequests context.CancelFunc
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
	rec, err := session.New(session.Config{Store: cfg.Store, Service: "bootapi", Site: cfg.Site, TracerProvider: cfg.TracerProvider, Logger: log})
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
	artifactURL := cfg.ArtifactURL
	if artifactURL == "" {
		artifactURL = "http://" + net.JoinHostPort(cfg.Advertise, "8081")
	}
	cfg.GRPC.Logger = log
	if cfg.GRPC.Auth == nil {
		cfg.GRPC.Auth = auth.NewAuthenticator(cfg.Store, log)
	}
	gs, err := grpcserver.New(cfg.GRPC)
	if err != nil {
		lis.Close()
		return nil, err
	}
	grpcapi.New(st, rec, nil).EnablePreview(grpcapi.PreviewConfig{
		// Configured as the script endpoint's renderer, so that a preview
		// renders what a machine gets.
		Renderer: script.NewRenderer(script.RendererConfig{
			PublicURL: pu, ArtifactURL: artifactURL, MenuTimeout: cfg.MenuTimeout, Profiles: st.Profiles,
		}),
		DefaultSite: cfg.Site, DefaultAction: actions[cfg.DefaultAction],
	}).Register(gs.GRPC)
	grpcapi.NewCredentials(cfg.Store, cfg.GRPC.Auth).Register(gs.GRPC)
	h := httpapi.New(httpapi.Config{
		State: st, Sessions: rec, PublicURL: pu, ArtifactURL: artifactURL, DefaultSite: cfg.Site,
		DefaultAction: actions[cfg.DefaultAction], MenuTimeout: cfg.MenuTimeout, Logger: log,
	})
	requests, stop := context.WithCancel(context.Background())
	return &Server{
		cfg: cfg, log: log, state: st, sessions: rec, http: h, httpLis: lis, grpc: gs, public: pu,
		handler: h.RequestHandler(requests), stopRequests: stop,
	}, nil
}

// HTTPAddr is where the HTTP endpoint listens.
func (s *Server) HTTPAddr() net.Addr { return s.httpLis.Addr() }

// GRPCAddr is where the gRPC API listens.
func (s *Server) GRPCAddr() net.Addr { return s.grpc.Addr() }

// PublicURL is the base URL rendered into scripts.
func (s *Server) PublicURL() string { return s.public.String() }

// Endpoints describes the listeners for the launcher.
func (s *Server) Endpoints() []string {
	return []string{
		"http " + s.HTTPAddr().String() + " (scripts: " + s.public.JoinPath("boot.ipxe").String() + ")",
		"grpc " + s.GRPCAddr().String(),
	}
}

// Handler is the HTTP handler Run serves (for tests and embedding).
func (s *Server) Handler() fasthttp.RequestHandler { return s.handler }

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
	record := run.Layer()
	record.Go(s.sessions.Run)
	if s.state.WaitReady(run.Stopping()) != nil || s.sessions.WaitReady(run.Stopping()) != nil {
		// Stopped before the caches loaded: nothing was served.
		s.httpLis.Close()
		s.grpc.Close()
		s.stopRequests()
		return run.Stop(nil)
	}
	serve := run.Layer()
	serve.Go(s.sweep)
	serve.Go(s.grpc.Serve)
	serve.Go(s.serveHTTP)
	s.log.Info("bootapi serving", "http", s.HTTPAddr().String(), "grpc", s.GRPCAddr().String(), "public_url", s.public.String())
	err := run.Wait()
	s.log.Info("bootapi stopped", "scripts", s.http.Scripts.Load(), "dispatches", s.http.Dispatches.Load(),
		"reports", s.http.Reports.Load(), "rejected", s.http.Rejected.Load(), "sessions_dropped", s.sessions.Dropped.Load())
	return err
}

// serveHTTP serves the HTTP endpoint until ctx ends, then shuts it down
// gracefully; requests that outlive the shutdown's bound have their work stopped.
func (s *Server) serveHTTP(ctx context.Context) error {
	defer s.stopRequests()
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
	go func() { errc <- srv.Serve(httpapi.Listener(s.httpLis)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("bootapi http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.ShutdownWithContext(sctx)
	// Shutdown closes only the listeners Serve has registered: if ctx ended
	// before Serve began, this close is what stops it.
	s.httpLis.Close()
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
		if n := s.sessions.MarkStalled(ctx, s.cfg.StallAfter, now); n > 0 {
			s.log.Info("boot sessions stalled", "count", n)
		}
	}
}
