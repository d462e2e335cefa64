package grpcapi

import (
	"context"
	"errors"
	"maps"
	"slices"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/services/bootapi/internal/validate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Site limits: a caller limited to sites acts only on machines (and their jobs
// and sessions) of those sites and on those sites' records. Checks come after
// the resource is found, so that the site is the stored one, never one the
// caller claims; lists leave out what the caller may not see.

// defaultSite is the site of a machine that names none.
func (a *API) defaultSite() string {
	if a.preview != nil && a.preview.DefaultSite != "" {
		return a.preview.DefaultSite
	}
	return "default"
}

// machineSite is the site m belongs to.
func (a *API) machineSite(m *bootapiv1.Machine) string {
	if s := m.GetSite(); s != "" {
		return s
	}
	return a.defaultSite()
}

// macSite is the site of the machine with this MAC: the default site for a MAC
// bootapi has no record of.
func (a *API) macSite(mac string) string {
	if it, ok := a.st.Machines.Get(mac); ok {
		return a.machineSite(it.Value)
	}
	return a.defaultSite()
}

// mayMAC reports whether the caller may see the machine with this MAC.
func (a *API) mayMAC(ctx context.Context, mac string) bool {
	return auth.MaySite(ctx, a.macSite(mac))
}

// requireMAC is RequireSite for the machine with this MAC.
func (a *API) requireMAC(ctx context.Context, mac string) error {
	return auth.RequireSite(ctx, a.macSite(mac))
}

// sessionSite is the site a boot session was recorded at.
func (a *API) sessionSite(s *bootapiv1.BootSession) string {
	if s.GetSite() != "" {
		return s.GetSite()
	}
	return a.macSite(s.GetMac())
}

// ---- sites

// checkSite validates a site about to be written.
func (a *API) checkSite(s *bootapiv1.Site) error {
	if err := validate.SiteRecord(s); err != nil {
		return apierr.FromError(err)
	}
	if p := s.GetDefaultProfile(); p != "" {
		if _, ok := a.st.Profiles.Get(p); !ok {
			return apierr.InvalidArgument("site.default_profile", "profile %q does not exist", p)
		}
	}
	return nil
}

// withRevision is a copy of a cached or stored site carrying its revision; the
// revision itself is never stored.
func withRevision(s *bootapiv1.Site, rev int64) *bootapiv1.Site {
	out := proto.Clone(s).(*bootapiv1.Site)
	out.Revision = rev
	return out
}

func (a *API) PutSite(ctx context.Context, req *bootapiv1.PutSiteRequest) (*bootapiv1.PutSiteResponse, error) {
	if req.GetSite() == nil {
		return nil, apierr.InvalidArgument("site", "required")
	}
	s := proto.Clone(req.GetSite()).(*bootapiv1.Site)
	s.Revision = 0
	if err := validate.SiteRecord(s); err != nil {
		return nil, apierr.FromError(err)
	}
	if err := auth.RequireSite(ctx, s.GetName()); err != nil {
		return nil, err
	}
	if err := a.checkSite(s); err != nil {
		return nil, err
	}
	s.UpdateTime = timestamppb.New(a.now())
	rev, err := a.store().Put(ctx, store.Key("sites", s.GetName()), s)
	if err != nil {
		return nil, apierr.FromError(err)
	}
	a.wait(ctx, a.st.Sites.WaitRevision, rev)
	return &bootapiv1.PutSiteResponse{Site: withRevision(s, rev)}, nil
}

// sitePaths are the update mask paths of a site. "dhcp" replaces all of the DHCP
// settings; "dhcp.<field>" one of them. Repeated fields (dhcp.subnets with their
// pools, routers and DNS servers) are replaced whole, as field masks define.
var sitePaths = map[string]func(dst, src *bootapiv1.Site){
	"default_action":   func(d, s *bootapiv1.Site) { d.DefaultAction = s.DefaultAction },
	"default_profile":  func(d, s *bootapiv1.Site) { d.DefaultProfile = s.DefaultProfile },
	"bootapi_url":      func(d, s *bootapiv1.Site) { d.BootapiUrl = s.BootapiUrl },
	"artifact_url":     func(d, s *bootapiv1.Site) { d.ArtifactUrl = s.ArtifactUrl },
	"callback_url":     func(d, s *bootapiv1.Site) { d.CallbackUrl = s.CallbackUrl },
	"tftp_server":      func(d, s *bootapiv1.Site) { d.TftpServer = s.TftpServer },
	"discovery_policy": func(d, s *bootapiv1.Site) { d.DiscoveryPolicy = s.DiscoveryPolicy },
	"extra_cmdline":    func(d, s *bootapiv1.Site) { d.ExtraCmdline = s.ExtraCmdline },
	"dhcp":             func(d, s *bootapiv1.Site) { d.Dhcp = s.Dhcp },
	"dhcp.mode":        dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.Mode = s.Mode }),
	"dhcp.subnets":     dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.Subnets = s.Subnets }),
	"dhcp.boot_files":  dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.BootFiles = s.BootFiles }),
	"dhcp.chainload_own_ipxe": dhcpPath(func(d, s *bootapiv1.SiteDhcp) {
		d.ChainloadOwnIpxe = s.ChainloadOwnIpxe
	}),
	"dhcp.unknown_clients": dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.UnknownClients = s.UnknownClients }),
	"dhcp.router_advertisements": dhcpPath(func(d, s *bootapiv1.SiteDhcp) {
		d.RouterAdvertisements = s.RouterAdvertisements
	}),
	"dhcp.lease_time":      dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.LeaseTime = s.LeaseTime }),
	"dhcp.relay_addresses": dhcpPath(func(d, s *bootapiv1.SiteDhcp) { d.RelayAddresses = s.RelayAddresses }),
	"dhcp.decline_quarantine": dhcpPath(func(d, s *bootapiv1.SiteDhcp) {
		d.DeclineQuarantine = s.DeclineQuarantine
	}),
}

// dhcpPath applies a mask path inside Site.dhcp, creating it when absent.
func dhcpPath(f func(d, s *bootapiv1.SiteDhcp)) func(d, s *bootapiv1.Site) {
	return func(d, s *bootapiv1.Site) {
		if d.Dhcp == nil {
			d.Dhcp = &bootapiv1.SiteDhcp{}
		}
		src := s.GetDhcp()
		if src == nil {
			src = &bootapiv1.SiteDhcp{}
		}
		f(d.Dhcp, src)
	}
}

// SitePaths lists the update mask paths UpdateSite accepts, sorted.
func SitePaths() []string { return slices.Sorted(maps.Keys(sitePaths)) }

func (a *API) UpdateSite(ctx context.Context, req *bootapiv1.UpdateSiteRequest) (*bootapiv1.UpdateSiteResponse, error) {
	name := req.GetSite().GetName()
	if err := validate.Site("site.name", name); err != nil || name == "" {
		return nil, apierr.InvalidArgument("site.name", "want a site name")
	}
	paths, err := maskPaths("update_mask", req.GetUpdateMask(), SitePaths())
	if err != nil {
		return nil, err
	}
	if req.GetRevision() < 0 {
		return nil, apierr.InvalidArgument("revision", "must not be negative")
	}
	key := store.Key("sites", name)
	for attempt := 0; ; attempt++ {
		cur := &bootapiv1.Site{}
		rev, err := a.store().Get(ctx, key, cur)
		if errors.Is(err, store.ErrNotFound) {
			// Before the site check would tell a site-limited caller which sites exist.
			if err := auth.RequireSite(ctx, name); err != nil {
				return nil, err
			}
			return nil, apierr.NotFound("site", name)
		}
		if err != nil {
			return nil, apierr.FromError(err)
		}
		if err := auth.RequireSite(ctx, cur.GetName()); err != nil {
			return nil, err
		}
		if want := req.GetRevision(); want != 0 && want != rev {
			return nil, status.Errorf(codes.Aborted, "site %q is at revision %d, not %d: read it again", name, rev, want)
		}
		for _, p := range paths {
			sitePaths[p](cur, req.GetSite())
		}
		cur.Name, cur.Revision = name, 0
		if err := a.checkSite(cur); err != nil {
			return nil, err
		}
		cur.UpdateTime = timestamppb.New(a.now())
		next, err := a.store().Update(ctx, key, cur, rev)
		if errors.Is(err, store.ErrConflict) && req.GetRevision() == 0 && attempt < 32 {
			// Someone else wrote in between: apply the mask to their version.
			if err := store.RetryWait(ctx, attempt); err != nil {
				return nil, apierr.FromError(err)
			}
			continue
		}
		if errors.Is(err, store.ErrConflict) {
			return nil, status.Errorf(codes.Aborted, "site %q changed concurrently: read it again", name)
		}
		if err != nil {
			return nil, apierr.FromError(err)
		}
		a.wait(ctx, a.st.Sites.WaitRevision, next)
		return &bootapiv1.UpdateSiteResponse{Site: withRevision(cur, next)}, nil
	}
}

func (a *API) GetSite(ctx context.Context, req *bootapiv1.GetSiteRequest) (*bootapiv1.GetSiteResponse, error) {
	if err := validate.Site("name", req.GetName()); err != nil || req.GetName() == "" {
		return nil, apierr.InvalidArgument("name", "want a site name")
	}
	if err := auth.RequireSite(ctx, req.GetName()); err != nil {
		return nil, err
	}
	it, ok := a.st.Sites.Get(req.GetName())
	if !ok {
		return nil, apierr.NotFound("site", req.GetName())
	}
	return &bootapiv1.GetSiteResponse{Site: withRevision(it.Value, it.ModRevision)}, nil
}

func (a *API) ListSites(ctx context.Context, req *bootapiv1.ListSitesRequest) (*bootapiv1.ListSitesResponse, error) {
	out := &bootapiv1.ListSitesResponse{}
	for _, it := range a.st.Sites.List(nil) {
		if auth.MaySite(ctx, it.Value.GetName()) {
			out.Sites = append(out.Sites, withRevision(it.Value, it.ModRevision))
		}
	}
	return out, nil
}

func (a *API) DeleteSite(ctx context.Context, req *bootapiv1.DeleteSiteRequest) (*bootapiv1.DeleteSiteResponse, error) {
	name := req.GetName()
	if err := validate.Site("name", name); err != nil || name == "" {
		return nil, apierr.InvalidArgument("name", "want a site name")
	}
	if err := auth.RequireSite(ctx, name); err != nil {
		return nil, err
	}
	for _, it := range a.st.Machines.List(nil) {
		if it.Value.GetSite() == name {
			return nil, apierr.FailedPrecondition("name", "site %q still has machines (e.g. %s)", name, it.Value.GetMac())
		}
	}
	if err := a.deleted(ctx, a.st.Sites.WaitRevision, func(ctx context.Context) error { return a.store().Delete(ctx, store.Key("sites", name), 0) }); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, apierr.NotFound("site", name)
		}
		return nil, apierr.FromError(err)
	}
	return &bootapiv1.DeleteSiteResponse{}, nil
}
