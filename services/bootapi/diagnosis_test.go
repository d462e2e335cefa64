package bootapi_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/diagnose"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/session"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var scriptTraceparentRE = regexp.MustCompile(`traceparent=(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})`)

// artifactRecorder records hops as artifactstore does.
func artifactRecorder(t *testing.T, st *store.Store) *session.Recorder {
	t.Helper()
	rec, err := session.New(session.Config{Store: st, Service: "artifactstore"})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "artifactstore recorder", rec.Run)
	if err := rec.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rec
}

// diagnoses sums bootchain_bootapi_boot_diagnoses_total over hs' replicas.
func diagnoses(t *testing.T, hs ...*harness) float64 {
	t.Helper()
	var n float64
	for _, h := range hs {
		mfs, err := h.srv.Metrics().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "bootchain_bootapi_boot_diagnoses_total" {
				for _, m := range mf.GetMetric() {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// A kernel that answers 404 fails the dispatched job at once with the
// diagnosis as its message, not when its hour runs out; of two replicas, one
// acts.
func TestDiagnosisFailsJobAtOnce(t *testing.T) {
	e := storetest.Start(t)
	st := e.Client(t)
	a, b := start(t, st), start(t, e.Client(t))
	a.seed(t, mac)
	ctx := context.Background()
	jr, err := a.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	id := jr.GetJob().GetId()
	_, body := a.get(t, "/ipxe/v1/config?mac="+mac)
	m := scriptTraceparentRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no traceparent in the job's script:\n%s", body)
	}
	if err := a.srv.FlushSessions(ctx); err != nil {
		t.Fatal(err)
	}

	// What artifactstore records for a kernel that is not there.
	rec := artifactRecorder(t, st)
	var sess *session.Session
	testkit.Eventually(t, "the session at artifactstore", func() bool {
		s, ok := rec.FromTraceparent(m[1], "")
		sess = s
		return ok && s.MAC == mac
	})
	_, hop := sess.StartHop(ctx, "artifact")
	hop.SetDetail("debian/linux 404 0B")
	hop.SetAttr(diagnose.AttrArtifactFailure, diagnose.FailureNotFound)
	hop.Fail(nil)
	hop.End()
	sess.Finish(bootapiv1.SessionState_SESSION_STATE_FAILED, "artifact", "debian/linux answered 404")
	if err := rec.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	testkit.Eventually(t, "job failed with the diagnosis", func() bool {
		j := getJob(t, a, id)
		return j.GetState() == bootapiv1.JobState_JOB_STATE_FAILED && strings.HasPrefix(j.GetMessage(), "artifact_not_found at artifact: artifact debian/linux answered 404")
	})
	// Replica b reads the diagnosis a recorded (or the one b recorded).
	var r *bootapiv1.DiagnoseMachineResponse
	testkit.Eventually(t, "the diagnosis at replica b", func() bool {
		var err error
		r, err = b.sessions.DiagnoseMachine(ctx, &bootapiv1.DiagnoseMachineRequest{Mac: mac})
		return err == nil && r.GetSession().GetDiagnosis() != nil
	})
	if d := r.GetDiagnosis(); d.GetClass() != bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND || d.GetService() != "artifactstore" || d.GetNextStep() == "" {
		t.Errorf("diagnosis %v", d)
	}
	if s := r.GetSession(); s.GetState() != bootapiv1.SessionState_SESSION_STATE_FAILED || s.GetDiagnosis() == nil || len(s.GetHops()) < 2 {
		t.Errorf("session %v", s)
	}
	// Both replicas saw the failed session; exactly one recorded the diagnosis.
	testkit.Eventually(t, "one diagnosis counted", func() bool { return diagnoses(t, a, b) == 1 })
	if n := diagnoses(t, a, b); n != 1 {
		t.Errorf("diagnoses counted %v times, want once", n)
	}
}

// A boot that stops after its script (no kernel download) is diagnosed
// KERNEL_NOT_FETCHED once its stage's timeout has passed, and its job fails.
func TestDiagnosisStall(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st, func(c *bootapi.Config) {
		c.StallAfter = time.Hour
		c.StallAfterStage.Script = 300 * time.Millisecond
	})
	h.seed(t, mac)
	ctx := context.Background()
	jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	if _, body := h.get(t, "/ipxe/v1/config?mac="+mac); !strings.Contains(body, "kernel ") {
		t.Fatalf("no kernel in the job's script:\n%s", body)
	}
	testkit.Eventually(t, "job failed as KERNEL_NOT_FETCHED", func() bool {
		j := getJob(t, h, jr.GetJob().GetId())
		return j.GetState() == bootapiv1.JobState_JOB_STATE_FAILED && strings.HasPrefix(j.GetMessage(), "kernel_not_fetched at script:")
	})
	var s *bootapiv1.GetSessionResponse
	testkit.Eventually(t, "the diagnosis on the session", func() bool {
		var err error
		s, err = h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		return err == nil && s.GetSession().GetDiagnosis() != nil
	})
	if got := s.GetSession(); got.GetState() != bootapiv1.SessionState_SESSION_STATE_STALLED || got.GetFailedHop() != "script" ||
		got.GetDiagnosis().GetClass() != bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_KERNEL_NOT_FETCHED {
		t.Errorf("session %v", got)
	}
	if _, err := h.sessions.DiagnoseMachine(ctx, &bootapiv1.DiagnoseMachineRequest{Mac: "nope"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad MAC: %v", err)
	}
}

// Without bootchain's dhcpd no DISCOVER marks a new boot attempt: a new
// dispatch must, or two jobs dispatched to one machine within minutes share a
// trace and their hops mix.
func TestNewDispatchStartsNewAttempt(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	ctx := context.Background()
	traces := map[string]string{} // job -> trace ID
	for i := 0; i < 2; i++ {
		jr, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"})
		if err != nil {
			t.Fatal(err)
		}
		id := jr.GetJob().GetId()
		_, body := h.get(t, "/ipxe/v1/config?mac="+mac)
		inst := newInstaller(t, mac, body)
		// The menu fetched again within the same attempt stays in its trace.
		if i == 0 {
			h.get(t, "/ipxe/v1/config?mac="+mac)
		}
		if code, _ := inst.report(t, map[string][]string{"state": {"succeeded"}}); code != 200 {
			t.Fatalf("report: %d", code)
		}
		j := getJob(t, h, id)
		traces[id] = strings.Split(j.GetTraceparent(), "-")[1]
		testkit.Eventually(t, "session of job "+id, func() bool {
			s, err := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
			return err == nil && s.GetSession().GetJobId() == id && s.GetSession().GetTraceId() == traces[id]
		})
		s, _ := h.sessions.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		for _, hop := range s.GetSession().GetHops() {
			if hop.GetName() == "callback" && !strings.HasPrefix(hop.GetDetail(), "succeeded") {
				t.Errorf("job %s's session has another attempt's hop %v", id, hop)
			}
		}
	}
	if len(traces) != 2 {
		t.Fatalf("traces %v", traces)
	}
	var ids []string
	for id := range traces {
		ids = append(ids, id)
	}
	if traces[ids[0]] == traces[ids[1]] {
		t.Errorf("two dispatches share trace %s", traces[ids[0]])
	}
}
