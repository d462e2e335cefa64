// Package grpcserver starts a bootchain gRPC server the same way for every service:
// health and reflection registered, otelgrpc instrumentation, TLS or mTLS from
// files, authentication and authorization of every call (pkg/auth), panic
// recovery, a cap on concurrent streams, and a graceful stop (NOT_SERVING, drain,
// GracefulStop with a deadline, Stop).
package grpcserver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// DefaultMaxConcurrentStreams caps the streams (calls in flight) of one client
// connection: a client cannot tie up the server with unbounded watches.
const DefaultMaxConcurrentStreams = 256

// Config configures a server.
type Config struct {
	// Addr to listen on (":9080"); port 0 picks a free port.
	Addr string
	// TLS files; none means plaintext, which New refuses on a non-loopback
	// address unless InsecurePlaintext is set.
	TLS tlsconf.Files
	// InsecurePlaintext allows plaintext on a non-loopback address (logged at
	// WARN): bearer tokens and every answer then cross the network in clear.
	InsecurePlaintext bool
	// Auth authenticates and authorizes every call; required (there is no way to
	// turn authentication off). Serve runs it.
	Auth *auth.Authenticator
	// MaxConcurrentStreams per connection; default DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// StopTimeout bounds the graceful drain; default 10s.
	StopTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Audit records the server's writes and refused calls; nil: none. Its
	// outer interceptor runs first (it sees what authentication refuses), its
	// inner one last (it reads the identity authentication established):
	// authentication must be chained (grpc.ChainUnaryInterceptor), since grpc
	// runs a plain grpc.UnaryInterceptor before every chained one.
	Audit *audit.Log
}

// AddFlags binds the listener's TLS flags and --<prefix>insecure-plaintext
// (prefix is e.g. "bootapi-grpc-").
func (c *Config) AddFlags(fs *flag.FlagSet, prefix string) {
	c.TLS.AddServerFlags(fs, prefix)
	fs.BoolVar(&c.InsecurePlaintext, prefix+"insecure-plaintext", c.InsecurePlaintext,
		"serve gRPC without TLS on a non-loopback address (INSECURE: tokens and data in clear)")
}

// Server is a listening gRPC server. Register services on GRPC, then Serve.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	lis    net.Listener
	cfg    Config
}

// New listens on cfg.Addr and prepares the server.
func New(cfg Config, opts ...grpc.ServerOption) (*Server, error) {
	if cfg.Auth == nil {
		return nil, errors.New("grpc: no authenticator: every bootchain gRPC server authenticates its callers")
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	tlsCfg, err := cfg.TLS.Server()
	if err != nil {
		return nil, err
	}
	if tlsCfg == nil && !grpcclient.Loopback(cfg.Addr) {
		if !cfg.InsecurePlaintext {
			return nil, fmt.Errorf("grpc: refusing plaintext on non-loopback address %s: give a TLS certificate (--*grpc-tls-cert/--*grpc-tls-key), listen on loopback, or pass --*grpc-insecure-plaintext", cfg.Addr)
		}
		cfg.Logger.Warn("INSECURE: gRPC serves plaintext on a non-loopback address; bearer tokens and all data cross the network in clear", "addr", cfg.Addr)
	}
	rec := recovery{log: cfg.Logger}
	base := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(8 << 20),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ChainUnaryInterceptor(rec.unary, cfg.Auth.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(rec.stream, cfg.Auth.StreamServerInterceptor()),
	}
	if tlsCfg != nil {
		base = append(base, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("grpc: listen %s: %w", cfg.Addr, err)
	}
	all := append(base, opts...)
	if cfg.Audit != nil {
		// Outermost, to see what authentication refuses; its inner half last,
		// where the caller's identity is known.
		outer, inner := cfg.Audit.ServerOptions()
		all = append(append(outer, all...), inner...)
	}
	gs := grpc.NewServer(all...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return &Server{GRPC: gs, Health: hs, lis: lis, cfg: cfg}, nil
}

// recovery turns a panicking handler into an Internal error, logged with its
// stack, so that one bad request cannot take the process (and, in the all-in-one
// launcher, the embedded etcd) down.
type recovery struct{ log *slog.Logger }

func (r recovery) recovered(method string, p any) error {
	r.log.Error("gRPC handler panicked", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s: internal error (the server logged it)", method)
}

func (r recovery) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, r.recovered(info.FullMethod, p)
		}
	}()
	return handler(ctx, req)
}

func (r recovery) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = r.recovered(info.FullMethod, p)
		}
	}()
	return handler(srv, ss)
}

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Close stops the server at once and releases its listener, which Serve would
// otherwise close: for a service that stops before it serves.
func (s *Server) Close() {
	s.GRPC.Stop()
	s.lis.Close()
}

// Serve serves until ctx ends, then stops gracefully. It returns nil after a clean
// stop. It runs the authenticator's token cache and answers no call before the
// tokens have loaded.
func (s *Server) Serve(ctx context.Context) error {
	authCtx, stopAuth := context.WithCancel(context.Background())
	authDone := make(chan error, 1)
	go func() { authDone <- s.cfg.Auth.Run(authCtx) }()
	defer func() { stopAuth(); <-authDone }()
	if err := s.cfg.Auth.WaitReady(ctx); err != nil {
		s.Close()
		return nil
	}
	// Every registered service reports SERVING; the empty name is the whole server.
	for name := range s.GRPC.GetServiceInfo() {
		s.Health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	errc := make(chan error, 1)
	go func() { errc <- s.GRPC.Serve(s.lis) }()
	select {
	case err := <-errc:
		if errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return fmt.Errorf("grpc: serve: %w", err)
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GRPC.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.cfg.StopTimeout):
		s.cfg.Logger.Warn("grpc graceful stop timed out; closing connections", "addr", s.Addr().String())
		s.GRPC.Stop()
	}
	<-errc
	return nil
}
