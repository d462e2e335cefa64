// Package admin is dhcpd's gRPC API (bootchain.dhcpd.v1.LeaseService): leases and
// pool usage from memory, releases through the lease allocator.
package admin

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"strings"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/dhcpd/internal/lease"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Server implements LeaseService.
type Server struct {
	dhcpdv1.UnimplementedLeaseServiceServer
	// Site served by this dhcpd.
	Site string
	// Store for leases of other sites.
	Store *store.Store
	// Leases is the cache of this site's leases.
	Leases *store.Cache[*dhcpdv1.Lease]
	// Alloc changes leases of this site; nil in proxy-only setups.
	Alloc *lease.Allocator
}

// site is the site a request names, this dhcpd's when it names none.
func (s *Server) site(req string) string {
	if req == "" {
		return s.Site
	}
	return req
}

func (s *Server) leases(ctx context.Context, site string) ([]*dhcpdv1.Lease, error) {
	if site == "" || site == s.Site {
		// This replica's offers are held in memory, not in etcd; each stands for
		// its address's stored record while it lasts.
		var offers map[string]*dhcpdv1.Lease
		var out []*dhcpdv1.Lease
		if s.Alloc != nil {
			offers = map[string]*dhcpdv1.Lease{}
			for _, l := range s.Alloc.Offers() {
				offers[l.GetIp()] = l
				out = append(out, l)
			}
		}
		for _, it := range s.Leases.List(nil) {
			if offers[it.Value.GetIp()] == nil {
				out = append(out, it.Value)
			}
		}
		return out, nil
	}
	if strings.Contains(site, "/") {
		return nil, apierr.InvalidArgument("site", "site %q: no '/' allowed", site)
	}
	tctx, cancel := s.Store.WithTimeout(ctx)
	defer cancel()
	resp, err := s.Store.Client().Get(tctx, store.Prefix("leases", site), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []*dhcpdv1.Lease
	for _, kv := range resp.Kvs {
		l := &dhcpdv1.Lease{}
		if proto.Unmarshal(kv.Value, l) == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

func sortLeases(ls []*dhcpdv1.Lease) {
	sort.Slice(ls, func(i, j int) bool {
		if ls[i].GetSite() != ls[j].GetSite() {
			return ls[i].GetSite() < ls[j].GetSite()
		}
		a, _ := netip.ParseAddr(ls[i].GetIp())
		b, _ := netip.ParseAddr(ls[j].GetIp())
		return a.Less(b)
	})
}

// ListLeases lists leases by site, MAC and state.
func (s *Server) ListLeases(ctx context.Context, req *dhcpdv1.ListLeasesRequest) (*dhcpdv1.ListLeasesResponse, error) {
	mac := ""
	if req.GetMac() != "" {
		m, err := macaddr.Normalize(req.GetMac())
		if err != nil {
			return nil, apierr.InvalidArgument("mac", "%v", err)
		}
		mac = m
	}
	out := &dhcpdv1.ListLeasesResponse{}
	if !auth.MaySite(ctx, s.site(req.GetSite())) {
		// Lists leave out what the caller may not see.
		return out, nil
	}
	all, err := s.leases(ctx, req.GetSite())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	for _, l := range all {
		if mac != "" && l.GetMac() != mac {
			continue
		}
		if req.GetState() != dhcpdv1.LeaseState_LEASE_STATE_UNSPECIFIED && l.GetState() != req.GetState() {
			continue
		}
		out.Leases = append(out.Leases, l)
	}
	sortLeases(out.Leases)
	return out, nil
}

// GetLease returns one lease by address, or the newest lease of a MAC.
func (s *Server) GetLease(ctx context.Context, req *dhcpdv1.GetLeaseRequest) (*dhcpdv1.GetLeaseResponse, error) {
	if err := auth.RequireSite(ctx, s.site(req.GetSite())); err != nil {
		return nil, err
	}
	all, err := s.leases(ctx, req.GetSite())
	if err != nil {
		return nil, apierr.FromError(err)
	}
	switch {
	case req.GetIp() != "":
		if _, err := netip.ParseAddr(req.GetIp()); err != nil {
			return nil, apierr.InvalidArgument("ip", "%q is not an IP address", req.GetIp())
		}
		for _, l := range all {
			if l.GetIp() == req.GetIp() {
				return &dhcpdv1.GetLeaseResponse{Lease: l}, nil
			}
		}
		return nil, apierr.NotFound("lease", req.GetIp())
	case req.GetMac() != "":
		mac, err := macaddr.Normalize(req.GetMac())
		if err != nil {
			return nil, apierr.InvalidArgument("mac", "%v", err)
		}
		var best *dhcpdv1.Lease
		for _, l := range all {
			if l.GetMac() == mac && (best == nil || l.GetUpdateTime().AsTime().After(best.GetUpdateTime().AsTime())) {
				best = l
			}
		}
		if best == nil {
			return nil, apierr.NotFound("lease", mac)
		}
		return &dhcpdv1.GetLeaseResponse{Lease: best}, nil
	}
	return nil, apierr.InvalidArgument("ip", "give an ip or a mac")
}

// ReleaseLease releases a lease of this dhcpd's site.
func (s *Server) ReleaseLease(ctx context.Context, req *dhcpdv1.ReleaseLeaseRequest) (*dhcpdv1.ReleaseLeaseResponse, error) {
	if req.GetSite() != "" && req.GetSite() != s.Site {
		return nil, apierr.InvalidArgument("site", "this dhcpd serves site %q, not %q", s.Site, req.GetSite())
	}
	if err := auth.RequireSite(ctx, s.Site); err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(req.GetIp())
	if err != nil || !ip.Is4() {
		return nil, apierr.InvalidArgument("ip", "%q is not an IPv4 address", req.GetIp())
	}
	if s.Alloc == nil {
		return nil, apierr.FailedPrecondition("site", "site %q is in proxy mode: no leases", s.Site)
	}
	l, err := s.Alloc.Release(ctx, ip, "")
	if errors.Is(err, lease.ErrNotOwner) {
		return nil, apierr.NotFound("lease", ip.String())
	}
	if err != nil {
		return nil, apierr.FromError(err)
	}
	return &dhcpdv1.ReleaseLeaseResponse{Lease: l}, nil
}

// ListPools returns pool usage of this dhcpd's site.
func (s *Server) ListPools(ctx context.Context, req *dhcpdv1.ListPoolsRequest) (*dhcpdv1.ListPoolsResponse, error) {
	out := &dhcpdv1.ListPoolsResponse{}
	if (req.GetSite() != "" && req.GetSite() != s.Site) || s.Alloc == nil || !auth.MaySite(ctx, s.Site) {
		return out, nil
	}
	for _, u := range s.Alloc.Usage() {
		out.Pools = append(out.Pools, &dhcpdv1.PoolUsage{
			Site: s.Site, Subnet: u.Subnet.String(), Start: u.Pool.Start.String(), End: u.Pool.End.String(),
			Size: u.Size, Bound: u.Bound, Offered: u.Offered, Declined: u.Declined, Free: u.Free,
		})
	}
	return out, nil
}
