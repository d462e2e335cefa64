// Package opshttp is the operations HTTP endpoint of the UDP services (dhcpd,
// tftpd): GET /metrics (Prometheus text), /healthz (the process answers) and
// /readyz (the service is ready to serve: 200, else 503 with the reason).
//
// It serves operators and probes only, never machines, so it has no per-IP
// rate limit: a scraper or kubelet polls from one address by design. The
// handlers are cheap and bounded (no request body is read), and the server's
// timeouts keep slow clients from holding connections.
package opshttp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /metrics from reg, /healthz, and /readyz from ready (nil
// error: ready). Its mux is returned so a service can add routes.
func Handler(reg prometheus.Gatherer, ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", Healthz)
	mux.HandleFunc("GET /readyz", Readyz(ready))
	return mux
}

// Healthz answers 200 "ok": the process is alive and its HTTP loop runs.
func Healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// Readyz answers 200 "ready" when ready returns nil, else 503 with its error.
func Readyz(ready func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	}
}

// Server is a listening operations endpoint.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr now (so a taken port fails at start, and the address is
// known before Serve) and serves h once Serve runs.
func Listen(addr string, h http.Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops http: listen %s: %w", addr, err)
	}
	return &Server{ln: ln, srv: &http.Server{
		Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10,
	}}, nil
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close closes the listener (a server that will never Serve).
func (s *Server) Close() error {
	s.ln.Close()
	return s.srv.Close()
}

// Serve serves until ctx ends, then shuts down (requests in flight get 5 s).
func (s *Server) Serve(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(s.ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if rerr := <-done; rerr != nil && !errors.Is(rerr, http.ErrServerClosed) {
		return rerr
	}
	return err
}
