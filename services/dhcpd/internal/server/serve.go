package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sockBuf is the receive and send buffer asked for: a burst of packets (a batch
// of lease commits answers up to 128 clients at once; many firmwares power on
// together) must not overflow the kernel's default ~200 KiB.
const sockBuf = 4 << 20

// paceHorizon is how long the pacer takes at most to send a backlog.
var paceHorizon = 2 * time.Millisecond

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
func Serve(ctx context.Context, conn *net.UDPConn, port int, h *Handler, workers, burst int) error {
	if workers <= 0 {
		workers = 512
	}
	growBuffers(conn)
	queue := make(chan packet, 4*workers)
	out := make(chan *Reply, workers)
	var pc *pacer
	if burst > 0 {
		pc = newPacer(burst, paceHorizon)
	}
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
				if r != nil {
					out <- r
				}
			}
		}()
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		pc.run(ctx, conn, out, h)
	}()
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
		pc.arrived()
		select {
		case queue <- packet{buf: buf, n: n, src: src}:
		default:
			h.Stats.Overrun.Add(1)
			bufPool.Put(bp)
		}
	}
	close(queue)
	wg.Wait()
	close(out)
	<-sent
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

// pacer spreads replies out. Lease writes are group-committed: one etcd
// transaction (one fsync) lets a few dozen ACKs go at the same instant.
// Sent back to back they arrive as one burst at a relay agent, which receives
// every reply for its segments on one socket, or, broadcast, at every PXE ROM on
// the segment, whose receive rings hold a few packets. A burst larger than the
// receiver's buffer loses replies, and each lost reply costs its client a
// retransmission of 4 s or more.
//
// Up to burst replies go out back to back. A larger backlog of n replies is
// spread over the horizon: the next reply leaves horizon/n after the previous
// one. The rate thus grows with the backlog (n/horizon), so throughput is never
// capped, and a reply waits about one horizon at most. Arriving requests wake
// the pacer (a fine clock under load); a timer does when none arrive.
type pacer struct {
	burst   int
	horizon time.Duration
	waiting atomic.Bool
	wake    chan struct{}
}

func newPacer(burst int, horizon time.Duration) *pacer {
	return &pacer{burst: burst, horizon: horizon, wake: make(chan struct{}, 1)}
}

// arrived wakes a waiting pacer: time has passed.
func (p *pacer) arrived() {
	if p == nil || !p.waiting.Load() {
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run writes the replies from out until out is closed.
func (p *pacer) run(ctx context.Context, conn *net.UDPConn, out <-chan *Reply, h *Handler) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var last time.Time
	for r := range out {
		if p != nil {
			for {
				n := len(out) + 1
				if n <= p.burst {
					break
				}
				wait := time.Until(last.Add(p.horizon / time.Duration(n)))
				if wait <= 0 {
					break
				}
				p.waiting.Store(true)
				timer.Reset(wait)
				select {
				case <-p.wake:
					timer.Stop()
				case <-timer.C:
				}
				p.waiting.Store(false)
			}
			last = time.Now()
		}
		if _, err := conn.WriteToUDPAddrPort(r.Data, r.Dst); err != nil && ctx.Err() == nil {
			h.log.Debug("reply not sent", "dst", r.Dst.String(), "err", err)
		}
		r.Release()
	}
}
