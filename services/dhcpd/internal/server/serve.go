package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"
)

// packetTimeout bounds the work on one packet (mostly waiting for its lease write):
// a client retransmits after 4 s, so an answer later than that is of no use.
const packetTimeout = 4 * time.Second

type packet struct {
	buf []byte
	n   int
	src netip.AddrPort
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// Serve reads packets from conn (listening on port) and answers them with h on a
// bounded set of workers; packets that find every worker busy and the queue full
// are dropped and counted (Stats.Overrun), so a flood costs bounded memory. It
// closes conn and returns nil when ctx ends.
func Serve(ctx context.Context, conn *net.UDPConn, port int, h *Handler, workers int) error {
	if workers <= 0 {
		workers = 512
	}
	queue := make(chan packet, 4*workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range queue {
				b := p.buf[:p.n]
				pctx, cancel := context.WithTimeout(ctx, packetTimeout)
				r := h.Handle(pctx, b, p.src, port)
				cancel()
				bb := p.buf
				bufPool.Put(&bb)
				if r == nil {
					continue
				}
				if _, err := conn.WriteToUDPAddrPort(r.Data, r.Dst); err != nil && ctx.Err() == nil {
					h.log.Debug("reply not sent", "dst", r.Dst.String(), "err", err)
				}
			}
		}()
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var err error
	for {
		bp := bufPool.Get().(*[]byte)
		buf := *bp
		n, src, rerr := conn.ReadFromUDPAddrPort(buf)
		if rerr != nil {
			if ctx.Err() == nil && !errors.Is(rerr, net.ErrClosed) {
				err = rerr
			}
			break
		}
		select {
		case queue <- packet{buf: buf, n: n, src: src}:
		default:
			h.Stats.Overrun.Add(1)
			bufPool.Put(bp)
		}
	}
	close(queue)
	wg.Wait()
	conn.Close()
	return err
}
