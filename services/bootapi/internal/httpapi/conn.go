package httpapi

import (
	"net"
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
// the server asks instead of moving it on every request.
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
	return &ipConn{Conn: c, ip: hostOf(c.RemoteAddr())}, nil
}

type ipConn struct {
	net.Conn
	ip string

	mu sync.Mutex
	// armed is the read deadline set on Conn (zero: none).
	armed time.Time
}

func (c *ipConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.IsZero() && !c.armed.IsZero() && !t.Before(c.armed) && t.Sub(c.armed) <= DeadlineSlack {
		return nil
	}
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	c.armed = t
	return nil
}

func (c *ipConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Conn.SetDeadline(t); err != nil {
		return err
	}
	c.armed = t
	return nil
}
