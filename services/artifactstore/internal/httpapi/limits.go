package httpapi

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// GuardConfig configures Guard.
type GuardConfig struct {
	// PerIP limits the requests of one client IP; zero is off. A client over
	// it gets 429 with Retry-After.
	PerIP ratelimit.Limit
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Guard wraps the HTTP handler with the per-client limit and panic recovery:
// a panic is logged with its stack and counted, and its request's connection
// is cut (no answer goes out), where fasthttp would end the process (and, in
// bootchain up, etcd and every other service with it).
type Guard struct {
	next fasthttp.RequestHandler
	log  *slog.Logger
	lim  *ratelimit.Limiter[netip.Addr]
	// Limited and Panics are the requests refused by the limit and the
	// requests whose handler panicked; WriteTimeouts the connections a
	// ProgressListener cut (give it this counter).
	Limited, Panics, WriteTimeouts prometheus.Counter
	// testHook, when set, runs first in every request (tests force panics).
	testHook func(*fasthttp.RequestCtx)
}

// NewGuard returns next guarded.
func NewGuard(next fasthttp.RequestHandler, cfg GuardConfig) *Guard {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Guard{
		next: next, log: cfg.Logger, lim: ratelimit.New[netip.Addr](ratelimit.Config{Limit: cfg.PerIP}),
		Limited: prometheus.NewCounter(prometheus.CounterOpts{Name: "bootchain_artifactstore_http_limited_total",
			Help: "HTTP requests refused with 429 by the per-IP rate limit."}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{Name: "bootchain_artifactstore_http_panics_total",
			Help: "HTTP requests whose handler panicked (the connection was cut)."}),
		WriteTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Name: "bootchain_artifactstore_http_write_timeouts_total",
			Help: "HTTP connections cut because a write made no progress within the write progress timeout."}),
	}
}

// Collectors are the guard's metrics, to register.
func (g *Guard) Collectors() []prometheus.Collector {
	return []prometheus.Collector{g.Limited, g.Panics, g.WriteTimeouts}
}

// Serve is the guarded fasthttp handler.
func (g *Guard) Serve(rc *fasthttp.RequestCtx) {
	if ta, ok := rc.RemoteAddr().(*net.TCPAddr); ok {
		if ok, wait := g.lim.Allow(ta.AddrPort().Addr().Unmap()); !ok {
			g.Limited.Inc()
			rc.Response.Header.Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			plain(rc, http.StatusTooManyRequests, errors.New("too many requests from this address; retry later"))
			return
		}
	}
	defer g.recover(rc)
	if g.testHook != nil {
		g.testHook(rc)
	}
	g.next(rc)
}

// recover keeps a handler's panic to its request: counted, logged, and the
// connection closed, so that the client sees no answer rather than half of one.
func (g *Guard) recover(rc *fasthttp.RequestCtx) {
	p := recover()
	if p == nil {
		return
	}
	g.Panics.Inc()
	g.log.Error("panic serving HTTP; connection cut", "path", string(rc.Path()), "client", rc.RemoteAddr().String(), "panic", p, "stack", string(debug.Stack()))
	rc.Response.Reset()
	rc.SetConnectionClose()
	rc.Conn().Close()
}

// progressChunk is the most bytes sent to the connection under one write
// deadline: a slow link must move this much within the progress timeout.
const progressChunk = 256 << 10

// ProgressListener wraps l so that each write to a connection must make
// progress within d (it is given d again for every write, and every
// progressChunk of a sendfile body): a client that stops reading is cut off
// after d, while a large kernel over a slow but moving link still finishes,
// which no single whole-response timeout allows. timeouts, when not nil,
// counts the connections cut so. d <= 0 sets no deadline (the connections
// still let a handler hold writes: held.go).
func ProgressListener(l net.Listener, d time.Duration, timeouts prometheus.Counter) net.Listener {
	return &progressListener{Listener: l, d: d, timeouts: timeouts, open: map[*progressConn]struct{}{}}
}

type progressListener struct {
	net.Listener
	d        time.Duration
	timeouts prometheus.Counter

	// open are the connections accepted and not yet closed, for CloseConns.
	mu   sync.Mutex
	open map[*progressConn]struct{}
}

func (l *progressListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pc := &progressConn{Conn: c, l: l}
	l.mu.Lock()
	l.open[pc] = struct{}{}
	l.mu.Unlock()
	return pc, nil
}

// CloseConns closes every connection that l, a ProgressListener, accepted and
// that is still open, and reports how many; 0 for another listener. A server
// whose graceful shutdown ran out of time cuts what is left with it (fasthttp's
// shutdown closes only idle connections, and a slow client downloading a
// kernel would otherwise be served after the service stopped).
func CloseConns(l net.Listener) int {
	pl, ok := l.(*progressListener)
	if !ok {
		return 0
	}
	pl.mu.Lock()
	conns := make([]*progressConn, 0, len(pl.open))
	for c := range pl.open {
		conns = append(conns, c)
	}
	pl.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns)
}

type progressConn struct {
	net.Conn
	l *progressListener

	mu sync.Mutex
	// armed is the write deadline set on Conn.
	armed time.Time
	// wantR is the read deadline asked for, armedR the one set on Conn
	// (readSlack).
	wantR, armedR time.Time
	// held collects the writes while a handler holds them (held.go).
	held *[]byte
}

// Close forgets the connection (CloseConns) and closes it.
func (c *progressConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.open, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// arm moves the write deadline to d from now, unless it is already within a
// small slack of that (re-arming the runtime timer on every small write costs).
func (c *progressConn) arm() {
	if c.l.d <= 0 {
		return
	}
	want := time.Now().Add(c.l.d)
	c.mu.Lock()
	defer c.mu.Unlock()
	if want.Sub(c.armed) < c.l.d/8 {
		return
	}
	if c.Conn.SetWriteDeadline(want) == nil {
		c.armed = want
	}
}

func (c *progressConn) count(err error) {
	var ne net.Error
	if err != nil && c.l.timeouts != nil && errors.As(err, &ne) && ne.Timeout() {
		c.l.timeouts.Inc()
	}
}

// SetWriteDeadline and SetDeadline: net/http sets none without a
// WriteTimeout; one it does set replaces the progress deadline until the next
// write.
func (c *progressConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = t
	return c.Conn.SetWriteDeadline(t)
}

func (c *progressConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.wantR, c.armedR = t, t, t
	return c.Conn.SetDeadline(t)
}

// readSlack is how much earlier than asked a connection's read deadline may
// stay where it is. fasthttp moves the read deadline twice per request (the
// idle timeout before the next request, then the read timeout once its first
// byte is in), and each move re-arms a runtime timer. So SetReadDeadline only
// records the deadline and Read arms it: the read timeout, set when the whole
// request is already buffered, is mostly never armed, and the idle timeouts
// of a busy connection, microseconds apart, are armed about once per
// readSlack. A timeout then fires up to readSlack early; an earlier deadline
// is always armed before the next read.
const readSlack = time.Second

func (c *progressConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wantR = t
	return nil
}

func (c *progressConn) Read(p []byte) (int, error) {
	if err := c.armRead(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// armRead sets the read deadline asked for on Conn, unless the one set is
// earlier by no more than readSlack.
func (c *progressConn) armRead() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, armed := c.wantR, c.armedR
	if t.Equal(armed) || (!t.IsZero() && !armed.IsZero() && t.After(armed) && t.Sub(armed) <= readSlack) {
		return nil
	}
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	c.armedR = t
	return nil
}

func (c *progressConn) Write(p []byte) (int, error) {
	if c.holding(p) {
		return len(p), nil
	}
	var n int
	for n < len(p) {
		c.arm()
		end := min(len(p), n+progressChunk)
		m, err := c.Conn.Write(p[n:end])
		n += m
		if err != nil {
			c.count(err)
			return n, err
		}
	}
	return n, nil
}

// ReadFrom keeps net/http's sendfile path: each chunk is an *io.LimitedReader
// over the same reader the handler gave (an *os.File stays visible to the
// kernel's sendfile), with a fresh deadline per chunk.
func (c *progressConn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok || c.isHeld() {
		return io.Copy(writerOnly{c}, r)
	}
	src, left := r, int64(math.MaxInt64)
	if lr, ok := r.(*io.LimitedReader); ok {
		src, left = lr.R, lr.N
		defer func() { lr.N = left }()
	}
	if _, ok := src.(*os.File); !ok {
		// Not a file: net's ReadFrom would copy through a buffer anyway.
		if left != math.MaxInt64 {
			src = io.LimitReader(src, left)
		}
		n, err := io.Copy(writerOnly{c}, src)
		left -= n
		return n, err
	}
	var total int64
	for left > 0 {
		c.arm()
		chunk := min(left, progressChunk)
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: chunk})
		total += n
		left -= n
		if err != nil {
			c.count(err)
			return total, err
		}
		if n < chunk {
			break // end of the file
		}
	}
	return total, nil
}

// writerOnly hides a writer's ReadFrom so that io.Copy does not call it back.
type writerOnly struct{ io.Writer }
