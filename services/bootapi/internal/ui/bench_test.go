package ui

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/valyala/fasthttp"
)

// BenchmarkPages renders pages of a fleet of 10,000 machines, each with a
// session (one in 97 failed, with a diagnosis) and a job, as a signed-in
// request gets them: the filter's scan of the shared snapshot and the
// template. The figures are in docs/bootapi.md#dashboard.
//
//	go test -run '^$' -bench Pages -benchmem ./services/bootapi/internal/ui/
func BenchmarkPages(b *testing.B) {
	const n = 10000
	now := time.Now()
	sessions := store.NewCache(nil, "", func() *bootapiv1.BootSession { return &bootapiv1.BootSession{} }, nil)
	jobs := store.NewCache(nil, "", func() *bootapiv1.Job { return &bootapiv1.Job{} }, nil)
	machines := store.NewCache(nil, "", func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, nil)
	u := New(Config{Sessions: sessions, Jobs: jobs, Machines: machines, Session: func(context.Context, string) (*bootapiv1.BootSession, bool) { return nil, false }})
	for i := range n {
		mac := fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", i>>24&0xff, i>>16&0xff, i>>8&0xff, i&0xff)
		site := fmt.Sprintf("site-%d", i%10)
		s := &bootapiv1.BootSession{Mac: mac, Site: site, State: bootapiv1.SessionState_SESSION_STATE_SUCCEEDED,
			UpdateTime: ts(now.Add(-time.Duration(i) * time.Second)), JobId: fmt.Sprintf("job-%05d", i), Ip: fmt.Sprintf("198.18.%d.%d", i/250, i%250+1)}
		if i%97 == 0 {
			s.State, s.FailedHop = bootapiv1.SessionState_SESSION_STATE_FAILED, "artifact"
			s.Diagnosis = &bootapiv1.Diagnosis{Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND, Cause: "the initrd answered 404", NextStep: "upload it"}
		}
		u.sessions.items[mac] = s
		u.machines.items[mac] = &bootapiv1.Machine{Mac: mac, Site: site, Hostname: fmt.Sprintf("node-%05d", i), Labels: map[string]string{"rack": fmt.Sprint(i % 40)}, LastSeenTime: s.UpdateTime}
		u.jobs.items[s.JobId] = &bootapiv1.Job{Id: s.JobId, Mac: mac, Profile: "debian", State: bootapiv1.JobState_JOB_STATE_SUCCEEDED, UpdateTime: s.UpdateTime}
	}
	u.sessSnap.Store(u.sessions.build())
	u.jobSnap.Store(u.jobs.build())
	u.machSnap.Store(u.machines.build())
	id := auth.Identity{Name: "bench", Kind: auth.KindToken, Role: auth.RoleViewer}
	for _, path := range []string{
		"/ui/boots", "/ui/boots?state=failed&site=site-3", "/ui/boots?q=52:54:00:00:1&page=2",
		"/ui/jobs?page=100", "/ui/machines?page=150", "/ui/machines?q=node-0999",
	} {
		b.Run(path, func(b *testing.B) {
			var rc fasthttp.RequestCtx
			for b.Loop() {
				rc.Request.Reset()
				rc.Response.Reset()
				rc.Request.SetRequestURI(path)
				u.page(context.Background(), &rc, string(rc.Path()), id)
				if rc.Response.StatusCode() != 200 {
					b.Fatalf("%s: %d", path, rc.Response.StatusCode())
				}
			}
		})
	}
}
