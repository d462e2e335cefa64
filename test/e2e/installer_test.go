//go:build linux

package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// mirrorError is the title of what d-i says when the mirror of the preseed
// cannot be used (choose-mirror's mirror/bad): where this e2e's installer
// stops. (Its text is wrapped at 80 columns on the serial console.)
const mirrorError = "Bad archive mirror"

// debianInstaller is where debian-installer-12-netboot-amd64 puts its kernel
// and initrd.
const debianInstaller = "/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"

// TestInstallerDebian boots Debian's own network installer through the whole
// chain: iPXE fetches its kernel and initrd from artifactstore, the installer
// fetches its preseed from bootapi (the job's installer URL, only to this
// machine), reports running from preseed/early_command (the token exchange)
// and then each step of its main menu from a hook. Without a package mirror
// (no route out of the lab; Debian's udebs are not in apt here) it stops at
// the mirror: the test proves the chain up to there and that every question
// before it was answered by the preseed. Slow under TCG: only with
// BOOTCHAIN_E2E_INSTALLER=1 (make e2e-installer).
func TestInstallerDebian(t *testing.T) {
	if os.Getenv("BOOTCHAIN_E2E_INSTALLER") == "" {
		t.Skip("boots Debian's installer under TCG (minutes): set BOOTCHAIN_E2E_INSTALLER=1 (make e2e-installer)")
	}
	needQEMU(t)
	for _, p := range []string{debianInstaller + "/linux", debianInstaller + "/initrd.gz", "/usr/lib/ipxe/undionly.kpxe"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (scripts/install-deps.sh)", err)
		}
	}
	preseed, err := filepath.Abs("testdata/debian-preseed.cfg")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()
	e := newChainEnv(t, ctx, nil, chainOpts{chainload: true})
	const macs = "52:54:00:bc:e2:19"
	mac, _ := net.ParseMAC(macs)
	for _, st := range [][]string{
		{"artifacts", "import-ipxe", "--dir", "/usr/lib/ipxe"},
		{"artifacts", "upload", debianInstaller + "/linux", "--name", "debian-installer/12/linux"},
		{"artifacts", "upload", debianInstaller + "/initrd.gz", "--name", "debian-installer/12/initrd.gz"},
		{"profiles", "create", "debian-12-install", "--kernel", "debian-installer/12/linux", "--initrd", "debian-installer/12/initrd.gz",
			"--cmdline", `console=ttyS0,115200 auto=true priority=critical DEBIAN_FRONTEND=text ipv6.disable=1 url={{.InstallerURL "preseed"}} hostname={{.Machine.Hostname}} domain=lab language=en country=US locale=en_US.UTF-8 keymap=us netcfg/no_default_route=true netcfg/get_nameservers=198.18.0.1`,
			"--preseed", preseed, "--description", "Debian 12 installer"},
		{"machines", "register", macs, "--hostname", "e2e-debian", "--action", "local-disk"},
	} {
		if out, err := e.stack.Bootctl(ctx, st...); err != nil {
			t.Fatalf("bootctl %v: %v: %s", st, err, out)
		}
	}
	watch := e.watchJobs(ctx, macs)
	job, err := e.stack.CreateJob(ctx, macs, "debian-12-install")
	if err != nil {
		t.Fatal(err)
	}
	// What the machine will be served, before anything is dispatched.
	out, err := e.stack.Bootctl(ctx, "machines", "preview", macs, "--config", "preseed")
	if err != nil || !strings.Contains(out, "d-i netcfg/hostname string e2e-debian\n") || !strings.Contains(out, "job='"+job+"'") {
		t.Fatalf("preview: %v\n%s", err, out)
	}
	vm := e.diskVM("debian", mac, 4<<30, false)
	jobs := bootapiv1.NewJobServiceClient(e.bootapi())
	dump := func(why string) {
		shot := filepath.Join(e.l.Dir(), "debian-screen.png")
		_ = vm.Screendump(ctx, shot)
		g, _ := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: job})
		t.Fatalf("%s\njob %v, reports:\n%s\nsession:\n%s\nscreen: %s\nserial (tail):\n%s", why, g.GetJob().GetState(), jobReports(g.GetJob()),
			describeSession(e.session(ctx, macs)), shot, tail(vm.Serial(), 4000))
	}

	// The installer's first report: the preseed was fetched and early_command ran.
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Minute)
	if _, err := watch.wait(rctx, job, bootapiv1.JobState_JOB_STATE_RUNNING); err != nil {
		rcancel()
		dump("no running report from the installer: " + err.Error())
	}
	running := time.Since(start)
	t.Logf("running after %v", running.Round(time.Second))
	// Then the hook reports the installer's steps until it reaches the mirror
	// (or further: a step past choose-mirror would mean it found one).
	var last *bootapiv1.Job
	for {
		g, err := jobs.GetJob(rctx, &bootapiv1.GetJobRequest{Id: job})
		if err == nil {
			last = g.GetJob()
			if strings.HasPrefix(last.GetMessage(), "step choose-mirror") || last.GetProgress() >= 50 {
				break
			}
		}
		select {
		case <-rctx.Done():
			rcancel()
			dump("the installer did not reach the mirror step: " + rctx.Err().Error())
		case <-time.After(time.Second):
		}
	}
	rcancel()
	t.Logf("reached %q after %v; reports:\n%s", last.GetMessage(), time.Since(start).Round(time.Second), jobReports(last))
	var msgs []string
	for _, r := range last.GetReports() {
		msgs = append(msgs, r.GetMessage())
	}
	if len(msgs) < 2 || msgs[0] != "preseed" || !strings.HasPrefix(msgs[1], "step ") {
		t.Errorf("reports %q: want preseed first, then the installer's steps", msgs)
	}
	// Where it stops without a mirror: the mirror check fails and d-i asks
	// (text frontend: each question ends in a "Prompt:" line). No question
	// came before: the cmdline and the preseed answered every one.
	sctx, scancel := context.WithTimeout(ctx, 3*time.Minute)
	_, err = vm.WaitSerial(sctx, mirrorError)
	scancel()
	serial := vm.Serial()
	if err != nil {
		dump("the installer did not stop at the mirror: " + err.Error())
	}
	stop := strings.Index(serial, mirrorError)
	if p := strings.Index(serial, "Prompt:"); p >= 0 && p < stop {
		t.Errorf("the installer asked a question before the mirror:\n%s", tail(serial[:p+40], 1500))
	}
	t.Logf("stopped at the mirror after %v; serial console from there:\n%s", time.Since(start).Round(time.Second), tail(serial[stop:], 1200))

	// One boot session: the script, kernel and initrd, the preseed from bootapi,
	// then the installer's callbacks.
	s, err := e.waitSession(ctx, macs, func(s *bootapiv1.BootSession) bool {
		names := strings.Join(hopNames(s), " ")
		return strings.Contains(names, "installer") && strings.Contains(names, "callback")
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("session:\n%s", describeSession(s))
	order := []string{"script", "artifact", "artifact", "installer", "callback"}
	i := 0
	for _, h := range s.GetHops() {
		if i < len(order) && h.GetName() == order[i] && !h.GetFailed() {
			if order[i] == "installer" && !strings.HasPrefix(h.GetDetail(), "preseed") {
				continue
			}
			i++
		}
	}
	if i < len(order) {
		t.Errorf("session lacks %s (in order %v)", order[i], order)
	}
	vm.Kill()
	if _, err := jobs.CancelJob(ctx, &bootapiv1.CancelJobRequest{Id: job}); err != nil {
		t.Logf("cancel: %v", err)
	}
	t.Logf("Debian installer e2e: %v in all", time.Since(start).Round(time.Second))
}
