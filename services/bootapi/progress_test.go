package bootapi_test

import (
	"context"
	"net/url"
	"testing"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// A report that names no progress keeps the job's: a success without one is
// complete, a failure keeps how far the installer got.
func TestReportKeepsProgress(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		final string
		want  int32
	}{
		"succeeded without progress": {"succeeded", 100},
		"failed without progress":    {"failed", 40},
	} {
		t.Run(name, func(t *testing.T) {
			jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
			if err != nil {
				t.Fatal(err)
			}
			_, body := h.get(t, "/ipxe/v1/config?mac="+mac)
			inst := newInstaller(t, mac, body)
			if code, body := inst.report(t, url.Values{"state": {"running"}, "progress": {"40"}}); code != 200 {
				t.Fatalf("running: %d %s", code, body)
			}
			if code, body := inst.report(t, url.Values{"state": {"running"}}); code != 200 {
				t.Fatalf("running without progress: %d %s", code, body)
			}
			if got := getJob(t, h, jr.GetJob().GetId()).GetProgress(); got != 40 {
				t.Fatalf("after a running report without progress: %d, want 40", got)
			}
			if code, body := inst.report(t, url.Values{"state": {tc.final}}); code != 200 {
				t.Fatalf("%s: %d %s", tc.final, code, body)
			}
			j := getJob(t, h, jr.GetJob().GetId())
			if j.GetProgress() != tc.want {
				t.Errorf("progress %d, want %d", j.GetProgress(), tc.want)
			}
			if r := j.GetReports(); r[len(r)-1].GetProgress() != tc.want {
				t.Errorf("last report's progress %d, want %d", r[len(r)-1].GetProgress(), tc.want)
			}
		})
	}
}
