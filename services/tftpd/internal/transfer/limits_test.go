package transfer

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/services/tftpd/internal/cache"
	"github.com/bootchain/bootchain/services/tftpd/internal/source"
)

func rrq(name string) []byte {
	b := []byte{0, 1}
	b = append(b, name...)
	b = append(b, 0)
	b = append(b, "octet"...)
	return append(b, 0)
}

// serve starts a Server whose Resolve and Open panic for the names the test
// picks (the test hooks), and refuse everything else as not found.
func serve(t *testing.T, perIP ratelimit.Limit) *Server {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		Conn: conn, Timeout: 100 * time.Millisecond, Retries: 2, PerIP: perIP, Logger: slog.New(slog.DiscardHandler),
		Resolve: func(name string) (string, bool) {
			if name == "panic-request" {
				panic("forced by the test")
			}
			return name, name != "missing"
		},
		Open: func(_ context.Context, artifact string) (*cache.Handle, bool, error) {
			if artifact == "panic-transfer" {
				panic("forced by the test")
			}
			return nil, false, source.ErrNotFound
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func client(t *testing.T, ip net.IP) *net.UDPConn {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ask sends a read request and returns the error code of the answer, or -1
// when none came.
func ask(t *testing.T, c *net.UDPConn, s *Server, name string) int {
	t.Helper()
	if _, err := c.WriteToUDP(rrq(name), s.Addr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return -1
	}
	if n < 4 || binary.BigEndian.Uint16(buf) != 5 {
		t.Fatalf("answer to %s is not an ERROR packet: % x", name, buf[:n])
	}
	return int(binary.BigEndian.Uint16(buf[2:]))
}

// A panic admitting a request, or in a transfer's goroutine, drops that request;
// the server goes on answering.
func TestPanicsDropOnlyTheirRequest(t *testing.T) {
	s := serve(t, ratelimit.Limit{})
	c := client(t, net.IPv4(127, 0, 0, 1))
	if code := ask(t, c, s, "panic-request"); code != -1 {
		t.Fatalf("request that panicked answered with error %d", code)
	}
	// pin/tftp answers the handler's error with an ERROR packet.
	if code := ask(t, c, s, "panic-transfer"); code < 0 {
		t.Fatal("transfer that panicked got no answer")
	}
	if code := ask(t, c, s, "missing"); code != 1 {
		t.Fatalf("after the panics: answer %d, want error 1 (not found)", code)
	}
	if st := s.Stats(); st.Panics != 2 {
		t.Fatalf("Panics = %d, want 2", st.Panics)
	}
	// Both claims were given back: nothing counts as running.
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Active != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if a := s.Stats().Active; a != 0 {
		t.Fatalf("%d transfers still active after the panics", a)
	}
}

// An RRQ flood from one IP is answered up to its burst, then dropped and
// counted; another IP is still answered.
func TestRRQFloodOneIP(t *testing.T) {
	s := serve(t, ratelimit.Limit{Rate: 1e-6, Burst: 5})
	c := client(t, net.IPv4(127, 0, 0, 1))
	answered := 0
	for i := 0; i < 7; i++ {
		if code := ask(t, c, s, "missing"); code == 1 {
			answered++
		}
	}
	for i := 0; i < 100; i++ {
		c.WriteToUDP(rrq("missing"), s.Addr())
	}
	other := client(t, net.IPv4(127, 0, 0, 2))
	if code := ask(t, other, s, "missing"); code != 1 {
		t.Fatalf("another IP during the flood: answer %d, want error 1", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Limited < 102 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if answered != 5 || s.Stats().Limited != 102 {
		t.Fatalf("%d answered, %d limited; want 5, 102", answered, s.Stats().Limited)
	}
}
