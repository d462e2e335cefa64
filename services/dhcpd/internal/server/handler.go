// Package server is dhcpd's packet path: from the raw bytes of a DHCP request to
// the bytes of the answer and where to send them (Handler.Handle), and the UDP
// loop that feeds it (Serve).
//
// Handle never reads etcd: sites, machines and leases come from watch-fed memory.
// It writes etcd only through the lease allocator (offers and binds, batched), and
// an ACK leaves only after its lease is committed.
package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/services/dhcpd/internal/bootfile"
	"github.com/bootchain/bootchain/services/dhcpd/internal/lease"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Ports of the DHCP protocol.
const (
	ServerPort = 67
	ClientPort = 68
	PXEPort    = 4011
)

// noPXEDHCP is option 175 with sub-option 176 (no-pxedhcp) = 1: iPXE then does not
// wait 2-3 s for ProxyDHCP offers (docs/firmware.md).
var noPXEDHCP = []byte{176, 1, 1}

// pxeDiscoveryControl is option 43 with PXE sub-option 6 (discovery control) = 8:
// boot the file named in this reply, no boot server discovery.
var pxeDiscoveryControl = []byte{6, 1, 8, 255}

// Config configures a Handler.
type Config struct {
	// Site served.
	Site string
	// ServerIP is this server's address: server identifier and default next-server.
	ServerIP netip.Addr
	// Local are the addresses of the interface dhcpd listens on; they say which
	// subnet a client without a relay is on.
	Local []netip.Prefix
	// Alloc hands out addresses (authoritative mode). Required for authoritative mode.
	Alloc *lease.Allocator
	// Machines returns a machine record by MAC; nil: no records.
	Machines func(mac string) *bootapiv1.Machine
	// Sessions records boot sessions; nil: none.
	Sessions *session.Recorder
	// ChainloadWindow: an iPXE request within this time of our chain-load answer
	// comes from the iPXE we loaded; default 2m.
	ChainloadWindow time.Duration
	// PerMAC limits the packets of one client hardware address, PerIP those
	// from one source address (a relay, or 0.0.0.0 for every unconfigured
	// client on the segment); zero limits are off. Over-limit packets are
	// dropped and counted.
	PerMAC, PerIP ratelimit.Limit
	// LimitKeys bounds the clients each limiter tracks; default 65536.
	LimitKeys int
	// Offline reports that etcd cannot commit (store.Reach): then only the
	// leases clients hold are offered and renewed (Allocator.RenewOffline);
	// nil: always online.
	Offline func() bool
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Stats counts what the handler did. Every field is incremented somewhere.
type Stats struct {
	Received, Replied                  atomic.Uint64
	Discovers, Requests, Releases      atomic.Uint64
	Declines, Informs                  atomic.Uint64
	Offers, Acks, Naks                 atomic.Uint64
	Malformed, WrongOp, BadHardware    atomic.Uint64
	NoMessageType, NoSubnet, NotForUs  atomic.Uint64
	Exhausted, StoreErrors, NotPXE     atomic.Uint64
	UnknownRelay, Unsupported, Overrun atomic.Uint64
	// LimitedMAC and LimitedIP are packets dropped by the per-MAC and per-IP
	// rate limits; Panics are packets whose handling panicked (dropped).
	LimitedMAC, LimitedIP, Panics atomic.Uint64
	// OfflineRefused are DISCOVERs and REQUESTs left unanswered while etcd
	// was unreachable: the client held no lease to keep (no new leases then).
	OfflineRefused atomic.Uint64
}

// Handler answers DHCP packets.
type Handler struct {
	cfg   Config
	log   *slog.Logger
	site  atomic.Pointer[SiteConfig]
	Stats Stats

	// xids: last DISCOVER xid per MAC, so retransmissions continue a session
	// rather than open a new one. Bounded by maxTracked.
	xids *session.Retransmits[dhcpv4.TransactionID]

	mu sync.Mutex
	// chain: proxy mode's chain-load marks (authoritative mode keeps them on the lease).
	chain map[string]chainMark

	perMAC *ratelimit.Limiter[[6]byte]
	perIP  *ratelimit.Limiter[netip.Addr]
	// testHook, when set, sees every decoded packet first (tests force panics).
	testHook func(*dhcpv4.DHCPv4)
}

type chainMark struct {
	at  time.Time
	xid dhcpv4.TransactionID
}

const maxTracked = 1 << 16

// New returns a Handler; call SetSite before serving.
func New(cfg Config) *Handler {
	if cfg.ChainloadWindow == 0 {
		cfg.ChainloadWindow = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Machines == nil {
		cfg.Machines = func(string) *bootapiv1.Machine { return nil }
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, xids: session.NewRetransmits[dhcpv4.TransactionID](maxTracked), chain: map[string]chainMark{},
		perMAC: ratelimit.New[[6]byte](ratelimit.Config{Limit: cfg.PerMAC, Keys: cfg.LimitKeys}),
		perIP:  ratelimit.New[netip.Addr](ratelimit.Config{Limit: cfg.PerIP, Keys: cfg.LimitKeys})}
	h.site.Store(&SiteConfig{Site: &bootapiv1.Site{}})
	return h
}

// SetSite installs new site settings.
func (h *Handler) SetSite(sc *SiteConfig) {
	h.site.Store(sc)
	if h.cfg.Alloc != nil {
		h.cfg.Alloc.SetSubnets(sc.LeaseSubnets())
		h.cfg.Alloc.SetQuarantine(sc.Quarantine)
	}
}

func (h *Handler) offline() bool { return h.cfg.Offline != nil && h.cfg.Offline() }

// etcdFailed reports whether a bind failed because etcd did not commit (not
// a refusal, and not this server stopping).
func etcdFailed(ctx context.Context, err error) bool {
	return ctx.Err() == nil && !errors.Is(err, lease.ErrTaken) && !errors.Is(err, lease.ErrNotServed) &&
		!errors.Is(err, lease.ErrConflict) && !errors.Is(err, context.Canceled)
}

// SiteConfig returns the settings in use.
func (h *Handler) SiteConfig() *SiteConfig { return h.site.Load() }

// Reply is an answer and where it goes.
type Reply struct {
	Data []byte
	Dst  netip.AddrPort
	// Broadcast: Dst is the limited broadcast address.
	Broadcast bool
	// buf is the pooled buffer Data was encoded into; Release returns it.
	buf *[]byte
}

// Release returns the reply's buffer for reuse; Data must not be used after.
// A reply never released is only garbage.
func (r *Reply) Release() {
	if r.buf != nil {
		*r.buf = r.Data[:0]
		replyBufs.Put(r.buf)
		r.buf, r.Data = nil, nil
	}
}

// info is what a request says about its sender.
type info struct {
	msg      *dhcpv4.DHCPv4
	mt       dhcpv4.MessageType
	mac      string
	vendor   string
	arch     uint16
	hasArch  bool
	ipxe     bool
	marked   bool // user class "bootchain": an iPXE we built
	userClss string
	port     int
	src      netip.AddrPort
}

// Handle answers one packet received on port (67 or 4011) from src. It returns
// nil when nothing is to be sent. A panic while handling the packet is logged
// with its stack, counted (Stats.Panics) and drops the packet: in bootchain up
// the process also runs etcd and every other service.
func (h *Handler) Handle(ctx context.Context, raw []byte, src netip.AddrPort, port int) (r *Reply) {
	defer func() {
		if p := recover(); p != nil {
			h.Stats.Panics.Add(1)
			h.log.Error("panic handling a DHCP packet; packet dropped", "src", src.String(), "panic", p, "stack", string(debug.Stack()))
			r = nil
		}
	}()
	return h.handle(ctx, raw, src, port)
}

func (h *Handler) handle(ctx context.Context, raw []byte, src netip.AddrPort, port int) *Reply {
	h.Stats.Received.Add(1)
	if len(raw) < 240 || len(raw) > 4096 {
		h.Stats.Malformed.Add(1)
		return nil
	}
	// Per source first: it is the cheapest check and bounds the decoding work a
	// flood from one address (or one relay) costs.
	if ok, _ := h.perIP.Allow(src.Addr().Unmap()); !ok {
		h.Stats.LimitedIP.Add(1)
		return nil
	}
	msg, err := decode(raw)
	if err != nil {
		h.Stats.Malformed.Add(1)
		return nil
	}
	if h.testHook != nil {
		h.testHook(msg)
	}
	if msg.OpCode != dhcpv4.OpcodeBootRequest {
		h.Stats.WrongOp.Add(1)
		return nil
	}
	if msg.HWType != iana.HWTypeEthernet || len(msg.ClientHWAddr) != 6 {
		h.Stats.BadHardware.Add(1)
		return nil
	}
	sc := h.site.Load()
	if !h.relayAccepted(sc, msg, src) {
		h.Stats.UnknownRelay.Add(1)
		return nil
	}
	if ok, _ := h.perMAC.Allow([6]byte(msg.ClientHWAddr)); !ok {
		h.Stats.LimitedMAC.Add(1)
		return nil
	}
	in := &info{msg: msg, mt: msg.MessageType(), mac: msg.ClientHWAddr.String(), vendor: msg.ClassIdentifier(), port: port, src: src}
	if in.mt == dhcpv4.MessageTypeNone {
		h.Stats.NoMessageType.Add(1)
		return nil
	}
	if a := msg.ClientArch(); len(a) > 0 {
		in.arch, in.hasArch = uint16(a[0]), true
	}
	uc := msg.Options.Get(dhcpv4.OptionUserClassInformation)
	in.userClss = string(uc)
	in.ipxe = bytes.Contains(uc, []byte("iPXE")) || msg.Options.Has(dhcpv4.GenericOptionCode(175))
	in.marked = bytes.Contains(uc, []byte("bootchain"))
	if sc.Proxy {
		return h.proxy(ctx, sc, in)
	}
	if port == PXEPort {
		// Boot server discovery on 4011 is a proxy-mode service.
		h.Stats.Unsupported.Add(1)
		return nil
	}
	switch in.mt {
	case dhcpv4.MessageTypeDiscover:
		h.Stats.Discovers.Add(1)
		return h.discover(ctx, sc, in)
	case dhcpv4.MessageTypeRequest:
		h.Stats.Requests.Add(1)
		return h.request(ctx, sc, in)
	case dhcpv4.MessageTypeRelease:
		h.Stats.Releases.Add(1)
		h.release(ctx, in)
		return nil
	case dhcpv4.MessageTypeDecline:
		h.Stats.Declines.Add(1)
		h.decline(ctx, sc, in)
		return nil
	case dhcpv4.MessageTypeInform:
		h.Stats.Informs.Add(1)
		return h.inform(sc, in)
	}
	h.Stats.Unsupported.Add(1)
	return nil
}

// relayAccepted reports whether a packet may be answered as relayed: one
// without giaddr always; one with giaddr when the site lists relays and giaddr
// is one of them, or, with no list, when giaddr is the packet's source (a relay
// sends from its own address). Otherwise any host could name a giaddr and have
// the answer (an address, a boot file) sent to a relay it chose, or draw
// addresses from another subnet's pools.
func (h *Handler) relayAccepted(sc *SiteConfig, msg *dhcpv4.DHCPv4, src netip.AddrPort) bool {
	gi := addrOf(msg.GatewayIPAddr)
	if !gi.IsValid() || gi.IsUnspecified() {
		return true
	}
	if len(sc.Relays) > 0 {
		return sc.Relays[gi]
	}
	return gi == src.Addr().Unmap()
}

func addrOf(ip net.IP) netip.Addr {
	if v4 := ip.To4(); v4 != nil {
		a, _ := netip.AddrFromSlice(v4)
		return a
	}
	return netip.Addr{}
}

func (h *Handler) logFor(in *info) *slog.Logger {
	return h.log.With("mac", in.mac, "xid", in.msg.TransactionID.String(), "site", h.cfg.Site)
}

// subnetFor picks the client's subnet: the relay's (giaddr; handle has
// accepted the relay) or the one on our interface.
func (h *Handler) subnetFor(sc *SiteConfig, in *info) *Subnet {
	if gi := addrOf(in.msg.GatewayIPAddr); gi.IsValid() && !gi.IsUnspecified() {
		return sc.containing(gi)
	}
	for _, p := range h.cfg.Local {
		if s := sc.containing(p.Addr()); s != nil {
			return s
		}
	}
	if ci := addrOf(in.msg.ClientIPAddr); ci.IsValid() && !ci.IsUnspecified() {
		if s := sc.containing(ci); s != nil {
			return s
		}
	}
	if len(sc.Subnets) == 1 && len(h.cfg.Local) == 0 {
		return sc.Subnets[0]
	}
	return nil
}

func (h *Handler) client(in *info, sub *Subnet, m *bootapiv1.Machine) lease.Client {
	c := lease.Client{MAC: in.mac, ClientID: in.msg.Options.Get(dhcpv4.OptionClientIdentifier), Hostname: in.msg.HostName()}
	if len(c.Hostname) > 253 {
		c.Hostname = c.Hostname[:253]
	}
	if gi := addrOf(in.msg.GatewayIPAddr); gi.IsValid() && !gi.IsUnspecified() {
		c.Giaddr = gi.String()
	}
	if rai := in.msg.RelayAgentInfo(); rai != nil {
		c.Relay = &dhcpdv1.RelayInfo{CircuitId: rai.Get(dhcpv4.AgentCircuitIDSubOption), RemoteId: rai.Get(dhcpv4.AgentRemoteIDSubOption)}
	}
	if r := addrOf(in.msg.RequestedIPAddress()); r.IsValid() {
		c.Requested = r
	}
	if m != nil && m.GetIpv4Address() != "" {
		if a, err := netip.ParseAddr(m.GetIpv4Address()); err == nil && a.Is4() && sub != nil && sub.Prefix.Contains(a) {
			c.Reserved = a
		}
	}
	return c
}

// chainloaded reports whether in comes from the iPXE we chain-loaded.
func (h *Handler) chainloaded(sc *SiteConfig, in *info) bool {
	if !in.ipxe {
		return false
	}
	if in.marked {
		return true
	}
	now := time.Now()
	if sc.Proxy || h.cfg.Alloc == nil {
		h.mu.Lock()
		m, ok := h.chain[in.mac]
		h.mu.Unlock()
		return ok && m.xid != in.msg.TransactionID && now.Sub(m.at) < h.cfg.ChainloadWindow
	}
	l, ok := h.cfg.Alloc.ByMAC(in.mac)
	return ok && l.GetChainloadTime() != nil && now.Sub(l.GetChainloadTime().AsTime()) < h.cfg.ChainloadWindow
}

func (h *Handler) decide(sc *SiteConfig, in *info, m *bootapiv1.Machine) bootfile.Decision {
	return bootfile.Decide(&bootfile.Request{
		Arch: in.arch, HasArch: in.hasArch, VendorClass: in.vendor, IPXE: in.ipxe,
		Chainloaded: h.chainloaded(sc, in), Machine: m, Site: sc.Site,
	})
}

// hop opens or continues the machine's boot session and starts the hop for this
// exchange. Only PXE and iPXE clients get sessions.
func (h *Handler) hop(ctx context.Context, in *info, d bootfile.Decision) (*session.Session, *session.Hop) {
	if h.cfg.Sessions == nil || !d.PXE {
		return nil, nil
	}
	firmware := !in.ipxe || d.Chainload
	var s *session.Session
	if in.mt == dhcpv4.MessageTypeDiscover {
		// A DISCOVER starts a new boot attempt when it comes from the firmware, or
		// when the machine's last session is over: an iPXE ROM that is not
		// chain-loaded (or within the chain-load window) sends iPXE's DISCOVER after
		// a reboot, and must not add its hops to the finished boot before it.
		retransmit := h.xids.Seen(in.mac, in.msg.TransactionID)
		if firmware {
			s = h.cfg.Sessions.OpenFirmwareAttempt(ctx, in.mac, h.cfg.Site, retransmit)
		} else {
			_, active := h.cfg.Sessions.Join(in.mac)
			s = h.cfg.Sessions.Open(ctx, in.mac, session.OpenOptions{New: !active && !retransmit, Site: h.cfg.Site})
		}
	} else {
		s = h.cfg.Sessions.JoinOrOpen(ctx, in.mac, h.cfg.Site)
	}
	// An iPXE ROM that we chain-load acts as the firmware: its exchange is the
	// boot's firmware DHCP, and "ipxe.dhcp" is the iPXE we loaded.
	name := "ipxe.dhcp"
	if firmware {
		name = "dhcp.request"
		if in.mt == dhcpv4.MessageTypeDiscover {
			name = "dhcp.discover"
		}
	}
	_, hop := s.StartHop(ctx, name)
	hop.SetAttr("dhcp.message_type", in.mt.String())
	hop.SetAttr("dhcp.xid", in.msg.TransactionID.String())
	bootfile.Annotate(hop.SetAttr, &bootfile.Request{Arch: in.arch, HasArch: in.hasArch, VendorClass: in.vendor}, in.userClss, d)
	return s, hop
}

// traceHTTPBoot adds the session's traceparent to a UEFI HTTP-boot URL, as bootapi
// does to the URLs in its scripts: artifactstore records the download as a hop of
// that session. The firmware fetches the URL as given, query included.
func traceHTTPBoot(d bootfile.Decision, s *session.Session) bootfile.Decision {
	if !d.HTTP || s == nil || d.File == "" {
		return d
	}
	sep := "?"
	if strings.Contains(d.File, "?") {
		sep = "&"
	}
	d.File += sep + "traceparent=" + s.Traceparent()
	return d
}

func endHop(hop *session.Hop, err error, detail string) {
	if hop == nil {
		return
	}
	if detail != "" {
		hop.SetDetail(detail)
	}
	if err != nil {
		hop.Fail(err)
	}
	hop.End()
}

func (h *Handler) discover(ctx context.Context, sc *SiteConfig, in *info) *Reply {
	m := h.cfg.Machines(in.mac)
	d := h.decide(sc, in, m)
	s, hop := h.hop(ctx, in, d)
	d = traceHTTPBoot(d, s)
	sub := h.subnetFor(sc, in)
	if sub == nil || h.cfg.Alloc == nil {
		h.Stats.NoSubnet.Add(1)
		endHop(hop, errors.New("no subnet for this client"), "")
		return nil
	}
	var l *dhcpdv1.Lease
	var err error
	if h.offline() {
		l, err = h.cfg.Alloc.OfferHeld(h.client(in, sub, m), sub.Subnet)
	} else {
		l, err = h.cfg.Alloc.Offer(ctx, h.client(in, sub, m), sub.Subnet)
	}
	if err != nil {
		if errors.Is(err, lease.ErrNotHeld) {
			h.Stats.OfflineRefused.Add(1)
		} else if errors.Is(err, lease.ErrExhausted) {
			h.Stats.Exhausted.Add(1)
		} else {
			h.Stats.StoreErrors.Add(1)
			h.logFor(in).Warn("offer not recorded", "err", err)
		}
		endHop(hop, err, "")
		return nil
	}
	ip := net.ParseIP(l.GetIp()).To4()
	if hop != nil {
		hop.SetAttr("dhcp.offered_ip", l.GetIp())
	}
	resp := h.reply(in, dhcpv4.MessageTypeOffer)
	resp.YourIPAddr = ip
	h.addrOptions(resp, sub, sc)
	h.bootOptions(resp, sc, in, d)
	h.Stats.Offers.Add(1)
	endHop(hop, nil, "offer "+l.GetIp())
	return h.send(in, resp)
}

func (h *Handler) request(ctx context.Context, sc *SiteConfig, in *info) *Reply {
	msg := in.msg
	if sid := addrOf(msg.ServerIdentifier()); sid.IsValid() && h.cfg.ServerIP.IsValid() && sid != h.cfg.ServerIP {
		// The client chose another server's offer; ours expires on its own.
		h.Stats.NotForUs.Add(1)
		return nil
	}
	ip := addrOf(msg.RequestedIPAddress())
	if !ip.IsValid() || ip.IsUnspecified() {
		ip = addrOf(msg.ClientIPAddr)
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		h.Stats.Malformed.Add(1)
		return nil
	}
	m := h.cfg.Machines(in.mac)
	d := h.decide(sc, in, m)
	s, hop := h.hop(ctx, in, d)
	d = traceHTTPBoot(d, s)
	sub := h.subnetFor(sc, in)
	if sub == nil || h.cfg.Alloc == nil {
		h.Stats.NoSubnet.Add(1)
		endHop(hop, errors.New("no subnet for this client"), "")
		return nil
	}
	now := time.Now()
	mark := func(l *dhcpdv1.Lease) {
		if d.Chainload {
			l.ChainloadTime = timestamppb.New(now)
		}
	}
	c := h.client(in, sub, m)
	var l *dhcpdv1.Lease
	var err error
	if h.offline() {
		// etcd cannot commit: the address the client holds is renewed from
		// the journal; nothing else is answered (no NAK: the client keeps
		// its address and asks again).
		if l, err = h.cfg.Alloc.RenewOffline(c, ip, sub.Subnet, mark); errors.Is(err, lease.ErrNotHeld) {
			h.Stats.OfflineRefused.Add(1)
			endHop(hop, err, "")
			return nil
		}
	} else {
		l, err = h.cfg.Alloc.Bind(ctx, c, ip, sub.Subnet, mark)
		if err != nil && h.cfg.Offline != nil && etcdFailed(ctx, err) {
			// etcd failed before the probe noticed: a renewal of a held
			// lease still goes through the journal; anything else fails
			// as it would have.
			if rl, rerr := h.cfg.Alloc.RenewOffline(c, ip, sub.Subnet, mark); rerr == nil {
				l, err = rl, nil
			}
		}
	}
	if err != nil {
		if errors.Is(err, lease.ErrTaken) || errors.Is(err, lease.ErrNotServed) {
			h.Stats.Naks.Add(1)
			endHop(hop, err, "nak "+ip.String())
			nak := h.reply(in, dhcpv4.MessageTypeNak)
			nak.UpdateOption(dhcpv4.OptMessage(err.Error()))
			return h.send(in, nak)
		}
		// Not durable: no ACK. The client retransmits.
		h.Stats.StoreErrors.Add(1)
		h.logFor(in).Warn("lease not recorded", "ip", ip.String(), "err", err)
		endHop(hop, err, "")
		return nil
	}
	resp := h.reply(in, dhcpv4.MessageTypeAck)
	resp.YourIPAddr = ip.AsSlice()
	h.addrOptions(resp, sub, sc)
	if left := time.Until(l.GetExpireTime().AsTime()); left > 0 {
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(left.Round(time.Second)))
	}
	h.bootOptions(resp, sc, in, d)
	h.Stats.Acks.Add(1)
	if s != nil {
		s.SetIP(ip.String())
		hop.SetAttr("dhcp.offered_ip", ip.String())
	}
	endHop(hop, nil, "ack "+ip.String())
	return h.send(in, resp)
}

func (h *Handler) release(ctx context.Context, in *info) {
	ip := addrOf(in.msg.ClientIPAddr)
	if h.cfg.Alloc == nil || !ip.IsValid() {
		return
	}
	if _, err := h.cfg.Alloc.Release(ctx, ip, in.mac); err != nil && !errors.Is(err, lease.ErrNotOwner) {
		h.Stats.StoreErrors.Add(1)
	}
}

func (h *Handler) decline(ctx context.Context, sc *SiteConfig, in *info) {
	ip := addrOf(in.msg.RequestedIPAddress())
	if h.cfg.Alloc == nil || !ip.IsValid() {
		return
	}
	sub := sc.containing(ip)
	if sub == nil {
		h.Stats.NoSubnet.Add(1)
		return
	}
	if _, err := h.cfg.Alloc.Decline(ctx, ip, in.mac, sub.Subnet); err != nil && !errors.Is(err, lease.ErrNotOwner) && !errors.Is(err, lease.ErrNotServed) {
		h.Stats.StoreErrors.Add(1)
	} else if err == nil {
		h.logFor(in).Warn("address declined; quarantined", "ip", ip.String(), "for", sc.Quarantine)
	}
}

func (h *Handler) inform(sc *SiteConfig, in *info) *Reply {
	sub := h.subnetFor(sc, in)
	if sub == nil {
		h.Stats.NoSubnet.Add(1)
		return nil
	}
	resp := h.reply(in, dhcpv4.MessageTypeAck)
	h.addrOptions(resp, sub, sc)
	resp.Options.Del(dhcpv4.OptionIPAddressLeaseTime)
	m := h.cfg.Machines(in.mac)
	h.bootOptions(resp, sc, in, h.decide(sc, in, m))
	h.Stats.Acks.Add(1)
	return h.send(in, resp)
}

// proxy answers PXE clients only, without addresses: DISCOVER on 67 gets a
// ProxyDHCP offer, REQUEST on 4011 an ACK.
func (h *Handler) proxy(ctx context.Context, sc *SiteConfig, in *info) *Reply {
	m := h.cfg.Machines(in.mac)
	d := h.decide(sc, in, m)
	if !d.PXE {
		h.Stats.NotPXE.Add(1)
		return nil
	}
	var mt dhcpv4.MessageType
	switch {
	case in.mt == dhcpv4.MessageTypeDiscover && in.port != PXEPort:
		h.Stats.Discovers.Add(1)
		mt = dhcpv4.MessageTypeOffer
	case in.mt == dhcpv4.MessageTypeRequest && in.port == PXEPort:
		h.Stats.Requests.Add(1)
		mt = dhcpv4.MessageTypeAck
	case in.mt == dhcpv4.MessageTypeInform:
		h.Stats.Informs.Add(1)
		mt = dhcpv4.MessageTypeAck
	case in.mt == dhcpv4.MessageTypeRequest:
		// REQUESTs on 67 belong to the site's own DHCP server. We only note the
		// exchange on the session, with the address the client asks for: that
		// address is how tftpd finds the machine's session in proxy mode.
		h.Stats.NotForUs.Add(1)
		h.observeRequest(ctx, in, d)
		return nil
	default:
		h.Stats.NotForUs.Add(1)
		return nil
	}
	s, hop := h.hop(ctx, in, d)
	d = traceHTTPBoot(d, s)
	if d.Chainload {
		h.mu.Lock()
		if len(h.chain) >= maxTracked {
			h.chain = map[string]chainMark{}
		}
		if _, ok := h.chain[in.mac]; !ok || h.chain[in.mac].xid != in.msg.TransactionID {
			h.chain[in.mac] = chainMark{at: time.Now(), xid: in.msg.TransactionID}
		}
		h.mu.Unlock()
	}
	resp := h.reply(in, mt)
	resp.YourIPAddr = net.IPv4zero
	// ProxyDHCP answers name themselves PXEClient and echo the client's GUID.
	if !d.HTTP {
		resp.UpdateOption(dhcpv4.OptClassIdentifier("PXEClient"))
	}
	if g := in.msg.Options.Get(dhcpv4.OptionClientMachineIdentifier); g != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, g))
	}
	resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeDiscoveryControl))
	h.bootOptions(resp, sc, in, d)
	resp.Options.Del(dhcpv4.GenericOptionCode(175)) // iPXE must keep listening to the real server's answer
	if mt == dhcpv4.MessageTypeOffer {
		h.Stats.Offers.Add(1)
	} else {
		h.Stats.Acks.Add(1)
	}
	endHop(hop, nil, "proxy "+mt.String())
	return h.send(in, resp)
}

// reply starts the answer to in: what dhcpv4.NewReplyFromRequest sets, without
// drawing a random xid (a getrandom call per packet) only to overwrite it.
func (h *Handler) reply(in *info, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	req := in.msg
	resp := &dhcpv4.DHCPv4{
		OpCode: dhcpv4.OpcodeBootReply, HWType: req.HWType, ClientHWAddr: req.ClientHWAddr,
		TransactionID: req.TransactionID, Flags: req.Flags,
		ClientIPAddr: net.IPv4zero, YourIPAddr: net.IPv4zero, ServerIPAddr: net.IPv4zero, GatewayIPAddr: req.GatewayIPAddr,
		Options: make(dhcpv4.Options, 8),
	}
	if resp.GatewayIPAddr == nil {
		resp.GatewayIPAddr = net.IPv4zero
	}
	resp.UpdateOption(dhcpv4.OptMessageType(mt))
	// Option 82 goes back to the relay; RFC 6842: the client identifier is echoed.
	for _, c := range []dhcpv4.OptionCode{dhcpv4.OptionRelayAgentInformation, dhcpv4.OptionClientIdentifier} {
		if v := req.Options.Get(c); v != nil {
			resp.UpdateOption(dhcpv4.OptGeneric(c, v))
		}
	}
	if h.cfg.ServerIP.IsValid() {
		resp.UpdateOption(dhcpv4.OptServerIdentifier(h.cfg.ServerIP.AsSlice()))
	}
	return resp
}

func (h *Handler) addrOptions(resp *dhcpv4.DHCPv4, sub *Subnet, sc *SiteConfig) {
	resp.UpdateOption(dhcpv4.OptSubnetMask(sub.Mask))
	if len(sub.Routers) > 0 {
		resp.UpdateOption(dhcpv4.OptRouter(sub.Routers...))
	}
	if len(sub.DNS) > 0 {
		resp.UpdateOption(dhcpv4.OptDNS(sub.DNS...))
	}
	if sub.Domain != "" {
		resp.UpdateOption(dhcpv4.OptDomainName(sub.Domain))
	}
	lt := sub.LeaseTime
	if lt <= 0 {
		lt = sc.LeaseTime
	}
	resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
}

// bootOptions adds next-server, option 66, the boot file and the iPXE tuning.
func (h *Handler) bootOptions(resp *dhcpv4.DHCPv4, sc *SiteConfig, in *info, d bootfile.Decision) {
	if !d.PXE {
		return
	}
	if in.ipxe {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(175), noPXEDHCP))
	}
	if d.HTTP {
		resp.UpdateOption(dhcpv4.OptClassIdentifier("HTTPClient"))
	}
	if d.File == "" {
		return
	}
	if sc.NextServer.IsValid() {
		resp.ServerIPAddr = sc.NextServer.AsSlice()
	}
	if ts := sc.Site.GetTftpServer(); ts != "" {
		resp.UpdateOption(dhcpv4.OptTFTPServerName(ts))
	}
	resp.BootFileName = d.File
	resp.UpdateOption(dhcpv4.OptBootFileName(d.File))
}

// send encodes resp and picks its destination (RFC 2131 section 4.1).
func (h *Handler) send(in *info, resp *dhcpv4.DHCPv4) *Reply {
	bp := replyBufs.Get().(*[]byte)
	out := &Reply{Data: encode((*bp)[:0], resp), buf: bp}
	h.Stats.Replied.Add(1)
	msg := in.msg
	switch {
	case in.port == PXEPort:
		out.Dst = in.src
	case addrOf(msg.GatewayIPAddr).IsValid() && !addrOf(msg.GatewayIPAddr).IsUnspecified():
		out.Dst = netip.AddrPortFrom(addrOf(msg.GatewayIPAddr), ServerPort)
	case resp.MessageType() != dhcpv4.MessageTypeNak && addrOf(msg.ClientIPAddr).IsValid() && !addrOf(msg.ClientIPAddr).IsUnspecified():
		out.Dst = netip.AddrPortFrom(addrOf(msg.ClientIPAddr), ClientPort)
	default:
		out.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte{255, 255, 255, 255}), ClientPort)
		out.Broadcast = true
	}
	return out
}

// String summarizes the counters for logs.
func (s *Stats) String() string {
	return fmt.Sprintf("received=%d replied=%d offers=%d acks=%d naks=%d exhausted=%d malformed=%d wrong_op=%d store_errors=%d overrun=%d",
		s.Received.Load(), s.Replied.Load(), s.Offers.Load(), s.Acks.Load(), s.Naks.Load(), s.Exhausted.Load(),
		s.Malformed.Load(), s.WrongOp.Load(), s.StoreErrors.Load(), s.Overrun.Load())
}

// observeRequest records, in proxy mode, a client's REQUEST to the site's own DHCP
// server as a hop of its session and sets the session's IP to the requested
// address.
func (h *Handler) observeRequest(ctx context.Context, in *info, d bootfile.Decision) {
	ip := addrOf(in.msg.RequestedIPAddress())
	if !ip.IsValid() || ip.IsUnspecified() {
		ip = addrOf(in.msg.ClientIPAddr)
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		return
	}
	s, hop := h.hop(ctx, in, d)
	if s == nil {
		return
	}
	s.SetIP(ip.String())
	detail := "request " + ip.String()
	if sid := addrOf(in.msg.ServerIdentifier()); sid.IsValid() {
		detail += " from " + sid.String() + " (the site's DHCP server answers)"
	}
	hop.SetAttr("dhcp.offered_ip", ip.String())
	endHop(hop, nil, detail)
}
