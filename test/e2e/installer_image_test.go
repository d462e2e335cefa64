//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/artifacturl"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
)

// installerImage is the disk image scripts/installer-image.sh built (make
// installer-image): its gzip file, that file's SHA-256 and the raw disk's size.
type installerImage struct {
	Path, SHA256 string
	Size         int64
}

// findInstallerImage asks scripts/installer-image.sh where this tree's image is
// and skips the test when it is not built: building it is an install step.
func findInstallerImage(t *testing.T, ctx context.Context) installerImage {
	t.Helper()
	root, err := ModuleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(root, "scripts", "installer-image.sh"), "--path").Output()
	if err != nil {
		t.Fatalf("installer-image.sh --path: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	sum, err := os.ReadFile(filepath.Join(dir, "disk.img.gz.sha256"))
	if err != nil {
		t.Skipf("no installer image (make installer-image): %v", err)
	}
	size, err := os.ReadFile(filepath.Join(dir, "disk.img.size"))
	if err != nil {
		t.Skipf("no installer image (make installer-image): %v", err)
	}
	img := installerImage{Path: filepath.Join(dir, "disk.img.gz"), SHA256: strings.Fields(string(sum))[0]}
	if img.Size, err = strconv.ParseInt(strings.TrimSpace(string(size)), 10, 64); err != nil {
		t.Fatal(err)
	}
	return img
}

// sshKey returns a fresh ed25519 public key as an authorized_keys line.
func sshKey(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, f := range [][]byte{[]byte("ssh-ed25519"), pub} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(b) + " " + comment
}

// TestInstallerImage installs a system the way image-based provisioners do and
// follows it to its first boot: the e2e initrd, booted through the chain as a
// reinstall job, writes a Debian disk image (make installer-image) from
// artifactstore to the VM's disk as it downloads, checks its SHA-256, leaves
// the job's NoCloud URL and callback token in the image's seed partition,
// reports running with its progress and reboots. The machine's default is the
// local disk, so the VM boots the installed system, whose cloud-init reads
// meta-data and user-data from bootapi (the machine's hostname and SSH key, the
// profile's user-data) and reports the first boot: succeeded, the last hop of
// the install's boot session. Slow under TCG: only with
// BOOTCHAIN_E2E_INSTALLER=1 (make e2e-installer).
func TestInstallerImage(t *testing.T) {
	if os.Getenv("BOOTCHAIN_E2E_INSTALLER") == "" {
		t.Skip("installs and boots a Debian image under TCG (minutes): set BOOTCHAIN_E2E_INSTALLER=1 (make e2e-installer)")
	}
	needQEMU(t)
	needInitrdTools(t)
	if _, err := os.Stat("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		t.Skipf("%v (scripts/install-deps.sh)", err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	img := findInstallerImage(t, ctx)
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	rd, err := BuildInitrd(rctx, InitrdConfig{Modules: append(append([]string(nil), VirtioNetModules...), "virtio_blk")})
	rcancel()
	if err != nil {
		t.Fatal(err)
	}
	e := newChainEnv(t, ctx, rd, chainOpts{chainload: true})
	const macs = "52:54:00:bc:e2:1a"
	mac, _ := net.ParseMAC(macs)
	// The user-data, with this stack's CA: the first boot reports to
	// bootapi's HTTPS listener.
	ca, err := os.ReadFile(filepath.Join(e.stack.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := os.ReadFile("testdata/image-user-data.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	userData := filepath.Join(e.l.Dir(), "user-data.tmpl")
	if err := os.WriteFile(userData, bytes.ReplaceAll(tmpl, []byte("BOOTCHAIN_E2E_CA"), []byte(base64.StdEncoding.EncodeToString(ca))), 0o644); err != nil {
		t.Fatal(err)
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	comment := "e2e-" + hex.EncodeToString(nonce[:])
	key := sshKey(t, comment)
	imageURL := artifacturl.HTTPURL("http://"+net.JoinHostPort(e.stack.Advertise, "8081"), "installer-image/disk.img.gz", "")
	cmdline := fmt.Sprintf(`console=ttyS0 panic=1 bootchain.image=%s bootchain.image.sha256=%s bootchain.image.size=%d bootchain.seed={{.InstallerURL ""}}`,
		imageURL, img.SHA256, img.Size)
	for _, st := range [][]string{
		{"artifacts", "import-ipxe", "--dir", "/usr/lib/ipxe"},
		{"artifacts", "upload", rd.Kernel.Image, "--name", "e2e/vmlinuz"},
		{"artifacts", "upload", rd.Path, "--name", "e2e/initrd.gz"},
		{"artifacts", "upload", img.Path, "--name", "installer-image/disk.img.gz"},
		{"profiles", "create", "image-install", "--kernel", "e2e/vmlinuz", "--initrd", "e2e/initrd.gz",
			"--cmdline", cmdline, "--user-data", userData, "--description", "Debian image install"},
		{"machines", "register", macs, "--hostname", "e2e-image", "--action", "local-disk", "--ssh-key", key},
	} {
		if out, err := e.stack.Bootctl(ctx, st...); err != nil {
			t.Fatalf("bootctl %v: %v: %s", st, err, out)
		}
	}
	t.Logf("image %s (%d MiB raw) uploaded after %v", img.SHA256[:12], img.Size>>20, time.Since(start).Round(time.Second))
	watch := e.watchJobs(ctx, macs)
	job, err := e.stack.CreateJob(ctx, macs, "image-install")
	if err != nil {
		t.Fatal(err)
	}
	// The metadata the installed system will read, before anything is dispatched.
	out, err := e.stack.Bootctl(ctx, "machines", "preview", macs, "--config", "all")
	if err != nil || !strings.Contains(out, `hostname: "e2e-image"`) || !strings.Contains(out, comment) || !strings.Contains(out, "local-hostname") {
		t.Fatalf("preview: %v\n%s", err, out)
	}
	vm := e.diskVM("image", mac, img.Size+256<<20, true)
	jobs := bootapiv1.NewJobServiceClient(e.bootapi())
	dump := func(why string) {
		g, _ := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: job})
		t.Fatalf("%s\njob %v, reports:\n%s\nsession:\n%s\nserial (tail):\n%s", why, g.GetJob().GetState(), jobReports(g.GetJob()),
			describeSession(e.session(ctx, macs)), tail(vm.Serial(), 6000))
	}

	wctx, wcancel := context.WithTimeout(ctx, 20*time.Minute)
	defer wcancel()
	if _, err := watch.wait(wctx, job, bootapiv1.JobState_JOB_STATE_RUNNING); err != nil {
		dump("no running report from the image installer: " + err.Error())
	}
	t.Logf("running after %v", time.Since(start).Round(time.Second))
	s, err := e.waitSession(wctx, macs, func(s *bootapiv1.BootSession) bool { return s.GetJobId() == job })
	if err != nil {
		dump("no session for the job: " + err.Error())
	}
	installTrace := s.GetTraceId()
	if _, err := vm.WaitSerial(wctx, "BOOTCHAIN-E2E: reboot"); err != nil {
		dump("the installer did not reboot: " + err.Error())
	}
	installed := time.Since(start)
	t.Logf("image installed, rebooting after %v", installed.Round(time.Second))
	if _, err := vm.WaitSerial(wctx, "bootchain-seed: /dev/"); err != nil {
		dump("the installed system did not read its seed: " + err.Error())
	}
	t.Logf("installed system up (seed read) after %v", time.Since(start).Round(time.Second))
	states, err := watch.wait(wctx, job, bootapiv1.JobState_JOB_STATE_SUCCEEDED)
	if err != nil {
		dump("no first-boot report: " + err.Error())
	}
	firstBoot := time.Since(start)
	t.Logf("first boot reported after %v (%v after the installer's reboot); states %v", firstBoot.Round(time.Second), (firstBoot - installed).Round(time.Second), states)

	g, err := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: job})
	if err != nil {
		t.Fatal(err)
	}
	j := g.GetJob()
	t.Logf("reports:\n%s", jobReports(j))
	reps := j.GetReports()
	last := reps[len(reps)-1]
	// What the installed system got from the metadata: its hostname and the
	// machine's SSH key (the comment is this run's).
	if want := "first-boot host=e2e-image keys=" + comment; !strings.HasPrefix(last.GetMessage(), want) {
		t.Errorf("last report %q, want it to start %q", last.GetMessage(), want)
	}
	var msgs []string
	for _, r := range reps {
		msgs = append(msgs, r.GetMessage())
	}
	joined := strings.Join(msgs, "\n")
	for _, want := range []string{"writing image to vda", "image written: ", "sha256 ok", "image installed, rebooting into it"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no report %q in:\n%s", want, joined)
		}
	}

	// The install's trace, from the PXE boot to the first boot: the script,
	// the kernel and initrd, the installer's reports and the image download,
	// then the installed system's metadata reads and its report, the last hop.
	tctx, tcancel := context.WithTimeout(ctx, time.Minute)
	spans, err := e.traces.WaitTrace(tctx, installTrace, func(sp []Span) bool { return missingImageHop(sp) == "" })
	tcancel()
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].Start.Before(spans[j].Start) })
	var b strings.Builder
	for _, sp := range spans {
		fmt.Fprintf(&b, "  %s %-22s %-10s %s%s\n", sp.Start.Format("15:04:05.000"), sp.Service, sp.Name, sp.Attrs["bootchain.installer_file"], sp.Attrs["bootchain.report_state"])
	}
	if err != nil {
		t.Fatalf("trace %s lacks %s; spans:\n%s", installTrace, missingImageHop(spans), b.String())
	}
	t.Logf("trace %s:\n%s", installTrace, b.String())
	// The reboot went through bootapi: the job running, the machine's default,
	// the local disk. Within the install's session when the NIC's ROM sends no
	// DHCPDISCOVER of a firmware starting over (the first boot's report then
	// ends that session), else in the machine's next session: both happen
	// with QEMU's iPXE ROM.
	localDisk := func(s *bootapiv1.BootSession) int {
		for i, h := range s.GetHops() {
			if h.GetName() == "script" && strings.Contains(h.GetDetail(), "local disk") {
				return i
			}
		}
		return -1
	}
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	s, err = e.waitSession(sctx, macs, func(s *bootapiv1.BootSession) bool {
		h := s.GetHops()
		if s.GetTraceId() != installTrace {
			return localDisk(s) >= 0
		}
		return s.GetState() == bootapiv1.SessionState_SESSION_STATE_SUCCEEDED && len(h) > 0 && h[len(h)-1].GetName() == "callback"
	})
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the machine's session:\n%s", describeSession(s))
	if s.GetTraceId() == installTrace {
		if s.GetJobId() != job || !strings.HasPrefix(s.GetMessage(), "installer reported success: first-boot") {
			t.Errorf("the install's session did not end with the first boot:\n%s", describeSession(s))
		}
		metadata := -1
		for i, h := range s.GetHops() {
			if h.GetName() == "installer" && strings.HasPrefix(h.GetDetail(), "meta-data") {
				metadata = i
			}
		}
		if i := localDisk(s); i < 0 || metadata < i {
			t.Errorf("the session lacks the reboot's local disk (hop %d) before the first boot's metadata (hop %d)", i, metadata)
		}
	} else if s.GetJobId() == job {
		t.Errorf("the reboot's session has the job: it was dispatched again:\n%s", describeSession(s))
	}
	vm.Kill()
	t.Logf("image install e2e: %v in all", time.Since(start).Round(time.Second))
}

// imageHops are the hops of an image install's trace, in order (others may
// come between): name, and the installer file or the report's state.
var imageHops = [][2]string{
	{"script", ""}, {"artifact", ""}, {"artifact", ""}, {"callback", "running"}, {"artifact", ""}, {"callback", "running"},
	{"installer", "meta-data"}, {"installer", "user-data"}, {"callback", "succeeded"},
}

// missingImageHop names the first of imageHops the spans lack, in order of
// their start, or a first-boot report that is not the trace's last hop; ""
// when the trace is whole.
func missingImageHop(spans []Span) string {
	spans = slices.Clone(spans)
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].Start.Before(spans[j].Start) })
	i := 0
	var last Span
	for _, sp := range spans {
		hop := sp.Attrs["bootchain.hop"]
		if hop == "" {
			continue
		}
		last = sp
		if i < len(imageHops) && hop == imageHops[i][0] && !sp.Error &&
			(imageHops[i][1] == "" || sp.Attrs["bootchain.installer_file"] == imageHops[i][1] || sp.Attrs["bootchain.report_state"] == imageHops[i][1]) {
			i++
		}
	}
	if i < len(imageHops) {
		return fmt.Sprintf("hop %d %v", i, imageHops[i])
	}
	if last.Attrs["bootchain.hop"] != "callback" || last.Attrs["bootchain.report_state"] != "succeeded" {
		return "the first boot's report as the last hop (last: " + last.Name + ")"
	}
	return ""
}

// diskVM starts a SeaBIOS VM (1 GiB) that network boots, with an empty virtio
// disk of size bytes (sparse); reboot lets it restart into what it installed.
func (e *chainEnv) diskVM(name string, mac net.HardwareAddr, size int64, reboot bool) *VM {
	t := e.t
	t.Helper()
	disk := filepath.Join(e.l.Dir(), name+"-disk.raw")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, size); err != nil {
		t.Fatal(err)
	}
	vm, err := StartVM(e.l, e.l.Main(), VMConfig{Name: name, Firmware: BIOS, MAC: mac, Tap: e.tap, QMP: true, MemoryMiB: 1024, Reboot: reboot,
		ExtraArgs: []string{"-drive", "file=" + disk + ",format=raw,if=virtio"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Kill() })
	return vm
}

// jobReports lists a job's reports, one a line: time, state, progress, message.
func jobReports(j *bootapiv1.Job) string {
	var b strings.Builder
	for _, r := range j.GetReports() {
		fmt.Fprintf(&b, "  %s %s %d %s\n", r.GetTime().AsTime().Format("15:04:05"), strings.ToLower(strings.TrimPrefix(r.GetState().String(), "JOB_STATE_")), r.GetProgress(), r.GetMessage())
	}
	return b.String()
}
