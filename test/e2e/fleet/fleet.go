//go:build linux

// Package fleet runs bootchain in the shape a multi-site deployment has
// (docs/deploy.md), inside a private lab: a 3-member etcd cluster of Debian's etcd
// binary, an origin artifactstore, two bootapi replicas behind a VIP the harness
// moves by health check (as keepalived would), and sites, each in its own network
// namespace with its own dhcpd, tftpd and pull-through artifactstore replica. Every
// service is a separate process of its per-service binary, tracked by PID, so tests
// can kill -9 and restart any of them.
//
//	f := fleet.StartT(t, fleet.Config{})          // skips without root, etcd, ...
//	a := f.AddSite(ctx, "site-a", fleet.SiteConfig{ChainloadOwnIPXE: true})
//	f.Bootctl(ctx, "machines", "register", mac, "--site", "site-a")
//	p := f.EtcdLeader(ctx); p.Kill(); p.Restart(ctx)
//
// The address plan (all in 198.18.0.0/15, nothing routed out):
//
//	core (the lab's main namespace, bridge br0 198.18.0.1/24, forwarding):
//	  etcd members 198.18.0.11-13 (:2379 clients, :2380 peers)
//	  origin artifactstore 198.18.0.20 (:8081 HTTP, :9081 gRPC)
//	  OTLP receiver 198.18.0.1:4317
//	bootapi replicas: namespaces api1, api2 at 198.18.0.31, .32 (:8080, :9080)
//	  the VIP 198.18.0.10 is on the holder's interface
//	site n (namespace site-<name>): uplink 198.18.0.(100+n), boot network bridge
//	  198.18.n.1/24 (the site's router, dhcpd, tftpd, replica), taps for VMs
package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/test/e2e"
	"github.com/bootchain/bootchain/test/lab"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Fixed addresses of the core.
var (
	CoreAddr   = netip.MustParseAddr("198.18.0.1")
	VIP        = netip.MustParseAddr("198.18.0.10")
	OriginAddr = netip.MustParseAddr("198.18.0.20")
	etcdAddrs  = []netip.Addr{netip.MustParseAddr("198.18.0.11"), netip.MustParseAddr("198.18.0.12"), netip.MustParseAddr("198.18.0.13")}
	apiAddrs   = []netip.Addr{netip.MustParseAddr("198.18.0.31"), netip.MustParseAddr("198.18.0.32")}
)

// Config describes a fleet.
type Config struct {
	// Bins are the binaries; default Build into the user's cache.
	Bins Binaries
	// EtcdBinary is Debian's etcd; default /usr/bin/etcd.
	EtcdBinary string
	// StallAfter is bootapi's --stall-after; default 60s.
	StallAfter time.Duration
	// Keep keeps the lab directory (logs) after Close.
	Keep bool
	// Logf receives the harness's and the lab's lines; default none.
	Logf func(format string, args ...any)
}

// Fleet is a running multi-site deployment in a lab.
type Fleet struct {
	Lab  *lab.Lab
	Core *lab.Netns
	// API are the bootapi replicas' namespaces.
	API []*lab.Netns
	// OTLP receives every service's spans.
	OTLP *e2e.OTLPReceiver
	// Etcd are the cluster's members, Bootapi the replicas, Origin the origin
	// artifactstore.
	Etcd    []*Proc
	Bootapi []*Proc
	Origin  *Proc

	cfg       Config
	dir       string
	ca        *pki.CA
	clientCfg string
	etcdCli   *clientv3.Client
	vip       *vipMover

	cleanup []func() // after the lab is closed

	mu    sync.Mutex
	sites map[string]*Site
	procs []*Proc
}

// Proc is one service process. Kill and Restart act on it by PID; its log
// collects the output of every incarnation.
type Proc struct {
	// Name is "etcd1", "bootapi2", "site-a/dhcpd", ...
	Name string
	// NS is the namespace it runs in.
	NS *lab.Netns
	// LogPath holds its output.
	LogPath string
	// Ready probes it (an HTTP health URL from inside NS); "" for none.
	Ready string

	f    *Fleet
	bin  string
	args []string
	env  []string
	mu   sync.Mutex
	cur  *lab.Proc
}

// Check reports why a fleet cannot run here (the test skips then), or nil.
func Check(etcdBinary string) error {
	if err := lab.Check(); err != nil {
		return err
	}
	if etcdBinary == "" {
		etcdBinary = "/usr/bin/etcd"
	}
	if _, err := os.Stat(etcdBinary); err != nil {
		return fmt.Errorf("fleet: no etcd (Debian package etcd-server, scripts/install-deps.sh): %w", err)
	}
	return nil
}

// StartT starts a fleet for a test: it skips t when Check fails, fails it on any
// other error and closes the fleet in t.Cleanup.
func StartT(t *testing.T, cfg Config) *Fleet {
	t.Helper()
	if err := Check(cfg.EtcdBinary); err != nil {
		t.Skip(err)
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	if cfg.Bins == nil {
		// Apart from Start's bound: a cold build on a busy machine takes minutes.
		bctx, bcancel := context.WithTimeout(context.Background(), 15*time.Minute)
		bins, err := BuildCached(bctx)
		bcancel()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Bins = bins
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f, err := Start(ctx, cfg)
	if errors.Is(err, lab.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range f.Procs() {
				t.Logf("%s log (tail):\n%s", p.Name, tail(p.Log(), 2500))
			}
		}
		if err := f.Close(); err != nil {
			t.Errorf("fleet close: %v", err)
		}
	})
	return f
}

// Start builds the core: the lab, etcd, the origin, the bootapi replicas and the
// VIP, and writes bootctl's config. The caller must Close the fleet.
func Start(ctx context.Context, cfg Config) (_ *Fleet, err error) {
	if cfg.EtcdBinary == "" {
		cfg.EtcdBinary = "/usr/bin/etcd"
	}
	if cfg.StallAfter == 0 {
		cfg.StallAfter = time.Minute
	}
	if cfg.Bins == nil {
		if cfg.Bins, err = BuildCached(ctx); err != nil {
			return nil, err
		}
	}
	l, err := lab.New(ctx, lab.Config{Prefix: "bcf", IPv6: true, KeepDir: cfg.Keep, Logf: cfg.Logf})
	if err != nil {
		return nil, err
	}
	f := &Fleet{Lab: l, Core: l.Main(), cfg: cfg, dir: l.Dir(), sites: map[string]*Site{}}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := f.Core.Do(func() error { return writeSysctl("net/ipv4/ip_forward", "1") }); err != nil {
		return nil, err
	}
	for _, a := range append(append([]netip.Addr{}, etcdAddrs...), OriginAddr) {
		if _, err := f.Core.IP(ctx, "addr", "add", a.String()+"/24", "dev", l.Bridge()); err != nil {
			return nil, err
		}
	}
	ln, err := f.Core.Listen("tcp", netip.AddrPortFrom(CoreAddr, 4317).String())
	if err != nil {
		return nil, err
	}
	f.OTLP = e2e.ServeOTLP(ln)
	if f.ca, err = pki.CreateCA("bootchain fleet e2e"); err != nil {
		return nil, err
	}
	if err := f.writeClientConfig(); err != nil {
		return nil, err
	}

	if err := f.startEtcd(ctx); err != nil {
		return nil, err
	}
	origin, err := f.bundle("origin", "", OriginAddr.String())
	if err != nil {
		return nil, err
	}
	f.Origin = f.newProc("origin", f.Core, f.cfg.Bins["artifactstore"], []string{
		"--site", "default", "--pki-dir", origin, "--data-dir", filepath.Join(f.dir, "origin"),
	}, "http://"+OriginAddr.String()+":8081/healthz")
	if err := f.Origin.Start(ctx); err != nil {
		return nil, err
	}
	for i, a := range apiAddrs {
		ns, err := l.AddNetns(ctx, fmt.Sprintf("api%d", i+1))
		if err != nil {
			return nil, err
		}
		if err := l.AddVeth(ctx, lab.Endpoint{NS: f.Core, Name: fmt.Sprintf("vapi%d", i+1), Master: l.Bridge()},
			lab.Endpoint{NS: ns, Name: "eth0", Addr: netip.PrefixFrom(a, 24)}); err != nil {
			return nil, err
		}
		f.API = append(f.API, ns)
	}
	pkiAPI, err := f.bundle("bootapi", "", VIP.String(), apiAddrs[0].String(), apiAddrs[1].String())
	if err != nil {
		return nil, err
	}
	public := "http://" + VIP.String() + ":8080"
	for i, ns := range f.API {
		p := f.newProc(fmt.Sprintf("bootapi%d", i+1), ns, f.cfg.Bins["bootapi"], []string{
			"--site", "default", "--pki-dir", pkiAPI, "--advertise", apiAddrs[i].String(),
			"--public-url", public, "--callback-url", public, "--artifact-url", "http://" + OriginAddr.String() + ":8081",
			"--stall-after", cfg.StallAfter.String(), "--default-action", "local-disk",
		}, "http://"+apiAddrs[i].String()+":8080/healthz")
		if err := p.Start(ctx); err != nil {
			return nil, err
		}
		f.Bootapi = append(f.Bootapi, p)
	}
	f.vip = newVIPMover(f)
	if err := f.vip.start(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Close stops every process, the VIP mover and the lab.
func (f *Fleet) Close() error {
	if f.vip != nil {
		f.vip.stop()
	}
	if f.etcdCli != nil {
		f.etcdCli.Close()
	}
	var errs []error
	if f.Lab != nil {
		errs = append(errs, f.Lab.Close())
	}
	if f.OTLP != nil {
		f.OTLP.Close()
	}
	for _, c := range f.cleanup {
		c()
	}
	return errors.Join(errs...)
}

// Procs returns every process of the fleet, in start order.
func (f *Fleet) Procs() []*Proc {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Proc(nil), f.procs...)
}

// Dir is the lab's work directory (logs, data dirs, PKI).
func (f *Fleet) Dir() string { return f.dir }

// EtcdEndpoints is the value of every service's --etcd-endpoints.
func EtcdEndpoints() string {
	var eps []string
	for _, a := range etcdAddrs {
		eps = append(eps, a.String()+":2379")
	}
	return strings.Join(eps, ",")
}

// newProc declares a process; a bootchain service (not etcd) also gets the etcd
// endpoints and exports its spans to the fleet's OTLP receiver.
func (f *Fleet) newProc(name string, ns *lab.Netns, bin string, args []string, ready string) *Proc {
	p := &Proc{Name: name, NS: ns, LogPath: filepath.Join(f.dir, "logs", strings.ReplaceAll(name, "/", "-")+".log"), Ready: ready, f: f, bin: bin, args: args}
	if bin != f.cfg.EtcdBinary {
		p.args = append([]string{"--etcd-endpoints", EtcdEndpoints()}, args...)
		p.env = []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + CoreAddr.String() + ":4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
			"OTEL_BSP_SCHEDULE_DELAY=200",
		}
	}
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	return p
}

// Start starts the process (again) and waits for its readiness probe.
func (p *Proc) Start(ctx context.Context) error {
	p.mu.Lock()
	if p.cur != nil && !p.cur.Exited() {
		p.mu.Unlock()
		return fmt.Errorf("fleet: %s is running (pid %d)", p.Name, p.cur.PID())
	}
	if err := os.MkdirAll(filepath.Dir(p.LogPath), 0o755); err != nil {
		p.mu.Unlock()
		return err
	}
	out, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.mu.Unlock()
		return err
	}
	fmt.Fprintf(out, "==== %s start: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := p.NS.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(e2e.CleanEnv(), p.env...)
	cur, err := p.f.Lab.Start(cmd)
	out.Close()
	if err != nil {
		p.mu.Unlock()
		return err
	}
	p.cur = cur
	p.mu.Unlock()
	if p.Ready == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		return fmt.Errorf("%w; log:\n%s", err, tail(p.Log(), 3000))
	}
	return nil
}

// PID is the current incarnation's PID (0 before Start).
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return 0
	}
	return p.cur.PID()
}

// Running reports whether the current incarnation runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur != nil && !p.cur.Exited()
}

// Kill sends SIGKILL to the process (by PID, its own process group) and waits
// until it is reaped.
func (p *Proc) Kill() error {
	p.mu.Lock()
	cur := p.cur
	p.mu.Unlock()
	if cur == nil {
		return fmt.Errorf("fleet: %s never started", p.Name)
	}
	if err := cur.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cur.Wait(ctx); err != nil && ctx.Err() != nil {
		return fmt.Errorf("fleet: %s (pid %d) not reaped after SIGKILL", p.Name, cur.PID())
	}
	p.f.logf("fleet: kill -9 %s (pid %d)", p.Name, cur.PID())
	return nil
}

// Restart starts a process that was killed (or exited) again.
func (p *Proc) Restart(ctx context.Context) error { return p.Start(ctx) }

// WaitReady polls the readiness URL until it answers 200.
func (p *Proc) WaitReady(ctx context.Context) error {
	c := httpClient(p.NS)
	defer c.CloseIdleConnections()
	var last error
	for {
		p.mu.Lock()
		cur := p.cur
		p.mu.Unlock()
		if cur != nil && cur.Exited() {
			return fmt.Errorf("fleet: %s exited: %v", p.Name, cur.Err())
		}
		if last = probe(ctx, c, p.Ready); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("fleet: %s not ready at %s: %w (last: %v)", p.Name, p.Ready, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, c *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	r, err := c.Do(req)
	if err != nil {
		return err
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, r.Status)
	}
	return nil
}

// Log returns the process's output so far (every incarnation).
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

func (f *Fleet) logf(format string, args ...any) {
	if f.cfg.Logf != nil {
		f.cfg.Logf(format, args...)
	}
}

// bundle writes a service's --pki-dir (what `bootchain pki issue --bundle`
// writes): the CA, a server certificate for hosts and the service identity
// limited to site (none: every site).
func (f *Fleet) bundle(name, site string, hosts ...string) (string, error) {
	id := auth.Identity{Name: name, Role: auth.RoleService}
	if site != "" {
		id.Sites = []string{site}
	}
	dir := filepath.Join(f.dir, "pki", name)
	d := pki.Dir(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	certPEM, keyPEM, err := f.ca.IssueClient(id, 24*time.Hour)
	if err != nil {
		return "", err
	}
	srvPEM, srvKey, err := f.ca.IssueServer(name, hosts, 24*time.Hour)
	if err != nil {
		return "", err
	}
	if err := pki.WriteLeaf(d.Path(pki.ServerCert), d.Path(pki.ServerKey), srvPEM, srvKey); err != nil {
		return "", err
	}
	if err := pki.WriteLeaf(d.Path(pki.ServiceCert), d.Path(pki.ServiceKey), certPEM, keyPEM); err != nil {
		return "", err
	}
	return dir, pki.WriteFileAtomic(d.Path(pki.CACert), f.ca.CertPEM, 0o644)
}

// writeClientConfig writes bootctl's config: the admin's certificate, bootapi
// at the VIP, artifactstore at the origin.
func (f *Fleet) writeClientConfig() error {
	d := pki.Dir(filepath.Join(f.dir, "pki", "admin"))
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	certPEM, keyPEM, err := f.ca.IssueClient(pki.AdminIdentity, 24*time.Hour)
	if err != nil {
		return err
	}
	if err := pki.WriteLeaf(d.Path(pki.AdminCert), d.Path(pki.AdminKey), certPEM, keyPEM); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(d.Path(pki.CACert), f.ca.CertPEM, 0o644); err != nil {
		return err
	}
	f.clientCfg = filepath.Join(f.dir, "bootctl.json")
	return pki.WriteClientConfig(f.clientCfg, pki.ClientConfig{
		BootAPI: VIP.String() + ":9080", ArtifactStore: OriginAddr.String() + ":9081",
		CA: d.Path(pki.CACert), Cert: d.Path(pki.AdminCert), Key: d.Path(pki.AdminKey),
	})
}

// Bootctl runs bootctl as the admin in the core namespace (bootapi at the VIP,
// artifactstore at the origin unless args say otherwise) and returns its output.
func (f *Fleet) Bootctl(ctx context.Context, args ...string) (string, error) {
	out, err := f.Core.Run(ctx, "env", append([]string{pki.ConfigEnv + "=" + f.clientCfg, f.cfg.Bins["bootctl"]}, args...)...)
	return string(out), err
}

// GRPC dials a service's gRPC API from the core namespace as the admin.
func (f *Fleet) GRPC(addr string) (*grpc.ClientConn, error) {
	return dialAdmin(f.Core, filepath.Join(f.dir, "pki", "admin"), addr)
}

// EtcdClient returns a client of the cluster (from the core namespace).
func (f *Fleet) EtcdClient() *clientv3.Client { return f.etcdCli }

func writeSysctl(key, value string) error {
	return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// etcdLogger keeps the etcd client quiet.
var etcdLogger = zap.NewNop()

// httpClient makes HTTP requests from inside ns, without keep-alives (a probe
// must see a replica's death, not an old connection).
func httpClient(ns *lab.Netns) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
}

// dialer adapts a namespace's DialContext for gRPC.
func dialer(ns *lab.Netns) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) { return ns.DialContext(ctx, "tcp", addr) }
}
