// Package ra answers IPv6 router solicitations on the boot network with a router
// advertisement of router lifetime 0 and no prefix: "there is no IPv6 router
// here". iPXE otherwise waits 13-16 s for a router in every stage (docs/firmware.md).
package ra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// Stats counts solicitations and answers.
type Stats struct {
	Solicitations, Advertisements, Ignored atomic.Uint64
}

// Responder answers router solicitations on one interface.
type Responder struct {
	Iface  string
	Logger *slog.Logger
	Stats  Stats
	ifi    *net.Interface
	c      *icmp.PacketConn
	p      *ipv6.PacketConn
}

// Advertisement is the ICMPv6 router advertisement sent: hop limit 0 (unspecified),
// no flags, router lifetime 0, reachable time and retrans timer unspecified, no
// options.
func Advertisement() []byte {
	m := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: make([]byte, 12)}}
	b, _ := m.Marshal(nil) // the kernel fills in the ICMPv6 checksum
	return b
}

// Listen opens the raw ICMPv6 socket on iface (in the caller's network namespace)
// and joins the all-routers group.
func Listen(iface string, log *slog.Logger) (*Responder, error) {
	if log == nil {
		log = slog.Default()
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("ra: interface %s: %w", iface, err)
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("ra: listen: %w", err)
	}
	p := c.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	for _, step := range []func() error{
		func() error { return p.SetICMPFilter(&f) },
		func() error { return p.JoinGroup(ifi, &net.IPAddr{IP: net.ParseIP("ff02::2")}) },
		func() error { return p.SetControlMessage(ipv6.FlagInterface|ipv6.FlagHopLimit, true) },
		func() error { return p.SetMulticastInterface(ifi) },
		func() error { return p.SetMulticastHopLimit(255) },
		func() error { return p.SetHopLimit(255) },
	} {
		if err := step(); err != nil {
			c.Close()
			return nil, fmt.Errorf("ra: set up socket on %s: %w", iface, err)
		}
	}
	return &Responder{Iface: iface, Logger: log, ifi: ifi, c: c, p: p}, nil
}

// Run answers solicitations while enabled() is true, until ctx ends; it closes
// the socket and returns nil then.
func (r *Responder) Run(ctx context.Context, enabled func() bool) error {
	stop := context.AfterFunc(ctx, func() { r.c.Close() })
	defer stop()
	defer r.c.Close()
	ra := Advertisement()
	// No zone: it would be resolved in the calling thread's namespace; the
	// control message names the interface by index instead.
	dst := &net.IPAddr{IP: net.ParseIP("ff02::1")}
	buf := make([]byte, 1500)
	var last time.Time
	for {
		n, cm, _, err := r.p.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("ra: read: %w", err)
		}
		if cm == nil || cm.IfIndex != r.ifi.Index || n < 8 || buf[0] != byte(ipv6.ICMPTypeRouterSolicitation) || buf[1] != 0 {
			r.Stats.Ignored.Add(1)
			continue
		}
		// RFC 4861 6.1.1: a solicitation must arrive with hop limit 255.
		if cm.HopLimit != 255 || (enabled != nil && !enabled()) {
			r.Stats.Ignored.Add(1)
			continue
		}
		r.Stats.Solicitations.Add(1)
		// One multicast answer serves every solicitation that arrives within 100 ms.
		if time.Since(last) < 100*time.Millisecond {
			continue
		}
		last = time.Now()
		if _, err := r.p.WriteTo(ra, &ipv6.ControlMessage{HopLimit: 255, IfIndex: r.ifi.Index}, dst); err != nil {
			r.Logger.Warn("router advertisement not sent", "iface", r.Iface, "err", err)
			continue
		}
		r.Stats.Advertisements.Add(1)
	}
}

// Close closes the socket (for a Responder that will not Run).
func (r *Responder) Close() error { return r.c.Close() }
