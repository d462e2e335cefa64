//go:build linux

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/test/lab"
)

// This file runs a real trace backend: Jaeger all-in-one (tools/jaeger, built by
// scripts/jaeger.sh) inside a lab namespace, receiving OTLP from the stack;
// jaeger_query.go reads traces back through its query API (/api/v3), as an
// operator's tools would.

// JaegerBinaryEnv names a Jaeger binary to use instead of scripts/jaeger.sh's.
const JaegerBinaryEnv = "BOOTCHAIN_JAEGER"

// ErrNoJaeger: the Jaeger binary has not been built on this machine.
var ErrNoJaeger = errors.New("e2e: Jaeger is not built (make jaeger, or scripts/jaeger.sh: about 10 CPU-minutes, once per machine)")

// JaegerBinary returns the Jaeger binary: $BOOTCHAIN_JAEGER, or the one
// scripts/jaeger.sh builds into the per-machine cache. With build, it runs the
// script, which builds the binary if it is missing; without, a missing binary is
// ErrNoJaeger.
func JaegerBinary(ctx context.Context, build bool) (string, error) {
	if p := os.Getenv(JaegerBinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("e2e: %s: %w", JaegerBinaryEnv, err)
		}
		return p, nil
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	args := []string{"--path"}
	if build {
		args = nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "jaeger.sh"), args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("e2e: scripts/jaeger.sh: %w", err)
	}
	p := strings.TrimSpace(string(out))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s", ErrNoJaeger, p)
	}
	return p, nil
}

// JaegerConfig describes one Jaeger run.
type JaegerConfig struct {
	// Binary is the jaeger binary; required (JaegerBinary finds it).
	Binary string
	// Config is its configuration; default tools/jaeger/config.yaml.
	Config string
	// Dir holds its log; required.
	Dir string
	// Host is the address every listener binds to in the namespace; default
	// 127.0.0.1 (reachable by a stack in the same namespace, nothing else).
	Host string
}

// Jaeger ports, as tools/jaeger/config.yaml sets them.
const (
	JaegerOTLPGRPCPort = 4317
	JaegerQueryPort    = 16686
	jaegerHealthPort   = 13133
)

// Jaeger is a running Jaeger all-in-one in a lab namespace.
type Jaeger struct {
	// Proc is the Jaeger process; LogPath has its output.
	Proc    *lab.Proc
	LogPath string
	host    string
	http    *http.Client
	ns      *lab.Netns
}

// StartJaeger starts Jaeger in ns, tracked by l (so Lab.Close stops it by PID
// too), and waits until its health check says the pipeline is running.
func StartJaeger(ctx context.Context, l *lab.Lab, ns *lab.Netns, cfg JaegerConfig) (*Jaeger, error) {
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("e2e: JaegerConfig needs Binary and Dir")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Config == "" {
		root, err := ModuleRoot(ctx)
		if err != nil {
			return nil, err
		}
		cfg.Config = filepath.Join(root, "tools", "jaeger", "config.yaml")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	j := &Jaeger{LogPath: filepath.Join(cfg.Dir, "jaeger.log"), host: cfg.Host, ns: ns}
	j.http = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return ns.DialContext(ctx, network, addr)
			},
		},
	}
	out, err := os.Create(j.LogPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := ns.Command(cfg.Binary, "--config", cfg.Config)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(CleanEnv(), "JAEGER_LISTEN_HOST="+cfg.Host)
	if j.Proc, err = l.Start(cmd); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := j.waitReady(ctx); err != nil {
		j.Stop()
		return nil, fmt.Errorf("%w; jaeger log:\n%s", err, tail(j.Log(), 3000))
	}
	return j, nil
}

func (j *Jaeger) waitReady(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	health := fmt.Sprintf("http://%s/status", net.JoinHostPort(j.host, strconv.Itoa(jaegerHealthPort)))
	var last error
	for {
		if code, _, err := j.get(ctx, health); err != nil {
			last = err
		} else if code == http.StatusOK {
			return nil
		} else {
			last = fmt.Errorf("health: HTTP %d", code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("e2e: jaeger not ready: %w (last: %v)", ctx.Err(), last)
		case <-j.Proc.Done():
			return fmt.Errorf("e2e: jaeger exited (%v) before it was ready", j.Proc.Err())
		case <-tick.C:
		}
	}
}

// OTLPEndpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT (with protocol grpc)
// of a process in the same namespace.
func (j *Jaeger) OTLPEndpoint() string {
	return "http://" + net.JoinHostPort(j.host, strconv.Itoa(JaegerOTLPGRPCPort))
}

// QueryAddr is the query API's host:port in the namespace.
func (j *Jaeger) QueryAddr() string { return net.JoinHostPort(j.host, strconv.Itoa(JaegerQueryPort)) }

// TracePath is the query API's path of one trace (OTLP JSON).
func TracePath(traceID string) string { return "/api/v3/traces/" + url.PathEscape(traceID) }

// Log returns Jaeger's output so far.
func (j *Jaeger) Log() string {
	b, _ := os.ReadFile(j.LogPath)
	return string(b)
}

// Stop stops Jaeger by PID (SIGTERM, then SIGKILL).
func (j *Jaeger) Stop() error {
	j.http.CloseIdleConnections()
	return j.Proc.Stop(10 * time.Second)
}

// Forward serves Jaeger's query API on ln (a listener outside the namespace, on
// loopback), copying each connection to the query port in the namespace, until
// the returned stop is called; stop closes ln and every forwarded connection and
// waits for their goroutines. The demo uses it so that a browser or curl on the
// host reaches Jaeger.
func (j *Jaeger) Forward(ln net.Listener) (stop func()) {
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]bool{}
		closed bool
		wg     sync.WaitGroup
	)
	// track registers c for stop to close; false once stopped (c is closed then).
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
		c.Close()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer untrack(c)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				up, err := j.ns.DialContext(ctx, "tcp", j.QueryAddr())
				cancel()
				if err != nil || !track(up) {
					return
				}
				defer untrack(up)
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					if cw, ok := up.(interface{ CloseWrite() error }); ok {
						cw.CloseWrite()
					}
					close(done)
				}()
				io.Copy(c, up)
				c.Close()
				<-done
			}()
		}
	}()
	return func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}
