package bootapi_test

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/apierr"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi/internal/grpcapi"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

var traceparentRE = regexp.MustCompile(`00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}`)

// placeholders turns a real script into what a preview shows: the job's token and
// the session's traceparent replaced.
func placeholders(s string) string {
	s = tokenRE.ReplaceAllString(s, "bootchain.token="+grpcapi.PreviewToken)
	return traceparentRE.ReplaceAllString(s, grpcapi.PreviewTraceparent)
}

func etcdRevision(t *testing.T, st *store.Store) int64 {
	t.Helper()
	r, err := st.Client().Get(context.Background(), "bootchain-preview-probe")
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

// A preview writes nothing (no dispatch, no session, no discovered machine) and
// shows what the script endpoint then answers.
func TestPreviewMachine(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	ctx := context.Background()
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	id := jr.GetJob().GetId()
	const unknown = "52:54:00:99:99:99"

	before := etcdRevision(t, st)
	job, err := h.machines.PreviewMachine(ctx, &bootapiv1.PreviewMachineRequest{Mac: "52-54-00-12-34-56", Arch: "x86_64", Platform: "efi"})
	if err != nil {
		t.Fatal(err)
	}
	menu, err := h.machines.PreviewMachine(ctx, &bootapiv1.PreviewMachineRequest{Mac: unknown})
	if err != nil {
		t.Fatal(err)
	}
	choice, err := h.machines.PreviewMachine(ctx, &bootapiv1.PreviewMachineRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	if after := etcdRevision(t, st); after != before {
		t.Fatalf("etcd revision %d -> %d: the preview wrote", before, after)
	}
	if s := getJob(t, h, id).GetState(); s != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Fatalf("job %s after preview, want pending", s)
	}
	if _, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac}); status.Code(err) != codes.NotFound {
		t.Fatalf("session after preview: %v, want NotFound", err)
	}
	if _, err := h.machines.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: unknown}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown machine after preview: %v, want NotFound", err)
	}

	base := "http://198.18.0.1:8081/artifacts/debian/"
	tp := "?traceparent=" + grpcapi.PreviewTraceparent
	want := &bootapiv1.PreviewMachineResponse{
		Rule: "pending-job", Action: "boot", Profile: "debian-12", JobId: id, Site: "default",
		Detail: "job " + id + " profile debian-12", KernelUrl: base + "linux" + tp, InitrdUrls: []string{base + "initrd.gz" + tp},
	}
	got := proto.Clone(job).(*bootapiv1.PreviewMachineResponse)
	got.Script = ""
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("job preview (-want +got):\n%s", diff)
	}
	if strings.Contains(job.GetScript(), "bootchain.token=") && !strings.Contains(job.GetScript(), "bootchain.token="+grpcapi.PreviewToken+" ") {
		t.Errorf("preview carries a token other than the placeholder:\n%s", job.GetScript())
	}
	if menu.GetRule() != "fallback-default" || menu.GetAction() != "menu" || !menu.GetWouldDiscover() {
		t.Errorf("unknown machine's preview: %v", menu)
	}
	if choice.GetRule() != "menu-choice" || choice.GetJobId() != "" || choice.GetProfile() != "debian-12" {
		t.Errorf("menu choice's preview: %v", choice)
	}

	// What the endpoint answers is what the previews showed.
	for name, tc := range map[string]struct {
		path string
		p    *bootapiv1.PreviewMachineResponse
	}{
		"menu choice": {"/ipxe/v1/config?mac=" + mac + "&profile=debian-12", choice},
		"pending job": {"/ipxe/v1/config?mac=" + mac + "&arch=x86_64&platform=efi", job},
		"unknown":     {"/ipxe/v1/config?mac=" + unknown, menu},
	} {
		_, body := h.get(t, tc.path)
		if diff := cmp.Diff(tc.p.GetScript(), placeholders(body)); diff != "" {
			t.Errorf("%s: preview's script (-) and the endpoint's (+):\n%s", name, diff)
		}
	}
	if s := getJob(t, h, id).GetState(); s != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatalf("job %s after the script, want dispatched", s)
	}
}

func TestPreviewMachineNamesField(t *testing.T) {
	h := start(t, storetest.New(t))
	ctx := context.Background()
	for name, tc := range map[string]struct {
		req   *bootapiv1.PreviewMachineRequest
		field string
	}{
		"bad mac":           {&bootapiv1.PreviewMachineRequest{Mac: "52:54:00"}, "mac"},
		"arch with a line":  {&bootapiv1.PreviewMachineRequest{Mac: mac, Arch: "x86\nshell"}, "arch"},
		"platform too long": {&bootapiv1.PreviewMachineRequest{Mac: mac, Platform: strings.Repeat("p", 129)}, "platform"},
		"bad profile":       {&bootapiv1.PreviewMachineRequest{Mac: mac, Profile: "../x"}, "profile"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := h.machines.PreviewMachine(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument || apierr.FieldOf(err) != tc.field {
				t.Fatalf("got %v (field %q), want InvalidArgument naming %q", err, apierr.FieldOf(err), tc.field)
			}
		})
	}
}

// A pending job whose profile is gone would be failed by a dispatch; the preview
// says so, fails nothing, and shows what the machine would get instead.
func TestPreviewJobProfileGone(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	ctx := context.Background()
	if _, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
		Name: "gone", Kernel: &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Url{Url: "https://example.org/linux"}}}}); err != nil {
		t.Fatal(err)
	}
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, store.Key("profiles", "gone"), 0); err != nil {
		t.Fatal(err)
	}
	// Wait until the cache no longer has it, as a preview then reads etcd.
	testkit.Eventually(t, "profile gone from the cache", func() bool {
		_, err := h.profiles.GetProfile(ctx, &bootapiv1.GetProfileRequest{Name: "gone"})
		return status.Code(err) == codes.NotFound
	})
	p, err := h.machines.PreviewMachine(ctx, &bootapiv1.PreviewMachineRequest{Mac: mac})
	if err != nil {
		t.Fatal(err)
	}
	if p.GetRule() == "pending-job" || p.GetJobId() != "" || !strings.HasPrefix(p.GetDetail(), "job "+jr.GetJob().GetId()+" would fail") {
		t.Errorf("preview: %v", p)
	}
	if s := getJob(t, h, jr.GetJob().GetId()).GetState(); s != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Errorf("job %s after preview, want pending", s)
	}
}
