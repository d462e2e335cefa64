package bootapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/apierr"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/bootapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestMain also fails the package when a goroutine started by a test outlives
// it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

type harness struct {
	st       *store.Store
	srv      *bootapi.Server
	base     string
	machines bootapiv1.MachineServiceClient
	profiles bootapiv1.ProfileServiceClient
	jobs     bootapiv1.JobServiceClient
	sessions bootapiv1.SessionServiceClient
	sites    bootapiv1.SiteServiceClient
}

func start(t *testing.T, st *store.Store, mod ...func(*bootapi.Config)) *harness {
	t.Helper()
	cfg := bootapi.DefaultConfig()
	cfg.Store, cfg.HTTPAddr, cfg.GRPC = st, "127.0.0.1:0", grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	cfg.ArtifactURL = "http://198.18.0.1:8081"
	cfg.SweepInterval = 50 * time.Millisecond
	for _, m := range mod {
		m(&cfg)
	}
	srv, err := bootapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "bootapi", srv.Run)
	base := "http://" + srv.HTTPAddr().String()
	testkit.WaitHTTP(t, base+"/healthz")
	cc, err := grpcclient.Dial(srv.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(t, st)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &harness{
		st: st, srv: srv, base: base,
		machines: bootapiv1.NewMachineServiceClient(cc), profiles: bootapiv1.NewProfileServiceClient(cc),
		jobs: bootapiv1.NewJobServiceClient(cc), sessions: bootapiv1.NewSessionServiceClient(cc), sites: bootapiv1.NewSiteServiceClient(cc),
	}
}

func (h *harness) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(h.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, u string, form url.Values) (int, string) {
	t.Helper()
	resp, err := http.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const mac = "52:54:00:12:34:56"

// artifacts records artifacts in the catalog as artifactstore would, so that
// profiles may name them.
func (h *harness) artifacts(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := h.st.Put(context.Background(), store.Key("artifacts", n), &artifactv1.Artifact{Name: n, Sha256: strings.Repeat("0", 64), Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
}

func (h *harness) seed(t *testing.T, macs ...string) {
	t.Helper()
	ctx := context.Background()
	h.artifacts(t, "debian/linux", "debian/initrd.gz")
	_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
		Name: "debian-12", Description: "Debian 12", Menu: true,
		Kernel:  &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "debian/linux"}},
		Initrds: []*bootapiv1.ArtifactRef{{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "debian/initrd.gz"}}},
		Cmdline: "console=ttyS0 hostname={{.Machine.Hostname}}",
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range macs {
		if _, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: m, Hostname: fmt.Sprintf("node%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
}

var (
	tokenRE    = regexp.MustCompile(`bootchain\.token=([0-9a-f]+)`)
	callbackRE = regexp.MustCompile(`bootchain\.callback=(\S+)`)
)

func TestJobLifecycle(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	ctx := context.Background()
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: "52-54-00-12-34-56", Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	id := jr.GetJob().GetId()

	code, body := h.get(t, "/ipxe/v1/config?mac=52%3A54%3A00%3A12%3A34%3A56&arch=x86_64&platform=pcbios")
	if code != 200 || !strings.Contains(body, "kernel http://198.18.0.1:8081/artifacts/debian/linux?traceparent=") {
		t.Fatalf("job script: %d\n%s", code, body)
	}
	for _, want := range []string{"initrd --name initrd.gz", "initrd=initrd.gz", "hostname=node0", "bootchain.traceparent=00-", "bootchain.callback="} {
		if !strings.Contains(body, want) {
			t.Errorf("job script lacks %q:\n%s", want, body)
		}
	}
	token, cb := tokenRE.FindStringSubmatch(body)[1], callbackRE.FindStringSubmatch(body)[1]
	job := getJob(t, h, id)
	if job.GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED || len(job.GetTokenHash()) != 0 {
		t.Fatalf("after script: state %v, token hash exposed: %v", job.GetState(), len(job.GetTokenHash()) > 0)
	}

	// The machine reboots before the installer reports: it must not reinstall.
	if _, body := h.get(t, "/ipxe/v1/config?mac="+mac); strings.Contains(body, "kernel ") {
		t.Fatalf("second boot got a kernel again:\n%s", body)
	}

	// A wrong token changes nothing. (Its first digit differs from the real one's:
	// "00"+token[2:] was the real token whenever that began with 00, 1 run in 256.)
	wrong := "1" + token[1:]
	if token[0] == '1' {
		wrong = "0" + token[1:]
	}
	if code, _ := post(t, cb, url.Values{"token": {wrong}, "state": {"succeeded"}}); code != http.StatusForbidden {
		t.Fatalf("wrong token: %d", code)
	}
	if getJob(t, h, id).GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatal("wrong token changed the job")
	}
	if code, body := post(t, cb, url.Values{"token": {token}, "state": {"running"}, "progress": {"40"}, "message": {"partitioning"}}); code != 200 {
		t.Fatalf("running: %d %s", code, body)
	}
	if code, body := post(t, cb, url.Values{"token": {token}, "state": {"succeeded"}, "progress": {"100"}}); code != 200 {
		t.Fatalf("succeeded: %d %s", code, body)
	}
	// Replaying a report after the job ended is refused and changes nothing.
	if code, _ := post(t, cb, url.Values{"token": {token}, "state": {"failed"}}); code != http.StatusConflict {
		t.Fatalf("replay: %d", code)
	}
	job = getJob(t, h, id)
	if job.GetState() != bootapiv1.JobState_JOB_STATE_SUCCEEDED || len(job.GetReports()) != 2 || job.GetProgress() != 100 {
		t.Fatalf("final job: %v", job)
	}
	// The machine can get a new job now.
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatalf("new job after success: %v", err)
	}

	// The whole boot is one session with its hops.
	testkit.Eventually(t, "session hops", func() bool {
		s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		return err == nil && len(s.GetSession().GetHops()) >= 5
	})
	s, _ := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
	if got := s.GetSession().GetHops()[0]; got.GetName() != "script" || got.GetService() != "bootapi" {
		t.Errorf("first hop %v", got)
	}
}

// A machine asking for its script in a loop gets the same answer, mostly from
// the memo on its entry, and every request is still counted in its session; a
// job created or a record changed meanwhile changes the very next answer.
func TestScriptMemo(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	ctx := context.Background()
	path := "/ipxe/v1/config?mac=" + mac + "&arch=x86_64&platform=pcbios"
	const n = 30
	var first string
	for i := 0; i < n; i++ {
		code, body := h.get(t, path)
		if code != 200 || !strings.Contains(body, "menu") {
			t.Fatalf("request %d: %d\n%s", i, code, body)
		}
		if i == 0 {
			first = body
		} else if body != first {
			t.Fatalf("request %d answered differently:\n%s\nfirst:\n%s", i, body, first)
		}
	}
	testkit.Eventually(t, fmt.Sprintf("one script hop with %d repeats", n-1), func() bool {
		if err := h.srv.FlushSessions(ctx); err != nil {
			return false
		}
		s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		hops := s.GetSession().GetHops()
		return err == nil && len(hops) == 1 && hops[0].GetRepeats() == n-1
	})

	// A record changed: the next answer follows it, even while a memo of the
	// last one holds.
	h.get(t, path)
	h.get(t, path)
	if _, err := h.machines.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{Machine: &bootapiv1.Machine{
		Mac: mac, Hostname: "node0", DefaultAction: bootapiv1.Action_ACTION_LOCAL_DISK}}); err != nil {
		t.Fatal(err)
	}
	if _, body := h.get(t, path); !strings.Contains(body, "exit") || strings.Contains(body, "menu") {
		t.Fatalf("after the machine's default became the local disk:\n%s", body)
	}
	h.get(t, path) // a repeat again: the memo is back
	// A job created: the next request dispatches it.
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	if _, body := h.get(t, path); !strings.Contains(body, "kernel ") {
		t.Fatalf("a pending job was not dispatched:\n%s", body)
	}
}

func getJob(t *testing.T, h *harness, id string) *bootapiv1.Job {
	t.Helper()
	r, err := h.jobs.GetJob(context.Background(), &bootapiv1.GetJobRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return r.GetJob()
}

// TestOneDispatchAcrossReplicas races script requests for the same machines
// through two bootapi instances on one etcd: each job is dispatched exactly once.
func TestOneDispatchAcrossReplicas(t *testing.T) {
	e := storetest.Start(t)
	a, b := start(t, e.Client(t)), start(t, e.Client(t))
	var macs []string
	for i := 0; i < 8; i++ {
		macs = append(macs, fmt.Sprintf("52:54:00:00:01:%02x", i))
	}
	a.seed(t, macs...)
	ctx := context.Background()
	var ids []string
	for _, m := range macs {
		r, err := a.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: m, Profile: "debian-12"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.GetJob().GetId())
	}
	// Both replicas must see every job before the race, or one would simply lose
	// for want of data.
	testkit.Eventually(t, "jobs on replica b", func() bool {
		r, err := b.jobs.ListJobs(ctx, &bootapiv1.ListJobsRequest{})
		return err == nil && len(r.GetJobs()) == len(macs)
	})
	for _, m := range macs {
		var wg sync.WaitGroup
		var mu sync.Mutex
		kernels := 0
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := a
				if i%2 == 1 {
					h = b
				}
				_, body := h.get(t, "/ipxe/v1/config?mac="+m)
				if strings.Contains(body, "bootchain.token=") {
					mu.Lock()
					kernels++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if kernels != 1 {
			t.Errorf("machine %s: %d job scripts, want exactly 1", m, kernels)
		}
	}
	for _, id := range ids {
		if s := getJob(t, a, id).GetState(); s != bootapiv1.JobState_JOB_STATE_DISPATCHED {
			t.Errorf("job %s: %v", id, s)
		}
	}
}

func TestValidationNamesField(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t, mac)
	ctx := context.Background()
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	kernel := &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "k"}}
	tests := map[string]struct {
		call  func() error
		field string
	}{
		"bad mac": {func() error {
			_, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: "52:54:00"}})
			return err
		}, "machine.mac"},
		"hostname with newline": {func() error {
			_, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: "52:54:00:00:00:09", Hostname: "a\nshell"}})
			return err
		}, "machine.hostname"},
		"label with expansion": {func() error {
			_, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: "52:54:00:00:00:09", Labels: map[string]string{"role": "${x}"}}})
			return err
		}, "machine.labels[role]"},
		"unknown default profile": {func() error {
			_, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: "52:54:00:00:00:09", DefaultAction: bootapiv1.Action_ACTION_PROFILE, DefaultProfile: "nope"}})
			return err
		}, "machine.default_profile"},
		"unknown profile in job": {func() error {
			_, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "nope"})
			return err
		}, "profile"},
		"unknown machine in job": {func() error {
			_, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: "52:54:00:99:99:99", Profile: "debian-12"})
			return err
		}, "mac"},
		"second pending job": {func() error {
			_, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
			return err
		}, "mac"},
		"job timeout": {func() error {
			_, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12", Timeout: durationpb.New(time.Millisecond)})
			return err
		}, "timeout"},
		"profile name": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "Bad Name", Kernel: kernel}})
			return err
		}, "profile.name"},
		"profile without kernel": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "p"}})
			return err
		}, "profile.kernel"},
		"cmdline injection": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "p", Kernel: kernel, Cmdline: "quiet || shell"}})
			return err
		}, "profile.cmdline"},
		"traversal in artifact": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "p", Kernel: &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: "../etc/passwd"}}}})
			return err
		}, "profile.kernel.artifact"},
		"site URL": {func() error {
			_, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "lab", ArtifactUrl: "ftp://x"}})
			return err
		}, "site.artifact_url"},
		"update mask": {func() error {
			_, err := h.machines.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{Machine: &bootapiv1.Machine{Mac: mac}, UpdateMask: nil})
			if err != nil {
				return err
			}
			_, err = h.machines.UpdateMachine(ctx, &bootapiv1.UpdateMachineRequest{Machine: &bootapiv1.Machine{Mac: mac}, UpdateMask: mask("discovered")})
			return err
		}, "update_mask"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code %v (%v), want InvalidArgument", status.Code(err), err)
			}
			if got := apierr.FieldOf(err); got != tc.field {
				t.Fatalf("field %q, want %q (%v)", got, tc.field, err)
			}
		})
	}
}

func TestJobExpires(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t, mac)
	ctx := context.Background()
	r, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12", Timeout: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, body := h.get(t, "/ipxe/v1/config?mac="+mac); !strings.Contains(body, "kernel ") {
		t.Fatalf("no job script:\n%s", body)
	}
	testkit.Eventually(t, "expiry", func() bool {
		return getJob(t, h, r.GetJob().GetId()).GetState() == bootapiv1.JobState_JOB_STATE_EXPIRED
	})
	// An expired job frees the machine for a new one.
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoveryAndDefaults(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t)
	ctx := context.Background()
	const unknown = "52:54:00:aa:bb:cc"
	_, body := h.get(t, "/ipxe/v1/config?mac="+unknown+"&arch=x86_64&product=Standard+PC")
	if !strings.Contains(body, "menu bootchain:") || !strings.Contains(body, "item p-debian-12") {
		t.Fatalf("unknown machine did not get the menu:\n%s", body)
	}
	testkit.Eventually(t, "discovered machine", func() bool {
		m, err := h.machines.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: unknown})
		f := m.GetMachine().GetFacts()
		return err == nil && m.GetMachine().GetDiscovered() && f.GetProduct() == "Standard PC" && f.GetIp() == "127.0.0.1"
	})
	// A machine set to local disk gets exit; a site set to local disk changes the default.
	if _, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: unknown, DefaultAction: bootapiv1.Action_ACTION_LOCAL_DISK}}); err != nil {
		t.Fatalf("promote discovered: %v", err)
	}
	if _, body := h.get(t, "/ipxe/v1/config?mac="+unknown); !strings.Contains(body, "\nexit\n") || strings.Contains(body, "menu") {
		t.Fatalf("local disk:\n%s", body)
	}
	if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "default", DefaultAction: bootapiv1.Action_ACTION_SANBOOT}}); err != nil {
		t.Fatal(err)
	}
	if _, body := h.get(t, "/ipxe/v1/config?mac=52:54:00:aa:bb:cd"); !strings.Contains(body, "sanboot") {
		t.Fatalf("site default:\n%s", body)
	}
	if code, _ := h.get(t, "/ipxe/v1/config?mac=nonsense"); code != http.StatusBadRequest {
		t.Fatalf("bad mac: %d", code)
	}
	if _, body := h.get(t, "/boot.ipxe"); !strings.Contains(body, "/ipxe/v1/config?mac=${net0/mac:hexhyp}&arch=${buildarch:uristring}") {
		t.Fatalf("bootstrap:\n%s", body)
	}
}

// TestRecordsWrittenAroundTheAPI puts hostile values straight into etcd, past the
// API's validation: the renderer still refuses to put them in a script.
func TestRecordsWrittenAroundTheAPI(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t)
	ctx := context.Background()
	for i, hostname := range []string{"x\nshell", "${net0/ip}", "a || shell", `a" init=/bin/sh`} {
		m := fmt.Sprintf("52:54:00:00:02:%02x", i)
		if _, err := st.Put(ctx, store.Key("machines", m), &bootapiv1.Machine{Mac: m, Hostname: hostname, DefaultAction: bootapiv1.Action_ACTION_PROFILE, DefaultProfile: "debian-12", Labels: map[string]string{"k": hostname}}); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "machine in cache", func() bool {
			_, err := h.machines.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: m})
			return err == nil
		})
		_, body := h.get(t, "/ipxe/v1/config?mac="+m)
		if strings.Contains(body, "kernel ") || strings.Contains(body, "\nshell") || strings.Contains(body, "${net0") || strings.Contains(body, "init=") {
			t.Errorf("hostname %q reached the script:\n%s", hostname, body)
		}
	}
}

func TestWatchJobs(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t, mac)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := h.jobs.WatchJobs(ctx, &bootapiv1.WatchJobsRequest{Mac: mac})
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	var states []bootapiv1.JobState
	next := func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if ev.GetJob().GetId() == r.GetJob().GetId() {
				states = append(states, ev.GetJob().GetState())
				return
			}
		}
	}
	// The server may subscribe after CreateJob (the client's stream opens before
	// the handler runs): the pending job then comes in its snapshot. Either way it
	// comes first, and only then is the subscription sure to see the dispatch.
	next()
	h.get(t, "/ipxe/v1/config?mac="+mac)
	next()
	if states[0] != bootapiv1.JobState_JOB_STATE_PENDING || states[1] != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatalf("watched states %v", states)
	}
}

// TestSiteArtifactURL: a machine's script points at its own site's artifactstore.
func TestSiteArtifactURL(t *testing.T) {
	h := start(t, storetest.New(t))
	h.seed(t)
	ctx := context.Background()
	if _, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "rack-b", ArtifactUrl: "http://198.18.2.1:8081"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.machines.RegisterMachine(ctx, &bootapiv1.RegisterMachineRequest{Machine: &bootapiv1.Machine{Mac: mac, Site: "rack-b"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	_, body := h.get(t, "/ipxe/v1/config?mac="+mac)
	if !strings.Contains(body, "kernel http://198.18.2.1:8081/artifacts/debian/linux?traceparent=") || !strings.Contains(body, " http://198.18.2.1:8081/artifacts/debian/initrd.gz?traceparent=") {
		t.Fatalf("script does not use the site's artifactstore:\n%s", body)
	}
}
