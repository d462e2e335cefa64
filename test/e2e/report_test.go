package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReportWire runs the initramfs's report code (initramfs/bootchain.sh) with the
// host's busybox against a CallbackServer on loopback and checks the requests on the
// wire: the same code and the same busybox wget as inside the VM, without the VM.
func TestReportWire(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (install busybox-static)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cb := ServeCallbacks(ln)
	defer cb.Close()

	dir := t.TempDir()
	lib := filepath.Join(dir, "bootchain.sh")
	if err := os.WriteFile(lib, bootchainLib, 0o644); err != nil {
		t.Fatal(err)
	}
	const (
		token = "tok+en/with=odd&chars"
		tp    = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	)
	callback := cb.URL("job-42")

	tests := map[string]struct {
		cmdline       string
		wantTP        string
		wantToken     bool
		wantReports   int
		wantCallback  string
		wantSayOutput string
	}{
		"full": {
			cmdline:     "console=ttyS0 bootchain.callback=" + callback + " bootchain.token=" + token + " bootchain.traceparent=" + tp + " quiet",
			wantTP:      tp,
			wantToken:   true,
			wantReports: 2,
		},
		"no traceparent": {
			cmdline:     "bootchain.callback=" + callback + " bootchain.token=" + token,
			wantToken:   true,
			wantReports: 2,
		},
		"fallback, no token": {
			cmdline:     "bootchain.fallback=" + callback,
			wantReports: 2,
		},
		"no callback": {
			cmdline:       "console=ttyS0",
			wantReports:   0,
			wantSayOutput: "no callback on cmdline",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := len(cb.Reports())
			cmdline := filepath.Join(t.TempDir(), "cmdline")
			if err := os.WriteFile(cmdline, []byte(tc.cmdline+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			script := `. "$1"; bootchain_cmdline "$2"; report running 50 "initrd up, eth0 198.18.0.100"; report succeeded 100 "done"; true`
			cmd := exec.CommandContext(ctx, "/bin/busybox", "sh", "-c", script, "sh", lib, cmdline)
			// busybox runs its applets (wget, timeout) from PATH, as in the initrd.
			cmd.Env = []string{"PATH=" + busyboxBin(t)}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("script: %v\n%s", err, out)
			}
			if tc.wantSayOutput != "" && !strings.Contains(string(out), tc.wantSayOutput) {
				t.Errorf("output lacks %q:\n%s", tc.wantSayOutput, out)
			}
			reps := cb.Reports()[before:]
			if len(reps) != tc.wantReports {
				t.Fatalf("got %d reports, want %d; output:\n%s", len(reps), tc.wantReports, out)
			}
			if tc.wantReports == 0 {
				return
			}
			if !strings.Contains(string(out), "BOOTCHAIN-E2E: callback running ok") ||
				!strings.Contains(string(out), "BOOTCHAIN-E2E: callback succeeded ok") {
				t.Errorf("markers missing:\n%s", out)
			}
			want := []struct{ state, progress, message string }{
				{"running", "50", "initrd up, eth0 198.18.0.100"},
				{"succeeded", "100", "done"},
			}
			for i, r := range reps {
				t.Logf("%s %s?%s traceparent=%q body=%q", r.Method, r.Path, r.Query.Encode(), r.Header.Get("traceparent"), r.Body)
				if r.Method != "POST" || r.Path != "/report" || r.Query.Get("job") != "job-42" {
					t.Errorf("report %d: %s %s?%s", i, r.Method, r.Path, r.Query.Encode())
				}
				if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
					t.Errorf("report %d: Content-Type %q", i, ct)
				}
				if got := r.Header.Get("traceparent"); got != tc.wantTP {
					t.Errorf("report %d: traceparent %q, want %q", i, got, tc.wantTP)
				}
				if _, ok := r.Header["Traceparent"]; !ok && tc.wantTP != "" {
					t.Errorf("report %d: no traceparent header", i)
				}
				if r.State() != want[i].state || r.Form.Get("progress") != want[i].progress || r.Form.Get("message") != want[i].message {
					t.Errorf("report %d: form %v, want %+v", i, r.Form, want[i])
				}
				// The first report sends the cmdline's bootstrap token, the next
				// the token its answer gave; never in the URL.
				wantTok := token
				if i > 0 {
					wantTok = cb.Issued("job-42")
				}
				_, hasToken := r.Form["token"]
				if hasToken != tc.wantToken || (tc.wantToken && r.Form.Get("token") != wantTok) {
					t.Errorf("report %d: token %q (present %v), want %q (present %v)", i, r.Form.Get("token"), hasToken, wantTok, tc.wantToken)
				}
				if r.Query.Has("token") {
					t.Errorf("report %d: token in the URL", i)
				}
				if !strings.HasPrefix(r.Body, "state="+want[i].state+"&progress="+want[i].progress+"&message=") {
					t.Errorf("report %d: body %q", i, r.Body)
				}
			}
		})
	}
}

func TestCallbackServerWaitState(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cb := ServeCallbacks(ln)
	defer cb.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := cb.WaitState(ctx, "succeeded"); err == nil {
		t.Fatal("WaitState succeeded with no reports")
	}

	done := make(chan Report, 1)
	go func() {
		r, _ := cb.WaitState(context.Background(), "succeeded")
		done <- r
	}()
	resp, err := http.Post(cb.URL("j"), "application/x-www-form-urlencoded", strings.NewReader("state=succeeded&progress=100"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
	select {
	case r := <-done:
		if r.Query.Get("job") != "j" || r.Form.Get("progress") != "100" {
			t.Errorf("report %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitState did not return")
	}
}

// TestReportRetriesUnavailable: the initramfs's report keeps trying while
// bootapi answers 503 (a site cut off from etcd) and stops at once on a
// refusal (403), with the host's busybox as inside the VM.
func TestReportRetriesUnavailable(t *testing.T) {
	lib, bin := hostInitramfs(t, "wget", "timeout", "cat", "sleep", "sed", "rm", "date", "tail")
	for name, tc := range map[string]struct {
		answers      []int // status of each attempt; the last repeats
		wantAttempts int
		wantOK       bool
	}{
		"503 until etcd is back": {answers: []int{503, 503, 503, 200}, wantAttempts: 4, wantOK: true},
		"403 is final":           {answers: []int{403}, wantAttempts: 1},
	} {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			attempts := 0
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				code := tc.answers[min(attempts, len(tc.answers)-1)]
				attempts++
				mu.Unlock()
				if code == 503 {
					w.Header().Set("Retry-After", "10")
				}
				w.WriteHeader(code)
				io.WriteString(w, "ok j running\n")
			})}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Close()
			cmdline := filepath.Join(t.TempDir(), "cmdline")
			os.WriteFile(cmdline, []byte("bootchain.callback=http://"+ln.Addr().String()+"/report?job=j bootchain.token=t\n"), 0o644)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			script := `. "$1"; bootchain_cmdline "$2"; REPORT_FOR=60; report running 50 "up"`
			cmd := exec.CommandContext(ctx, "/bin/busybox", "sh", "-c", script, "sh", lib, cmdline)
			cmd.Env = []string{"PATH=" + bin}
			out, err := cmd.CombinedOutput()
			if ok := err == nil; ok != tc.wantOK {
				t.Errorf("report returned %v, want success %v; output:\n%s", err, tc.wantOK, out)
			}
			mu.Lock()
			defer mu.Unlock()
			if attempts != tc.wantAttempts {
				t.Errorf("%d attempts, want %d; output:\n%s", attempts, tc.wantAttempts, out)
			}
		})
	}
}

// hostInitramfs runs the initramfs's shell code on the host: it writes
// bootchain.sh into a scratch folder and returns it with a PATH folder of the
// host's busybox as applets, as in the initrd. It skips without busybox.
func hostInitramfs(t *testing.T, applets ...string) (lib, bin string) {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (install busybox-static)")
	}
	dir := t.TempDir()
	lib = filepath.Join(dir, "bootchain.sh")
	if err := os.WriteFile(lib, bootchainLib, 0o644); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		if err := os.Symlink("/bin/busybox", filepath.Join(bin, a)); err != nil {
			t.Fatal(err)
		}
	}
	return lib, bin
}

// TestReportWireIPv6: the initramfs's IPv6 path off the VM: bootchain.ip6=
// and the callback's IPv6 host are read from the command line, and busybox's
// wget reports to a bracketed IPv6 URL (on ::1).
func TestReportWireIPv6(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (install busybox-static)")
	}
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	cb := ServeCallbacks(ln)
	defer cb.Close()
	dir := t.TempDir()
	lib := filepath.Join(dir, "bootchain.sh")
	cmdline := filepath.Join(dir, "cmdline")
	if err := os.WriteFile(lib, bootchainLib, 0o644); err != nil {
		t.Fatal(err)
	}
	callback := cb.URL("job-6")
	if !strings.HasPrefix(callback, "http://[::1]:") {
		t.Fatalf("callback URL %s", callback)
	}
	if err := os.WriteFile(cmdline, []byte("console=ttyS0 bootchain.callback="+callback+" bootchain.token=tok bootchain.ip6=fd00:bc::1a5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	script := `. "$1"; bootchain_cmdline "$2"; echo "ip6=$IP6 host=$(url_host6 "$CALLBACK") v4host=$(url_host6 http://198.18.0.1:8080/x)"; report succeeded 100 "done"`
	cmd := exec.CommandContext(ctx, "/bin/busybox", "sh", "-c", script, "sh", lib, cmdline)
	cmd.Env = []string{"PATH=" + busyboxBin(t)}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("script: %v\n%s", err, out)
	}
	if first, _, _ := strings.Cut(string(out), "\n"); first != "ip6=fd00:bc::1a5 host=::1 v4host=" {
		t.Errorf("parsed %q, want ip6=fd00:bc::1a5 host=::1 v4host=\n%s", first, out)
	}
	reps := cb.Reports()
	if len(reps) != 1 || reps[0].Form.Get("state") != "succeeded" || reps[0].Form.Get("token") != "tok" {
		t.Fatalf("reports %+v\n%s", reps, out)
	}
}

// TestIP6Tentative: ip6_tentative reads /proc/net/if_inet6's flags column
// (IFA_F_TENTATIVE 0x40) for the named interface only.
func TestIP6Tentative(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox (install busybox-static)")
	}
	dir := t.TempDir()
	lib := filepath.Join(dir, "bootchain.sh")
	if err := os.WriteFile(lib, bootchainLib, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		table string
		want  bool
	}{
		"tentative": {"fd00bc000000000000000000000001da 02 80 00 c0     eth0\nfe80000000000000505400fffebce207 02 40 20 80     eth0\n", true},
		"done":      {"fd00bc000000000000000000000001da 02 80 00 80     eth0\nfe80000000000000505400fffebce207 02 40 20 80     eth0\n", false},
		"other dev": {"fd00bc000000000000000000000001da 03 80 00 40     eth1\n00000000000000000000000000000001 01 80 10 80       lo\n", false},
		"empty":     {"", false},
	} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(tc.table), 0o644); err != nil {
			t.Fatal(err)
		}
		err := exec.Command("/bin/busybox", "sh", "-c", `. "$1"; ip6_tentative eth0 "$2"`, "sh", lib, f).Run()
		if got := err == nil; got != tc.want {
			t.Errorf("%s: tentative %v (%v), want %v", name, got, err, tc.want)
		}
	}
}

// busyboxBin is a directory of the busybox applets the initramfs's report
// code runs from PATH (wget, timeout, ...), as in the initrd.
func busyboxBin(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	for _, a := range []string{"wget", "timeout", "cat", "sleep", "sed", "rm", "date", "tail"} {
		if err := os.Symlink("/bin/busybox", filepath.Join(bin, a)); err != nil {
			t.Fatal(err)
		}
	}
	return bin
}
