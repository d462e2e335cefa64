package httpapi

import (
	"sync"

	"github.com/valyala/fasthttp"
)

// A response served from memory goes out in one write. fasthttp writes the
// header and the first bytes of a 4 KiB body when its 4 KiB connection buffer
// fills, and the rest when it flushes: two writes, two TCP segments, and on
// loopback each write also pays for the receiver's wake-up. Holding the
// connection's writes while the body is written and flushed, then sending them
// together, halves that for configs, signatures, menus and small boot files
// (of any size the catalog holds in memory).

// heldConn is the request's connection when writes can be held on it; nil
// otherwise (TLS, or a listener that is not a ProgressListener).
func heldConn(rc *fasthttp.RequestCtx) *progressConn {
	pc, _ := rc.Conn().(*progressConn)
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

// release stops holding and sends what was held in one write (the caller has
// flushed its buffers into it).
func (c *progressConn) release() error {
	c.mu.Lock()
	held := c.held
	c.held = nil
	c.mu.Unlock()
	if held == nil {
		return nil
	}
	_, err := c.Write(*held)
	if cap(*held) <= 128<<10 {
		*held = (*held)[:0]
		heldBufs.Put(held)
	}
	return err
}
