// Package grpcserver starts a bootchain gRPC server the same way for every service:
// health and reflection registered, otelgrpc instrumentation, TLS or mTLS from
// files, and a graceful stop (NOT_SERVING, drain, GracefulStop with a deadline, Stop).
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Config configures a server.
type Config struct {
	// Addr to listen on (":9080"); port 0 picks a free port.
	Addr string
	// TLS files; none means plaintext.
	TLS tlsconf.Files
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

// Server is a listening gRPC server. Register services on GRPC, then Serve.
type Server struct {
	GRPC   *grpc.Server
	Health *health.Server
	lis    net.Listener
	cfg    Config
}

// New listens on cfg.Addr and prepares the server.
func New(cfg Config, opts ...grpc.ServerOption) (*Server, error) {
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tlsCfg, err := cfg.TLS.Server()
	if err != nil {
		return nil, err
	}
	base := []grpc.ServerOption{
		grpc.StatsHandler(otelgrpc.NewServerHandler()),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(8 << 20),
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

// Addr is where the server listens.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Close stops the server at once and releases its listener, which Serve would
// otherwise close: for a service that stops before it serves.
func (s *Server) Close() {
	s.GRPC.Stop()
	s.lis.Close()
}

// Serve serves until ctx ends, then stops gracefully. It returns nil after a clean
// stop.
func (s *Server) Serve(ctx context.Context) error {
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
