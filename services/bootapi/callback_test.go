package bootapi_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
)

// TestCallbackSurvivesReplica: two replicas share etcd; the one that serves
// the script names the fleet's callback address (--callback-url; here the other
// replica stands in for the load balancer) and then dies, and the installer's
// reports still land. A site's callback_url then takes over for its machines.
func TestCallbackSurvivesReplica(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	survivor := start(t, st)
	served := start(t, st, func(c *bootapi.Config) { c.CallbackURL = survivor.base + "/" })
	served.seed(t, mac)
	jr, err := served.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	_, body := served.get(t, "/ipxe/v1/config?mac="+mac)
	inst := newInstaller(t, mac, body)
	if want := survivor.base + "/ipxe/v1/report?job=" + jr.GetJob().GetId(); inst.cb != want {
		t.Fatalf("callback %s, want %s", inst.cb, want)
	}
	served.svc.Stop()
	if code, body := inst.report(t, url.Values{"state": {"succeeded"}}); code != 200 {
		t.Fatalf("report after the serving replica died: %d %s", code, body)
	}
	if j := getJob(t, survivor, jr.GetJob().GetId()); j.GetState() != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v", j)
	}

	// The site's own address wins over bootapi's.
	if _, err := survivor.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "default"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.sites.UpdateSite(ctx, &bootapiv1.UpdateSiteRequest{
		Site: &bootapiv1.Site{Name: "default", CallbackUrl: "https://198.18.0.100:8443"}, UpdateMask: mask("callback_url"),
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := survivor.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	_, body = survivor.get(t, "/ipxe/v1/config?mac="+mac)
	if inst := newInstaller(t, mac, body); !strings.HasPrefix(inst.cb, "https://198.18.0.100:8443/ipxe/v1/report?job=") {
		t.Fatalf("callback %s, want the site's", inst.cb)
	}
}

// TestCallbackURLFlag: --callback-url must be a base URL.
func TestCallbackURLFlag(t *testing.T) {
	st := storetest.New(t)
	for _, bad := range []string{"ftp://h", "boot.example.net", "https://h/?a=b", "https://u:p@h"} {
		cfg := bootapi.DefaultConfig()
		cfg.Store, cfg.HTTPAddr, cfg.GRPC.Addr = st, "127.0.0.1:0", "127.0.0.1:0"
		cfg.CallbackURL = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "callback URL") {
			t.Errorf("--callback-url %q: %v", bad, err)
		}
	}
}
