package httpapi

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// remoteIP is the client's address without the port, formatted once per
// connection when the server serves a Listener.
func remoteIP(rc *fasthttp.RequestCtx) string {
	if c, ok := rc.Conn().(*ipConn); ok {
		return c.ip
	}
	return hostOf(rc.RemoteAddr())
}

// remoteAddr is the client's address as a rate-limit key.
func remoteAddr(rc *fasthttp.RequestCtx) netip.Addr {
	if c, ok := rc.Conn().(*ipConn); ok {
		return c.addr
	}
	return addrOf(rc.RemoteAddr())
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return ap.Addr().Unmap()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap.Addr().Unmap()
}

func hostOf(a net.Addr) string {
	s := a.String()
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return s
	}
	return host
}

// Listener wraps l so that each connection knows its client's IP as a string, as
// net/http's Request.RemoteAddr did (formatting it per request would allocate on
// the script path), and keeps its read deadline within DeadlineSlack of what
// the server asks instead of moving it on every request; its write deadline
// (the server's WriteTimeout, which bounds a slow reader) likewise.
func Listener(l net.Listener) net.Listener { return ipListener{l} }

// DeadlineSlack is how much earlier than asked a connection's read deadline
// may stay where it is. fasthttp moves it twice per request (the idle timeout, then the
// read timeout), and each move re-arms a runtime timer: 4 % of the script
// path's CPU. With both timeouts equal, the moves between two requests are
// microseconds apart, and the deadline is re-armed about once per DeadlineSlack
// on a busy connection. A timeout then fires up to DeadlineSlack early; an
// earlier deadline is always armed at once.
const DeadlineSlack = time.Second

type ipListener struct{ net.Listener }

func (l ipListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &ipConn{Conn: c, ip: hostOf(c.RemoteAddr()), addr: addrOf(c.RemoteAddr())}, nil
}

type ipConn struct {
	net.Conn
	ip   string
	addr netip.Addr

	mu sync.Mutex
	// armed and armedW are the read and write deadlines set on Conn (zero: none).
	armed, armedW time.Time
}

// keep reports whether deadline t may be left at armed: both set, and t
// later than armed by no more than DeadlineSlack.
func keep(armed, t time.Time) bool {
	return !t.IsZero() && !armed.IsZero() && !t.Before(armed) && t.Sub(armed) <= DeadlineSlack
}

func (c *ipConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if keep(c.armed, t) {
		return nil
	}
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	c.armed = t
	return nil
}

func (c *ipConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if keep(c.armedW, t) {
		return nil
	}
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	c.armedW = t
	return nil
}

func (c *ipConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Conn.SetDeadline(t); err != nil {
		return err
	}
	c.armed, c.armedW = t, t
	return nil
}
