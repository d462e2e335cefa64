// Package artifactstore is bootchain's artifact service: kernels, initrds and iPXE
// binaries stored by name in a content-addressed store (metadata in etcd under
// artifacts/<name>, contents on local disk by sha256), served over HTTP with Range
// and sendfile to booting machines, and over gRPC (Upload, Stat, List, Delete, Read)
// to operators, tftpd and site replicas.
//
// A site replica (Config.Origin set) serves what it holds and pulls what it lacks
// from the origin, verifying the sha256 before it serves a byte.
//
//	cfg := artifactstore.DefaultConfig()
//	cfg.Store, cfg.DataDir = st, "/var/lib/bootchain/artifactstore"
//	srv, err := artifactstore.New(cfg)
//	err = srv.Run(ctx)
package artifactstore

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"github.com/bootchain/bootchain/pkg/daemon"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/artifactsig"
	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/lifecycle"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore/internal/blobstore"
	"github.com/bootchain/bootchain/services/artifactstore/internal/catalog"
	"github.com/bootchain/bootchain/services/artifactstore/internal/grpcapi"
	"github.com/bootchain/bootchain/services/artifactstore/internal/httpapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// Config configures an artifactstore.
type Config struct {
	// HTTPAddr serves GET/HEAD /artifacts/<name> (and /metrics); default ":8081".
	HTTPAddr string
	// GRPC serves bootchain.artifactstore.v1.ArtifactService; default address
	// ":9081". TLS (and mTLS) with GRPC.TLS.
	GRPC grpcserver.Config
	// DataDir holds the blobs (blobs/sha256/..) and upload temp files (tmp/). Required.
	DataDir string
	// MaxSize bounds one artifact in bytes; default 4 GiB.
	MaxSize int64
	// Site this artifactstore serves; recorded as the origin site of uploads.
	Site string
	// Origin is the gRPC address of the origin artifactstore, on a site replica.
	Origin string
	// OriginTLS: TLS to the origin.
	OriginTLS tlsconf.Files
	// OriginToken is the bearer token a replica presents to the origin (role
	// service), unless its client certificate names it.
	OriginToken string
	// OriginTokenFile holds OriginToken (read at New when the token is not
	// given).
	OriginTokenFile string
	// Store is the etcd store. Required.
	Store *store.Store
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Audit records the gRPC API's writes and refused calls; nil: a log of its
	// own on Store, with the default retention.
	Audit *audit.Log
	// TracerProvider for download hops; default the global one.
	TracerProvider trace.TracerProvider
	// Sessions records downloads as boot-session hops; default a recorder of its own.
	Sessions *session.Recorder
	// HTTPListener, when set, is used instead of listening on HTTPAddr (socket
	// activation, tests).
	HTTPListener net.Listener
	// GRPCOptions are extra gRPC server options (interceptors in tests).
	GRPCOptions []grpc.ServerOption
	// HTTPLimitPerIP bounds the HTTP requests of one client IP (zero: off);
	// over it a client gets 429 with Retry-After. See docs/artifactstore.md.
	HTTPLimitPerIP ratelimit.Limit
	// HTTPWriteProgress is how long one write of a response may make no
	// progress before the connection is cut (0: never); see
	// httpapi.ProgressListener.
	HTTPWriteProgress time.Duration
	// HTTPSAddr, when set, serves the same handler as HTTPAddr over TLS with
	// HTTPSTLS's certificate (for installers that speak TLS; iPXE here does not).
	HTTPSAddr string
	// HTTPSTLS: certificate and key of the HTTPS listener.
	HTTPSTLS tlsconf.Files
	// SigningKeys is a PEM file of trusted ed25519 public keys: uploads must be
	// signed by one of them, and a replica serves only what they verify.
	SigningKeys string
	// VerifyInterval: every blob is hashed again once per interval (0: never; blobs
	// are still hashed before they are first served after a start). Default 24h.
	VerifyInterval time.Duration
	// VerifyRate bounds the scheduled checks' reads in bytes per second; default
	// 32 MiB/s.
	VerifyRate int64
}

// DefaultHTTPLimitPerIP: a machine fetches a few artifacts per boot (kernel,
// initrd, an image, with range requests perhaps a dozen); hundreds booting at
// once behind one NAT address stay within the burst.
var DefaultHTTPLimitPerIP = ratelimit.Limit{Rate: 200, Burst: 2000}

// DefaultConfig returns the defaults: HTTP on :8081, gRPC on :9081, 4 GiB artifacts.
func DefaultConfig() Config {
	return Config{HTTPAddr: ":8081", GRPC: grpcserver.Config{Addr: ":9081"}, MaxSize: 4 << 30, Site: "default",
		HTTPLimitPerIP: DefaultHTTPLimitPerIP, HTTPWriteProgress: 30 * time.Second,
		VerifyInterval: 24 * time.Hour, VerifyRate: 32 << 20}
}

// AddFlags binds the configuration to flags named prefix+"http-addr", ... (the
// launcher uses prefix "artifactstore-", the service's own main ""). The data
// folder is the Component's --data-dir.
func (c *Config) AddFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&c.HTTPAddr, prefix+"http-addr", c.HTTPAddr, "HTTP address serving /artifacts/<name>")
	fs.StringVar(&c.GRPC.Addr, prefix+"grpc-addr", c.GRPC.Addr, "gRPC address of the ArtifactService")
	c.GRPC.AddFlags(fs, prefix+"grpc-")
	fs.Var((*sizeFlag)(&c.MaxSize), prefix+"max-size", "largest artifact accepted (bytes, or with K, M, G, T suffix)")
	fs.StringVar(&c.Origin, prefix+"origin", c.Origin, "gRPC address of the origin artifactstore (makes this a pull-through site replica)")
	c.OriginTLS.AddClientFlags(fs, prefix+"origin-")
	fs.Var(&c.HTTPLimitPerIP, prefix+"http-limit-per-ip", "HTTP requests one client IP may send: RATE/s,BURST, or off (over it: 429 with Retry-After)")
	fs.DurationVar(&c.HTTPWriteProgress, prefix+"http-write-progress", c.HTTPWriteProgress, "cut an HTTP connection when a write makes no progress for this long (0: never)")
	fs.StringVar(&c.HTTPSAddr, prefix+"https-addr", c.HTTPSAddr, "HTTPS address serving /artifacts/<name> too (needs --"+prefix+"https-tls-cert and -key)")
	fs.StringVar(&c.HTTPSTLS.CertFile, prefix+"https-tls-cert", c.HTTPSTLS.CertFile, "PEM certificate of the HTTPS listener")
	fs.StringVar(&c.HTTPSTLS.KeyFile, prefix+"https-tls-key", c.HTTPSTLS.KeyFile, "PEM private key of --"+prefix+"https-tls-cert")
	fs.StringVar(&c.SigningKeys, prefix+"signing-keys", c.SigningKeys, "PEM file of trusted ed25519 public keys: require signed uploads; a replica serves only what they verify")
	fs.DurationVar(&c.VerifyInterval, prefix+"verify-interval", c.VerifyInterval, "hash every blob on disk again once per interval, spread over it (0: only before the first serve after a start)")
	fs.Var((*sizeFlag)(&c.VerifyRate), prefix+"verify-rate", "bytes per second the scheduled checks may read (K, M, G suffixes)")
	fs.StringVar(&c.OriginTokenFile, prefix+"origin-token-file", c.OriginTokenFile, "file holding the bearer token (role service) presented to the origin")
}

// Component is artifactstore as its binary and the launcher run it: its flags
// ("artifactstore-" in the launcher) and New from them.
func Component() daemon.Component {
	cfg := DefaultConfig()
	return daemon.Component{
		Name: "artifactstore", DataDir: "/var/lib/bootchain/artifactstore",
		AddFlags: cfg.AddFlags,
		New: func(ctx context.Context, env *daemon.Env) (daemon.Service, error) {
			c := cfg
			c.DataDir = env.DataDir
			c.Store, c.Logger, c.Site, c.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("artifactstore")
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
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("no HTTP address"))
	}
	if c.GRPC.Addr == "" {
		errs = append(errs, errors.New("no gRPC address"))
	}
	if c.MaxSize <= 0 {
		errs = append(errs, fmt.Errorf("max size %d: want > 0", c.MaxSize))
	}
	if c.HTTPSAddr != "" && (c.HTTPSTLS.CertFile == "" || c.HTTPSTLS.KeyFile == "") {
		errs = append(errs, errors.New("an HTTPS address needs a certificate and key (https-tls-cert, https-tls-key)"))
	}
	if c.VerifyInterval < 0 {
		errs = append(errs, fmt.Errorf("verify interval %s: want >= 0", c.VerifyInterval))
	}
	if c.Origin != "" {
		if _, _, err := net.SplitHostPort(c.Origin); err != nil {
			errs = append(errs, fmt.Errorf("origin %q: want host:port: %w", c.Origin, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("artifactstore: %w", err)
	}
	return nil
}

// Server is a configured artifactstore, listening but not yet serving.
type Server struct {
	cfg      Config
	log      *slog.Logger
	cat      *catalog.Catalog
	grpc     *grpcserver.Server
	handler  fasthttp.RequestHandler
	httpLis  net.Listener
	sessions *session.Recorder
	ownRec   bool
	origin   *grpc.ClientConn
	reg      *prometheus.Registry
	// httpsLis is the HTTPS listener (TLS inside); nil when off. httpsConns
	// is the listener under TLS, which keeps its connections (CloseConns).
	httpsLis   net.Listener
	httpsConns net.Listener
	// stopRequests ends the work requests started (origin pulls), once the
	// HTTP servers have stopped.
	stopRequests context.CancelFunc
}

// New validates cfg, prepares the data dir (removing temp files of interrupted
// uploads) and opens the listeners.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("service", "artifactstore", "site", cfg.Site)
	blobs, err := blobstore.Open(cfg.DataDir, cfg.MaxSize, log)
	if err != nil {
		return nil, fmt.Errorf("artifactstore: %w", err)
	}
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	metrics := catalog.NewMetrics()
	if err := metrics.Register(s.reg); err != nil {
		return nil, fmt.Errorf("artifactstore: metrics: %w", err)
	}
	ccfg := catalog.Config{Store: cfg.Store, Blobs: blobs, Site: cfg.Site, Logger: log, Metrics: metrics, VerifyInterval: cfg.VerifyInterval, VerifyRate: cfg.VerifyRate}
	if cfg.SigningKeys != "" {
		if ccfg.Keys, err = artifactsig.LoadPublicKeys(cfg.SigningKeys); err != nil {
			return nil, fmt.Errorf("artifactstore: %w", err)
		}
		for _, k := range ccfg.Keys.Keys() {
			log.Info("trusting artifact signing key", "key", k.ID)
		}
	}
	if cfg.Origin != "" {
		if cfg.OriginToken == "" && cfg.OriginTokenFile != "" {
			if cfg.OriginToken, err = auth.ReadTokenFile(cfg.OriginTokenFile); err != nil {
				return nil, fmt.Errorf("artifactstore: origin: %w", err)
			}
		}
		s.origin, err = grpcclient.Dial(cfg.Origin, cfg.OriginTLS, grpcclient.WithToken(cfg.OriginToken))
		if err != nil {
			return nil, fmt.Errorf("artifactstore: origin: %w", err)
		}
		ccfg.Origin = artifactv1.NewArtifactServiceClient(s.origin)
	}
	if s.cat, err = catalog.New(ccfg); err != nil {
		s.close()
		return nil, fmt.Errorf("artifactstore: %w", err)
	}
	s.sessions = cfg.Sessions
	if s.sessions == nil {
		s.sessions, err = session.New(session.Config{Store: cfg.Store, Service: "artifactstore", Site: cfg.Site, TracerProvider: cfg.TracerProvider, Logger: log})
		if err != nil {
			s.close()
			return nil, fmt.Errorf("artifactstore: %w", err)
		}
		s.ownRec = true
		// A recorder handed in is its owner's to export.
		for _, c := range s.sessions.Collectors() {
			s.reg.MustRegister(c)
		}
	}
	gcfg := cfg.GRPC
	if gcfg.Logger == nil {
		gcfg.Logger = log
	}
	if gcfg.Audit = cfg.Audit; cfg.Audit == nil {
		if gcfg.Audit, err = audit.New(audit.Config{Store: cfg.Store, Logger: log}); err != nil {
			s.close()
			return nil, fmt.Errorf("artifactstore: %w", err)
		}
	}
	if gcfg.Auth == nil {
		gcfg.Auth = auth.NewAuthenticator(cfg.Store, log)
	}
	s.grpc, err = grpcserver.New(gcfg, cfg.GRPCOptions...)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("artifactstore: %w", err)
	}
	artifactv1.RegisterArtifactServiceServer(s.grpc.GRPC, grpcapi.New(s.cat, cfg.MaxSize, log))
	s.httpLis = cfg.HTTPListener
	if s.httpLis == nil {
		s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr)
	}
	if err != nil {
		s.close()
		return nil, fmt.Errorf("artifactstore: listen %s: %w", cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	// Ready once the catalog has loaded: before that every artifact is a 404.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		// Not r.Context(): under fasthttp's adaptor that is the request's
		// RequestCtx, whose Done reads a field the server's shutdown writes
		// (a data race in fasthttp); the wait is bounded anyway.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if s.cat.WaitReady(ctx) != nil {
			http.Error(w, "catalog loading", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	reqCtx, stopRequests := context.WithCancel(context.Background())
	s.stopRequests = stopRequests
	guard := httpapi.NewGuard(httpapi.New(httpapi.Config{Catalog: s.cat, Sessions: s.sessions, Other: fasthttpadaptor.NewFastHTTPHandler(mux), Context: reqCtx, Logger: log}).Serve,
		httpapi.GuardConfig{PerIP: cfg.HTTPLimitPerIP, Logger: log})
	for _, c := range guard.Collectors() {
		s.reg.MustRegister(c)
	}
	s.handler = guard.Serve
	s.httpLis = httpapi.ProgressListener(s.httpLis, cfg.HTTPWriteProgress, guard.WriteTimeouts)
	if cfg.HTTPSAddr != "" {
		tc, err := cfg.HTTPSTLS.Server()
		if err != nil {
			s.close()
			return nil, fmt.Errorf("artifactstore: https: %w", err)
		}
		raw, err := net.Listen("tcp", cfg.HTTPSAddr)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("artifactstore: listen %s: %w", cfg.HTTPSAddr, err)
		}
		// TLS goes on top of the progress deadline, so a slow reader is cut the
		// same way. HTTP/1.1 only: fasthttp speaks no HTTP/2.
		tc.NextProtos = []string{"http/1.1"}
		s.httpsConns = httpapi.ProgressListener(raw, cfg.HTTPWriteProgress, guard.WriteTimeouts)
		s.httpsLis = tls.NewListener(s.httpsConns, tc)
	}
	return s, nil
}

func (s *Server) close() {
	if s.origin != nil {
		s.origin.Close()
	}
	if s.httpLis != nil {
		s.httpLis.Close()
	}
	if s.httpsLis != nil {
		s.httpsLis.Close()
	}
	if s.stopRequests != nil {
		s.stopRequests()
	}
	if s.grpc != nil {
		s.grpc.Close()
	}
}

// HTTPAddr is where HTTP listens.
func (s *Server) HTTPAddr() net.Addr { return s.httpLis.Addr() }

// HTTPSAddr is where HTTPS listens; nil without an HTTPS listener.
func (s *Server) HTTPSAddr() net.Addr {
	if s.httpsLis == nil {
		return nil
	}
	return s.httpsLis.Addr()
}

// GRPCAddr is where gRPC listens.
func (s *Server) GRPCAddr() net.Addr { return s.grpc.Addr() }

// Endpoints describes the listeners for the launcher.
func (s *Server) Endpoints() []string {
	eps := []string{"http " + s.HTTPAddr().String() + "/artifacts/", "grpc " + s.GRPCAddr().String()}
	if s.httpsLis != nil {
		eps = append(eps, "https "+s.httpsLis.Addr().String()+"/artifacts/")
	}
	if s.cfg.Origin != "" {
		eps = append(eps, "replica of "+s.cfg.Origin)
	}
	return eps
}

// Metrics is the registry of the server's metrics (also served on /metrics).
func (s *Server) Metrics() *prometheus.Registry { return s.reg }

// BlobDir is where the blobs live (for tests and operators).
func (s *Server) BlobDir() string { return filepath.Join(s.cfg.DataDir, "blobs") }

// Run serves until ctx ends; it returns nil after a clean stop. The HTTP and
// gRPC servers stop first and their requests in flight finish; then the session
// recorder (when it is this server's own) flushes their hops, and the catalog
// and the origin connection close.
func (s *Server) Run(ctx context.Context) error {
	defer s.close()
	run := lifecycle.New(ctx)
	base := run.Layer()
	base.Go(s.cat.Run)
	if s.ownRec {
		run.Layer().Go(s.sessions.Run)
	}
	// Serve requests only once the metadata is loaded: a GET must not 404 on an
	// artifact etcd has.
	if s.cat.WaitReady(run.Stopping()) != nil {
		s.httpLis.Close()
		return run.Stop(nil)
	}
	serve := run.Layer()
	serve.Go(s.grpc.Serve)
	serve.Go(func(ctx context.Context) error { return s.serveHTTP(ctx, s.httpLis, s.httpLis) })
	if s.httpsLis != nil {
		serve.Go(func(ctx context.Context) error { return s.serveHTTP(ctx, s.httpsLis, s.httpsConns) })
	}
	s.log.Info("artifactstore serving", "http", s.HTTPAddr().String(), "https", s.cfg.HTTPSAddr, "grpc", s.GRPCAddr().String(), "origin", s.cfg.Origin, "signing_keys", s.cfg.SigningKeys != "", "verify_interval", s.cfg.VerifyInterval)
	return run.Wait()
}

// httpReadTimeout bounds the reading of one request (net/http's
// ReadHeaderTimeout before; a GET has no body), httpIdleTimeout the wait for a
// keep-alive connection's next one.
const (
	httpReadTimeout = 10 * time.Second
	httpIdleTimeout = 2 * time.Minute
)

// shutdownGrace is how long a stopping server lets the requests in flight
// finish before it cuts their connections.
const shutdownGrace = 10 * time.Second

// serveHTTP serves the HTTP handler on lis until ctx ends, then shuts down
// gracefully: the requests in flight get shutdownGrace, then the connections
// still open (conns, the ProgressListener under lis) are cut.
func (s *Server) serveHTTP(ctx context.Context, lis, conns net.Listener) error {
	srv := &fasthttp.Server{
		Handler: s.handler,
		// net/http sent no Server header; every answer sets its Content-Type.
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		ReadTimeout:           httpReadTimeout,
		IdleTimeout:           httpIdleTimeout,
		// No WriteTimeout: the ProgressListener bounds each write instead, so
		// that a large kernel over a slow but moving link still finishes.
		//
		// The read buffer bounds the request header (431 past it); a boot
		// loader's GET with a traceparent and a pin is far below.
		ReadBufferSize:               16 << 10,
		DisablePreParseMultipartForm: true,
		// A response finished during the shutdown closes its connection.
		CloseOnShutdown: true,
		Logger:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("artifactstore: http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if srv.ShutdownWithContext(sctx) != nil {
		if n := httpapi.CloseConns(conns); n > 0 {
			s.log.Warn("connections still busy at shutdown cut", "count", n, "grace", shutdownGrace)
		}
	}
	// Shutdown closes only the listeners Serve has registered: if ctx ended
	// before Serve began, this close is what stops it.
	lis.Close()
	<-errc
	return nil
}

// sizeFlag parses sizes like "4G" or "512M" (powers of 1024).
type sizeFlag int64

func (f *sizeFlag) String() string { return strconv.FormatInt(int64(*f), 10) }

func (f *sizeFlag) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*f = sizeFlag(n)
	return nil
}

// ParseSize parses a byte count with an optional K, M, G or T suffix (powers of 1024).
func ParseSize(v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a byte count like 4294967296 or 4G", v)
	}
	return n * mult, nil
}
