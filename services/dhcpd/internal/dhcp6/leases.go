package dhcp6

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Errors of the lease store.
var (
	// ErrTaken: the address is another client's (in memory or, found by the
	// bind's compare, in etcd).
	ErrTaken = errors.New("dhcp6: address taken")
	// ErrExhausted: no free address in the pool.
	ErrExhausted = errors.New("dhcp6: pool exhausted")
)

// Pool is a range of IA_NA addresses; Start and End share their upper 64 bits.
type Pool struct {
	Start, End netip.Addr
}

// ParsePool parses "start-end".
func ParsePool(s string) (Pool, error) {
	var p Pool
	a, b, ok := cut(s, '-')
	if !ok {
		return p, fmt.Errorf("pool %q: want start-end", s)
	}
	var err1, err2 error
	p.Start, err1 = netip.ParseAddr(a)
	p.End, err2 = netip.ParseAddr(b)
	if err1 != nil || err2 != nil || !p.Start.Is6() || p.Start.Is4In6() || !p.End.Is6() || p.End.Less(p.Start) || p.Start.Zone() != "" {
		return p, fmt.Errorf("pool %q: want an IPv6 range start-end", s)
	}
	if hi(p.Start) != hi(p.End) {
		return p, fmt.Errorf("pool %q: start and end must share their first 64 bits", s)
	}
	return p, nil
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func hi(a netip.Addr) uint64 { b := a.As16(); return binary.BigEndian.Uint64(b[:8]) }
func lo(a netip.Addr) uint64 { b := a.As16(); return binary.BigEndian.Uint64(b[8:]) }

func (p Pool) size() uint64 { return lo(p.End) - lo(p.Start) + 1 } // 0 = 2^64

func (p Pool) at(i uint64) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi(p.Start))
	binary.BigEndian.PutUint64(b[8:], lo(p.Start)+i)
	return netip.AddrFrom16(b)
}

// Contains reports whether a is in the pool.
func (p Pool) Contains(a netip.Addr) bool {
	return a.Is6() && hi(a) == hi(p.Start) && lo(a) >= lo(p.Start) && lo(a) <= lo(p.End)
}

// ClientKey identifies an IA_NA: the client's DUID and the IA's IAID.
func ClientKey(duid []byte, iaid [4]byte) []byte {
	return append(append(make([]byte, 0, len(duid)+4), duid...), iaid[:]...)
}

type entry struct {
	l   *dhcpdv1.Lease
	rev int64
}

type offer struct {
	client string
	until  time.Time
}

// Leases holds the site's IPv6 leases: etcd is the truth (leases6/<site>/<ip>),
// a watch keeps the index; the packet path reads only the index and writes
// binds with a compare on the key's revision, so two replicas (or two clients)
// never bind one address, and a Reply leaves only after its bind committed.
type Leases struct {
	Site, Server string
	Store        *store.Store
	// OfferHold keeps an advertised address for its client; default 30s.
	OfferHold time.Duration

	mu       sync.Mutex
	byIP     map[netip.Addr]entry
	byClient map[string]netip.Addr
	offers   map[netip.Addr]offer
}

// NewLeases returns an empty store; feed it with Apply.
func NewLeases(st *store.Store, site, server string) *Leases {
	return &Leases{Site: site, Server: server, Store: st, OfferHold: 30 * time.Second,
		byIP: map[netip.Addr]entry{}, byClient: map[string]netip.Addr{}, offers: map[netip.Addr]offer{}}
}

// Key is the etcd key of an address's lease.
func (ls *Leases) Key(ip netip.Addr) string { return store.Key("leases6", ls.Site, ip.String()) }

// Prefix is the etcd prefix of the site's IPv6 leases.
func Prefix(site string) string { return store.Prefix("leases6", site) }

// Apply folds a lease record seen in etcd (a watch event) into the index;
// events older than what the index holds are ignored.
func (ls *Leases) Apply(name string, l *dhcpdv1.Lease, rev int64, deleted bool) {
	ip, err := netip.ParseAddr(name)
	if err != nil {
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.applyLocked(ip, l, rev, deleted)
}

func (ls *Leases) applyLocked(ip netip.Addr, l *dhcpdv1.Lease, rev int64, deleted bool) {
	cur, ok := ls.byIP[ip]
	if ok && cur.rev > rev {
		return
	}
	if ok && ls.byClient[string(cur.l.GetClientId())] == ip {
		delete(ls.byClient, string(cur.l.GetClientId()))
	}
	if deleted {
		delete(ls.byIP, ip)
		return
	}
	ls.byIP[ip] = entry{l: l, rev: rev}
	if l.GetState() == dhcpdv1.LeaseState_LEASE_STATE_BOUND {
		ls.byClient[string(l.GetClientId())] = ip
	}
}

// live reports whether e keeps ip from other clients at now.
func live(e entry, now time.Time) bool {
	switch e.l.GetState() {
	case dhcpdv1.LeaseState_LEASE_STATE_BOUND, dhcpdv1.LeaseState_LEASE_STATE_DECLINED:
		return e.l.GetExpireTime().AsTime().After(now)
	}
	return false
}

// Get returns the lease of ip.
func (ls *Leases) Get(ip netip.Addr) (*dhcpdv1.Lease, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	e, ok := ls.byIP[ip]
	return e.l, ok
}

// Pick chooses the address to offer client: its live lease, else the address
// it asks for when free, else a free pool address starting at a point hashed
// from the client key (so replicas, and one client's retries, agree without
// talking). The address is held for the client for OfferHold.
func (ls *Leases) Pick(client []byte, want netip.Addr, pool Pool, now time.Time) (netip.Addr, error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	c := string(client)
	if ip, ok := ls.byClient[c]; ok && pool.Contains(ip) && live(ls.byIP[ip], now) {
		return ip, nil
	}
	free := func(ip netip.Addr) bool {
		if e, ok := ls.byIP[ip]; ok && live(e, now) && string(e.l.GetClientId()) != c {
			return false
		}
		o, ok := ls.offers[ip]
		return !ok || o.client == c || !o.until.After(now)
	}
	hold := func(ip netip.Addr) netip.Addr {
		if len(ls.offers) >= maxOffers {
			for k, o := range ls.offers {
				if !o.until.After(now) {
					delete(ls.offers, k)
				}
			}
		}
		ls.offers[ip] = offer{client: c, until: now.Add(ls.OfferHold)}
		return ip
	}
	if want.IsValid() && pool.Contains(want) && free(want) {
		return hold(want), nil
	}
	h := sha256.Sum256(client)
	n := pool.size()
	start := binary.BigEndian.Uint64(h[:8])
	if n != 0 {
		start %= n
	}
	for i := uint64(0); i < maxProbe && (n == 0 || i < n); i++ {
		idx := start + i
		if n != 0 {
			idx %= n
		}
		if ip := pool.at(idx); free(ip) {
			return hold(ip), nil
		}
	}
	return netip.Addr{}, ErrExhausted
}

const (
	maxProbe  = 4096
	maxOffers = 1 << 16
)

// Bind is the lease to write: ip bound to client until expiry.
type Bind struct {
	IP       netip.Addr
	Client   []byte
	MAC      string
	Hostname string
	Subnet   string
	Expiry   time.Time
	State    dhcpdv1.LeaseState
}

// Write commits b with a compare on the key's revision as the index knows it;
// it refuses an address another client holds (ErrTaken), in memory or, when
// the compare fails, in etcd. It returns once etcd committed the write.
func (ls *Leases) Write(ctx context.Context, b Bind) (*dhcpdv1.Lease, error) {
	now := time.Now()
	c := string(b.Client)
	ls.mu.Lock()
	cur, ok := ls.byIP[b.IP]
	ls.mu.Unlock()
	if ok && live(cur, now) && string(cur.l.GetClientId()) != c {
		return nil, ErrTaken
	}
	if b.State != dhcpdv1.LeaseState_LEASE_STATE_BOUND && (!ok || string(cur.l.GetClientId()) != c) {
		// Releasing or declining an address that is not the client's changes nothing.
		return nil, ErrTaken
	}
	l := &dhcpdv1.Lease{
		Ip: b.IP.String(), Mac: b.MAC, State: b.State, ExpireTime: timestamppb.New(b.Expiry),
		Hostname: b.Hostname, ClientId: b.Client, Subnet: b.Subnet, UpdateTime: timestamppb.New(now),
		Site: ls.Site, Server: ls.Server,
	}
	if ok && l.Mac == "" {
		l.Mac = cur.l.GetMac()
	}
	key := ls.Key(b.IP)
	var rev int64
	var err error
	if ok {
		rev, err = ls.Store.Update(ctx, key, l, cur.rev)
	} else {
		rev, err = ls.Store.Create(ctx, key, l)
	}
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
		// Another replica or client got there first: learn its record, so the
		// next Pick steps over it without waiting for the watch.
		if theirs, terr := ls.read(ctx, b.IP); terr == nil && theirs.l != nil {
			ls.mu.Lock()
			ls.applyLocked(b.IP, theirs.l, theirs.rev, false)
			ls.mu.Unlock()
		}
		return nil, ErrTaken
	}
	if err != nil {
		return nil, err
	}
	ls.mu.Lock()
	ls.applyLocked(b.IP, proto.Clone(l).(*dhcpdv1.Lease), rev, false)
	if b.State == dhcpdv1.LeaseState_LEASE_STATE_BOUND {
		delete(ls.offers, b.IP)
	}
	ls.mu.Unlock()
	return l, nil
}

func (ls *Leases) read(ctx context.Context, ip netip.Addr) (entry, error) {
	l := &dhcpdv1.Lease{}
	rev, err := ls.Store.Get(ctx, ls.Key(ip), l)
	if err != nil {
		return entry{}, err
	}
	return entry{l: l, rev: rev}, nil
}

// Of returns the client's bound, unexpired address.
func (ls *Leases) Of(client []byte, now time.Time) (netip.Addr, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ip, ok := ls.byClient[string(client)]
	return ip, ok && live(ls.byIP[ip], now)
}
