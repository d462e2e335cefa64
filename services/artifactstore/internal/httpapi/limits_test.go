package httpapi

import (
	"bufio"
	"crypto/sha256"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"
)

// fileServer serves one file's content as an *os.File body stream (which
// reaches the connection's ReadFrom, the sendfile path, as artifacts do).
func fileServer(path string) fasthttp.RequestHandler {
	return func(rc *fasthttp.RequestCtx) {
		f, err := os.Open(path)
		if err != nil {
			rc.Error(err.Error(), 500)
			return
		}
		st, _ := f.Stat()
		rc.Response.SetBodyStream(f, int(st.Size())) // fasthttp closes f
	}
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func bigFile(t *testing.T, size int64) string {
	p := filepath.Join(t.TempDir(), "blob")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// Not sparse: some bytes that differ, so a truncated body shows.
	w := bufio.NewWriter(f)
	for i := int64(0); i < size; i++ {
		w.WriteByte(byte(i * 7))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// closedConns records the client addresses whose connection the server closed.
type closedConns struct {
	mu sync.Mutex
	m  map[string]bool
}

func (c *closedConns) state(conn net.Conn, s fasthttp.ConnState) {
	if s == fasthttp.StateClosed {
		c.mu.Lock()
		c.m[conn.RemoteAddr().String()] = true
		c.mu.Unlock()
	}
}

func (c *closedConns) closed(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[addr]
}

func run(t *testing.T, h fasthttp.RequestHandler, progress time.Duration, g *Guard) string {
	addr, _ := runTracked(t, h, progress, g)
	return addr
}

func runTracked(t *testing.T, h fasthttp.RequestHandler, progress time.Duration, g *Guard) (string, *closedConns) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cc := &closedConns{m: map[string]bool{}}
	srv := &fasthttp.Server{Handler: h, ConnState: cc.state}
	done := make(chan struct{})
	go func() { srv.Serve(ProgressListener(l, progress, g.WriteTimeouts)); close(done) }()
	t.Cleanup(func() {
		l.Close()
		// Shutdown waits for the connections still open; the stalled
		// reader's, if any, ends at its progress deadline.
		srv.Shutdown()
		<-done
	})
	return l.Addr().String(), cc
}

func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// An HTTP flood from one IP gets 429 with Retry-After past its burst; another
// IP is still served.
func TestHTTPFloodOneIP(t *testing.T) {
	p := bigFile(t, 1000)
	g := NewGuard(fileServer(p), GuardConfig{PerIP: ratelimit.Limit{Rate: 1e-6, Burst: 5}, Logger: slog.New(slog.DiscardHandler)})
	addr := run(t, g.Serve, time.Minute, g)
	flood := clientFrom("127.0.0.1")
	codes := map[int]int{}
	for i := 0; i < 20; i++ {
		resp, err := flood.Get("http://" + addr + "/f")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[200] != 5 || codes[429] != 15 {
		t.Fatalf("answers %v, want 5 x 200 and 15 x 429", codes)
	}
	if n := value(g.Limited); n != 15 {
		t.Fatalf("limited counter %v, want 15", n)
	}
	resp, err := clientFrom("127.0.0.2").Get("http://" + addr + "/f")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("another IP during the flood: %s", resp.Status)
	}
}

// A panic in a handler cuts its request's connection, is counted, and the
// server goes on serving.
func TestHTTPPanicRecovered(t *testing.T) {
	p := bigFile(t, 1000)
	g := NewGuard(fileServer(p), GuardConfig{Logger: slog.New(slog.DiscardHandler)})
	g.testHook = func(rc *fasthttp.RequestCtx) {
		if string(rc.Path()) == "/panic" {
			panic("forced by the test")
		}
	}
	addr := run(t, g.Serve, time.Minute, g)
	c := clientFrom("127.0.0.1")
	if resp, err := c.Get("http://" + addr + "/panic"); err == nil {
		resp.Body.Close()
		t.Fatalf("request that panicked answered %s", resp.Status)
	}
	resp, err := c.Get("http://" + addr + "/f")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the panic: %v %v", resp, err)
	}
	resp.Body.Close()
	if n := value(g.Panics); n != 1 {
		t.Fatalf("panics counter %v, want 1", n)
	}
}

// A client that stops reading is cut off once a write makes no progress for
// the progress timeout; a client reading slowly but steadily gets the whole
// file, although that takes longer than the timeout; others are served.
func TestSlowReader(t *testing.T) {
	const size = 32 << 20
	p := bigFile(t, size)
	want := sha256.Sum256(mustRead(t, p))
	g := NewGuard(fileServer(p), GuardConfig{Logger: slog.New(slog.DiscardHandler)})
	addr, conns := runTracked(t, g.Serve, time.Second, g)

	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	io.WriteString(stalled, "GET /f HTTP/1.1\r\nHost: x\r\n\r\n")

	// Meanwhile a steady slow reader: small reads with pauses.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.(*net.TCPConn).SetReadBuffer(64 << 10)
	io.WriteString(slow, "GET /f HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReaderSize(slow, 32<<10), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var got int64
	for {
		n, err := resp.Body.Read(buf)
		h.Write(buf[:n])
		got += int64(n)
		if err != nil {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got != size || [32]byte(h.Sum(nil)) != want {
		t.Fatalf("slow reader got %d bytes of %d (or other content)", got, size)
	}

	// The server gives the stalled connection up (its goroutine and socket);
	// the kernel may still hold what was queued for it.
	deadline := time.Now().Add(30 * time.Second)
	for !conns.closed(stalled.LocalAddr().String()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !conns.closed(stalled.LocalAddr().String()) {
		t.Fatal("the stalled client's connection is still open")
	}
	if n := value(g.WriteTimeouts); n != 1 {
		t.Fatalf("write timeouts %v, want 1 (the stalled client)", n)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCloseConnsCutsWhatIsOpen: CloseConns closes the connections a
// ProgressListener accepted that are still open, and only those.
func TestCloseConnsCutsWhatIsOpen(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	l := ProgressListener(raw, time.Second, nil)
	var clients, served []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		clients, served = append(clients, c), append(served, s)
	}
	served[0].Close() // closed by the server already: not counted again
	if n := CloseConns(l); n != 2 {
		t.Fatalf("CloseConns closed %d connections, want 2", n)
	}
	for i, c := range clients[1:] {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("client %d: read %v, want EOF (its connection cut)", i+1, err)
		}
	}
	if n := CloseConns(l); n != 0 {
		t.Fatalf("CloseConns again closed %d, want 0", n)
	}
	if n := CloseConns(raw); n != 0 {
		t.Fatalf("CloseConns on another listener closed %d, want 0", n)
	}
}
