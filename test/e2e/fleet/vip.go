//go:build linux

package fleet

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/bootchain/bootchain/test/lab"
)

// vipMover does what keepalived does for the bootapi replicas: the VIP is an
// address on one replica's interface; a health check (GET /healthz on each
// replica's own address, every 100 ms) moves it to the other replica after two
// failed checks of the holder, and a gratuitous ARP tells the network the new
// MAC. Routing stays layer 3, so bootapi sees every client's own source address
// (its per-job trust needs it, docs/bootapi.md); a reverse proxy would not.
type vipMover struct {
	f      *Fleet
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	holder int // index into f.API; -1 none
	moves  []VIPMove
}

// VIPMove is one move of the VIP.
type VIPMove struct {
	// From and To are replica indexes (From -1 at the start).
	From, To int
	// Down is when the holder's health check first failed, At when the VIP was
	// on the new holder.
	Down, At time.Time
}

func newVIPMover(f *Fleet) *vipMover { return &vipMover{f: f, holder: -1} }

func (v *vipMover) start(ctx context.Context) error {
	if err := v.move(ctx, -1, 0, time.Now()); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.Background())
	v.cancel, v.done = cancel, make(chan struct{})
	go v.loop(lctx)
	return nil
}

func (v *vipMover) stop() {
	if v.cancel != nil {
		v.cancel()
		<-v.done
	}
}

func (v *vipMover) loop(ctx context.Context) {
	defer close(v.done)
	clients := make([]*http.Client, len(v.f.API))
	for i, ns := range v.f.API {
		clients[i] = httpClient(ns)
		clients[i].Timeout = 500 * time.Millisecond
	}
	fails := 0
	var down time.Time
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		v.mu.Lock()
		h := v.holder
		v.mu.Unlock()
		if probe(ctx, clients[h], fmt.Sprintf("http://%s:8080/healthz", apiAddrs[h])) == nil {
			fails = 0
			continue
		}
		if fails == 0 {
			down = time.Now()
		}
		if fails++; fails < 2 {
			continue
		}
		for i := range v.f.API {
			if i != h && probe(ctx, clients[i], fmt.Sprintf("http://%s:8080/healthz", apiAddrs[i])) == nil {
				if err := v.move(ctx, h, i, down); err != nil {
					v.f.logf("fleet: VIP move %d -> %d: %v", h, i, err)
					break
				}
				fails = 0
				break
			}
		}
	}
}

// move takes the VIP off replica from (if any) and puts it on replica to, then
// announces it.
func (v *vipMover) move(ctx context.Context, from, to int, down time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	vip := VIP.String() + "/32"
	if from >= 0 {
		if _, err := v.f.API[from].IP(ctx, "addr", "del", vip, "dev", "eth0"); err != nil {
			return err
		}
	}
	if _, err := v.f.API[to].IP(ctx, "addr", "add", vip, "dev", "eth0"); err != nil {
		return err
	}
	if err := gratuitousARP(v.f.API[to], "eth0", VIP.As4()); err != nil {
		return err
	}
	v.mu.Lock()
	v.holder = to
	v.moves = append(v.moves, VIPMove{From: from, To: to, Down: down, At: time.Now()})
	v.mu.Unlock()
	v.f.logf("fleet: VIP %s on bootapi%d", VIP, to+1)
	return nil
}

// VIPHolder returns the bootapi replica holding the VIP now.
func (f *Fleet) VIPHolder() *Proc {
	f.vip.mu.Lock()
	defer f.vip.mu.Unlock()
	return f.Bootapi[f.vip.holder]
}

// VIPMoves returns the VIP's moves so far (the first is the start).
func (f *Fleet) VIPMoves() []VIPMove {
	f.vip.mu.Lock()
	defer f.vip.mu.Unlock()
	return append([]VIPMove(nil), f.vip.moves...)
}

// gratuitousARP broadcasts an ARP request for ip from ip on ifname in ns: hosts
// that have ip in their neighbour table take the sender's MAC.
func gratuitousARP(ns *lab.Netns, ifname string, ip [4]byte) error {
	return ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := htons(syscall.ETH_P_ARP)
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(proto))
		if err != nil {
			return fmt.Errorf("fleet: packet socket: %w", err)
		}
		defer syscall.Close(fd)
		bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		frame := make([]byte, 0, 42)
		frame = append(frame, bcast[:]...)
		frame = append(frame, ifi.HardwareAddr...)
		frame = binary.BigEndian.AppendUint16(frame, syscall.ETH_P_ARP)
		frame = binary.BigEndian.AppendUint16(frame, 1)      // Ethernet
		frame = binary.BigEndian.AppendUint16(frame, 0x0800) // IPv4
		frame = append(frame, 6, 4)
		frame = binary.BigEndian.AppendUint16(frame, 1) // request
		frame = append(frame, ifi.HardwareAddr...)
		frame = append(frame, ip[:]...)
		frame = append(frame, 0, 0, 0, 0, 0, 0)
		frame = append(frame, ip[:]...)
		sa := &syscall.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], bcast[:])
		// Twice, as keepalived does by default; a lost frame only delays the move.
		for range 2 {
			if err := syscall.Sendto(fd, frame, 0, sa); err != nil {
				return fmt.Errorf("fleet: gratuitous ARP: %w", err)
			}
		}
		return nil
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
