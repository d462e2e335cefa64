package bootapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fullSite is a site with every kind of field set, so that an update that loses
// one shows.
func fullSite(name string) *bootapiv1.Site {
	return &bootapiv1.Site{
		Name: name, DefaultAction: bootapiv1.Action_ACTION_MENU,
		BootapiUrl: "http://198.18.0.5:8080", ArtifactUrl: "http://198.18.0.5:8081", TftpServer: "198.18.0.5",
		DiscoveryPolicy: bootapiv1.DiscoveryPolicy_DISCOVERY_POLICY_RECORD, ExtraCmdline: "console=ttyS0",
		Dhcp: &bootapiv1.SiteDhcp{
			Mode: bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE,
			Subnets: []*bootapiv1.DhcpSubnet{{
				Cidr: "198.18.0.0/24", Pools: []*bootapiv1.DhcpPool{{Start: "198.18.0.100", End: "198.18.0.199"}},
				Routers: []string{"198.18.0.1"}, DnsServers: []string{"198.18.0.2"},
			}},
			BootFiles: map[string]string{"uefi-x64": "snponly.efi"},
			LeaseTime: durationpb.New(2 * time.Hour),
		},
	}
}

// TestUpdateSiteKeepsOtherFields: a masked update changes the named fields and
// keeps every other one (pools, routers, DNS, URLs, boot files), dhcp.<field>
// paths reach inside the DHCP settings, and the response carries the revision.
func TestUpdateSiteKeepsOtherFields(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	ctx := context.Background()
	put, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: fullSite("lab")})
	if err != nil {
		t.Fatal(err)
	}
	if put.GetSite().GetRevision() == 0 {
		t.Error("PutSite answered no revision")
	}
	up, err := h.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{
		Site:       &bootapiv1.Site{Name: "lab", ExtraCmdline: "quiet", Dhcp: &bootapiv1.SiteDhcp{LeaseTime: durationpb.New(time.Hour)}},
		UpdateMask: mask("extra_cmdline", "dhcp.lease_time", "callback_url"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := fullSite("lab")
	want.ExtraCmdline, want.Dhcp.LeaseTime = "quiet", durationpb.New(time.Hour)
	got, err := h.sites.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	g := proto.Clone(got.GetSite()).(*bootapiv1.Site)
	if g.GetRevision() != up.GetSite().GetRevision() || g.GetRevision() <= put.GetSite().GetRevision() {
		t.Errorf("revision: get %d, update answered %d, put %d", g.GetRevision(), up.GetSite().GetRevision(), put.GetSite().GetRevision())
	}
	g.Revision, g.UpdateTime = 0, nil
	if !proto.Equal(g, want) {
		t.Errorf("after update:\n got %v\nwant %v", g, want)
	}

	// A path naming something that is not a writable field is refused by name.
	_, err = h.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{Site: &bootapiv1.Site{Name: "lab"}, UpdateMask: mask("dhcp.pools")})
	wantCode(t, "unknown path", err, codes.InvalidArgument, `"dhcp.pools"`)
	_, err = h.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{Site: &bootapiv1.Site{Name: "lab"}, UpdateMask: mask("update_time")})
	wantCode(t, "read-only path", err, codes.InvalidArgument, "update_mask")
	// The merged record is validated as a whole.
	_, err = h.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{Site: &bootapiv1.Site{Name: "lab", CallbackUrl: "ftp://x"}, UpdateMask: mask("callback_url")})
	wantCode(t, "bad callback_url", err, codes.InvalidArgument, "site.callback_url")
	_, err = h.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{Site: &bootapiv1.Site{Name: "nowhere"}, UpdateMask: mask("extra_cmdline")})
	wantCode(t, "missing site", err, codes.NotFound, "nowhere")
}

// TestUpdateSiteRevision: with a revision the update is a compare-and-swap: the
// current revision writes, a stale one is Aborted and changes nothing.
func TestUpdateSiteRevision(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	ctx := context.Background()
	put, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: fullSite("lab")})
	if err != nil {
		t.Fatal(err)
	}
	stale := put.GetSite().GetRevision()
	up, err := h.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{
		Site: &bootapiv1.Site{Name: "lab", TftpServer: "198.18.0.6"}, UpdateMask: mask("tftp_server"), Revision: stale,
	})
	if err != nil {
		t.Fatalf("update at the current revision: %v", err)
	}
	_, err = h.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{
		Site: &bootapiv1.Site{Name: "lab", TftpServer: "198.18.0.7"}, UpdateMask: mask("tftp_server"), Revision: stale,
	})
	wantCode(t, "update at a stale revision", err, codes.Aborted, "revision")
	got, err := h.sites.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSite().GetTftpServer() != "198.18.0.6" || got.GetSite().GetRevision() != up.GetSite().GetRevision() {
		t.Errorf("after a refused stale update: %v", got.GetSite())
	}
}

// TestUpdateSiteAuthz: updating needs sites.write, and a caller limited to site a
// cannot update site b (not even learn whether it exists) but can update a.
func TestUpdateSiteAuthz(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	ctx := context.Background()
	for _, s := range []string{"a", "b"} {
		if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: fullSite(s)}); err != nil {
			t.Fatal(err)
		}
	}
	change := func(name string) *bootapiv1.UpdateSiteRequest {
		return &bootapiv1.UpdateSiteRequest{Site: &bootapiv1.Site{Name: name, ExtraCmdline: "init=/bin/sh"}, UpdateMask: mask("extra_cmdline")}
	}
	op := bootapiv1.NewSiteServiceClient(h.as(t, testkit.Token(t, st, auth.RoleOperator)))
	_, err := op.UpdateSite(ctx, change("a"))
	wantCode(t, "operator UpdateSite", err, codes.PermissionDenied, "sites.write")
	adminA := bootapiv1.NewSiteServiceClient(h.as(t, testkit.Token(t, st, auth.RoleAdmin, "a")))
	_, err = adminA.UpdateSite(ctx, change("b"))
	wantCode(t, "site-a admin updates b", err, codes.PermissionDenied, `site "b"`)
	_, err = adminA.UpdateSite(ctx, change("c"))
	wantCode(t, "site-a admin updates missing c", err, codes.PermissionDenied, `site "c"`)
	if _, err := adminA.UpdateSite(ctx, change("a")); err != nil {
		t.Errorf("site-a admin updates a: %v", err)
	}
	for name, want := range map[string]string{"a": "init=/bin/sh", "b": "console=ttyS0"} {
		got, err := h.sites.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: name})
		if err != nil || got.GetSite().GetExtraCmdline() != want {
			t.Errorf("site %s: %v %v; want extra_cmdline %q", name, got, err, want)
		}
	}
}
