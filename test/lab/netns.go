//go:build linux

package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Netns is one network namespace of a lab.
type Netns struct {
	name string
	lab  *Lab
}

// Name returns the namespace's name, as used by "ip netns exec <name>".
func (n *Netns) Name() string { return n.name }

// Path returns the namespace's bind mount, e.g. /run/netns/<name>.
func (n *Netns) Path() string { return netnsPath(n.name) }

func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// Command returns a command that runs name with args inside the namespace (through
// "ip netns exec", which execs the program, so the PID is the program's own). Start
// it with Lab.Start to have it tracked, or with Run for a short command.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// Run runs a short command inside the namespace and returns its combined output.
// The command is killed when ctx ends; with no deadline on ctx, after one minute.
func (n *Netns) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab: %s in %s: %w: %s", name, n.name, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// ip runs "ip -n <ns> args...".
func (n *Netns) ip(ctx context.Context, args ...string) error {
	out, err := n.lab.runIP(ctx, append([]string{"-n", n.name}, args...)...)
	if err != nil {
		return fmt.Errorf("lab: ip -n %s %s: %w: %s", n.name, strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	return nil
}

// IP runs "ip -n <ns> args..." and returns its output (for example
// IP(ctx, "-j", "addr", "show", "dev", "br0")).
func (n *Netns) IP(ctx context.Context, args ...string) ([]byte, error) {
	out, err := n.lab.runIP(ctx, append([]string{"-n", n.name}, args...)...)
	if err != nil {
		return []byte(out), fmt.Errorf("lab: ip -n %s %s: %w: %s", n.name, strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	return []byte(out), nil
}

// Do runs fn on an OS thread switched into the namespace, so that sockets fn creates
// belong to the namespace (a socket keeps its namespace for life). fn must not start
// goroutines that expect to be in the namespace: only the calling thread is.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored := false
		defer func() {
			// A thread left in the lab's namespace must not be reused: exiting the
			// goroutine while still locked makes the runtime end the thread.
			if restored {
				runtime.UnlockOSThread()
			}
		}()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("lab: open own netns: %w", err)
			restored = true
			return
		}
		defer orig.Close()
		target, err := os.Open(n.Path())
		if err != nil {
			errc <- fmt.Errorf("lab: open netns %s: %w", n.name, err)
			restored = true
			return
		}
		defer target.Close()
		if err := setns(int(target.Fd())); err != nil {
			errc <- fmt.Errorf("lab: enter netns %s: %w", n.name, err)
			restored = true
			return
		}
		ferr := fn()
		restored = setns(int(orig.Fd())) == nil
		errc <- ferr
	}()
	return <-errc
}

func setns(fd int) error {
	if sysSetns < 0 {
		return errors.New("setns not supported on " + runtime.GOARCH)
	}
	if _, _, e := syscall.RawSyscall(uintptr(sysSetns), uintptr(fd), syscall.CLONE_NEWNET, 0); e != 0 {
		return e
	}
	return nil
}

// Listen announces on the local network address inside the namespace (see net.Listen).
func (n *Netns) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// ListenPacket is net.ListenPacket inside the namespace.
func (n *Netns) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		pc, err = net.ListenPacket(network, address)
		return err
	})
	return pc, err
}

// DialContext connects from inside the namespace; it fits http.Transport.DialContext.
func (n *Netns) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// setSysctls writes /proc/sys/<key> = value inside the namespace.
func (n *Netns) setSysctls(kv map[string]string) error {
	return n.Do(func() error {
		for k, v := range kv {
			if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
				return fmt.Errorf("lab: sysctl %s=%s in %s: %w", k, v, n.name, err)
			}
		}
		return nil
	})
}

// Sysctl reads /proc/sys/<key> (slash-separated, e.g. "net/ipv4/ip_forward") inside
// the namespace.
func (n *Netns) Sysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// Listening reports whether some socket in the namespace is bound to the local port:
// listening for network "tcp", bound for "udp" (both cover IPv4 and IPv6).
func (n *Netns) Listening(network string, port uint16) (bool, error) {
	var files []string
	var wantState string
	switch network {
	case "tcp":
		files, wantState = []string{"tcp", "tcp6"}, "0A" // TCP_LISTEN
	case "udp":
		files = []string{"udp", "udp6"}
	default:
		return false, fmt.Errorf("lab: Listening: unsupported network %q", network)
	}
	found := false
	err := n.Do(func() error {
		for _, f := range files {
			ok, err := procNetHasPort(filepath.Join("/proc/thread-self/net", f), port, wantState)
			if err != nil && !errors.Is(err, os.ErrNotExist) { // tcp6 is absent without IPv6
				return err
			}
			if ok {
				found = true
				return nil
			}
		}
		return nil
	})
	return found, err
}

// procNetHasPort scans a /proc/net/{tcp,udp}[6] table for a local port (and state).
func procNetHasPort(path string, port uint16, state string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		i := strings.LastIndexByte(fields[1], ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(fields[1][i+1:], 16, 16)
		if err != nil || uint16(p) != port {
			continue
		}
		if state == "" || fields[3] == state {
			return true, nil
		}
	}
	return false, sc.Err()
}

// WaitListening polls until a socket in the namespace listens on (tcp) or is bound to
// (udp) port, or until ctx ends; with no deadline on ctx it gives up after 30s. If
// proc is not nil and exits first, that is reported at once.
func (n *Netns) WaitListening(ctx context.Context, network string, port uint16, proc *Proc) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := n.Listening(network, port)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		var exited <-chan struct{}
		if proc != nil {
			exited = proc.Done()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: waiting for %s port %d in %s: %w", network, port, n.name, ctx.Err())
		case <-exited:
			return fmt.Errorf("lab: waiting for %s port %d in %s: process %d exited: %v", network, port, n.name, proc.PID(), proc.Err())
		case <-tick.C:
		}
	}
}
