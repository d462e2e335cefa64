package dhcp6

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"golang.org/x/net/ipv6"
)

// AllServers is the multicast group DHCPv6 clients send to (RFC 8415 7.1).
var AllServers = net.ParseIP("ff02::1:2")

// Listen opens the DHCPv6 socket on iface (bound to it, in the caller's network
// namespace) at addr's port and joins All_DHCP_Relay_Agents_and_Servers there.
func Listen(iface string, port int) (*net.UDPConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("dhcp6: interface %q: %w", iface, err)
	}
	c, err := server6.NewIPv6UDPConn(iface, &net.UDPAddr{IP: net.IPv6unspecified, Port: port})
	if err != nil {
		return nil, fmt.Errorf("dhcp6: listen :%d on %s: %w", port, iface, err)
	}
	if err := ipv6.NewPacketConn(c).JoinGroup(ifi, &net.UDPAddr{IP: AllServers}); err != nil {
		c.Close()
		return nil, fmt.Errorf("dhcp6: join %s on %s: %w", AllServers, iface, err)
	}
	return c, nil
}

// Serve answers the messages arriving on conn, up to workers at once, until
// ctx ends; it closes conn then and returns nil.
func Serve(ctx context.Context, conn *net.UDPConn, h *Handler, workers int) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if workers <= 0 {
		workers = 64
	}
	sem := make(chan struct{}, workers)
	defer func() {
		for range cap(sem) {
			sem <- struct{}{}
		}
	}()
	for {
		buf := make([]byte, 1500)
		n, peer, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp6: read: %w", err)
		}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			answer(ctx, conn, h, buf[:n], peer)
		}()
	}
}

func answer(ctx context.Context, conn *net.UDPConn, h *Handler, pkt []byte, peer netip.AddrPort) {
	defer func() {
		if r := recover(); r != nil {
			h.Stats.Malformed.Add(1)
			h.log.Error("DHCPv6 message handling panicked; dropped", "panic", r, "peer", peer)
		}
	}()
	out, err := h.Handle(ctx, pkt, peer.Addr().WithZone(""))
	if err != nil {
		h.log.Debug("DHCPv6 message not answered", "peer", peer, "err", err)
		return
	}
	if _, err := conn.WriteToUDPAddrPort(out, peer); err != nil {
		h.log.Warn("DHCPv6 reply not sent", "peer", peer, "err", err, slog.Int("bytes", len(out)))
	}
}
