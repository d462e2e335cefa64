//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// dhcpLink is every virtual machine's DHCP on one interface: one AF_PACKET socket
// sends each machine's frames with the machine's own MAC as the source (as its NIC
// would), and one cooked AF_PACKET socket, filtered in the kernel to UDP port 68,
// receives the replies, handed to the machine waiting for that transaction ID.
type dhcpLink struct {
	ifindex int
	send    int
	recv    int

	mu      sync.Mutex
	waiters map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func openDHCPLink(ifname string) (*dhcpLink, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	send, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	recv, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		unix.Close(send)
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	l := &dhcpLink{ifindex: ifi.Index, send: send, recv: recv, waiters: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	// IPv4, UDP, not a fragment, destination port 68 (offsets from the IP header:
	// a cooked socket strips the Ethernet header).
	prog, err := bpf.Assemble(replyFilter)
	if err != nil {
		l.Close()
		return nil, err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	if err := unix.SetsockoptSockFprog(recv, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
		l.Close()
		return nil, fmt.Errorf("attach filter: %w", err)
	}
	_ = unix.SetsockoptInt(recv, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	if err := unix.Bind(recv, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index}); err != nil {
		l.Close()
		return nil, fmt.Errorf("bind packet socket: %w", err)
	}
	go l.readLoop()
	return l, nil
}

// replyFilter passes IPv4 UDP to port 68, not fragmented; offsets are from the
// IP header, as a cooked socket strips the Ethernet header.
var replyFilter = []bpf.Instruction{
	bpf.LoadAbsolute{Off: 9, Size: 1},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_UDP, SkipTrue: 6},
	bpf.LoadAbsolute{Off: 6, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 4},
	bpf.LoadMemShift{Off: 0},
	bpf.LoadIndirect{Off: 2, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 68, SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// drops is how many replies the kernel dropped because the read loop fell behind.
func (l *dhcpLink) drops() (uint32, error) {
	st, err := unix.GetsockoptTpacketStats(l.recv, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0, err
	}
	return st.Drops, nil
}

// Close closes both sockets; the read loop ends with them.
func (l *dhcpLink) Close() {
	unix.Close(l.send)
	unix.Close(l.recv)
}

func (l *dhcpLink) readLoop() {
	buf := make([]byte, 65536)
	for {
		n, _, err := unix.Recvfrom(l.recv, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		p := buf[:n]
		if n < 28 {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		if n < ihl+8 {
			continue
		}
		msg, err := dhcpv4.FromBytes(p[ihl+8:])
		if err != nil || msg.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		l.mu.Lock()
		ch := l.waiters[msg.TransactionID]
		l.mu.Unlock()
		if ch != nil {
			select {
			case ch <- msg:
			default:
			}
		}
	}
}

// exchange sends msg (re-sending it after each of timeouts) until accept takes a
// reply of the same transaction; it returns that reply.
func (l *dhcpLink) exchange(ctx context.Context, msg *dhcpv4.DHCPv4, timeouts []time.Duration, resent *int, accept func(*dhcpv4.DHCPv4) bool) (*dhcpv4.DHCPv4, error) {
	ch := make(chan *dhcpv4.DHCPv4, 8)
	l.mu.Lock()
	l.waiters[msg.TransactionID] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.waiters, msg.TransactionID)
		l.mu.Unlock()
	}()
	frame := buildFrame(msg)
	start := time.Now()
	for i, to := range timeouts {
		if i > 0 {
			*resent++
		}
		// secs: the time since the client began, as firmware fills it in.
		msg.NumSeconds = uint16(time.Since(start) / time.Second)
		frame = buildFrame(msg)
		if err := l.sendFrame(frame); err != nil {
			return nil, err
		}
		t := time.NewTimer(to)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case r := <-ch:
				if accept(r) {
					t.Stop()
					return r, nil
				}
			case <-t.C:
				break wait
			}
		}
	}
	return nil, fmt.Errorf("no answer to %s after %d tries", msg.MessageType(), len(timeouts))
}

func (l *dhcpLink) sendFrame(frame []byte) error {
	to := &unix.SockaddrLinklayer{Ifindex: l.ifindex, Halen: 6, Protocol: htons(unix.ETH_P_IP)}
	copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	for {
		err := unix.Sendto(l.send, frame, 0, to)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(time.Millisecond)
			continue
		}
		return err
	}
}

// buildFrame is msg in an Ethernet broadcast frame from the client's MAC,
// 0.0.0.0:68 -> 255.255.255.255:67, as a firmware's DHCP client sends it.
func buildFrame(msg *dhcpv4.DHCPv4) []byte {
	payload := msg.ToBytes()
	b := make([]byte, 14+20+8+len(payload))
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], msg.ClientHWAddr)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	copy(ip[12:16], netip.IPv4Unspecified().AsSlice())
	copy(ip[16:20], []byte{255, 255, 255, 255})
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	udp := b[34:42]
	binary.BigEndian.PutUint16(udp[0:], 68)
	binary.BigEndian.PutUint16(udp[2:], 67)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	// UDP checksum 0: none, which IPv4 allows.
	copy(b[42:], payload)
	return b
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
