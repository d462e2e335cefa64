// Package ra answers IPv6 router solicitations on the boot network with a router
// advertisement of router lifetime 0: "there is no IPv6 router here". iPXE
// otherwise waits 13-16 s for a router in every stage (docs/firmware.md). When
// dhcpd serves DHCPv6 the advertisement also carries the managed flag (get
// addresses from DHCPv6) and the boot network's prefix as on-link, without
// autonomous configuration; still lifetime 0: no default route, nothing routed out.
package ra

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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

// Managed is what an advertisement says about DHCPv6: nothing when Prefix is
// invalid, else the managed flag and Prefix as on-link (RFC 4861 4.6.2, L=1, A=0).
type Managed struct {
	Prefix netip.Prefix
}

// Flag bits of the RA header and of the prefix information option.
const (
	flagManaged = 0x80
	flagOnLink  = 0x80
	optPrefix   = 3
	prefixTTL   = 3600 // seconds: valid and preferred lifetime of the on-link prefix
)

// Advertisement is the ICMPv6 router advertisement sent: hop limit 0 (unspecified),
// router lifetime 0, reachable time and retrans timer unspecified; with m's
// prefix valid, the managed flag and a prefix information option.
func Advertisement(m Managed) []byte {
	body := make([]byte, 12, 12+32)
	if m.Prefix.IsValid() && m.Prefix.Addr().Is6() {
		body[1] = flagManaged
		opt := make([]byte, 32)
		opt[0], opt[1] = optPrefix, 4
		opt[2] = byte(m.Prefix.Bits())
		opt[3] = flagOnLink
		binary.BigEndian.PutUint32(opt[4:], prefixTTL)
		binary.BigEndian.PutUint32(opt[8:], prefixTTL)
		a := m.Prefix.Masked().Addr().As16()
		copy(opt[16:], a[:])
		body = append(body, opt...)
	}
	msg := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: body}}
	b, _ := msg.Marshal(nil) // the kernel fills in the ICMPv6 checksum
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
// the socket and returns nil then. managed (nil: never) says what each
// advertisement tells about DHCPv6.
func (r *Responder) Run(ctx context.Context, enabled func() bool, managed func() Managed) error {
	stop := context.AfterFunc(ctx, func() { r.c.Close() })
	defer stop()
	defer r.c.Close()
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
		var m Managed
		if managed != nil {
			m = managed()
		}
		ra := Advertisement(m)
		if _, err := r.p.WriteTo(ra, &ipv6.ControlMessage{HopLimit: 255, IfIndex: r.ifi.Index}, dst); err != nil {
			r.Logger.Warn("router advertisement not sent", "iface", r.Iface, "err", err)
			continue
		}
		r.Stats.Advertisements.Add(1)
	}
}

// Close closes the socket (for a Responder that will not Run).
func (r *Responder) Close() error { return r.c.Close() }
