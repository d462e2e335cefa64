package ui

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

// dash is a dashboard on a real loopback HTTP server over an embedded etcd.
type dash struct {
	t    *testing.T
	st   *store.Store
	ui   *UI
	base string
	mu   sync.Mutex
	hops map[string][]*bootapiv1.Hop
}

func newDash(t *testing.T) *dash {
	t.Helper()
	st := storetest.New(t)
	d := &dash{t: t, st: st, hops: map[string][]*bootapiv1.Hop{}}
	sessions := store.NewCache(st, store.Prefix("sessions"), func() *bootapiv1.BootSession { return &bootapiv1.BootSession{} }, nil)
	jobs := store.NewCache(st, store.Prefix("jobs"), func() *bootapiv1.Job { return &bootapiv1.Job{} }, nil)
	machines := store.NewCache(st, store.Prefix("machines"), func() *bootapiv1.Machine { return &bootapiv1.Machine{} }, nil)
	a := auth.NewAuthenticator(st, nil)
	for name, run := range map[string]func(context.Context) error{"sessions": sessions.Run, "jobs": jobs.Run, "machines": machines.Run, "auth": a.Run} {
		testkit.Run(t, name, run)
	}
	d.ui = New(Config{
		Sessions: sessions, Jobs: jobs, Machines: machines, Auth: a,
		TraceURL: "http://jaeger.test:16686/trace/{trace_id}",
		Refresh:  20 * time.Millisecond,
		Session: func(_ context.Context, mac string) (*bootapiv1.BootSession, bool) {
			it, ok := sessions.Get(mac)
			if !ok {
				return nil, false
			}
			s := proto.Clone(it.Value).(*bootapiv1.BootSession)
			d.mu.Lock()
			s.Hops = d.hops[mac]
			d.mu.Unlock()
			return s, true
		},
	})
	testkit.Run(t, "ui", d.ui.Run)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &fasthttp.Server{Handler: func(rc *fasthttp.RequestCtx) { d.ui.Handle(ctx, rc) }}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { cancel(); srv.Shutdown(); <-done })
	d.base = "http://" + lis.Addr().String()
	return d
}

func (d *dash) put(key string, m proto.Message) {
	d.t.Helper()
	if _, err := d.st.Put(context.Background(), key, m); err != nil {
		d.t.Fatal(err)
	}
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// get fetches a page with the cookie tok (none when empty) and no redirects.
func (d *dash) get(path, tok string) (*http.Response, string) {
	d.t.Helper()
	req, _ := http.NewRequest("GET", d.base+path, nil)
	if tok != "" {
		req.AddCookie(&http.Cookie{Name: cookieName, Value: tok})
	}
	return d.do(req)
}

func (d *dash) do(req *http.Request) (*http.Response, string) {
	d.t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (d *dash) login(tok string, header map[string]string) *http.Response {
	d.t.Helper()
	req, _ := http.NewRequest("POST", d.base+"/ui/login", strings.NewReader(url.Values{"token": {tok}, "next": {"/ui/jobs"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, _ := d.do(req)
	return resp
}

func TestSignIn(t *testing.T) {
	d := newDash(t)
	viewer := testkit.Token(t, d.st, auth.RoleViewer)
	service := testkit.Token(t, d.st, auth.RoleService)

	// Not signed in: pages send to the login page, the event stream says 401.
	resp, _ := d.get("/ui/boots?site=a", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next=%2Fui%2Fboots%3Fsite%3Da" {
		t.Fatalf("anonymous /ui/boots: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := d.get("/ui/events", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous /ui/events: %d", resp.StatusCode)
	}
	if resp, body := d.get("/ui/login", ""); resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}

	cases := map[string]struct {
		tok    string
		header map[string]string
		code   int
	}{
		"viewer":             {viewer, nil, http.StatusSeeOther},
		"same origin":        {viewer, map[string]string{"Sec-Fetch-Site": "same-origin"}, http.StatusSeeOther},
		"wrong secret":       {viewer[:len(viewer)-2] + "xx", nil, http.StatusUnauthorized},
		"not a token":        {"hello", nil, http.StatusUnauthorized},
		"empty":              {"", nil, http.StatusBadRequest},
		"service role":       {service, nil, http.StatusUnauthorized},
		"cross-site":         {viewer, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		"other origin":       {viewer, map[string]string{"Origin": "http://evil.test"}, http.StatusForbidden},
		"malformed origin":   {viewer, map[string]string{"Origin": "::"}, http.StatusForbidden},
		"same-site subframe": {viewer, map[string]string{"Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		// What a browser sends when the page's referrer policy hides its origin.
		"null origin, same origin":   {viewer, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "null"}, http.StatusSeeOther},
		"null origin, no fetch site": {viewer, map[string]string{"Origin": "null"}, http.StatusForbidden},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			resp := d.login(c.tok, c.header)
			if resp.StatusCode != c.code {
				t.Fatalf("POST /ui/login: %d, want %d", resp.StatusCode, c.code)
			}
			cookies := resp.Cookies()
			if c.code != http.StatusSeeOther {
				if len(cookies) != 0 {
					t.Fatalf("refused sign-in set cookies %v", cookies)
				}
				return
			}
			if resp.Header.Get("Location") != "/ui/jobs" {
				t.Errorf("redirect to %q", resp.Header.Get("Location"))
			}
			if len(cookies) != 1 {
				t.Fatalf("cookies %v", cookies)
			}
			ck := cookies[0]
			if ck.Name != cookieName || ck.Value != c.tok || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui" || ck.MaxAge <= 0 {
				t.Errorf("cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/ui, Max-Age", ck)
			}
		})
	}

	// The cookie opens the pages; a bearer header does too.
	if resp, body := d.get("/ui/boots", viewer); resp.StatusCode != 200 || !strings.Contains(body, "viewer") {
		t.Fatalf("signed-in /ui/boots: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("GET", d.base+"/ui/jobs", nil)
	req.Header.Set("Authorization", "Bearer "+viewer)
	if resp, _ := d.do(req); resp.StatusCode != 200 {
		t.Fatalf("bearer /ui/jobs: %d", resp.StatusCode)
	}
	req.Header.Set("Authorization", "Bearer "+service)
	if resp, _ := d.do(req); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("service bearer /ui/jobs: %d", resp.StatusCode)
	}
	// Nothing changes state over GET: sign-out is a POST.
	if resp, _ := d.get("/ui/logout", viewer); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /ui/logout: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", d.base+"/ui/logout", nil)
	resp, _ = d.do(req)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Expires.Before(time.Now()) || resp.Cookies()[0].Value != "" {
		t.Fatalf("POST /ui/logout: %d %v", resp.StatusCode, resp.Cookies())
	}
	req, _ = http.NewRequest("POST", d.base+"/ui/boots", nil)
	if resp, _ := d.do(req); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /ui/boots: %d", resp.StatusCode)
	}
	// A revoked token stops working at once.
	id, _, _ := auth.ParseToken(viewer)
	if err := auth.RevokeToken(context.Background(), d.st, id); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "revoked token refused", func() bool {
		resp, _ := d.get("/ui/boots", viewer)
		return resp.StatusCode == http.StatusSeeOther
	})
	// Every answer forbids inline scripts and framing.
	resp, _ = d.get("/ui/login", "")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if !strings.Contains(resp.Header.Get("Cache-Control"), "no-store") {
		t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/jobs?state=failed": "/ui/jobs?state=failed",
		"//evil.test/ui/":       "/ui/boots",
		"/ui//evil.test":        "/ui/boots",
		"https://evil.test":     "/ui/boots",
		"/ui/\\evil":            "/ui/boots",
		"":                      "/ui/boots",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

// fleet writes machines, sessions and jobs of two sites.
func (d *dash) fleet(now time.Time) {
	d.put(store.Key("machines", "52:54:00:00:00:01"), &bootapiv1.Machine{Mac: "52:54:00:00:00:01", Site: "a", Hostname: "good-1", Labels: map[string]string{"rack": "r1"}, LastSeenTime: ts(now)})
	d.put(store.Key("machines", "52:54:00:00:00:02"), &bootapiv1.Machine{Mac: "52:54:00:00:00:02", Site: "a", Hostname: "bad-2", LastSeenTime: ts(now.Add(-time.Minute))})
	d.put(store.Key("machines", "52:54:00:00:00:03"), &bootapiv1.Machine{Mac: "52:54:00:00:00:03", Site: "b", Hostname: "other-3", LastSeenTime: ts(now.Add(-2 * time.Minute))})
	d.put(store.Key("sessions", "52:54:00:00:00:01"), &bootapiv1.BootSession{Mac: "52:54:00:00:00:01", Site: "a", State: bootapiv1.SessionState_SESSION_STATE_SUCCEEDED,
		TraceId: "0af7651916cd43dd8448eb211c80319c", StartTime: ts(now.Add(-time.Minute)), UpdateTime: ts(now), JobId: "job-good"})
	d.put(store.Key("sessions", "52:54:00:00:00:02"), &bootapiv1.BootSession{Mac: "52:54:00:00:00:02", Site: "a", State: bootapiv1.SessionState_SESSION_STATE_FAILED,
		TraceId: "1af7651916cd43dd8448eb211c80319c", StartTime: ts(now.Add(-2 * time.Minute)), UpdateTime: ts(now.Add(-time.Minute)), JobId: "job-bad",
		FailedHop: "artifact", Message: "initrd: 404",
		Diagnosis: &bootapiv1.Diagnosis{Class: bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND, Hop: "artifact", Service: "artifactstore",
			Cause: "the initrd e2e-initrd answered 404", NextStep: "upload it: bootctl artifacts upload"}})
	d.put(store.Key("sessions", "52:54:00:00:00:03"), &bootapiv1.BootSession{Mac: "52:54:00:00:00:03", Site: "b", State: bootapiv1.SessionState_SESSION_STATE_ACTIVE,
		TraceId: "2af7651916cd43dd8448eb211c80319c", StartTime: ts(now), UpdateTime: ts(now)})
	d.put(store.Key("jobs", "job-good"), &bootapiv1.Job{Id: "job-good", Mac: "52:54:00:00:00:01", Profile: "debian", State: bootapiv1.JobState_JOB_STATE_SUCCEEDED, UpdateTime: ts(now)})
	d.put(store.Key("jobs", "job-bad"), &bootapiv1.Job{Id: "job-bad", Mac: "52:54:00:00:00:02", Profile: "debian", State: bootapiv1.JobState_JOB_STATE_FAILED, Message: "initrd: 404", UpdateTime: ts(now.Add(-time.Minute))})
}

func TestPages(t *testing.T) {
	d := newDash(t)
	admin := testkit.AdminToken(t, d.st)
	siteB := testkit.Token(t, d.st, auth.RoleViewer, "b")
	now := time.Now()
	d.fleet(now)
	d.mu.Lock()
	d.hops["52:54:00:00:00:02"] = []*bootapiv1.Hop{
		{Name: "dhcp.discover", Service: "dhcpd", StartTime: ts(now.Add(-2 * time.Minute)), Duration: durationpb.New(3 * time.Millisecond), Detail: "offer 198.18.0.10"},
		{Name: "artifact", Service: "artifactstore", StartTime: ts(now.Add(-90 * time.Second)), Duration: durationpb.New(2 * time.Millisecond), Failed: true, Detail: "initrd: 404", Bytes: 0},
		{Name: "script", Service: "bootapi", StartTime: ts(now.Add(-100 * time.Second)), Duration: durationpb.New(time.Millisecond), Bytes: 1234, Repeats: 2, LastRepeatTime: ts(now.Add(-99 * time.Second))},
	}
	d.mu.Unlock()
	testkit.Eventually(t, "the fleet in the snapshots", func() bool {
		d.ui.fresh(t.Context())
		return len(d.ui.sessSnap.Load().rows) == 3 && len(d.ui.jobSnap.Load().rows) == 2 && len(d.ui.machSnap.Load().rows) == 3
	})

	_, body := d.get("/ui/boots", admin)
	bad, good := strings.Index(body, `data-mac="52:54:00:00:00:02"`), strings.Index(body, `data-mac="52:54:00:00:00:01"`)
	active := strings.Index(body, `data-mac="52:54:00:00:00:03"`)
	if bad < 0 || good < 0 || active < 0 || !(bad < active && active < good) {
		t.Fatalf("boots: want failed, then active, then succeeded (%d %d %d):\n%s", bad, active, good, body)
	}
	for _, want := range []string{"ARTIFACT_NOT_FOUND", "the initrd e2e-initrd answered 404", "upload it: bootctl artifacts upload", `href="?site=a"`} {
		if !strings.Contains(body, want) {
			t.Errorf("boots page lacks %q", want)
		}
	}
	// Server-side filters.
	_, body = d.get("/ui/boots?state=failed", admin)
	if !strings.Contains(body, "52:54:00:00:00:02") || strings.Contains(body, `data-mac="52:54:00:00:00:01"`) {
		t.Errorf("state=failed:\n%s", body)
	}
	_, body = d.get("/ui/boots?site=b", admin)
	if !strings.Contains(body, `data-mac="52:54:00:00:00:03"`) || strings.Contains(body, `data-mac="52:54:00:00:00:02"`) {
		t.Errorf("site=b:\n%s", body)
	}
	_, body = d.get("/ui/boots?n=1&page=2", admin)
	if !strings.Contains(body, `data-mac="52:54:00:00:00:03"`) || strings.Count(body, "data-mac=") != 1 || !strings.Contains(body, `href="?n=1&amp;page=3"`) || !strings.Contains(body, `href="?n=1"`) {
		t.Errorf("page 2 of 1 row:\n%s", body)
	}
	// A token limited to site b sees nothing of site a, in lists or by MAC.
	_, body = d.get("/ui/boots", siteB)
	if strings.Contains(body, "52:54:00:00:00:02") || !strings.Contains(body, "52:54:00:00:00:03") || strings.Contains(body, `href="?site=a"`) {
		t.Errorf("site-b viewer's boots:\n%s", body)
	}
	if resp, body := d.get("/ui/boots/52:54:00:00:00:02", siteB); resp.StatusCode != 404 || strings.Contains(body, "initrd") {
		t.Errorf("site-b viewer's view of a site-a boot: %d\n%s", resp.StatusCode, body)
	}
	_, body = d.get("/ui/jobs", siteB)
	if strings.Contains(body, "job-bad") {
		t.Errorf("site-b viewer's jobs:\n%s", body)
	}

	// One boot: its waterfall, its diagnosis, its trace link.
	resp, body := d.get("/ui/boots/52-54-00-00-00-02", admin)
	if resp.StatusCode != 200 {
		t.Fatalf("boot page: %d", resp.StatusCode)
	}
	for _, want := range []string{
		`href="http://jaeger.test:16686/trace/1af7651916cd43dd8448eb211c80319c"`, "Diagnosis: ARTIFACT_NOT_FOUND",
		"dhcp.discover", "offer 198.18.0.10", "artifactstore", "1.2 KiB", "×3", `<td class="outcome">failed</td>`, "bad-2", "&#43;0s", "&#43;30s",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("boot page lacks %q", want)
		}
	}
	if resp, _ := d.get("/ui/boots/not-a-mac", admin); resp.StatusCode != 404 {
		t.Errorf("bad MAC: %d", resp.StatusCode)
	}

	_, body = d.get("/ui/jobs?state=failed", admin)
	if !strings.Contains(body, `data-job="job-bad"`) || strings.Contains(body, `data-job="job-good"`) || !strings.Contains(body, "initrd: 404") {
		t.Errorf("jobs?state=failed:\n%s", body)
	}
	_, body = d.get("/ui/machines?q=rack%3Dr1", admin)
	if !strings.Contains(body, "good-1") || strings.Contains(body, "bad-2") || !strings.Contains(body, "debian: succeeded") {
		t.Errorf("machines?q=rack=r1:\n%s", body)
	}
	// The live part alone, for the page's script.
	_, body = d.get("/ui/machines?partial=1", admin)
	if strings.Contains(body, "<html") || !strings.Contains(body, `id="machines"`) {
		t.Errorf("partial machines:\n%s", body)
	}
}

func TestEventsAfterChange(t *testing.T) {
	d := newDash(t)
	admin := testkit.AdminToken(t, d.st)
	req, _ := http.NewRequest("GET", d.base+"/ui/events", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: admin})
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Wait)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	// Only after the stream is open does a machine change.
	if l := <-lines; l != "retry: 2000" {
		t.Fatalf("first line %q", l)
	}
	d.put(store.Key("machines", "52:54:00:00:00:09"), &bootapiv1.Machine{Mac: "52:54:00:00:00:09", Site: "a"})
	for l := range lines {
		if l == "event: changed" {
			cancel()
			for range lines {
			}
			return
		}
	}
	t.Fatal("no changed event after a machine was written")
}

// TestRebuildOnlyWhenLooked: with no page open, the views take changes but
// are not sorted on the refresh ticks; a page asks for its snapshot to be
// brought up to date and shows the change.
func TestRebuildOnlyWhenLooked(t *testing.T) {
	d := newDash(t)
	admin := testkit.AdminToken(t, d.st)
	before, _ := d.ui.Version()
	d.put(store.Key("machines", "52:54:00:00:00:0a"), &bootapiv1.Machine{Mac: "52:54:00:00:00:0a", Site: "a", Hostname: "unseen-yet"})
	testkit.Eventually(t, "the machine in the cache", func() bool {
		_, ok := d.ui.cfg.Machines.Get("52:54:00:00:00:0a")
		return ok
	})
	// Many refresh ticks (20 ms) pass with nobody looking.
	for range 10 {
		_, changed := d.ui.Version()
		select {
		case <-changed:
			t.Fatal("the snapshots were rebuilt with no page open")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if v, _ := d.ui.Version(); v != before {
		t.Fatalf("version %d, want %d: rebuilt with no page open", v, before)
	}
	testkit.Eventually(t, "the machine on its page", func() bool {
		_, body := d.get("/ui/machines", admin)
		return strings.Contains(body, "unseen-yet")
	})
	if v, _ := d.ui.Version(); v == before {
		t.Fatal("a page was served without its snapshot rebuilt")
	}
}

// TestViewsFollowOnlyWhileLooked: the views follow the caches from the first
// page on, stop (dropping their records) once nobody looked for idleTicks
// refresh ticks, and start again, up to date, at the next page.
func TestViewsFollowOnlyWhileLooked(t *testing.T) {
	d := newDash(t)
	admin := testkit.AdminToken(t, d.st)
	if d.ui.following.Load() {
		t.Fatal("the views follow the caches before any page was asked for")
	}
	d.get("/ui/machines", admin)
	if !d.ui.following.Load() {
		t.Fatal("the views do not follow the caches after a page")
	}
	testkit.Eventually(t, "the views to stop following", func() bool { return !d.ui.following.Load() })
	d.put(store.Key("machines", "52:54:00:00:00:0b"), &bootapiv1.Machine{Mac: "52:54:00:00:00:0b", Site: "a", Hostname: "after-idle"})
	testkit.Eventually(t, "the machine on its page after the idle", func() bool {
		_, body := d.get("/ui/machines", admin)
		return strings.Contains(body, "after-idle")
	})
}
