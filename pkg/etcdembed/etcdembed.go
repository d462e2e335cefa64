// Package etcdembed runs a single-node etcd inside the process: the all-in-one
// launcher's store and the tests'. It lives apart from pkg/store so that a
// service binary, which only talks to etcd, does not link etcd's server.
//
//	e, err := etcdembed.Start(ctx, etcdembed.Config{Dir: "./var"})
//	defer e.Close()
//	st := e.Store(5 * time.Second)
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bootchain/bootchain/pkg/store"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config configures the embedded single-node etcd.
type Config struct {
	// Dir holds etcd's data (member/ wal and snapshots).
	Dir string
	// ClientAddr is host:port for clients; default 127.0.0.1:2379. Port 0 picks a
	// free port.
	ClientAddr string
	// PeerAddr is host:port for the (unused) peer listener; default 127.0.0.1:2380.
	// Port 0 picks a free port.
	PeerAddr string
	// StartTimeout bounds startup; default 30s.
	StartTimeout time.Duration
	// UnsafeNoFsync skips fsync: only for tests, never for data you keep.
	UnsafeNoFsync bool
	// LogLevel of etcd's own logger; default "error".
	LogLevel string
	// AllowNonLoopback lets ClientAddr and PeerAddr be off loopback. The embedded
	// etcd serves plaintext without authentication: anyone who reaches it owns
	// every machine's boot, so Start refuses such an address unless this is set.
	AllowNonLoopback bool
}

// checkLoopback refuses listen addresses off loopback (a wildcard or empty host
// included) unless cfg allows them.
func checkLoopback(cfg Config) error {
	if cfg.AllowNonLoopback {
		return nil
	}
	for _, a := range []struct{ flag, addr string }{{"client", cfg.ClientAddr}, {"peer", cfg.PeerAddr}} {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("etcdembed: bad %s address %q: %w", a.flag, a.addr, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("etcdembed: %s address %s is not on loopback: the embedded etcd has no TLS and no authentication; keep it on 127.0.0.1 (or use an external etcd with TLS and auth)", a.flag, a.addr)
		}
	}
	return nil
}

// Etcd is a running embedded etcd.
type Etcd struct {
	etcd     *embed.Etcd
	endpoint string
	peer     string
	closed   sync.Once
}

// Start starts a single-node etcd and waits until it serves.
func Start(ctx context.Context, cfg Config) (*Etcd, error) {
	if cfg.Dir == "" {
		return nil, errors.New("etcdembed: embedded etcd needs a data dir")
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:2379"
	}
	if cfg.PeerAddr == "" {
		cfg.PeerAddr = "127.0.0.1:2380"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	if err := checkLoopback(cfg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdembed: embedded etcd data dir: %w", err)
	}
	// A port 0 is resolved by listening on a free port and closing it again, so
	// something else can take the port before etcd binds it (parallel test
	// binaries do). etcd binds its listeners before it touches the data dir, so a
	// bind failure on a port picked here is retried with fresh ports; one on a
	// port the caller chose is the caller's to fix.
	for attempt := 1; ; attempt++ {
		run := cfg
		var err error
		if run.ClientAddr, err = resolvePort(cfg.ClientAddr); err != nil {
			return nil, err
		}
		if run.PeerAddr, err = resolvePort(cfg.PeerAddr); err != nil {
			return nil, err
		}
		e, err := start(ctx, run)
		if err == nil || attempt == 5 || !addrInUse(err) ||
			!(pickedInUse(cfg.ClientAddr, run.ClientAddr, err) || pickedInUse(cfg.PeerAddr, run.PeerAddr, err)) {
			return e, err
		}
	}
}

// pickedInUse tells whether err is about addr, a port picked for asked (port 0).
func pickedInUse(asked, addr string, err error) bool {
	_, port, _ := net.SplitHostPort(asked)
	return port == "0" && strings.Contains(err.Error(), addr)
}

func start(ctx context.Context, cfg Config) (*Etcd, error) {
	ec := embed.NewConfig()
	ec.Name = "bootchain"
	ec.Dir = filepath.Join(cfg.Dir, "etcd")
	cu := url.URL{Scheme: "http", Host: cfg.ClientAddr}
	pu := url.URL{Scheme: "http", Host: cfg.PeerAddr}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.Name + "=" + pu.String()
	ec.LogLevel = cfg.LogLevel
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(quietLogger(cfg.LogLevel))
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	// Keep history bounded: the caches relist after a compaction.
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "1h"
	ec.QuotaBackendBytes = 4 << 30

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcdembed: embedded etcd: %w", err)
	case <-time.After(cfg.StartTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcdembed: embedded etcd not ready after %s", cfg.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	return &Etcd{etcd: e, endpoint: cfg.ClientAddr, peer: cfg.PeerAddr}, nil
}

// PeerAddr is the address etcd's peer listener took (host:port).
func (e *Etcd) PeerAddr() string { return e.peer }

// Endpoints are the client endpoints to give to Open.
func (e *Etcd) Endpoints() []string { return []string{e.endpoint} }

// Store returns a Store whose client calls this etcd directly, in the same
// process: no gRPC encoding, no HTTP/2 framing, no loopback socket. Requests still
// go through raft, the WAL (with its fsync) and the MVCC store, so durability is
// the same as over the network, at about half of etcd's CPU cost per write.
// requestTimeout bounds each call (default 5s).
func (e *Etcd) Store(requestTimeout time.Duration) *store.Store {
	return store.FromClient(v3client.New(e.etcd.Server), requestTimeout)
}

// Err reports a fatal error of the running etcd.
func (e *Etcd) Err() <-chan error { return e.etcd.Err() }

// Close stops etcd, waiting for in-flight requests to finish.
// Closing twice is harmless (a test that restarts etcd closes it early).
func (e *Etcd) Close() { e.closed.Do(e.etcd.Close) }

func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

func resolvePort(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("etcdembed: bad address %q: %w", hostport, err)
	}
	if port != "0" {
		return hostport, nil
	}
	return pickPort(host)
}

// pickPort returns host:port with a port that was free a moment ago. A variable
// so that a test can hand out a busy one.
var pickPort = func(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("etcdembed: pick a port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// quietLogger is etcd's zap logger minus the errors etcd logs about its own listeners
// closing during a normal shutdown.
func quietLogger(level string) *zap.Logger {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		lvl = zapcore.ErrorLevel
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), lvl)
	return zap.New(&closeFilter{Core: core})
}

type closeFilter struct{ zapcore.Core }

func (c *closeFilter) With(f []zapcore.Field) zapcore.Core { return &closeFilter{c.Core.With(f)} }

func (c *closeFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if strings.Contains(e.Message, "setting up serving from embedded etcd failed") {
		return ce
	}
	return c.Core.Check(e, ce)
}
