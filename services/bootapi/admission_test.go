package bootapi_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
)

// TestAdmissionCap: with a cap of one boot in flight per site, a second
// machine with a job gets the wait script (its job stays pending) until the
// first machine's installer reports; then it gets its job.
func TestAdmissionCap(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	h := start(t, st, func(c *bootapi.Config) { c.MaxBootsInFlight = 1 })
	const other = "52:54:00:12:34:57"
	h.seed(t, mac, other)
	var jobs []string
	for _, m := range []string{mac, other} {
		jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: m, Profile: "debian-12"})
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, jr.GetJob().GetId())
	}

	_, first := h.getFrom(t, machineIP(mac), "/ipxe/v1/config?mac="+mac)
	inst := newInstaller(t, mac, first)
	waitScript := func(s string) bool {
		return strings.Contains(s, "waiting for a boot slot") && !strings.Contains(s, "bootchain.token=") &&
			strings.Contains(s, "chain --autofree "+h.base+"/ipxe/v1/config?mac=${net0/mac:hexhyp}")
	}
	code, wait := h.getFrom(t, machineIP(other), "/ipxe/v1/config?mac="+other)
	if code != 200 || !waitScript(wait) {
		t.Fatalf("second machine over the cap: %d\n%s", code, wait)
	}
	if j := getJob(t, h, jobs[1]); j.GetState() != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("waiting machine's job is %v, want pending", j.GetState())
	}
	// Asking again while the first is still downloading: still waiting.
	if _, again := h.getFrom(t, machineIP(other), "/ipxe/v1/config?mac="+other); !waitScript(again) {
		t.Fatalf("still over the cap, got:\n%s", again)
	}

	if code, body := inst.report(t, url.Values{"state": {"running"}}); code != 200 {
		t.Fatalf("report: %d %s", code, body)
	}
	_, second := h.getFrom(t, machineIP(other), "/ipxe/v1/config?mac="+other)
	newInstaller(t, other, second) // fails the test unless it is the job's script
	if j := getJob(t, h, jobs[1]); j.GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatalf("job after the slot freed: %v, want dispatched", j.GetState())
	}
}

// TestJobWave: a job created with release_after is held: its machine gets the
// wait script and the job stays pending; a job without one goes out at once.
func TestJobWave(t *testing.T) {
	st := storetest.New(t)
	ctx := context.Background()
	h := start(t, st)
	const later = "52:54:00:12:34:58"
	h.seed(t, mac, later)
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: later, Profile: "debian-12", ReleaseAfter: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if rt := jr.GetJob().GetReleaseTime(); rt == nil || time.Until(rt.AsTime()) < 59*time.Minute {
		t.Fatalf("release time %v, want an hour from now", rt)
	}
	_, first := h.getFrom(t, machineIP(mac), "/ipxe/v1/config?mac="+mac)
	newInstaller(t, mac, first) // the first wave boots
	_, held := h.getFrom(t, machineIP(later), "/ipxe/v1/config?mac="+later)
	if !strings.Contains(held, "waiting for a boot slot") || strings.Contains(held, "bootchain.token=") {
		t.Fatalf("held job's machine got:\n%s", held)
	}
	if j := getJob(t, h, jr.GetJob().GetId()); j.GetState() != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("held job is %v, want pending", j.GetState())
	}
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: "52:54:00:12:34:59", Profile: "debian-12", ReleaseAfter: durationpb.New(8 * 24 * time.Hour)}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "release_after") {
		t.Fatalf("release_after of 8 days: %v", err)
	}
}
