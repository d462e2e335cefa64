//go:build linux

// Package lab builds private network labs out of Linux network namespaces, so that
// DHCP, TFTP, HTTP and whole network boots can be tested with real servers and real
// firmware without touching any network outside the machine.
//
// A Lab owns one main namespace holding a bridge (198.18.0.1/24 by default, from the
// 198.18.0.0/15 benchmarking range), and any number of further namespaces, veth pairs
// and tap devices for QEMU. No namespace gets a default route, so nothing in a lab can
// reach anything outside it. Every process started through the lab is tracked by PID
// and killed by Close, which also deletes the namespaces.
//
// From a test:
//
//	l := lab.NewT(t, lab.Config{}) // skips when not root or ip(8) is missing
//	tap, err := l.AddTap(ctx, "tap0")
//	p, err := l.Start(l.Main().Command("dnsmasq", "-k", "-C", conf))
//	err = l.Main().WaitListening(ctx, "udp", 67, p)
//	ln, err := l.Main().Listen("tcp", "198.18.0.1:8080")
//
// From a program:
//
//	l, err := lab.New(ctx, lab.Config{})
//	defer l.Close()
//
// Namespace names carry the creating process's PID and a random suffix, so labs of
// parallel test runs (and of other people on the same machine) never collide.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Errors reported by the package.
var (
	// ErrUnsupported is wrapped by errors that mean labs cannot be built on this
	// machine at all (not root, no ip(8), namespaces not permitted).
	ErrUnsupported = errors.New("lab: network namespaces unavailable")
	// ErrClosed is returned by operations on a closed Lab.
	ErrClosed = errors.New("lab: closed")
)

// DefaultBridgeAddr is the main namespace's bridge address when Config leaves it unset.
var DefaultBridgeAddr = netip.MustParsePrefix("198.18.0.1/24")

// benchmarking is the only IPv4 range a lab may use (RFC 2544 benchmarking).
var benchmarking = netip.MustParsePrefix("198.18.0.0/15")

// Config describes a lab. The zero value is a usable default.
type Config struct {
	// Prefix starts every namespace name; default "bc". Keep it short: names are
	// "<prefix>-<pid>-<random>[-<suffix>]".
	Prefix string
	// Bridge is the name of the bridge in the main namespace; default "br0".
	Bridge string
	// BridgeAddr is the bridge's address and prefix; default 198.18.0.1/24. It must
	// lie in 198.18.0.0/15.
	BridgeAddr netip.Prefix
	// IPv6 keeps IPv6 enabled on the lab's interfaces (link-local addresses, no
	// duplicate address detection, no autoconfiguration from router advertisements).
	// When false, IPv6 is disabled in every namespace of the lab.
	IPv6 bool
	// KeepDir keeps Dir after Close (for logs of a failed run).
	KeepDir bool
	// Logf, if set, receives one line per lab operation.
	Logf func(format string, args ...any)
	// CommandTimeout bounds each ip(8) invocation; default 10s.
	CommandTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = "bc"
	}
	if c.Bridge == "" {
		c.Bridge = "br0"
	}
	if !c.BridgeAddr.IsValid() {
		c.BridgeAddr = DefaultBridgeAddr
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = 10 * time.Second
	}
}

// Validate reports whether the configuration is usable.
func (c Config) Validate() error {
	c.setDefaults()
	if len(c.Bridge) > 15 {
		return fmt.Errorf("lab: bridge name %q longer than 15 bytes", c.Bridge)
	}
	if err := checkAddr(c.BridgeAddr); err != nil {
		return err
	}
	if strings.ContainsAny(c.Prefix, "/ \t\n") || len(c.Prefix) > 16 {
		return fmt.Errorf("lab: bad namespace prefix %q", c.Prefix)
	}
	return nil
}

// checkAddr enforces the lab's address rule: IPv4 from 198.18.0.0/15 only.
func checkAddr(p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("lab: invalid address %v", p)
	}
	if p.Addr().Is4() && !benchmarking.Contains(p.Addr()) {
		return fmt.Errorf("lab: address %v is outside 198.18.0.0/15", p)
	}
	return nil
}

// Lab is a set of network namespaces and the processes running in them.
type Lab struct {
	cfg  Config
	dir  string
	main *Netns

	mu     sync.Mutex
	nss    []*Netns // in creation order; deleted in reverse
	procs  []*Proc
	closed bool
	once   sync.Once
	errc   error
}

// nameSeq numbers the labs of this process.
var nameSeq atomic.Uint32

// Check reports why labs cannot be built here, or nil. The error wraps ErrUnsupported.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: must run as root (euid %d)", ErrUnsupported, os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: ip(8) not found (Debian package iproute2): %v", ErrUnsupported, err)
	}
	return nil
}

// New creates a lab: the main namespace with loopback up and the bridge with its
// address. The caller must Close it.
func New(ctx context.Context, cfg Config) (*Lab, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()

	var rnd [3]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("lab: random name: %w", err)
	}
	base := fmt.Sprintf("%s-%d-%s%d", cfg.Prefix, os.Getpid(), hex.EncodeToString(rnd[:]), nameSeq.Add(1))

	dir, err := os.MkdirTemp("", base+"-")
	if err != nil {
		return nil, fmt.Errorf("lab: work dir: %w", err)
	}
	l := &Lab{cfg: cfg, dir: dir}

	main, err := l.addNetns(ctx, base)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.main = main
	br := cfg.Bridge
	steps := [][]string{
		// A fixed address: a bridge without one takes the lowest of its ports'
		// MACs, so adding a port can change it, and neighbours' ARP entries for
		// the bridge's addresses then point at a MAC it drops frames to (as
		// "other host") until they expire, half a minute of silence.
		{"link", "add", br, "address", BridgeMAC(rnd), "type", "bridge", "forward_delay", "0", "stp_state", "0", "mcast_snooping", "0"},
		{"addr", "add", cfg.BridgeAddr.String(), "dev", br},
		{"link", "set", br, "up"},
	}
	for _, s := range steps {
		if err := main.ip(ctx, s...); err != nil {
			l.Close()
			return nil, err
		}
	}
	l.logf("lab %s: bridge %s %s (ipv6 %v), dir %s", base, br, cfg.BridgeAddr, cfg.IPv6, dir)
	return l, nil
}

// NewT creates a lab for a test or benchmark: it skips tb when labs are unsupported
// here, fails it on any other error, and closes the lab in tb.Cleanup. Lab operations
// are logged with tb.Logf unless cfg.Logf is set.
func NewT(tb testing.TB, cfg Config) *Lab {
	tb.Helper()
	if err := Check(); err != nil {
		tb.Skip(err)
	}
	if cfg.Logf == nil {
		cfg.Logf = tb.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := New(ctx, cfg)
	if errors.Is(err, ErrUnsupported) {
		tb.Skip(err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("lab close: %v", err)
		}
	})
	return l
}

// BridgeMAC is a locally administered unicast MAC for a bridge, from 3 bytes
// that tell bridges apart.
func BridgeMAC(b [3]byte) string {
	return fmt.Sprintf("02:bc:1a:%02x:%02x:%02x", b[0], b[1], b[2])
}

// Main returns the main namespace, the one holding the bridge.
func (l *Lab) Main() *Netns { return l.main }

// Name returns the main namespace's name, which also prefixes the others.
func (l *Lab) Name() string { return l.main.name }

// Bridge returns the bridge's interface name in the main namespace.
func (l *Lab) Bridge() string { return l.cfg.Bridge }

// BridgeAddr returns the bridge's address and prefix.
func (l *Lab) BridgeAddr() netip.Prefix { return l.cfg.BridgeAddr }

// IPv6 reports whether IPv6 is enabled in the lab.
func (l *Lab) IPv6() bool { return l.cfg.IPv6 }

// Dir returns a private work directory for configs and logs; Close removes it
// unless Config.KeepDir is set.
func (l *Lab) Dir() string { return l.dir }

func (l *Lab) logf(format string, args ...any) {
	if l.cfg.Logf != nil {
		l.cfg.Logf(format, args...)
	}
}

// AddNetns creates a further namespace named after the lab with suffix appended,
// loopback up, IPv6 set as configured and no routes.
func (l *Lab) AddNetns(ctx context.Context, suffix string) (*Netns, error) {
	if suffix == "" || strings.ContainsAny(suffix, "/ \t\n") {
		return nil, fmt.Errorf("lab: bad namespace suffix %q", suffix)
	}
	return l.addNetns(ctx, l.main.name+"-"+suffix)
}

func (l *Lab) addNetns(ctx context.Context, name string) (*Netns, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	l.mu.Unlock()

	ns := &Netns{name: name, lab: l}
	if out, err := l.runIP(ctx, "netns", "add", name); err != nil {
		if strings.Contains(out, "Operation not permitted") || strings.Contains(out, "Permission denied") {
			return nil, fmt.Errorf("%w: ip netns add %s: %s", ErrUnsupported, name, strings.TrimSpace(out))
		}
		return nil, fmt.Errorf("lab: ip netns add %s: %w: %s", name, err, strings.TrimSpace(out))
	}
	l.mu.Lock()
	l.nss = append(l.nss, ns)
	l.mu.Unlock()

	if err := ns.ip(ctx, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	// Interfaces created later inherit "default"; "all" covers lo.
	sys := map[string]string{}
	if l.cfg.IPv6 {
		for _, k := range []string{"all", "default"} {
			sys["net/ipv6/conf/"+k+"/disable_ipv6"] = "0"
			sys["net/ipv6/conf/"+k+"/accept_dad"] = "0"
			sys["net/ipv6/conf/"+k+"/accept_ra"] = "0"
			sys["net/ipv6/conf/"+k+"/forwarding"] = "0"
		}
	} else {
		for _, k := range []string{"all", "default"} {
			sys["net/ipv6/conf/"+k+"/disable_ipv6"] = "1"
		}
	}
	if err := ns.setSysctls(sys); err != nil {
		return nil, err
	}
	l.logf("lab: netns %s created", name)
	return ns, nil
}

// AddTap creates a tap device in the main namespace, attached to the bridge and up,
// for QEMU's "-netdev tap,ifname=<name>,script=no,downscript=no" (QEMU must then run
// in the main namespace, e.g. started with Main().Command).
func (l *Lab) AddTap(ctx context.Context, name string) (string, error) {
	if name == "" || len(name) > 15 {
		return "", fmt.Errorf("lab: bad tap name %q", name)
	}
	ns := l.main
	for _, s := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"link", "set", name, "master", l.cfg.Bridge},
		{"link", "set", name, "up"},
	} {
		if err := ns.ip(ctx, s...); err != nil {
			return "", err
		}
	}
	l.logf("lab: tap %s on %s", name, l.cfg.Bridge)
	return name, nil
}

// Endpoint is one end of a veth pair.
type Endpoint struct {
	// NS is the namespace the end lives in; it must belong to this lab.
	NS *Netns
	// Name is the interface name (at most 15 bytes).
	Name string
	// Addr, if valid, is assigned to the interface (IPv4 must be in 198.18.0.0/15).
	Addr netip.Prefix
	// Master, if set, names a bridge in NS to attach the interface to.
	Master string
}

// AddVeth creates a veth pair between two namespaces of the lab (or within one),
// assigns the addresses and brings both ends up. Typical uses: a DHCP server in one
// namespace and a client in another; or a client namespace attached to the main
// bridge (Master: l.Bridge()).
func (l *Lab) AddVeth(ctx context.Context, a, b Endpoint) error {
	for _, e := range []Endpoint{a, b} {
		if e.NS == nil || e.NS.lab != l {
			return fmt.Errorf("lab: veth end %q: namespace not of this lab", e.Name)
		}
		if e.Name == "" || len(e.Name) > 15 {
			return fmt.Errorf("lab: bad veth name %q", e.Name)
		}
		if e.Addr.IsValid() {
			if err := checkAddr(e.Addr); err != nil {
				return err
			}
		}
	}
	if err := a.NS.ip(ctx, "link", "add", a.Name, "type", "veth", "peer", "name", b.Name, "netns", b.NS.name); err != nil {
		return err
	}
	for _, e := range []Endpoint{a, b} {
		if e.Addr.IsValid() {
			if err := e.NS.ip(ctx, "addr", "add", e.Addr.String(), "dev", e.Name); err != nil {
				return err
			}
		}
		if e.Master != "" {
			if err := e.NS.ip(ctx, "link", "set", e.Name, "master", e.Master); err != nil {
				return err
			}
		}
		if err := e.NS.ip(ctx, "link", "set", e.Name, "up"); err != nil {
			return err
		}
	}
	l.logf("lab: veth %s/%s (%v) <-> %s/%s (%v)", a.NS.name, a.Name, a.Addr, b.NS.name, b.Name, b.Addr)
	return nil
}

// Start starts cmd (normally from Netns.Command), tracks its PID and returns it as a
// Proc. Close stops every process started this way that is still running. cmd gets
// its own process group, so stopping it also stops its children, and it is sent
// SIGKILL if this program dies.
func (l *Lab) Start(cmd *exec.Cmd) (*Proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	p, err := startProc(cmd)
	if err != nil {
		return nil, err
	}
	l.procs = append(l.procs, p)
	l.logf("lab: started pid %d: %s", p.PID(), strings.Join(cmd.Args, " "))
	return p, nil
}

// Close stops the processes started by the lab (SIGTERM to each process group, then
// SIGKILL), deletes its namespaces (and with them their interfaces) and removes Dir
// unless KeepDir is set. It is safe to call more than once.
func (l *Lab) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		procs := l.procs
		nss := l.nss
		l.mu.Unlock()

		var errs []error
		for i := len(procs) - 1; i >= 0; i-- {
			if err := procs[i].Stop(3 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := len(nss) - 1; i >= 0; i-- {
			if out, err := l.runIP(ctx, "netns", "delete", nss[i].name); err != nil {
				errs = append(errs, fmt.Errorf("lab: ip netns delete %s: %w: %s", nss[i].name, err, strings.TrimSpace(out)))
			} else {
				l.logf("lab: netns %s deleted", nss[i].name)
			}
		}
		if l.dir != "" && !l.cfg.KeepDir {
			if err := os.RemoveAll(l.dir); err != nil {
				errs = append(errs, fmt.Errorf("lab: remove work dir: %w", err))
			}
		}
		l.errc = errors.Join(errs...)
	})
	return l.errc
}

// runIP runs ip(8) in the caller's namespace with the lab's per-command timeout.
func (l *Lab) runIP(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CommandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	return string(out), err
}

// Exists reports whether a network namespace of that name exists (as ip-netns(8)
// sees it).
func Exists(name string) bool {
	_, err := os.Stat(netnsPath(name))
	return err == nil
}

// RemoveStale deletes the network namespaces (and work directories) of labs whose
// creating process no longer exists: leftovers of a run that was killed before it
// could Close. It considers only names of this package's form with the given prefix
// ("" means the default "bc"), "<prefix>-<pid>-<random>[-<suffix>]"; a lab whose
// PID is alive (or reused by another process) is left alone, so labs of runs in
// progress are never touched. It returns the names it deleted.
func RemoveStale(ctx context.Context, prefix string) ([]string, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if prefix == "" {
		prefix = "bc"
	}
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: list namespaces: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var removed []string
	var errs []error
	for _, e := range entries {
		pid, ok := stalePID(e.Name(), prefix)
		if !ok {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // creator alive (or PID reused): not ours to judge
		}
		out, err := exec.CommandContext(ctx, "ip", "netns", "delete", e.Name()).CombinedOutput()
		if err != nil {
			errs = append(errs, fmt.Errorf("lab: ip netns delete %s: %w: %s", e.Name(), err, strings.TrimSpace(string(out))))
			continue
		}
		removed = append(removed, e.Name())
		// The main namespace's work directory is "<name>-<random>" under TMPDIR.
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), e.Name()+"-[0-9]*"))
		for _, d := range dirs {
			os.RemoveAll(d)
		}
	}
	return removed, errors.Join(errs...)
}

// stalePID parses "<prefix>-<pid>-<random>[-<suffix>]" and returns pid.
func stalePID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix+"-")
	if !ok {
		return 0, false
	}
	f := strings.SplitN(rest, "-", 3)
	if len(f) < 2 || f[1] == "" {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 {
		return 0, false
	}
	for _, r := range f[1] {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return 0, false
		}
	}
	return pid, true
}
