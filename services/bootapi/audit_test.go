package bootapi_test

import (
	"context"
	"testing"

	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestAuditLog checks bootapi's audit wiring end to end: a write through its
// gRPC API is in the log that AuditService lists, with the revision etcd
// committed the write at; reads, the listing included, are not.
func TestAuditLog(t *testing.T) {
	h := start(t, storetest.New(t))
	ctx := context.Background()
	if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "lab"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sites.ListSites(ctx, &bootapiv1.ListSitesRequest{}); err != nil {
		t.Fatal(err)
	}
	cc, err := grpcclient.Dial(h.srv.GRPCAddr().String(), tlsconf.Files{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	auditc := bootapiv1.NewAuditServiceClient(cc)
	if _, err := auditc.ListAuditEvents(ctx, &bootapiv1.ListAuditEventsRequest{}); err != nil {
		t.Fatal(err)
	}
	resp, err := auditc.ListAuditEvents(ctx, &bootapiv1.ListAuditEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEvents()) != 1 {
		t.Fatalf("got %d events, want 1: %v", len(resp.GetEvents()), resp.GetEvents())
	}
	rev, err := h.st.Get(ctx, store.Key("sites", "lab"), &bootapiv1.Site{})
	if err != nil {
		t.Fatal(err)
	}
	ev := resp.GetEvents()[0]
	if ev.GetAction() != "/bootchain.bootapi.v1.SiteService/PutSite" || ev.GetResource() != "lab" ||
		ev.GetOutcome() != "OK" || ev.GetRevision() != rev || ev.GetIdentity() != "anonymous" {
		t.Errorf("event %v, want PutSite of lab at revision %d", ev, rev)
	}

	_, err = auditc.ListAuditEvents(ctx, &bootapiv1.ListAuditEventsRequest{PageToken: "nope"})
	if status.Code(err) != codes.InvalidArgument || apierr.FieldOf(err) != "page_token" {
		t.Errorf("bad page token: %v", err)
	}
}
