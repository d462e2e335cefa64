//go:build linux

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
	"google.golang.org/protobuf/encoding/prototext"
)

// TestDashboardInBrowser drives bootapi's dashboard in a real browser (Debian's
// chromium, headless, through chromedp) against `bootchain up` with two real
// boots: machines in namespaces of their own on the lab's boot network take a
// DHCP lease from dhcpd, fetch iPXE over TFTP from tftpd, their script from
// bootapi and kernel and initrd from artifactstore, and report back. One
// succeeds; the other's initrd is gone (404), so its session fails at hop
// `artifact`. The test signs in with a viewer's token and checks what each page
// shows; it saves a screenshot of each to the directory it logs.
func TestDashboardInBrowser(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	if testing.Short() {
		t.Skip("starts the whole stack and a browser; skipped with -short")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (scripts/install-deps.sh)")
	}
	shots := artifactsDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	tl := buildTools(t)
	l := lab.NewT(t, lab.Config{IPv6: true, KeepDir: os.Getenv("BOOTCHAIN_E2E_KEEP") != ""})
	const traceURL = "http://jaeger.test:16686/trace/{trace_id}"
	st := startStack(t, ctx, l, StackConfig{
		Tools: tl, Dir: filepath.Join(l.Dir(), "bootchain"), DHCP: true,
		Args: []string{
			"--dhcpd-interface", l.Bridge(), "--dhcpd-subnet", "198.18.0.0/24", "--dhcpd-pool", "198.18.0.100-198.18.0.200",
			"--bootapi-trace-url", traceURL,
			// The failed download ends its session when the stall sweep sees
			// nothing follow it.
			"--bootapi-stall-after", "20s",
		},
	})
	cc, err := st.Conn("bootapi")
	if err != nil {
		t.Fatal(err)
	}
	sessions := bootapiv1.NewSessionServiceClient(cc)

	const goodMAC, badMAC = "52:54:00:bc:da:01", "52:54:00:bc:da:02"
	dir := t.TempDir()
	kernel, initrd := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz")
	for _, f := range []string{kernel, initrd} {
		if err := os.WriteFile(f, []byte(strings.Repeat("not really "+filepath.Base(f)+"\n", 200)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rd := &Initrd{Path: initrd, Kernel: Kernel{Image: kernel}}
	goodJob, err := st.Provision(ctx, BootConfig{MAC: goodMAC, Initrd: rd, Hostname: "good-node"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := st.Bootctl(ctx, "machines", "register", badMAC, "-hostname", "bad-node", "-action", "local-disk"); err != nil {
		t.Fatalf("register: %v: %s", err, out)
	}
	badJob, err := st.CreateJob(ctx, badMAC, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(pki.Dir(filepath.Join(st.DataDir, "pki")).Path(pki.CACert))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)

	bootMachine(t, ctx, l, "good", goodMAC, roots, true)
	waitSession(t, ctx, sessions, goodMAC, bootapiv1.SessionState_SESSION_STATE_SUCCEEDED)
	// The initrd goes away before the second machine boots: its download is a 404.
	rdData, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	rdSum := sha256.Sum256(rdData)
	if out, err := st.Bootctl(ctx, "artifacts", "delete", "e2e/initrd.gz", "--force", "--sha256", hex.EncodeToString(rdSum[:])); err != nil {
		t.Fatalf("artifacts delete: %v: %s", err, out)
	}
	bootMachine(t, ctx, l, "bad", badMAC, roots, false)
	bad := waitSession(t, ctx, sessions, badMAC, bootapiv1.SessionState_SESSION_STATE_FAILED)

	viewer, err := bootapiv1.NewCredentialServiceClient(cc).CreateToken(ctx, &bootapiv1.CreateTokenRequest{Name: "dashboard", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	base := forward(t, st.NS, "127.0.0.1:8080")

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000))
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	b, bcancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer bcancel()
	// The first Run starts the browser, for as long as b lives.
	if err := chromedp.Do(b); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// step runs actions in the tab, each step within a minute.
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(b, time.Minute)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			dctx, cancel := context.WithTimeout(b, 10*time.Second)
			defer cancel()
			page, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`window.location.href + "\n" + document.documentElement.outerHTML`))
			if png, err := chromedp.Run(dctx, chromedp.FullScreenshot(100)); err == nil {
				os.WriteFile(filepath.Join(shots, "failed.png"), png, 0o644)
			}
			t.Fatalf("%s: %v; the page:\n%s", what, err, page)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(b, time.Minute)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	eval := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(b, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return s
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	visible := func(sel string) chromedp.Action[chromedp.Void] { return chromedp.WaitVisible(chromedp.CSS(sel)) }

	// Signed out, the dashboard sends the browser to its login page.
	step("open the dashboard", chromedp.Navigate(base+"/ui/boots"), visible("#token"), shot("01-login"))
	if loc := eval(`window.location.href`); !strings.Contains(loc, "/ui/login?next=") {
		t.Fatalf("signed out, /ui/boots went to %s", loc)
	}
	step("a wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "bct_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
		chromedp.Click(chromedp.CSS("#signin")), visible("#login-error"))
	step("sign in", chromedp.SendKeys(chromedp.CSS("#token"), viewer.GetSecret()), chromedp.Click(chromedp.CSS("#signin")), visible("#boots"))

	// The cookie: HttpOnly (no script reads it), Secure, SameSite=Strict.
	if c := eval(`document.cookie`); c != "" {
		t.Errorf("document.cookie = %q: the token cookie must be HttpOnly", c)
	}
	cookies, err := chromedp.Call(b, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/ui/boots"}})
	if err != nil {
		t.Fatal(err)
	}
	if cs := cookies.Cookies; len(cs) != 1 || !cs[0].HTTPOnly || !cs[0].Secure || cs[0].SameSite != network.CookieSameSiteStrict {
		t.Errorf("cookies %+v: want one, HttpOnly, Secure, SameSite=Strict", cs)
	}

	// Boots: the failed one first, with where it stopped.
	step("boots page", visible("#live-status.on"), shot("02-boots"))
	order := eval(`Array.from(document.querySelectorAll("#boots tbody tr[data-mac]")).map(r => r.dataset.mac).join(" ")`)
	if order != badMAC+" "+goodMAC {
		t.Errorf("boots in order %q, want the failed %s first", order, badMAC)
	}
	badState, badRow := text(`tr[data-mac="`+badMAC+`"] td.state`), text(`tr[data-mac="`+badMAC+`"]`)
	goodState := text(`tr[data-mac="` + goodMAC + `"] td.state`)
	if badState != "failed" || goodState != "succeeded" || !strings.Contains(badRow, "artifact") {
		t.Errorf("boots: %s %q (row %q), %s %q", badMAC, badState, badRow, goodMAC, goodState)
	}
	if d := bad.GetDiagnosis(); d.GetCause() != "" && !strings.Contains(badRow, d.GetCause()) {
		t.Errorf("the failed boot's row %q lacks its diagnosis %q", badRow, d.GetCause())
	}

	// One failed boot: its hops as a waterfall, its trace link.
	step("failed boot page", chromedp.Navigate(base+"/ui/boots/"+badMAC), visible("#hops"), shot("03-boot-failed"))
	hops, facts := text("#hops"), text("#facts")
	for _, want := range []string{"dhcp.discover", "dhcpd", "tftp", "tftpd", "script", "bootapi", "artifact", "artifactstore", "failed"} {
		if !strings.Contains(hops, want) {
			t.Errorf("failed boot's hops lack %q:\n%s", want, hops)
		}
	}
	if !strings.Contains(facts, "bad-node") || !strings.Contains(facts, "failed") || !strings.Contains(facts, badJob) {
		t.Errorf("failed boot's facts:\n%s", facts)
	}
	if href, want := eval(`document.getElementById("trace-link").href`), strings.ReplaceAll(traceURL, "{trace_id}", bad.GetTraceId()); href != want {
		t.Errorf("trace link %q, want %q", href, want)
	}
	step("good boot page", chromedp.Navigate(base+"/ui/boots/"+goodMAC), visible("#hops"), shot("04-boot-succeeded"))
	if hops := text("#hops"); !strings.Contains(hops, "callback") || strings.Contains(hops, "failed") {
		t.Errorf("good boot's hops:\n%s", hops)
	}

	// Jobs, and a live update: a job created now appears without a reload.
	step("jobs page", chromedp.Navigate(base+"/ui/jobs"), visible("#jobs"), visible("#live-status.on"))
	if s := text(`tr[data-job="` + goodJob + `"] td.state`); s != "succeeded" {
		t.Errorf("job %s shows %q, want succeeded", goodJob, s)
	}
	eval(`window.notReloaded = "yes"`)
	// bootapi's diagnoser fails the bad boot's job (ARTIFACT_NOT_FOUND) as soon
	// as it sees the failed session.
	conn, err := st.Conn("bootapi")
	if err != nil {
		t.Fatal(err)
	}
	jobs := bootapiv1.NewJobServiceClient(conn)
	testkit.Eventually(t, "the bad boot's job failed by the diagnoser", func() bool {
		j, err := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: badJob})
		return err == nil && j.GetJob().GetState() == bootapiv1.JobState_JOB_STATE_FAILED
	})
	newJob, err := st.CreateJob(ctx, badMAC, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	step("the new job, live", visible(`tr[data-job="`+newJob+`"]`), shot("05-jobs-live"))
	if s, kept := text(`tr[data-job="`+newJob+`"] td.state`), eval(`window.notReloaded || ""`); s != "pending" || kept != "yes" {
		t.Errorf("new job %s shows %q (page kept: %q), want pending without a reload", newJob, s, kept)
	}
	if s := text(`tr[data-job="` + badJob + `"] td.state`); s != "failed" {
		t.Errorf("failed job %s shows %q", badJob, s)
	}

	step("machines page", chromedp.Navigate(base+"/ui/machines"), visible("#machines"), shot("06-machines"))
	machines := text("#machines")
	for _, want := range []string{"good-node", "bad-node", "succeeded", "failed at artifact"} {
		if !strings.Contains(machines, want) {
			t.Errorf("machines page lacks %q:\n%s", want, machines)
		}
	}

	// Signing out ends access.
	step("sign out", chromedp.Click(chromedp.CSS("form.who button")), visible("#token"),
		chromedp.Navigate(base+"/ui/jobs"), visible("#token"))
	t.Logf("screenshots in %s", shots)
}

// artifactsDir is where a test keeps what outlives it (screenshots):
// $BOOTCHAIN_TEST_ARTIFACTS/<test>, else test/e2e/out/<test> (git ignores it).
func artifactsDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("BOOTCHAIN_TEST_ARTIFACTS")
	if root == "" {
		root = "out"
	}
	d, err := filepath.Abs(filepath.Join(root, t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	// Only this run's pictures.
	if err := os.RemoveAll(d); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// bootMachine is one machine's boot with real clients from a namespace of its
// own: DHCP, iPXE over TFTP, the script, kernel and initrd over HTTP, then
// (when the downloads worked and report is set) the installer's reports.
func bootMachine(t *testing.T, ctx context.Context, l *lab.Lab, name, mac string, roots *x509.CertPool, report bool) {
	t.Helper()
	// As a PC's PXE firmware asks: dhcpd opens the boot session on it.
	ns, lease := leasedHost(t, ctx, l, name, mac, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	if err := ns.Do(func() error {
		c, err := tftp.NewClient("198.18.0.1:69")
		if err != nil {
			return err
		}
		c.SetTimeout(2 * time.Second)
		file := lease.ACK.BootFileName
		if file == "" {
			file = "undionly.kpxe"
		}
		wt, err := c.Receive(file, "octet")
		if err != nil {
			return err
		}
		_, err = wt.WriteTo(io.Discard)
		return err
	}); err != nil {
		t.Fatalf("%s: TFTP: %v", name, err)
	}
	hc := httpFrom(ns, roots)
	code, script := do(t, hc, "GET", "http://198.18.0.1:8080/ipxe/v1/config?mac="+url.QueryEscape(mac), "")
	k := regexp.MustCompile(`(?m)^kernel (?:--\S+ \S+ )*(http\S+)`).FindStringSubmatch(script)
	i := regexp.MustCompile(`(?m)^initrd (?:--\S+ \S+ )*(http\S+)`).FindStringSubmatch(script)
	cb := regexp.MustCompile(`bootchain\.callback=(\S+) bootchain\.token=(\S+)`).FindStringSubmatch(script)
	if code != 200 || k == nil || i == nil || cb == nil {
		t.Fatalf("%s: script %d:\n%s", name, code, script)
	}
	failed := false
	for _, u := range []string{k[1], i[1]} {
		if code, _ := do(t, hc, "GET", u, ""); code != 200 {
			t.Logf("%s: GET %s: %d", name, u, code)
			failed = true
		}
	}
	if failed || !report {
		return
	}
	form := func(tok, state string) string { return url.Values{"token": {tok}, "state": {state}}.Encode() }
	code, body := do(t, hc, "POST", cb[1], form(cb[2], "running"))
	fresh := regexp.MustCompile(`(?m)^token (\S+)$`).FindStringSubmatch(body)
	if code != 200 || fresh == nil {
		t.Fatalf("%s: first report: %d %q", name, code, body)
	}
	if code, body := do(t, hc, "POST", cb[1], form(fresh[1], "succeeded")); code != 200 {
		t.Fatalf("%s: last report: %d %q", name, code, body)
	}
}

// waitSession waits for the machine's session to reach state and returns it.
func waitSession(t *testing.T, ctx context.Context, c bootapiv1.SessionServiceClient, mac string, state bootapiv1.SessionState) *bootapiv1.BootSession {
	t.Helper()
	var s *bootapiv1.BootSession
	if !testkit.Poll(2*time.Minute, func() bool {
		r, err := c.GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: mac})
		s = r.GetSession()
		return err == nil && s.GetState() == state
	}) {
		t.Fatalf("%s: session not %v in two minutes: %v", mac, state, prototext.Format(s))
	}
	return s
}

// forward serves a loopback port of this process that carries each connection
// to addr inside ns: the browser runs here, bootapi in the lab.
func forward(t *testing.T, ns *lab.Netns, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if !add {
			delete(conns, c)
			return true
		}
		if conns == nil {
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				out, err := ns.DialContext(ctx, "tcp", addr)
				cancel()
				if err != nil {
					in.Close()
					return
				}
				if !track(in, true) || !track(out, true) {
					in.Close()
					out.Close()
					return
				}
				done := make(chan struct{}, 2)
				pipe := func(dst, src net.Conn) {
					io.Copy(dst, src)
					dst.Close()
					src.Close()
					done <- struct{}{}
				}
				go pipe(in, out)
				go pipe(out, in)
				<-done
				<-done
				track(in, false)
				track(out, false)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}
