package ui

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"golang.org/x/net/html"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fuzzUI is the dashboard the fuzz target renders with, made once: its
// templates' escaping is done at their first execution. fuzzSession is what
// its Session returns.
var (
	fuzzUI      *UI
	fuzzSession *bootapiv1.BootSession
)

// fleetOf fills a dashboard with records whose every user-written field
// (hostnames, labels, messages, details, site and profile names) is s: its
// caches are never run, its snapshots are built from records put in by hand.
func fleetOf(s string) (*UI, auth.Identity) {
	now := time.Unix(1_800_000_000, 0)
	mac := "52:54:00:00:00:01"
	sess := &bootapiv1.BootSession{Mac: mac, Site: s, State: bootapiv1.SessionState_SESSION_STATE_FAILED, TraceId: "0af7651916cd43dd8448eb211c80319c",
		Ip: s, JobId: s, FailedHop: s, Message: s, StartTime: ts(now), UpdateTime: ts(now),
		Diagnosis: &bootapiv1.Diagnosis{Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER, Hop: s, Service: s, Cause: s, NextStep: s}}
	hops := []*bootapiv1.Hop{
		{Name: s, Service: s, StartTime: ts(now), Duration: durationpb.New(time.Millisecond), Bytes: 10, Detail: s, Attributes: map[string]string{s: s}},
		{Name: s, Service: s, StartTime: ts(now.Add(time.Second)), Duration: durationpb.New(time.Millisecond), Failed: true, Detail: s, Repeats: 2, LastRepeatTime: ts(now.Add(2 * time.Second))},
	}
	machine := &bootapiv1.Machine{Mac: mac, Site: s, Hostname: s, Labels: map[string]string{"k": s, s: "v"}, Ipv4Address: s, LastSeenTime: ts(now)}
	job := &bootapiv1.Job{Id: s, Mac: mac, Profile: s, Message: s, State: bootapiv1.JobState_JOB_STATE_FAILED, UpdateTime: ts(now)}
	if fuzzUI == nil {
		sessions := store.NewCache(nil, "", func() *bootapiv1.BootSession { return &bootapiv1.BootSession{} }, nil)
		jobs := store.NewCache(nil, "", func() *bootapiv1.Job { return &bootapiv1.Job{} }, nil)
		machines := store.NewCache(nil, "", func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, nil)
		fuzzUI = New(Config{Sessions: sessions, Jobs: jobs, Machines: machines, TraceURL: "http://jaeger.test/trace/{trace_id}",
			Now: func() time.Time { return now.Add(time.Minute) },
			Session: func(context.Context, string) (*bootapiv1.BootSession, bool) {
				return proto.Clone(fuzzSession).(*bootapiv1.BootSession), true
			}})
	}
	u := fuzzUI
	fuzzSession = proto.Clone(sess).(*bootapiv1.BootSession)
	fuzzSession.Hops = hops
	// As a cache that replaced every record would: the views take the change.
	u.sessions.reset([]store.Item[*bootapiv1.BootSession]{{Name: mac, Value: sess}})
	u.jobs.reset([]store.Item[*bootapiv1.Job]{{Name: s, Value: job}})
	u.machines.reset([]store.Item[*bootapiv1.Machine]{{Name: mac, Value: machine}})
	u.sessSnap.Store(u.sessions.build())
	u.jobSnap.Store(u.jobs.build())
	u.machSnap.Store(u.machines.build())
	return u, auth.Identity{Name: s, Kind: auth.KindToken, Role: auth.RoleViewer}
}

// renderAll renders every page of the dashboard, whole and live parts.
func renderAll(t testing.TB, u *UI, id auth.Identity, s string) map[string]string {
	f := filter{Site: s, Q: "", N: DefaultPageSize}
	boot, _ := u.bootData(context.Background(), id, "52:54:00:00:00:01")
	data := map[string]any{
		"boots":    u.bootsData(id, filter{N: DefaultPageSize}),
		"jobs":     u.jobsData(id, filter{N: DefaultPageSize}),
		"machines": u.machinesData(id, f),
		"boot":     boot,
		"login":    loginData{common: common{Title: "Sign in"}, Error: s, Next: "/ui/boots"},
	}
	out := map[string]string{}
	for name, d := range data {
		for _, tmpl := range []string{name, name + "-live"} {
			if u.pages.Lookup(tmpl) == nil {
				continue
			}
			var b bytes.Buffer
			if err := u.pages.ExecuteTemplate(&b, tmpl, d); err != nil {
				t.Fatalf("%s: %v", tmpl, err)
			}
			out[tmpl] = b.String()
		}
	}
	return out
}

// shape is a page's element structure: each tag with its attribute names.
func shape(page string) []string {
	var out []string
	z := html.NewTokenizer(strings.NewReader(page))
	for {
		switch z.Next() {
		case html.ErrorToken:
			return out
		case html.StartTagToken, html.SelfClosingTagToken:
			name, more := z.TagName()
			var attrs []string
			for more {
				var k []byte
				k, _, more = z.TagAttr()
				attrs = append(attrs, string(k))
			}
			slices.Sort(attrs)
			out = append(out, string(name)+"["+strings.Join(attrs, " ")+"]")
		case html.EndTagToken:
			name, _ := z.TagName()
			out = append(out, "/"+string(name))
		}
	}
}

// FuzzRender renders every page with user data s in every field a user can
// write: the pages must have exactly the elements and attributes they have
// with a harmless value (no markup, script or attribute of s's making), and
// the trace link must stay the configured one.
func FuzzRender(f *testing.F) {
	for _, s := range []string{
		"<script>alert(1)</script>", `"><img src=x onerror=alert(1)>`, "javascript:alert(1)", "' onmouseover='x",
		"</textarea><svg onload=alert(1)>", "{{.}}", "a\x00b", "\xff\xfe", "<!--", "]]>", "&amp;&lt;", "x\" y=\"z",
	} {
		f.Add(s)
	}
	u0, id0 := fleetOf("x")
	want := map[string][]string{}
	for name, page := range renderAll(f, u0, id0, "x") {
		want[name] = shape(page)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" || s == "k" {
			return // the benign shape has one more label, or text where s is empty
		}
		u, id := fleetOf(s)
		for name, page := range renderAll(t, u, id, s) {
			if got := shape(page); !slices.Equal(got, want[name]) {
				t.Fatalf("%s with %q: elements\n%v\nwant\n%v", name, s, got, want[name])
			}
			if name == "boot" && !strings.Contains(page, `href="http://jaeger.test/trace/0af7651916cd43dd8448eb211c80319c"`) {
				t.Fatalf("boot page with %q lost its trace link", s)
			}
		}
	})
}
