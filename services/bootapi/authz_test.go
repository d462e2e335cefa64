package bootapi_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
)

// as dials h's gRPC API presenting token.
func (h *harness) as(t *testing.T, token string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpcclient.Dial(h.srv.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// jobCount is how many jobs etcd holds.
func jobCount(t *testing.T, st *store.Store) int64 {
	t.Helper()
	resp, err := st.Client().Get(context.Background(), store.Prefix("jobs"), clientv3CountOnly()...)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func wantCode(t *testing.T, what string, err error, code codes.Code, says string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), says) {
		t.Errorf("%s: %v; want %s saying %q", what, err, code, says)
	}
}

// TestRolesAndSites: a viewer cannot create a job, an operator limited to site a
// cannot touch a machine of site b (nor move one there), lists show only the
// caller's sites, and each refusal changes nothing.
func TestRolesAndSites(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, "52:54:00:00:00:0a", "52:54:00:00:00:0b")
	ctx := context.Background()
	for _, s := range []string{"a", "b"} {
		if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: s}}); err != nil {
			t.Fatal(err)
		}
	}
	for mac, site := range map[string]string{"52:54:00:00:00:0a": "a", "52:54:00:00:00:0b": "b"} {
		if _, err := h.machines.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{
			Machine: &bootapiv1.Machine{Mac: mac, Site: site}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"site"}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	before := jobCount(t, st)

	viewer := h.as(t, testkit.Token(t, st, auth.RoleViewer))
	_, err := bootapiv1.NewJobServiceClient(viewer).CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: "52:54:00:00:00:0a", Profile: "debian-12"})
	wantCode(t, "viewer CreateJob", err, codes.PermissionDenied, "jobs.write")
	if _, err := bootapiv1.NewMachineServiceClient(viewer).ListMachines(ctx, &bootapiv1.ListMachinesRequest{}); err != nil {
		t.Errorf("viewer ListMachines: %v", err)
	}
	_, err = bootapiv1.NewCredentialServiceClient(viewer).ListTokens(ctx, &bootapiv1.ListTokensRequest{})
	wantCode(t, "viewer ListTokens", err, codes.PermissionDenied, "credentials.read")

	opA := h.as(t, testkit.Token(t, st, auth.RoleOperator, "a"))
	jobs, machines := bootapiv1.NewJobServiceClient(opA), bootapiv1.NewMachineServiceClient(opA)
	_, err = jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: "52:54:00:00:00:0b", Profile: "debian-12"})
	wantCode(t, "site-a operator, job on site b", err, codes.PermissionDenied, `site "b"`)
	_, err = machines.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: "52:54:00:00:00:0b"})
	wantCode(t, "site-a operator, get site b machine", err, codes.PermissionDenied, `site "b"`)
	_, err = machines.DeleteMachine(ctx, &bootapiv1.DeleteMachineRequest{Mac: "52:54:00:00:00:0b"})
	wantCode(t, "site-a operator, delete site b machine", err, codes.PermissionDenied, `site "b"`)
	_, err = machines.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{
		Machine: &bootapiv1.Machine{Mac: "52:54:00:00:00:0a", Site: "b"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"site"}},
	})
	wantCode(t, "site-a operator moves a machine to b", err, codes.PermissionDenied, `site "b"`)
	_, err = bootapiv1.NewSiteServiceClient(opA).PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "b", ExtraCmdline: "init=/bin/sh"}})
	wantCode(t, "operator PutSite", err, codes.PermissionDenied, "sites.write")
	if jobCount(t, st) != before {
		t.Fatal("a refused call created a job")
	}
	for mac, site := range map[string]string{"52:54:00:00:00:0a": "a", "52:54:00:00:00:0b": "b"} {
		m, err := h.machines.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: mac})
		if err != nil || m.GetMachine().GetSite() != site {
			t.Fatalf("after refusals, %s: %v %v", mac, m, err)
		}
	}
	s, _ := h.sites.GetSite(ctx, &bootapiv1.GetSiteRequest{Name: "b"})
	if s.GetSite().GetExtraCmdline() != "" {
		t.Fatal("a refused PutSite changed the site")
	}

	// What site a may do, it does; lists hold only site a.
	if _, err := jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: "52:54:00:00:00:0a", Profile: "debian-12"}); err != nil {
		t.Fatalf("site-a operator, job on site a: %v", err)
	}
	list, err := machines.ListMachines(ctx, &bootapiv1.ListMachinesRequest{})
	if err != nil || len(list.GetMachines()) != 1 || list.GetMachines()[0].GetSite() != "a" {
		t.Fatalf("site-a operator lists %v %v", list, err)
	}
	sites, err := bootapiv1.NewSiteServiceClient(opA).ListSites(ctx, &bootapiv1.ListSitesRequest{})
	if err != nil || len(sites.GetSites()) != 1 {
		t.Fatalf("site-a operator lists sites %v %v", sites, err)
	}
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: "52:54:00:00:00:0b", Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	jl, err := jobs.ListJobs(ctx, &bootapiv1.ListJobsRequest{})
	if err != nil || len(jl.GetJobs()) != 1 || jl.GetJobs()[0].GetMac() != "52:54:00:00:00:0a" {
		t.Fatalf("site-a operator lists jobs %v %v", jl, err)
	}

	// Streams are checked too: a watch without a credential ends at once, and
	// a site-a watch shows only site a's job.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	anon, err := grpcclient.Dial(h.srv.GRPCAddr().String(), tlsconf.Files{})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	ws, err := bootapiv1.NewJobServiceClient(anon).WatchJobs(wctx, &bootapiv1.WatchJobsRequest{})
	if err == nil {
		_, err = ws.Recv()
	}
	wantCode(t, "anonymous WatchJobs", err, codes.Unauthenticated, "no credential")
	ws, err = jobs.WatchJobs(wctx, &bootapiv1.WatchJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := ws.Recv()
	if err != nil || first.GetJob().GetMac() != "52:54:00:00:00:0a" {
		t.Fatalf("site-a watch: %v %v", first, err)
	}
	// The other site's job changes; site a's watch must not show it. Cancel
	// site a's job after it, so that the next event the watch sees is that.
	if _, err := h.jobs.CancelJob(ctx, &bootapiv1.CancelJobRequest{Id: jobOf(t, h, "52:54:00:00:00:0b")}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.jobs.CancelJob(ctx, &bootapiv1.CancelJobRequest{Id: first.GetJob().GetId()}); err != nil {
		t.Fatal(err)
	}
	next, err := ws.Recv()
	if err != nil || next.GetJob().GetMac() != "52:54:00:00:00:0a" {
		t.Fatalf("site-a watch saw %v %v", next, err)
	}
}

// jobOf is the id of mac's job, as the admin sees it.
func jobOf(t *testing.T, h *harness, mac string) string {
	t.Helper()
	l, err := h.jobs.ListJobs(context.Background(), &bootapiv1.ListJobsRequest{Mac: mac})
	if err != nil || len(l.GetJobs()) == 0 {
		t.Fatalf("jobs of %s: %v %v", mac, l, err)
	}
	return l.GetJobs()[0].GetId()
}

// TestCredentialService: an admin creates a token that works at once, lists it
// without its secret, and revokes it; the revoked token is refused without a
// restart.
func TestCredentialService(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	ctx := context.Background()
	creds := bootapiv1.NewCredentialServiceClient(h.as(t, testkit.AdminToken(t, st)))
	r, err := creds.CreateToken(ctx, &bootapiv1.CreateTokenRequest{Name: "ci", Role: "operator", Ttl: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetToken().GetExpireTime() == nil || r.GetToken().GetCreatedBy() != "token:test-admin(admin)" {
		t.Errorf("created %v", r.GetToken())
	}
	ci := bootapiv1.NewMachineServiceClient(h.as(t, r.GetSecret()))
	if _, err := ci.ListMachines(ctx, &bootapiv1.ListMachinesRequest{}); err != nil {
		t.Fatalf("new token: %v", err)
	}
	l, err := creds.ListTokens(ctx, &bootapiv1.ListTokensRequest{})
	if err != nil || len(l.GetTokens()) != 3 || // the harness's admin, ours, ci
		strings.Contains(l.String(), r.GetSecret()[21:]) {
		t.Fatalf("list %v %v", l, err)
	}
	for _, bad := range []*bootapiv1.CreateTokenRequest{
		{Name: "x", Role: "root"}, {Name: "", Role: "viewer"}, {Name: "x", Role: "viewer", Sites: []string{"a/b"}},
		{Name: "x", Role: "viewer", Ttl: durationpb.New(-time.Second)},
	} {
		_, err := creds.CreateToken(ctx, bad)
		wantCode(t, "CreateToken "+bad.String(), err, codes.InvalidArgument, "")
	}
	if _, err := creds.RevokeToken(ctx, &bootapiv1.RevokeTokenRequest{Id: r.GetToken().GetId()}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the revoked token to be refused", func() bool {
		_, err := ci.ListMachines(ctx, &bootapiv1.ListMachinesRequest{})
		return status.Code(err) == codes.Unauthenticated
	})
	_, err = creds.RevokeToken(ctx, &bootapiv1.RevokeTokenRequest{Id: r.GetToken().GetId()})
	wantCode(t, "revoke twice", err, codes.NotFound, "")

	// A site-limited admin mints only within its sites.
	siteAdmin := bootapiv1.NewCredentialServiceClient(h.as(t, testkit.Token(t, st, auth.RoleAdmin, "a")))
	_, err = siteAdmin.CreateToken(ctx, &bootapiv1.CreateTokenRequest{Name: "y", Role: "admin"})
	wantCode(t, "site admin mints an unlimited token", err, codes.PermissionDenied, "limited")
	_, err = siteAdmin.CreateToken(ctx, &bootapiv1.CreateTokenRequest{Name: "y", Role: "admin", Sites: []string{"b"}})
	wantCode(t, "site admin mints a token for site b", err, codes.PermissionDenied, `site "b"`)
}

func clientv3CountOnly() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}
