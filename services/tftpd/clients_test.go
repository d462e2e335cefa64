package tftpd_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/services/tftpd"
)

// Debian's tftp-hpa client (package tftp-hpa) against tftpd.
func TestTftpHpaClient(t *testing.T) {
	bin, err := exec.LookPath("tftp")
	if err != nil {
		t.Skip("tftp (tftp-hpa) not installed: apt-get install tftp-hpa")
	}
	e := newEnv(t)
	efi := ipxeEFI(t)
	e.arts.Put("ipxe.efi", efi)
	host, port, _ := net.SplitHostPort(e.addr())
	out := filepath.Join(t.TempDir(), "ipxe.efi")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-m", "binary", host, port, "-c", "get", "ipxe.efi", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tftp: %v: %s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, efi) {
		t.Fatalf("tftp-hpa got %d bytes (%v), want %d", len(got), err, len(efi))
	}
	// A missing file is an error the client reports.
	cmd = exec.CommandContext(ctx, bin, "-m", "binary", host, port, "-c", "get", "nope.efi", filepath.Join(t.TempDir(), "x"))
	b, _ := cmd.CombinedOutput()
	if !strings.Contains(string(b), "not found") {
		t.Errorf("tftp for a missing file said %q", b)
	}
}

// atftp with blksize and tsize, directly and through a lossy link.
func TestAtftpClient(t *testing.T) {
	bin, err := exec.LookPath("atftp")
	if err != nil {
		t.Skip("atftp not installed: apt-get install atftp")
	}
	e := newEnv(t)
	efi := ipxeEFI(t)
	e.arts.Put("ipxe.efi", efi)
	lossy := startLossyProxy(t, e.srv.Addr(), 23)
	for _, tc := range []struct {
		name, addr string
		blksize    int
	}{
		{"direct 512", e.addr(), 512},
		{"direct 1468", e.addr(), 1468},
		{"lossy 1468", lossy.addr(), 1468},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, port, _ := net.SplitHostPort(tc.addr)
			out := filepath.Join(t.TempDir(), "ipxe.efi")
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--tftp-timeout", "1", "--option", fmt.Sprintf("blksize %d", tc.blksize),
				"--option", "tsize 0", "-g", "-r", "ipxe.efi", "-l", out, host, port)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("atftp: %v: %s", err, b)
			}
			got, err := os.ReadFile(out)
			if err != nil || !bytes.Equal(got, efi) {
				t.Fatalf("atftp got %d bytes (%v), want %d", len(got), err, len(efi))
			}
		})
	}
	if lossy.dropped.Load() == 0 {
		t.Errorf("the lossy proxy dropped nothing")
	}
}

// Every Nth packet lost, in both directions: files still arrive intact, and the
// server counted its retransmits.
func TestPacketLoss(t *testing.T) {
	for _, single := range []bool{false, true} {
		t.Run(fmt.Sprintf("single-port=%v", single), func(t *testing.T) {
			e := newEnv(t, func(c *tftpd.Config) { c.SinglePort = single; c.Timeout = 50 * time.Millisecond; c.Retries = 12 })
			// Every lost packet costs one server timeout: keep the file small.
			efi := randomBytes(t, 60_000)
			e.arts.Put("ipxe.efi", efi)
			for _, every := range []int{7, 10} {
				for _, bs := range []int{512, 1468} {
					// One proxy per transfer: each transfer comes from its own port, as
					// from a real client.
					p := startLossyProxy(t, e.srv.Addr(), every)
					got, _, err := get(p.addr(), "ipxe.efi", bs, true)
					if err != nil || !bytes.Equal(got, efi) {
						t.Fatalf("drop every %d, blksize %d: %d bytes, %v", every, bs, len(got), err)
					}
					if p.dropped.Load() == 0 {
						t.Fatalf("proxy dropped nothing")
					}
				}
			}
			testkit.Eventually(t, "transfers to end", func() bool { return e.stats().GetActive() == 0 })
			if st := e.stats(); st.GetRetransmits() == 0 || st.GetSucceeded() != 4 || st.GetFailed() != 0 {
				t.Errorf("stats: %v", st)
			}
		})
	}
}

// lossyProxy relays one client's TFTP exchange to a server, dropping every Nth
// packet in each direction. The client sees every answer come from the proxy's
// port; the proxy follows the server's transfer port (TID).
type lossyProxy struct {
	lis     *net.UDPConn
	dropped atomic.Int64
}

func (p *lossyProxy) addr() string { return p.lis.LocalAddr().String() }

func startLossyProxy(t *testing.T, server *net.UDPAddr, every int) *lossyProxy {
	t.Helper()
	lis, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{lis: lis}
	var (
		mu     sync.Mutex
		client *net.UDPAddr
		peer   = server // where the client's packets go: the request port, then the TID
	)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // client -> server
		defer wg.Done()
		buf := make([]byte, 65536)
		for n := 0; ; n++ {
			k, from, err := lis.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			if client == nil || !client.IP.Equal(from.IP) || client.Port != from.Port {
				// A new transfer from a new client port: start at the request port.
				client, peer = from, server
			}
			to := peer
			mu.Unlock()
			if n%every == every-1 {
				p.dropped.Add(1)
				continue
			}
			up.WriteToUDP(buf[:k], to)
		}
	}()
	go func() { // server -> client
		defer wg.Done()
		buf := make([]byte, 65536)
		for n := 0; ; n++ {
			k, from, err := up.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			peer = from
			to := client
			mu.Unlock()
			if n%every == every-1 {
				p.dropped.Add(1)
				continue
			}
			if to != nil {
				lis.WriteToUDP(buf[:k], to)
			}
		}
	}()
	t.Cleanup(func() { lis.Close(); up.Close(); wg.Wait() })
	return p
}

// The sender window is on by default (every other test uses it, with and without
// loss); with it off (--tftpd-anticipate 0) transfers are RFC 1350 lock-step.
func TestLockStep(t *testing.T) {
	e := newEnv(t, func(c *tftpd.Config) { c.Anticipate = 0 })
	efi := ipxeEFI(t)
	e.arts.Put("ipxe.efi", efi)
	for _, bs := range []int{512, 1468} {
		mustGetBlk(t, e.addr(), "ipxe.efi", bs, efi)
	}
	if bin, err := exec.LookPath("atftp"); err == nil {
		host, port, _ := net.SplitHostPort(e.addr())
		out := filepath.Join(t.TempDir(), "x")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if b, err := exec.CommandContext(ctx, bin, "--option", "blksize 1468", "-g", "-r", "ipxe.efi", "-l", out, host, port).CombinedOutput(); err != nil {
			t.Fatalf("atftp: %v: %s", err, b)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, efi) {
			t.Fatalf("atftp got %d bytes", len(got))
		}
	}
}

func mustGetBlk(t *testing.T, addr, file string, blksize int, want []byte) {
	t.Helper()
	got, _, err := get(addr, file, blksize, true)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get %s blksize %d: %d bytes, %v", file, blksize, len(got), err)
	}
}
