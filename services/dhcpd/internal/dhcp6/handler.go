// Package dhcp6 is dhcpd's DHCPv6 server: IA_NA addresses from an IPv6 pool,
// leases in etcd (leases6/<site>/<ip>) with the guarantees of the IPv4 leases
// (no address bound twice, a Reply only after its bind committed), and the
// boot file URL (option 59) for UEFI PXE/HTTP boot over IPv6 and for iPXE.
//
//	h := dhcp6.New(dhcp6.Config{Leases: ls, Pool: pool, ...})
//	reply, err := h.Handle(ctx, packet, peer)
package dhcp6

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/ip6url"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/services/dhcpd/internal/bootfile"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"google.golang.org/protobuf/proto"
)

// Ports of DHCPv6.
const (
	ServerPort = 547
	ClientPort = 546
)

// ErrDrop marks a packet that gets no answer; the Stats say why.
var ErrDrop = errors.New("dhcp6: dropped")

// Site is what the handler needs of the site's settings at the moment.
type Site struct {
	// Record is the site with bootapi_url, artifact_url and tftp_server filled.
	Record *bootapiv1.Site
	// LeaseTime of the addresses.
	LeaseTime time.Duration
}

// Config configures a Handler.
type Config struct {
	Site string
	// Leases stores the addresses. Required.
	Leases *Leases
	// Pool addresses are given from; Prefix is the boot network's prefix (on
	// link, for Confirm).
	Pool   Pool
	Prefix netip.Prefix
	// ServerID is this server's DUID (the same on every replica is fine: the
	// leases, not the server, decide).
	ServerID dhcpv6.DUID
	// Advertise is this host's IPv6 address as machines reach it: the host of
	// the boot URLs given to IPv6 clients.
	Advertise netip.Addr
	// Settings returns the site's current settings. Required.
	Settings func() Site
	// Machines returns a machine record by MAC; nil: no records.
	Machines func(mac string) *bootapiv1.Machine
	// Sessions records boot sessions; nil: none.
	Sessions *session.Recorder
	Logger   *slog.Logger
}

// Stats counts what the handler did. Every field is incremented somewhere.
type Stats struct {
	Received, Replied, Malformed, NotForUs, Relayed atomic.Uint64
	Solicits, Requests, Renews, Releases, Declines  atomic.Uint64
	Confirms, InfoRequests, Unsupported, NoAddrs    atomic.Uint64
	StoreErrors, Bound                              atomic.Uint64
}

// Handler answers DHCPv6 messages.
type Handler struct {
	cfg   Config
	log   *slog.Logger
	Stats Stats

	xids *session.Retransmits[dhcpv6.TransactionID] // last firmware Solicit per MAC
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Machines == nil {
		cfg.Machines = func(string) *bootapiv1.Machine { return nil }
	}
	return &Handler{cfg: cfg, log: cfg.Logger, xids: session.NewRetransmits[dhcpv6.TransactionID](1 << 16)}
}

// client is what one message told us.
type client struct {
	msg      *dhcpv6.Message
	duid     []byte
	mac      string
	arch     uint16
	hasArch  bool
	vendor   string
	ipxe     bool
	userClss string
}

// Handle answers one message from peer; it returns ErrDrop (wrapped) for a
// message that gets no answer.
func (h *Handler) Handle(ctx context.Context, pkt []byte, peer netip.Addr) ([]byte, error) {
	h.Stats.Received.Add(1)
	d, err := dhcpv6.FromBytes(pkt)
	if err != nil {
		h.Stats.Malformed.Add(1)
		return nil, fmt.Errorf("%w: malformed: %v", ErrDrop, err)
	}
	if d.IsRelay() {
		h.Stats.Relayed.Add(1)
		return nil, fmt.Errorf("%w: relayed messages are not served", ErrDrop)
	}
	msg := d.(*dhcpv6.Message)
	cid := msg.Options.ClientID()
	sid := msg.Options.ServerID()
	if cid == nil && msg.MessageType != dhcpv6.MessageTypeInformationRequest {
		h.Stats.Malformed.Add(1)
		return nil, fmt.Errorf("%w: no client id", ErrDrop)
	}
	// RFC 8415 16: Solicit never names a server, Request/Renew/Release/Decline
	// must name this one; Rebind/Confirm must not name one.
	switch msg.MessageType {
	case dhcpv6.MessageTypeSolicit, dhcpv6.MessageTypeRebind, dhcpv6.MessageTypeConfirm:
		if sid != nil {
			h.Stats.Malformed.Add(1)
			return nil, fmt.Errorf("%w: %s with a server id", ErrDrop, msg.MessageType)
		}
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		if sid == nil || !sid.Equal(h.cfg.ServerID) {
			h.Stats.NotForUs.Add(1)
			return nil, fmt.Errorf("%w: %s for another server", ErrDrop, msg.MessageType)
		}
	case dhcpv6.MessageTypeInformationRequest:
		if sid != nil && !sid.Equal(h.cfg.ServerID) {
			h.Stats.NotForUs.Add(1)
			return nil, fmt.Errorf("%w: information request for another server", ErrDrop)
		}
	default:
		h.Stats.Unsupported.Add(1)
		return nil, fmt.Errorf("%w: message type %s", ErrDrop, msg.MessageType)
	}
	in := &client{msg: msg, mac: macOf(cid, peer)}
	if cid != nil {
		in.duid = cid.ToBytes()
	}
	if a := msg.Options.ArchTypes(); len(a) > 0 {
		in.arch, in.hasArch = uint16(a[0]), true
	}
	for _, vc := range msg.Options.VendorClasses() {
		if len(vc.Data) > 0 {
			in.vendor = string(vc.Data[0])
			break
		}
	}
	for _, uc := range msg.Options.UserClasses() {
		in.userClss = string(uc)
		if string(uc) == "iPXE" {
			in.ipxe = true
		}
	}
	var reply *dhcpv6.Message
	switch msg.MessageType {
	case dhcpv6.MessageTypeSolicit:
		h.Stats.Solicits.Add(1)
		reply, err = h.solicit(ctx, in)
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		if msg.MessageType == dhcpv6.MessageTypeRequest {
			h.Stats.Requests.Add(1)
		} else {
			h.Stats.Renews.Add(1)
		}
		reply, err = h.bind(ctx, in)
	case dhcpv6.MessageTypeRelease, dhcpv6.MessageTypeDecline:
		reply, err = h.release(ctx, in)
	case dhcpv6.MessageTypeConfirm:
		h.Stats.Confirms.Add(1)
		reply, err = h.confirm(in)
	case dhcpv6.MessageTypeInformationRequest:
		h.Stats.InfoRequests.Add(1)
		reply, err = dhcpv6.NewMessage()
		if err == nil {
			reply.MessageType, reply.TransactionID = dhcpv6.MessageTypeReply, msg.TransactionID
			if c := msg.GetOneOption(dhcpv6.OptionClientID); c != nil {
				reply.AddOption(c)
			}
			_, _, err = h.boot(ctx, in, reply, netip.Addr{}, false)
		}
	}
	if err != nil {
		return nil, err
	}
	h.Stats.Replied.Add(1)
	return reply.ToBytes(), nil
}

// macOf is the client's MAC from a DUID-LL/LLT, else from the EUI-64 of its
// link-local source address; "" when neither tells.
func macOf(cid dhcpv6.DUID, peer netip.Addr) string {
	switch d := cid.(type) {
	case *dhcpv6.DUIDLL:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return d.LinkLayerAddr.String()
		}
	case *dhcpv6.DUIDLLT:
		if d.HWType == iana.HWTypeEthernet && len(d.LinkLayerAddr) == 6 {
			return d.LinkLayerAddr.String()
		}
	}
	if peer.Is6() && peer.IsLinkLocalUnicast() {
		b := peer.As16()
		if b[11] == 0xff && b[12] == 0xfe {
			return net.HardwareAddr{b[8] ^ 2, b[9], b[10], b[13], b[14], b[15]}.String()
		}
	}
	return ""
}

func (h *Handler) newReply(in *client, typ dhcpv6.MessageType) *dhcpv6.Message {
	m := &dhcpv6.Message{MessageType: typ, TransactionID: in.msg.TransactionID}
	m.AddOption(in.msg.GetOneOption(dhcpv6.OptionClientID))
	m.AddOption(dhcpv6.OptServerID(h.cfg.ServerID))
	return m
}

func (h *Handler) solicit(ctx context.Context, in *client) (*dhcpv6.Message, error) {
	st := h.cfg.Settings()
	adv := h.newReply(in, dhcpv6.MessageTypeAdvertise)
	// Preference 255: the client takes this Advertise at once (RFC 8415 18.2.1)
	// instead of collecting others for a second.
	adv.AddOption(dhcpv6.OptPreference(255))
	now := time.Now()
	var offered netip.Addr
	for _, ia := range in.msg.Options.IANA() {
		want := netip.Addr{}
		if a := ia.Options.OneAddress(); a != nil {
			want, _ = netip.AddrFromSlice(a.IPv6Addr)
		}
		ip, err := h.cfg.Leases.Pick(ClientKey(in.duid, ia.IaId), want.Unmap(), h.cfg.Pool, now)
		if err == nil {
			offered = ip
		}
		adv.AddOption(h.ia(ia.IaId, ip, err, st.LeaseTime))
	}
	if _, _, err := h.boot(ctx, in, adv, offered, false); err != nil {
		return nil, err
	}
	return adv, nil
}

func (h *Handler) ia(iaid [4]byte, ip netip.Addr, err error, lt time.Duration) *dhcpv6.OptIANA {
	out := &dhcpv6.OptIANA{IaId: iaid, T1: lt / 2, T2: lt * 4 / 5}
	if err != nil {
		h.Stats.NoAddrs.Add(1)
		out.T1, out.T2 = 0, 0
		out.Options.Add(&dhcpv6.OptStatusCode{StatusCode: iana.StatusNoAddrsAvail, StatusMessage: "no address available"})
		return out
	}
	out.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: ip.AsSlice(), PreferredLifetime: lt, ValidLifetime: lt})
	return out
}

// bind answers Request, Renew and Rebind: every IA_NA's address is written to
// etcd (compare on its revision) before the Reply.
func (h *Handler) bind(ctx context.Context, in *client) (*dhcpv6.Message, error) {
	st := h.cfg.Settings()
	rep := h.newReply(in, dhcpv6.MessageTypeReply)
	now := time.Now()
	var bound netip.Addr
	for _, ia := range in.msg.Options.IANA() {
		key := ClientKey(in.duid, ia.IaId)
		want := netip.Addr{}
		if a := ia.Options.OneAddress(); a != nil {
			want, _ = netip.AddrFromSlice(a.IPv6Addr)
		}
		if cur, ok := h.cfg.Leases.Of(key, now); ok && in.msg.MessageType != dhcpv6.MessageTypeRequest {
			want = cur
		}
		ip, err := h.cfg.Leases.Pick(key, want, h.cfg.Pool, now)
		if err == nil {
			_, err = h.cfg.Leases.Write(ctx, Bind{IP: ip, Client: key, MAC: in.mac, Subnet: h.cfg.Prefix.String(),
				Expiry: now.Add(st.LeaseTime), State: dhcpdv1.LeaseState_LEASE_STATE_BOUND})
			if err != nil && !errors.Is(err, ErrTaken) {
				// Not committed: no Reply (the client retransmits).
				h.Stats.StoreErrors.Add(1)
				return nil, fmt.Errorf("%w: bind %s: %v", ErrDrop, ip, err)
			}
		}
		if err == nil {
			h.Stats.Bound.Add(1)
			bound = ip
		}
		rep.AddOption(h.ia(ia.IaId, ip, err, st.LeaseTime))
	}
	if _, _, err := h.boot(ctx, in, rep, bound, true); err != nil {
		return nil, err
	}
	return rep, nil
}

func (h *Handler) release(ctx context.Context, in *client) (*dhcpv6.Message, error) {
	state, quarantine := dhcpdv1.LeaseState_LEASE_STATE_RELEASED, time.Duration(0)
	if in.msg.MessageType == dhcpv6.MessageTypeDecline {
		h.Stats.Declines.Add(1)
		state, quarantine = dhcpdv1.LeaseState_LEASE_STATE_DECLINED, 10*time.Minute
	} else {
		h.Stats.Releases.Add(1)
	}
	for _, ia := range in.msg.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			ip, ok := netip.AddrFromSlice(a.IPv6Addr)
			if !ok {
				continue
			}
			_, err := h.cfg.Leases.Write(ctx, Bind{IP: ip.Unmap(), Client: ClientKey(in.duid, ia.IaId), MAC: in.mac,
				Subnet: h.cfg.Prefix.String(), Expiry: time.Now().Add(quarantine), State: state})
			if err != nil && !errors.Is(err, ErrTaken) {
				h.Stats.StoreErrors.Add(1)
				return nil, fmt.Errorf("%w: release %s: %v", ErrDrop, ip, err)
			}
		}
	}
	rep := h.newReply(in, dhcpv6.MessageTypeReply)
	rep.AddOption(&dhcpv6.OptStatusCode{StatusCode: iana.StatusSuccess})
	return rep, nil
}

func (h *Handler) confirm(in *client) (*dhcpv6.Message, error) {
	rep := h.newReply(in, dhcpv6.MessageTypeReply)
	code := iana.StatusSuccess
	for _, ia := range in.msg.Options.IANA() {
		for _, a := range ia.Options.Addresses() {
			if ip, ok := netip.AddrFromSlice(a.IPv6Addr); !ok || !h.cfg.Prefix.Contains(ip.Unmap()) {
				code = iana.StatusNotOnLink
			}
		}
	}
	rep.AddOption(&dhcpv6.OptStatusCode{StatusCode: code})
	return rep, nil
}

// boot adds the boot file URL (option 59) when the client is a network-boot
// client that asked for it, and records the exchange as a hop of the
// machine's boot session: ip is the address advertised, or bound (committed)
// when bound is set.
func (h *Handler) boot(ctx context.Context, in *client, out *dhcpv6.Message, ip netip.Addr, bound bool) (bootfile.Decision, *session.Session, error) {
	st := h.cfg.Settings()
	var m *bootapiv1.Machine
	if in.mac != "" {
		m = h.cfg.Machines(in.mac)
	}
	site := h.siteFor(st.Record)
	d := bootfile.Decide(&bootfile.Request{Arch: in.arch, HasArch: in.hasArch, VendorClass: in.vendor, IPXE: in.ipxe,
		// Over IPv6 the iPXE client is the one the firmware loaded: no chain-load.
		Chainloaded: true, Machine: m, Site: site})
	if !d.PXE {
		return d, nil, nil
	}
	s, hop := h.hop(ctx, in, d)
	if d.File != "" {
		u := d.File
		if !d.HTTP && !d.Script {
			u = "tftp://" + ip6url.Host(h.cfg.Advertise) + "/" + strings.TrimPrefix(d.File, "/")
		}
		if d.HTTP && s != nil {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + "traceparent=" + s.Traceparent()
		}
		if in.msg.IsOptionRequested(dhcpv6.OptionBootfileURL) || in.ipxe {
			out.AddOption(dhcpv6.OptBootFileURL(u))
		}
		if d.HTTP {
			out.AddOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("HTTPClient")}})
		}
		if hop != nil {
			hop.SetAttr("dhcp.boot_file", u)
		}
	}
	if s != nil && bound && ip.IsValid() {
		s.SetIP(ip.String())
	}
	if hop != nil {
		// The IPv4 hops' details ("offer <ip>", "ack <ip>") in DHCPv6's words.
		switch {
		case ip.IsValid() && bound:
			hop.SetDetail("reply " + ip.String())
		case ip.IsValid():
			hop.SetDetail("advertise " + ip.String())
		}
		hop.End()
	}
	return d, s, nil
}

// siteFor is the site record with its URLs as an IPv6 client reaches them
// (ip6url.Rebase).
func (h *Handler) siteFor(s *bootapiv1.Site) *bootapiv1.Site {
	if s == nil {
		s = &bootapiv1.Site{}
	}
	s = proto.Clone(s).(*bootapiv1.Site)
	s.BootapiUrl = ip6url.Rebase(s.BootapiUrl, h.cfg.Advertise)
	s.ArtifactUrl = ip6url.Rebase(s.ArtifactUrl, h.cfg.Advertise)
	return s
}

// hop opens or continues the machine's boot session: a firmware Solicit
// starts a new one (its retransmissions, same transaction id, do not).
func (h *Handler) hop(ctx context.Context, in *client, d bootfile.Decision) (*session.Session, *session.Hop) {
	if h.cfg.Sessions == nil || in.mac == "" {
		return nil, nil
	}
	firmware := !in.ipxe
	solicit := in.msg.MessageType == dhcpv6.MessageTypeSolicit
	var s *session.Session
	if solicit && firmware {
		s = h.cfg.Sessions.OpenFirmwareAttempt(ctx, in.mac, h.cfg.Site, h.xids.Seen(in.mac, in.msg.TransactionID))
	} else {
		s = h.cfg.Sessions.JoinOrOpen(ctx, in.mac, h.cfg.Site)
	}
	name := "ipxe.dhcp"
	if firmware {
		name = "dhcp.request"
		if solicit {
			name = "dhcp.discover"
		}
	}
	_, hop := s.StartHop(ctx, name)
	hop.SetAttr("dhcp.version", "6")
	hop.SetAttr("dhcp.message_type", in.msg.MessageType.String())
	hop.SetAttr("dhcp.xid", in.msg.TransactionID.String())
	// The boot file is added as the URL given (boot).
	bootfile.Annotate(hop.SetAttr, &bootfile.Request{Arch: in.arch, HasArch: in.hasArch, VendorClass: in.vendor}, in.userClss, bootfile.Decision{Rule: d.Rule})
	return s, hop
}
