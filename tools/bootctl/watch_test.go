package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// syncBuffer is a buffer one goroutine writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// watch runs bootctl jobs watch args in the background; wait returns its exit
// status once it ends.
func (e *testEnv) watch(ctx context.Context, args ...string) (out, errb *syncBuffer, wait func() int) {
	out, errb = &syncBuffer{}, &syncBuffer{}
	global := []string{"--bootapi-addr", e.bootapi.GRPCAddr().String(), "--token", e.token}
	done := make(chan int, 1)
	go func() { done <- run(ctx, append(global, append([]string{"jobs", "watch"}, args...)...), out, errb) }()
	return out, errb, func() int { return <-done }
}

// waitFor waits until s holds want.
func waitFor(t *testing.T, what string, s *syncBuffer, want string) {
	t.Helper()
	if !testkit.Poll(testkit.Wait, func() bool { return strings.Contains(s.String(), want) }) {
		t.Fatalf("%s: no %q in:\n%s", what, want, s.String())
	}
}

// report posts an installer's report, as the installer of a dispatched job does:
// the first answer exchanges *token (the cmdline's) for the one to send next.
func (e *testEnv) report(job string, token *string, form url.Values) {
	e.t.Helper()
	form.Set("job", job)
	form.Set("token", *token)
	resp, err := http.PostForm("http://"+e.bootapi.HTTPAddr().String()+"/ipxe/v1/report", form)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		e.t.Fatalf("report %v: %s", form, resp.Status)
	}
	if m := regexp.MustCompile(`(?m)^token (\S+)$`).FindSubmatch(b); m != nil {
		*token = string(m[1])
	}
}

var tokenRE, jobRE = regexp.MustCompile(`bootchain\.token=(\S+)`), regexp.MustCompile(`bootchain\.job=(\S+)`)

// TestJobsWatch follows one job from pending to succeeded, and checks that the
// progress of the last running report stays shown on success.
func TestJobsWatch(t *testing.T) {
	e := startEnv(t)
	const mac = "52:54:00:12:34:56"
	e.mustRun("profiles", "create", "p", "--kernel", "https://example.org/linux")
	e.mustRun("machines", "register", mac)
	e.mustRun("jobs", "create", "--mac", mac, "--profile", "p")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	out, _, wait := e.watch(ctx, "--mac", mac)
	waitFor(t, "watch", out, "pending")
	script := e.bootScript(mac)
	m, j := tokenRE.FindStringSubmatch(script), jobRE.FindStringSubmatch(script)
	if m == nil || j == nil {
		t.Fatalf("no job and token in the job's script:\n%s", script)
	}
	id := j[1]
	token := m[1]
	e.report(id, &token, url.Values{"state": {"running"}, "progress": {"40"}, "message": {"partitioning"}})
	e.report(id, &token, url.Values{"state": {"running"}, "progress": {"100"}, "message": {"installed"}})
	e.report(id, &token, url.Values{"state": {"succeeded"}, "message": {"done"}})
	if code := wait(); code != 0 {
		t.Fatalf("watch exit %d:\n%s", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[0], "PROGRESS") {
		t.Errorf("no header: %q", lines[0])
	}
	var states []string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 6 || f[1] != id {
			t.Fatalf("line %q: not of job %s", l, id)
		}
		if len(states) == 0 || states[len(states)-1] != f[4]+" "+f[5] {
			states = append(states, f[4]+" "+f[5])
		}
	}
	want := []string{"pending 0%", "dispatched 0%", "running 40%", "running 100%", "succeeded 100%"}
	if strings.Join(states, ", ") != strings.Join(want, ", ") {
		t.Errorf("states %q, want %q\n%s", states, want, out.String())
	}

	// jobs get shows the kept progress too, and the reports.
	golden(t, "commands/jobs_get_succeeded", e.mustRun("jobs", "get", id))

	// Watching a finished job prints it once and ends.
	out, _, wait = e.watch(ctx, id)
	if code := wait(); code != 0 || !strings.Contains(out.String(), "succeeded") {
		t.Errorf("watch of a finished job: exit %d\n%s", code, out.String())
	}
}

// TestJobsWatchCanceled: a job that ends other than succeeded ends the watch
// with status 1, saying how it ended.
func TestJobsWatchCanceled(t *testing.T) {
	e := startEnv(t)
	const mac = "52:54:00:12:34:56"
	e.mustRun("profiles", "create", "p", "--kernel", "https://example.org/linux")
	e.mustRun("machines", "register", mac)
	created := e.mustRun("-o", "json", "jobs", "create", "--mac", mac, "--profile", "p")
	id := regexp.MustCompile(`"id":\s*"([0-9a-f]+)"`).FindStringSubmatch(created)[1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, errb, wait := e.watch(ctx, id)
	waitFor(t, "watch", out, "pending")
	e.mustRun("jobs", "cancel", id)
	if code := wait(); code != 1 || !strings.Contains(errb.String(), "job "+id+" canceled") {
		t.Errorf("watch of a canceled job: exit %d, stderr %q", code, errb.String())
	}
}

// TestJobsWatchFleet follows every job until interrupted.
func TestJobsWatchFleet(t *testing.T) {
	e := startEnv(t)
	e.mustRun("profiles", "create", "p", "--kernel", "https://example.org/linux")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, errb, wait := e.watch(ctx)
	waitFor(t, "fleet watch", errb, "Ctrl-C")
	for _, mac := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02"} {
		e.mustRun("machines", "register", mac)
		e.mustRun("jobs", "create", "--mac", mac, "--profile", "p")
		waitFor(t, "fleet watch", out, mac)
	}
	cancel()
	if code := wait(); code != 0 {
		t.Errorf("interrupted fleet watch: exit %d", code)
	}
	if !strings.HasPrefix(out.String(), "TIME") {
		t.Errorf("no header:\n%s", out.String())
	}
}

func TestJobProgress(t *testing.T) {
	running := func(p int32) *bootapiv1.JobReport {
		return &bootapiv1.JobReport{State: bootapiv1.JobState_JOB_STATE_RUNNING, Progress: p}
	}
	for name, tc := range map[string]struct {
		job  *bootapiv1.Job
		want int32
	}{
		"running":             {&bootapiv1.Job{State: bootapiv1.JobState_JOB_STATE_RUNNING, Progress: 30}, 30},
		"succeeded zeroed":    {&bootapiv1.Job{State: bootapiv1.JobState_JOB_STATE_SUCCEEDED, Reports: []*bootapiv1.JobReport{running(50), running(90), {State: bootapiv1.JobState_JOB_STATE_SUCCEEDED}}}, 90},
		"succeeded with own":  {&bootapiv1.Job{State: bootapiv1.JobState_JOB_STATE_SUCCEEDED, Progress: 100, Reports: []*bootapiv1.JobReport{running(50)}}, 100},
		"running back to 0":   {&bootapiv1.Job{State: bootapiv1.JobState_JOB_STATE_RUNNING, Reports: []*bootapiv1.JobReport{running(50), running(0)}}, 0},
		"failed, no progress": {&bootapiv1.Job{State: bootapiv1.JobState_JOB_STATE_FAILED}, 0},
	} {
		if got := jobProgress(tc.job); got != tc.want {
			t.Errorf("%s: %d%%, want %d%%", name, got, tc.want)
		}
	}
}
