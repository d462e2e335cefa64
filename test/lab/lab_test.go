//go:build linux

package lab_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/test/lab"
)

// ipLink is the part of "ip -j link show" output the tests look at.
type ipLink struct {
	IfName   string   `json:"ifname"`
	Master   string   `json:"master"`
	Flags    []string `json:"flags"`
	LinkKind string   `json:"link_type"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		PrefixLen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
	} `json:"addr_info"`
}

func ipJSON(t *testing.T, ns *lab.Netns, args ...string) []ipLink {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := ns.IP(ctx, append([]string{"-j"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("ip -j %v: %v: %s", args, err, out)
	}
	return links
}

func hasFlag(l ipLink, f string) bool {
	for _, x := range l.Flags {
		if x == f {
			return true
		}
	}
	return false
}

func TestBridgeAndTap(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if !lab.Exists(l.Name()) {
		t.Fatalf("namespace %s does not exist", l.Name())
	}
	addrs := ipJSON(t, l.Main(), "addr", "show", "dev", l.Bridge())
	if len(addrs) != 1 {
		t.Fatalf("bridge: got %d links", len(addrs))
	}
	var got []string
	for _, a := range addrs[0].AddrInfo {
		got = append(got, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		if a.Family == "inet6" {
			t.Errorf("IPv6 address %s on bridge with IPv6 off", a.Local)
		}
	}
	if len(got) != 1 || got[0] != "198.18.0.1/24" {
		t.Errorf("bridge addresses = %v, want [198.18.0.1/24]", got)
	}
	if v, err := l.Main().Sysctl("net/ipv6/conf/all/disable_ipv6"); err != nil || v != "1" {
		t.Errorf("disable_ipv6 = %q, %v; want 1", v, err)
	}

	lo := ipJSON(t, l.Main(), "link", "show", "dev", "lo")
	if !hasFlag(lo[0], "UP") {
		t.Errorf("lo not up: %v", lo[0].Flags)
	}

	tap, err := l.AddTap(ctx, "tap0")
	if err != nil {
		t.Fatal(err)
	}
	links := ipJSON(t, l.Main(), "link", "show", "dev", tap)
	if links[0].Master != l.Bridge() {
		t.Errorf("tap master = %q, want %q", links[0].Master, l.Bridge())
	}

	routes, err := l.Main().IP(ctx, "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.TrimSpace(string(routes)); s != "" {
		t.Errorf("default route in lab: %q", s)
	}
}

func TestIPv6LinkLocal(t *testing.T) {
	l := lab.NewT(t, lab.Config{IPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := l.AddNetns(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AddVeth(ctx, lab.Endpoint{NS: l.Main(), Name: "vb", Master: l.Bridge()}, lab.Endpoint{NS: b, Name: "eth0"}); err != nil {
		t.Fatal(err)
	}
	// With DAD off the link-local address is usable as soon as the link has carrier.
	var ll string
	for _, a := range ipJSON(t, b, "addr", "show", "dev", "eth0")[0].AddrInfo {
		if a.Family == "inet6" && a.Scope == "link" {
			ll = a.Local
		}
	}
	if ll == "" {
		t.Fatal("no IPv6 link-local address on eth0 with IPv6 on")
	}
	if v, err := b.Sysctl("net/ipv6/conf/eth0/accept_dad"); err != nil || v != "0" {
		t.Errorf("accept_dad = %q, %v; want 0", v, err)
	}
}

func TestVethPingAndTCP(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	srv, err := l.AddNetns(ctx, "srv")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := l.AddNetns(ctx, "cli")
	if err != nil {
		t.Fatal(err)
	}
	err = l.AddVeth(ctx,
		lab.Endpoint{NS: srv, Name: "s0", Addr: netip.MustParsePrefix("198.18.1.1/24")},
		lab.Endpoint{NS: cli, Name: "c0", Addr: netip.MustParsePrefix("198.18.1.2/24")})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("ping", func(t *testing.T) {
		ping := []string{"ping"}
		if _, err := exec.LookPath("ping"); err != nil {
			if _, err := exec.LookPath("busybox"); err != nil {
				t.Skip("neither ping nor busybox installed")
			}
			ping = []string{"busybox", "ping"}
		}
		args := append(ping[1:], "-c", "2", "-W", "2", "198.18.1.1")
		out, err := cli.Run(ctx, ping[0], args...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "2 packets received") {
			t.Errorf("ping output:\n%s", out)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		ln, err := srv.Listen("tcp", "198.18.1.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "echo %s", line)
		}()
		c, err := cli.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "hello\n")
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != "echo hello\n" {
			t.Fatalf("got %q, %v", got, err)
		}
		if c.LocalAddr().String()[:10] != "198.18.1.2" {
			t.Errorf("client address %v, want 198.18.1.2", c.LocalAddr())
		}
	})

	t.Run("isolated", func(t *testing.T) {
		// The host's loopback listener must not be reachable from the lab: the lab's
		// 127.0.0.1 is its own.
		ln, err := srv.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		defer dcancel()
		if c, err := cli.DialContext(dctx, "tcp", ln.Addr().String()); err == nil {
			c.Close()
			t.Errorf("dial %v from another namespace succeeded", ln.Addr())
		}
	})

	t.Run("listening", func(t *testing.T) {
		pc, err := srv.ListenPacket("udp", "198.18.1.1:6767")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		if err := srv.WaitListening(ctx, "udp", 6767, nil); err != nil {
			t.Fatal(err)
		}
		if ok, err := cli.Listening("udp", 6767); err != nil || ok {
			t.Errorf("udp 6767 seen in the other namespace: %v, %v", ok, err)
		}
	})
}

func TestStartAndClose(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := lab.New(ctx, lab.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	extra, err := l.AddNetns(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	// A shell that ignores nothing and a child of it: both must be gone after Close.
	p, err := l.Start(l.Main().Command("sh", "-c", "sleep 300 & wait"))
	if err != nil {
		t.Fatal(err)
	}
	// The process must run inside the namespace: its net namespace differs from ours.
	self, _ := os.Readlink("/proc/self/ns/net")
	var theirs string
	testkit.Poll(2*time.Second, func() bool { // ip netns exec switches, then execs
		theirs, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.PID()))
		return theirs != "" && theirs != self
	})
	if theirs == self {
		t.Errorf("process %d runs in the host's network namespace", p.PID())
	}

	names := []string{l.Name(), extra.Name()}
	dir := l.Dir()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Errorf("process %d still running after Close", p.PID())
	}
	for _, n := range names {
		if lab.Exists(n) {
			t.Errorf("namespace %s left behind", n)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("work dir %s left behind: %v", dir, err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Start(exec.Command("true")); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := map[string]struct {
		cfg     lab.Config
		wantErr bool
	}{
		"zero":            {lab.Config{}, false},
		"other 198.19":    {lab.Config{BridgeAddr: netip.MustParsePrefix("198.19.7.1/24")}, false},
		"private 10/8":    {lab.Config{BridgeAddr: netip.MustParsePrefix("10.0.0.1/24")}, true},
		"public":          {lab.Config{BridgeAddr: netip.MustParsePrefix("8.8.8.1/24")}, true},
		"long bridge":     {lab.Config{Bridge: "averyveryverylongname"}, true},
		"prefix with sep": {lab.Config{Prefix: "a/b"}, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func TestRemoveStale(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	var pidMax int
	fmt.Sscan(string(b), &pidMax)
	// A test-only prefix, so that nobody else's labs are considered.
	prefix := fmt.Sprintf("bcst%d", os.Getpid()%10000)
	dead := fmt.Sprintf("%s-%d-abc123", prefix, pidMax+1) // no process can have this PID
	alive := fmt.Sprintf("%s-%d-abc123", prefix, os.Getpid())
	foreign := fmt.Sprintf("%s-notapid", prefix)
	for _, n := range []string{dead, dead + "-srv", alive, foreign} {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", n, err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", n).Run() })
	}
	removed, err := lab.RemoveStale(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, ",") != strings.Join([]string{dead, dead + "-srv"}, ",") {
		t.Errorf("removed %v, want the two namespaces of the dead PID", removed)
	}
	for n, want := range map[string]bool{dead: false, dead + "-srv": false, alive: true, foreign: true} {
		if lab.Exists(n) != want {
			t.Errorf("namespace %s exists = %v, want %v", n, !want, want)
		}
	}
}
