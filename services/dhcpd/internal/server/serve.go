package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// sockBuf is the receive and send buffer asked for: a burst of packets (a batch
// of lease commits answers up to 128 clients at once; many firmwares power on
// together) must not overflow the kernel's default ~200 KiB.
const sockBuf = 4 << 20

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
	growBuffers(conn)
	queue := make(chan packet, 4*workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range queue {
				b := p.buf[:p.n]
				// No timer per packet: the lease writer bounds every wait
				// (lease.QueueWait plus one transaction).
				r := h.Handle(ctx, b, p.src, port)
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

// growBuffers raises conn's socket buffers to sockBuf: with SO_RCVBUFFORCE /
// SO_SNDBUFFORCE when allowed (root, CAP_NET_ADMIN), else as far as
// net.core.rmem_max / wmem_max let it.
func growBuffers(conn *net.UDPConn) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return
	}
	var rerr, werr error
	_ = raw.Control(func(fd uintptr) {
		rerr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, sockBuf)
		werr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, sockBuf)
	})
	if rerr != nil {
		_ = conn.SetReadBuffer(sockBuf)
	}
	if werr != nil {
		_ = conn.SetWriteBuffer(sockBuf)
	}
}
