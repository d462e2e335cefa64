package bootapi_test

import (
	"context"
	"fmt"
	"io"
	"net"
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
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/macaddr"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/bootapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestMain also fails the package when a goroutine started by a test outlives
// it.
func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

type harness struct {
	st       *store.Store
	srv      *bootapi.Server
	svc      *testkit.Service
	leaseRev int64 // revision of the last lease written by lease
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
	svc := testkit.Run(t, "bootapi", srv.Run)
	base := "http://" + srv.HTTPAddr().String()
	testkit.WaitHTTP(t, base+"/healthz")
	cc, err := grpcclient.Dial(srv.GRPCAddr().String(), tlsconf.Files{}, grpcclient.WithToken(testkit.AdminToken(t, st)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &harness{
		st: st, srv: srv, svc: svc, base: base,
		machines: bootapiv1.NewMachineServiceClient(cc), profiles: bootapiv1.NewProfileServiceClient(cc),
		jobs: bootapiv1.NewJobServiceClient(cc), sessions: bootapiv1.NewSessionServiceClient(cc), sites: bootapiv1.NewSiteServiceClient(cc),
	}
}

// get fetches path as the machine named by its mac parameter would: from that
// machine's address (machineIP), which holds its lease once seed or lease
// wrote one.
func (h *harness) get(t *testing.T, path string) (int, string) {
	t.Helper()
	from := "127.0.0.1"
	if u, err := url.Parse(path); err == nil {
		if m, err := macaddr.Normalize(u.Query().Get("mac")); err == nil {
			from = machineIP(m)
		}
	}
	return h.getFrom(t, from, path)
}

// getFrom fetches path from the loopback address from.
func (h *harness) getFrom(t *testing.T, from, path string) (int, string) {
	t.Helper()
	resp, err := clientFrom(from).Get(h.base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// machineIP is the loopback address a test machine asks from: 127 and the
// MAC's last three bytes (Linux routes all of 127/8 to lo).
func machineIP(mac string) string {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		panic(err)
	}
	return net.IPv4(127, hw[3], hw[4], hw[5]).String()
}

// clientFrom is an HTTP client whose connections come from the address from.
// No keep-alive: no connection outlives the request (TestMain checks for
// goroutines left behind).
func clientFrom(from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// post sends a url-encoded form to u from the address from.
func post(t *testing.T, from, u string, form url.Values) (int, string) {
	t.Helper()
	resp, err := clientFrom(from).PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// installer reports for one job as bootchain.sh does: from its machine's
// address, with the bootstrap token first and the token the first answer
// gives from then on.
type installer struct {
	from, cb, token string
}

// newInstaller reads the callback and token of a job's script.
func newInstaller(t *testing.T, mac, script string) *installer {
	t.Helper()
	tm, cm := tokenRE.FindStringSubmatch(script), callbackRE.FindStringSubmatch(script)
	if tm == nil || cm == nil {
		t.Fatalf("no job in the script:\n%s", script)
	}
	return &installer{from: machineIP(mac), cb: cm[1], token: tm[1]}
}

// report posts form with the installer's token and keeps a fresh token the
// answer carries.
func (in *installer) report(t *testing.T, form url.Values) (int, string) {
	t.Helper()
	form.Set("token", in.token)
	code, body := post(t, in.from, in.cb, form)
	if m := freshTokenRE.FindStringSubmatch(body); m != nil {
		in.token = m[1]
	}
	return code, body
}

var freshTokenRE = regexp.MustCompile(`(?m)^token ([0-9a-f]{64})$`)

// leaseOf is a bound lease of ip to mac at site "default" until expire.
func leaseOf(mac, ip string, expire time.Time) *dhcpdv1.Lease {
	return &dhcpdv1.Lease{Ip: ip, Mac: mac, State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, Site: "default", ExpireTime: timestamppb.New(expire)}
}

// lease records in etcd, as dhcpd does, that machineIP(m) holds a bound lease
// of m at site "default" for each m, and waits until bootapi has read them.
func (h *harness) lease(t *testing.T, macs ...string) { t.Helper(); h.leaseAt(t, "default", macs...) }

// leaseAt is lease at site.
func (h *harness) leaseAt(t *testing.T, site string, macs ...string) {
	t.Helper()
	ctx := context.Background()
	var rev int64
	for _, m := range macs {
		ip := machineIP(m)
		l := leaseOf(m, ip, time.Now().Add(time.Hour))
		l.Site = site
		r, err := h.st.Put(ctx, store.Key("leases", site, ip), l)
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	if err := h.srv.WaitLeases(ctx, rev); err != nil {
		t.Fatal(err)
	}
	h.leaseRev = rev
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
	if len(macs) > 0 {
		h.lease(t, macs...)
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
	inst := newInstaller(t, mac, body)
	token, cb := inst.token, inst.cb
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
	if code, _ := post(t, inst.from, cb, url.Values{"token": {wrong}, "state": {"succeeded"}}); code != http.StatusForbidden {
		t.Fatalf("wrong token: %d", code)
	}
	if getJob(t, h, id).GetState() != bootapiv1.JobState_JOB_STATE_DISPATCHED {
		t.Fatal("wrong token changed the job")
	}
	code, body = inst.report(t, url.Values{"state": {"running"}, "progress": {"40"}, "message": {"partitioning"}})
	if code != 200 || inst.token == token {
		t.Fatalf("running: %d %s (want a fresh token in the answer)", code, body)
	}
	if code, body := inst.report(t, url.Values{"state": {"succeeded"}, "progress": {"100"}}); code != 200 || freshTokenRE.MatchString(body) {
		t.Fatalf("succeeded: %d %s (want no second exchange)", code, body)
	}
	// Replaying a report after the job ended is refused and changes nothing.
	if code, _ := inst.report(t, url.Values{"state": {"failed"}}); code != http.StatusConflict {
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

	// The whole boot is one session with its hops: two scripts and the two
	// accepted callbacks; the refused reports (wrong token, replay) left none.
	testkit.Eventually(t, "session hops", func() bool {
		s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		return err == nil && len(s.GetSession().GetHops()) >= 4
	})
	s, _ := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
	if got := s.GetSession().GetHops()[0]; got.GetName() != "script" || got.GetService() != "bootapi" {
		t.Errorf("first hop %v", got)
	}
	for _, hop := range s.GetSession().GetHops() {
		if hop.GetFailed() {
			t.Errorf("a refused report left a hop: %v", hop)
		}
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
	// Both replicas must see every job (and lease) before the race, or one
	// would simply lose for want of data.
	if err := b.srv.WaitLeases(ctx, a.leaseRev); err != nil {
		t.Fatal(err)
	}
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
		"cmdline GRUB would mangle": {func() error {
			_, err := h.profiles.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{Name: "p", Kernel: kernel, Cmdline: `quiet a="b`}})
			return err
		}, "profile.cmdline"},
		"site cmdline GRUB would mangle": {func() error {
			_, err := h.sites.PutSite(ctx, &bootapiv1.PutSiteRequest{Site: &bootapiv1.Site{Name: "lab", ExtraCmdline: `x\y`}})
			return err
		}, "site.extra_cmdline"},
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
	h.lease(t, unknown) // recorded only from the address holding its lease
	_, body := h.get(t, "/ipxe/v1/config?mac="+unknown+"&arch=x86_64&product=Standard+PC")
	if !strings.Contains(body, "menu bootchain:") || !strings.Contains(body, "item p-debian-12") {
		t.Fatalf("unknown machine did not get the menu:\n%s", body)
	}
	testkit.Eventually(t, "discovered machine", func() bool {
		m, err := h.machines.GetMachine(ctx, &bootapiv1.GetMachineRequest{Mac: unknown})
		f := m.GetMachine().GetFacts()
		return err == nil && m.GetMachine().GetDiscovered() && f.GetProduct() == "Standard PC" && f.GetIp() == machineIP(unknown)
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
	h.leaseAt(t, "rack-b", mac)
	_, body := h.get(t, "/ipxe/v1/config?mac="+mac)
	if !strings.Contains(body, "kernel http://198.18.2.1:8081/artifacts/debian/linux?traceparent=") || !strings.Contains(body, " http://198.18.2.1:8081/artifacts/debian/initrd.gz?traceparent=") {
		t.Fatalf("script does not use the site's artifactstore:\n%s", body)
	}
}
