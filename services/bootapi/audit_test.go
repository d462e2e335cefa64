package bootapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/google/go-cmp/cmp"
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
	cc, err := grpcclient.Dial(h.srv.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(t, h.st)))
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
		ev.GetOutcome() != "OK" || ev.GetRevision() != rev || ev.GetIdentity() != "token:test-admin(admin)" {
		t.Errorf("event %v, want PutSite of lab at revision %d by token:test-admin(admin)", ev, rev)
	}

	_, err = auditc.ListAuditEvents(ctx, &bootapiv1.ListAuditEventsRequest{PageToken: "nope"})
	if status.Code(err) != codes.InvalidArgument || apierr.FieldOf(err) != "page_token" {
		t.Errorf("bad page token: %v", err)
	}
}

// TestAuditBootPath checks that a job's dispatch and the installer's reports,
// a refused one included, are in the audit log with the machine as identity
// and, for the changes, the revision of the job's write.
func TestAuditBootPath(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t, mac)
	ctx := context.Background()
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	id := jr.GetJob().GetId()
	jobRev := func() int64 {
		rev, err := h.st.Get(ctx, store.Key("jobs", id), &bootapiv1.Job{})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	_, body := h.get(t, "/ipxe/v1/config?mac="+url.QueryEscape(mac))
	token, cb := tokenRE.FindStringSubmatch(body)[1], callbackRE.FindStringSubmatch(body)[1]
	dispatchRev := jobRev()
	wrong := "1" + token[1:]
	if token[0] == '1' {
		wrong = "0" + token[1:]
	}
	if code, _ := post(t, machineIP(mac), cb, url.Values{"token": {wrong}, "state": {"succeeded"}}); code != http.StatusForbidden {
		t.Fatalf("wrong token: %d", code)
	}
	if code, body := post(t, machineIP(mac), cb, url.Values{"token": {token}, "state": {"succeeded"}}); code != 200 {
		t.Fatalf("report: %d %s", code, body)
	}
	reportRev := jobRev()

	cc, err := grpcclient.Dial(h.srv.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(t, h.st)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := bootapiv1.NewAuditServiceClient(cc).ListAuditEvents(ctx, &bootapiv1.ListAuditEventsRequest{Action: "http."})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range resp.GetEvents() {
		if !strings.HasPrefix(ev.GetPeer(), machineIP(mac)+":") {
			t.Errorf("event %v: peer not the machine's", ev)
		}
		got = append(got, strings.Join([]string{ev.GetAction(), ev.GetIdentity(), ev.GetResource(), ev.GetOutcome(), strconv.FormatInt(ev.GetRevision(), 10)}, " "))
	}
	want := []string{
		"http.callback machine:" + mac + " " + id + " OK " + strconv.FormatInt(reportRev, 10),
		"http.callback machine:" + mac + " " + id + " PermissionDenied 0",
		"http.dispatch machine:" + mac + " " + mac + " OK " + strconv.FormatInt(dispatchRev, 10),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("boot-path events (-want +got):\n%s", diff)
	}
}
