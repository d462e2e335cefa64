package bootapi_test

import (
	"context"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"google.golang.org/grpc/codes"
)

var grubArgRE = regexp.MustCompile(`'bootchain\.(token|callback)=([^']+)'`)

// TestGrubConfigAsTheMachine: tftpd's request for GRUB's config is answered
// as the machine's own: only a service may ask; from an address that does
// not hold the machine's lease the pending job is withheld; from the one
// that does, the job is dispatched once with a callback the installer can
// report to, and the machine's next config is its default.
func TestGrubConfigAsTheMachine(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	ctx := context.Background()
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	id := jr.GetJob().GetId()
	req := &bootapiv1.RenderGrubConfigRequest{Mac: mac, ClientIp: machineIP(mac), Arch: "x86_64-efi", Site: "default", File: "grub/grub.cfg-" + mac}

	for _, role := range []auth.Role{auth.RoleViewer, auth.RoleOperator} {
		_, err := bootapiv1.NewBootConfigServiceClient(h.as(t, testkit.Token(t, st, role))).RenderGrubConfig(ctx, req)
		wantCode(t, string(role)+" RenderGrubConfig", err, codes.PermissionDenied, "bootconfigs.write")
	}
	if getJob(t, h, id).GetState() != bootapiv1.JobState_JOB_STATE_PENDING {
		t.Fatal("a refused call dispatched the job")
	}
	tftpd := bootapiv1.NewBootConfigServiceClient(h.as(t, testkit.Token(t, st, auth.RoleService)))

	_, err = tftpd.RenderGrubConfig(ctx, &bootapiv1.RenderGrubConfigRequest{Mac: "nope", ClientIp: "127.0.0.1"})
	wantCode(t, "bad mac", err, codes.InvalidArgument, "mac")

	// Another address: the same as a script request from there.
	other := &bootapiv1.RenderGrubConfigRequest{Mac: mac, ClientIp: "127.9.9.9", Arch: "x86_64-efi"}
	resp, err := tftpd.RenderGrubConfig(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(resp.GetConfig(), "bootchain.token=") || !strings.Contains(resp.GetDetail(), "not dispatched") {
		t.Fatalf("from another address the job went out:\n%s\n%s", resp.GetConfig(), resp.GetDetail())
	}

	resp, err = tftpd.RenderGrubConfig(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	cfg := resp.GetConfig()
	for _, want := range []string{"if linux '(tftp)/artifacts/debian/linux'", "if initrd '(tftp)/artifacts/debian/initrd.gz'", "'hostname=node0'", "'bootchain.job=" + id + "'", "arch x86_64-efi"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "initrd=") {
		t.Errorf("iPXE's initrd= argument in a GRUB config:\n%s", cfg)
	}
	if getJob(t, h, id).GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatal("job not dispatched")
	}
	var token, cb string
	for _, m := range grubArgRE.FindAllStringSubmatch(cfg, -1) {
		if m[1] == "token" {
			token = m[2]
		} else {
			cb = m[2]
		}
	}
	inst := &installer{from: machineIP(mac), cb: cb, token: token}
	if code, body := inst.report(t, url.Values{"state": {"succeeded"}}); code != 200 {
		t.Fatalf("report: %d %s", code, body)
	}
	if s := getJob(t, h, id).GetState(); s != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v after the report", s)
	}

	resp, err = tftpd.RenderGrubConfig(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(resp.GetConfig(), "linux") {
		t.Fatalf("the machine's next config boots a kernel again:\n%s", resp.GetConfig())
	}
	testkit.Eventually(t, "GRUB config hops", func() bool {
		s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		if err != nil {
			return false
		}
		n := 0
		for _, hop := range s.GetSession().GetHops() {
			if hop.GetName() == "script" && hop.GetService() == "bootapi" {
				n++
			}
		}
		return n >= 2
	})
}
