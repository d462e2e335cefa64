package httpapi

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// A response served from memory goes out in one write. net/http writes the
// header and the first bytes of a 4 KiB body when its 4 KiB connection buffer
// fills, and the rest when the handler returns: two writes, two TCP segments,
// and on loopback each write also pays for the receiver's wake-up. Holding the
// connection's writes while the handler writes and flushes, then sending them
// together, halves that for configs, signatures, menus and small boot files.

type connKey struct{}

// ConnContext is http.Server.ConnContext for a server whose listener is a
// ProgressListener: it lets the handler reach its connection to hold writes.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*progressConn); ok {
		return context.WithValue(ctx, connKey{}, pc)
	}
	return ctx
}

// heldConn is the request's connection when writes can be held on it; nil
// otherwise (TLS, or a server without ConnContext).
func heldConn(r *http.Request) *progressConn {
	pc, _ := r.Context().Value(connKey{}).(*progressConn)
	return pc
}

// heldBufs recycles hold buffers: a connection holds only while a response is
// written, so idle keep-alive connections keep none.
var heldBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// hold makes the connection's writes collect in memory until release.
func (c *progressConn) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil {
		c.held = heldBufs.Get().(*[]byte)
	}
}

// holding appends p to the held writes and reports true, or reports false when
// writes are not held.
func (c *progressConn) holding(p []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil {
		return false
	}
	*c.held = append(*c.held, p...)
	return true
}

func (c *progressConn) isHeld() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held != nil
}

// release flushes w (net/http's buffers, into the held writes), stops holding
// and sends what was held in one write.
func (c *progressConn) release(w http.ResponseWriter) error {
	ferr := http.NewResponseController(w).Flush()
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	if held == nil {
		return ferr
	}
	_, err := c.Write(*held)
	if cap(*held) <= 128<<10 {
		*held = (*held)[:0]
		heldBufs.Put(held)
	}
	if err != nil {
		return err
	}
	return ferr
}
