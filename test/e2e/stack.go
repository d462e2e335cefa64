//go:build linux

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/test/lab"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// This file runs the real thing: the all-in-one launcher (tools/bootchain) as a
// subprocess inside a lab namespace, and bootctl against it.

// Tools are the bootchain binaries built for a test or demo.
type Tools struct {
	// Bootchain is the all-in-one launcher, Bootctl the CLI.
	Bootchain, Bootctl string
}

// ModuleRoot returns the directory of bootchain's go.mod, found from the working
// directory (tests run in their package's folder, inside the module).
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := runOutput(ctx, "go", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("e2e: not inside the bootchain module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}

// BuildTools builds tools/bootchain and tools/bootctl into dir (one `go build`).
func BuildTools(ctx context.Context, dir string) (Tools, error) {
	root, err := ModuleRoot(ctx)
	if err != nil {
		return Tools{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Tools{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./tools/bootchain", "./tools/bootctl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Tools{}, fmt.Errorf("e2e: go build tools: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return Tools{Bootchain: filepath.Join(dir, "bootchain"), Bootctl: filepath.Join(dir, "bootctl")}, nil
}

// StackConfig describes one launcher run.
type StackConfig struct {
	// Tools are the binaries; required.
	Tools Tools
	// Dir holds the data dir and the launcher's log; required.
	Dir string
	// Advertise is the address machines reach the stack at; default the lab
	// bridge's address.
	Advertise string
	// Args are further `bootchain up` flags (--dhcpd-interface, --dhcpd-mode, ...).
	Args []string
	// Env are further environment variables (OTEL_*). The launcher does not
	// inherit OTEL_* or BOOTCHAIN_* variables from this process.
	Env []string
	// DHCP: wait for dhcpd's admin API too (set when Args enable dhcpd).
	DHCP bool
}

// Stack is a running launcher in a lab namespace.
type Stack struct {
	// Proc is the launcher process.
	Proc *lab.Proc
	// NS is the namespace it runs in.
	NS *lab.Netns
	// DataDir is its --data-dir; LogPath has its stdout and stderr.
	DataDir, LogPath string
	// ClientConfig is the client config the launcher writes for its admin
	// (BOOTCHAIN_CONFIG of the launcher and of Bootctl): the test's own, never
	// the developer's ~/.config.
	ClientConfig string
	// Advertise is the address machines reach it at.
	Advertise string
	// Args are the launcher's arguments.
	Args  []string
	tools Tools

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// GRPCPorts are the launcher's default gRPC ports.
var GRPCPorts = map[string]int{"bootapi": 9080, "artifactstore": 9081, "dhcpd": 9082, "tftpd": 9083}

// StartStack starts `bootchain up` in ns (with an embedded etcd on the namespace's
// own loopback), tracked by l, and waits until every service answers its gRPC
// health check.
func StartStack(ctx context.Context, l *lab.Lab, ns *lab.Netns, cfg StackConfig) (*Stack, error) {
	if cfg.Tools.Bootchain == "" || cfg.Dir == "" {
		return nil, errors.New("e2e: StackConfig needs Tools and Dir")
	}
	if cfg.Advertise == "" {
		cfg.Advertise = l.BridgeAddr().Addr().String()
	}
	s := &Stack{
		NS: ns, DataDir: filepath.Join(cfg.Dir, "data"), LogPath: filepath.Join(cfg.Dir, "bootchain.log"),
		ClientConfig: filepath.Join(cfg.Dir, "bootctl.json"),
		Advertise:    cfg.Advertise, tools: cfg.Tools, conns: map[string]*grpc.ClientConn{},
	}
	if err := os.MkdirAll(s.DataDir, 0o755); err != nil {
		return nil, err
	}
	s.Args = append([]string{"up", "--data-dir", s.DataDir, "--advertise", cfg.Advertise}, cfg.Args...)
	out, err := os.Create(s.LogPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := ns.Command(cfg.Tools.Bootchain, s.Args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(append(CleanEnv(), pki.ConfigEnv+"="+s.ClientConfig), cfg.Env...)
	if s.Proc, err = l.Start(cmd); err != nil {
		return nil, err
	}
	svcs := []string{"artifactstore", "tftpd", "bootapi"}
	if cfg.DHCP {
		svcs = append(svcs, "dhcpd")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for _, svc := range svcs {
		if err := s.waitHealthy(ctx, svc); err != nil {
			s.Stop()
			return nil, fmt.Errorf("%w; launcher log:\n%s", err, tail(s.Log(), 3000))
		}
	}
	// The launcher writes the client config once every service listens, a
	// moment after the last one may already answer.
	if err := s.waitUp(ctx); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w; launcher log:\n%s", err, tail(s.Log(), 3000))
	}
	return s, nil
}

// CleanEnv is this process's environment without OTEL_* and BOOTCHAIN_* variables,
// so a developer's settings do not leak into the stack under test.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "BOOTCHAIN_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *Stack) waitHealthy(ctx context.Context, svc string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		// The launcher writes its certificates before it starts the services;
		// until then there is nothing to dial with.
		if cc, err := s.Conn(svc); err != nil {
			last = err
		} else {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
				return nil
			}
			if err != nil {
				last = err
			} else {
				last = fmt.Errorf("status %v", r.GetStatus())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("e2e: %s not healthy: %w (last: %v)", svc, ctx.Err(), last)
		case <-s.Proc.Done():
			return fmt.Errorf("e2e: launcher exited (%v) before %s was healthy", s.Proc.Err(), svc)
		case <-tick.C:
		}
	}
}

// waitUp waits for the launcher's "bootchain is up" line, printed after it wrote
// the client config.
func (s *Stack) waitUp(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(s.Log(), "bootchain is up") {
		select {
		case <-ctx.Done():
			return fmt.Errorf("e2e: launcher not up: %w", ctx.Err())
		case <-s.Proc.Done():
			return fmt.Errorf("e2e: launcher exited (%v) before it was up", s.Proc.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Conn returns a (cached) gRPC connection to svc on the namespace's loopback, with
// TLS and the admin's certificate from the launcher's PKI.
func (s *Stack) Conn(svc string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[svc]; ok {
		return c, nil
	}
	port, ok := GRPCPorts[svc]
	if !ok {
		return nil, fmt.Errorf("e2e: no service %q", svc)
	}
	d := pki.Dir(filepath.Join(s.DataDir, "pki"))
	tlsCfg, err := tlsconf.Files{CAFile: d.Path(pki.CACert), CertFile: d.Path(pki.AdminCert), KeyFile: d.Path(pki.AdminKey)}.Client()
	if err != nil {
		return nil, fmt.Errorf("e2e: %s: %w", svc, err)
	}
	ns := s.NS
	c, err := grpc.NewClient(fmt.Sprintf("passthrough:///127.0.0.1:%d", port),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		return nil, fmt.Errorf("e2e: dial %s: %w", svc, err)
	}
	s.conns[svc] = c
	return c, nil
}

// Bootctl runs bootctl with args inside the stack's namespace, with the
// launcher's client config, and returns its combined output.
func (s *Stack) Bootctl(ctx context.Context, args ...string) (string, error) {
	out, err := s.NS.Run(ctx, "env", append([]string{pki.ConfigEnv + "=" + s.ClientConfig, s.tools.Bootctl}, args...)...)
	return string(out), err
}

// Log returns the launcher's output so far.
func (s *Stack) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

// Stop stops the launcher (SIGTERM, then SIGKILL) and closes the connections.
func (s *Stack) Stop() error {
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = map[string]*grpc.ClientConn{}
	s.mu.Unlock()
	return s.Proc.Stop(10 * time.Second)
}

// BootConfig is what Provision puts into a stack for one machine.
type BootConfig struct {
	// MAC of the machine; required.
	MAC string
	// Initrd is the e2e initramfs (its Kernel is uploaded too); required.
	Initrd *Initrd
	// IPXEDir holds Debian's iPXE binaries; default /usr/lib/ipxe.
	IPXEDir string
	// Profile names the profile; default "e2e".
	Profile string
	// KernelName and InitrdName are the artifact names; default e2e/vmlinuz and
	// e2e/initrd.gz.
	KernelName, InitrdName string
	// Cmdline is the profile's cmdline template; default
	// "console=ttyS0 panic=1 hostname={{.Machine.Hostname}}".
	Cmdline string
	// Hostname of the machine record; default "e2e".
	Hostname string
	// Action is the machine's default action; default local-disk.
	Action string
	// NoJob: register only, create no job.
	NoJob bool
}

// Provision imports iPXE, uploads the kernel and initrd, creates the profile,
// registers the machine and creates a reinstall job, all with bootctl as an
// operator would. It returns the job's ID ("" with NoJob).
func (s *Stack) Provision(ctx context.Context, b BootConfig) (string, error) {
	if b.IPXEDir == "" {
		b.IPXEDir = "/usr/lib/ipxe"
	}
	if b.Profile == "" {
		b.Profile = "e2e"
	}
	if b.KernelName == "" {
		b.KernelName = "e2e/vmlinuz"
	}
	if b.InitrdName == "" {
		b.InitrdName = "e2e/initrd.gz"
	}
	if b.Cmdline == "" {
		b.Cmdline = "console=ttyS0 panic=1 hostname={{.Machine.Hostname}}"
	}
	if b.Hostname == "" {
		b.Hostname = "e2e"
	}
	if b.Action == "" {
		b.Action = "local-disk"
	}
	steps := [][]string{
		{"artifacts", "import-ipxe", "--dir", b.IPXEDir},
		{"artifacts", "upload", b.Initrd.Kernel.Image, "--name", b.KernelName},
		{"artifacts", "upload", b.Initrd.Path, "--name", b.InitrdName},
		{"profiles", "create", b.Profile, "-kernel", b.KernelName, "-initrd", b.InitrdName, "-cmdline", b.Cmdline, "-description", "bootchain e2e initrd"},
		{"machines", "register", b.MAC, "-hostname", b.Hostname, "-action", b.Action},
	}
	for _, st := range steps {
		if out, err := s.Bootctl(ctx, st...); err != nil {
			return "", fmt.Errorf("bootctl %s: %w: %s", strings.Join(st, " "), err, out)
		}
	}
	if b.NoJob {
		return "", nil
	}
	return s.CreateJob(ctx, b.MAC, b.Profile)
}

// CreateJob creates a reinstall job with bootctl and returns its ID.
func (s *Stack) CreateJob(ctx context.Context, mac, profile string) (string, error) {
	out, err := s.Bootctl(ctx, "-o", "json", "jobs", "create", "-mac", mac, "-profile", profile)
	if err != nil {
		return "", fmt.Errorf("bootctl jobs create: %w: %s", err, out)
	}
	return ParseJobID(out)
}

// ParseJobID picks the job's ID out of `bootctl -o json jobs create` output.
func ParseJobID(out string) (string, error) {
	// protojson of the job: {"id": "...", ...}; pick the id without a proto dependency here.
	i := bytes.Index([]byte(out), []byte(`"id"`))
	if i < 0 {
		return "", fmt.Errorf("bootctl jobs create: no id in %s", out)
	}
	rest := out[i+4:]
	rest = strings.TrimLeft(rest, " :\t\n")
	if !strings.HasPrefix(rest, `"`) {
		return "", fmt.Errorf("bootctl jobs create: no id in %s", out)
	}
	id, _, ok := strings.Cut(rest[1:], `"`)
	if !ok || id == "" {
		return "", fmt.Errorf("bootctl jobs create: no id in %s", out)
	}
	return id, nil
}
