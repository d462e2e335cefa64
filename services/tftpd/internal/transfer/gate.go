package transfer

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bootchain/bootchain/services/tftpd/internal/request"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// gate is the net.PacketConn pin/tftp serves on. It reads the request port itself and
// hands pin/tftp only the read requests it admitted, rewritten to the options the
// server offers; everything else gets an error packet or is counted and dropped here.
type gate struct {
	s    *Server
	conn *net.UDPConn
	pc4  *ipv4.PacketConn
	pc6  *ipv6.PacketConn
	buf  []byte

	closing atomic.Bool

	mtuMu sync.Mutex
	mtus  map[int]mtuEntry
}

type mtuEntry struct {
	mtu  int
	when time.Time
}

func newGate(s *Server, conn *net.UDPConn) *gate {
	g := &gate{s: s, conn: conn, buf: make([]byte, 65536), mtus: map[int]mtuEntry{}}
	if la, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		if la.IP.To4() != nil {
			pc := ipv4.NewPacketConn(conn)
			if pc.SetControlMessage(ipv4.FlagInterface, true) == nil {
				g.pc4 = pc
			}
		} else {
			pc := ipv6.NewPacketConn(conn)
			if pc.SetControlMessage(ipv6.FlagInterface, true) == nil {
				g.pc6 = pc
			}
		}
	}
	return g
}

// read reads one datagram with the index of the interface it came in on (0 when
// unknown).
func (g *gate) read() (int, int, *net.UDPAddr, bool, error) {
	var (
		n       int
		ifIndex int
		src     net.Addr
		err     error
		v6      bool
	)
	switch {
	case g.pc4 != nil:
		var cm *ipv4.ControlMessage
		n, cm, src, err = g.pc4.ReadFrom(g.buf)
		if cm != nil {
			ifIndex = cm.IfIndex
		}
	case g.pc6 != nil:
		var cm *ipv6.ControlMessage
		n, cm, src, err = g.pc6.ReadFrom(g.buf)
		if cm != nil {
			ifIndex = cm.IfIndex
		}
		v6 = true
	default:
		n, src, err = g.conn.ReadFrom(g.buf)
	}
	if err != nil {
		return 0, 0, nil, false, err
	}
	ua, _ := src.(*net.UDPAddr)
	if ua != nil && ua.IP.To4() == nil {
		v6 = true
	}
	return n, ifIndex, ua, v6, nil
}

// ReadFrom returns the next admitted request (or, in single-port mode, the next
// packet of a running transfer).
func (g *gate) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, ifIndex, src, v6, err := g.read()
		if err != nil {
			return 0, nil, err
		}
		if src == nil {
			continue
		}
		pkt := g.buf[:n]
		op := request.OpcodeOf(pkt)
		if op != request.OpRRQ && op != request.OpWRQ {
			if g.s.cfg.SinglePort && g.s.isActive(src.String()) && op >= request.OpDATA && op <= request.OpOACK {
				// A packet of a running transfer: pin/tftp routes it by source.
				if len(pkt) > len(p) {
					g.s.count.dropped.Add(1)
					continue
				}
				return copy(p, pkt), src, nil
			}
			g.s.drop(src, "stray or unknown packet on the request port", "opcode", int(op), "len", n)
			continue
		}
		if g.s.cfg.SinglePort && g.s.isActive(src.String()) {
			// A retransmitted request for a transfer already running: the transfer
			// answers it.
			continue
		}
		if g.s.limited(src) {
			continue
		}
		out, ok := g.s.safeAdmit(pkt, src, g.maxBlksize(ifIndex, v6))
		if !ok {
			continue
		}
		if len(out) > len(p) {
			g.s.count.dropped.Add(1)
			continue
		}
		return copy(p, out), src, nil
	}
}

// maxBlksize is the largest block that fits the MTU of the interface the request
// came in on, capped by the configured maximum.
func (g *gate) maxBlksize(ifIndex int, v6 bool) int {
	max := g.s.cfg.MaxBlksize
	if ifIndex <= 0 {
		return max
	}
	g.mtuMu.Lock()
	e, ok := g.mtus[ifIndex]
	g.mtuMu.Unlock()
	if !ok || time.Since(e.when) > time.Minute {
		e = mtuEntry{when: time.Now()}
		if ifi, err := net.InterfaceByIndex(ifIndex); err == nil {
			e.mtu = ifi.MTU
		}
		g.mtuMu.Lock()
		g.mtus[ifIndex] = e
		g.mtuMu.Unlock()
	}
	if e.mtu <= 0 {
		return max
	}
	overhead := 20 + 8 + 4 // IPv4 + UDP + TFTP DATA header
	if v6 {
		overhead = 40 + 8 + 4
	}
	if fit := e.mtu - overhead; fit < max {
		max = fit
	}
	if max < 512 {
		max = 512
	}
	return max
}

// reply sends a packet from the request port.
func (g *gate) reply(pkt []byte, to *net.UDPAddr) {
	g.conn.WriteToUDP(pkt, to)
}

func (g *gate) WriteTo(p []byte, addr net.Addr) (int, error) { return g.conn.WriteTo(p, addr) }
func (g *gate) Close() error {
	g.closing.Store(true)
	return g.conn.Close()
}
func (g *gate) LocalAddr() net.Addr                { return g.conn.LocalAddr() }
func (g *gate) SetDeadline(t time.Time) error      { return g.conn.SetDeadline(t) }
func (g *gate) SetReadDeadline(t time.Time) error  { return g.conn.SetReadDeadline(t) }
func (g *gate) SetWriteDeadline(t time.Time) error { return g.conn.SetWriteDeadline(t) }
