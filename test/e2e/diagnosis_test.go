//go:build linux

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
)

// diagMachine is a machine of TestDiagnosisClasses: a namespace on the lab's
// bridge with the machine's MAC, speaking real DHCP, TFTP and HTTP.
type diagMachine struct {
	t   *testing.T
	ns  *lab.Netns
	mac string
	ip  string
	// roots verify bootapi's HTTPS listener (installers' callbacks).
	roots *x509.CertPool
}

const diagServer = "198.18.0.1"

func newDiagMachine(t *testing.T, ctx context.Context, l *lab.Lab, name, mac string, roots *x509.CertPool) *diagMachine {
	t.Helper()
	ns := attachHost(t, ctx, l, name, "")
	if _, err := ns.IP(ctx, "link", "set", "eth0", "address", mac); err != nil {
		t.Fatal(err)
	}
	return &diagMachine{t: t, ns: ns, mac: mac, roots: roots}
}

// pxe are the options of a PXE firmware of client architecture arch (option
// 93), or of iPXE (user class "iPXE").
func pxe(arch iana.Arch, ipxe bool) []dhcpv4.Modifier {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", arch))),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
	}
	if ipxe {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))
	}
	return mods
}

// dhcp runs a DHCP exchange from the machine: DISCOVER and OFFER only when
// offerOnly, else through the ACK, after which the machine holds the address.
func (m *diagMachine) dhcp(ctx context.Context, offerOnly bool, mods ...dhcpv4.Modifier) {
	m.t.Helper()
	var c *nclient4.Client
	if err := m.ns.Do(func() (err error) {
		c, err = nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		m.t.Fatal(err)
	}
	defer c.Close()
	if offerOnly {
		if _, err := c.DiscoverOffer(ctx, mods...); err != nil {
			m.t.Fatalf("%s: DHCP offer: %v", m.mac, err)
		}
		return
	}
	lease, err := c.Request(ctx, mods...)
	if err != nil {
		m.t.Fatalf("%s: DHCP: %v", m.mac, err)
	}
	if ip := lease.ACK.YourIPAddr.String(); ip != m.ip {
		m.ip = ip
		if _, err := m.ns.IP(ctx, "addr", "add", ip+"/24", "dev", "eth0"); err != nil {
			m.t.Fatal(err)
		}
	}
}

// tftpGet fetches file from tftpd as a PXE ROM would (pin/tftp's client);
// it returns the bytes received and the error.
func (m *diagMachine) tftpGet(file string) (int64, error) {
	var n int64
	err := m.ns.Do(func() error {
		c, err := tftp.NewClient(diagServer + ":69")
		if err != nil {
			return err
		}
		c.SetTimeout(2 * time.Second)
		wt, err := c.Receive(file, "octet")
		if err != nil {
			return err
		}
		n, err = wt.WriteTo(io.Discard)
		return err
	})
	return n, err
}

// tftpStall asks for file and acknowledges blocks up to ackThrough, then goes
// quiet (its socket stays open, so tftpd sees no ICMP error, only silence)
// until the test ends.
func (m *diagMachine) tftpStall(file string, ackThrough uint16) {
	m.t.Helper()
	var conn net.PacketConn
	if err := m.ns.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", m.ip+":0")
		return err
	}); err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { conn.Close() })
	rrq := append(append([]byte{0, 1}, file...), append([]byte{0}, "octet\x00"...)...)
	if _, err := conn.WriteTo(rrq, &net.UDPAddr{IP: net.ParseIP(diagServer), Port: 69}); err != nil {
		m.t.Fatal(err)
	}
	buf := make([]byte, 1024)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			m.t.Fatalf("%s: TFTP before the stall: %v", m.mac, err)
		}
		if n < 4 || binary.BigEndian.Uint16(buf) != 3 {
			m.t.Fatalf("%s: TFTP: not a DATA packet: % x", m.mac, buf[:n])
		}
		block := binary.BigEndian.Uint16(buf[2:])
		if _, err := conn.WriteTo([]byte{0, 4, byte(block >> 8), byte(block)}, from); err != nil {
			m.t.Fatal(err)
		}
		if block >= ackThrough {
			return
		}
	}
}

// http fetches u from the machine's address; a form makes it a POST.
func (m *diagMachine) http(u string, form url.Values) (int, string) {
	m.t.Helper()
	c := httpFrom(m.ns, m.roots)
	var resp *http.Response
	var err error
	if form != nil {
		resp, err = c.PostForm(u, form)
	} else {
		resp, err = c.Get(u)
	}
	if err != nil {
		m.t.Fatalf("%s: %s: %v", m.mac, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// script fetches the machine's iPXE script as its iPXE would.
func (m *diagMachine) script() string {
	m.t.Helper()
	code, body := m.http("http://"+diagServer+":8080/ipxe/v1/config?mac="+url.QueryEscape(m.mac), nil)
	if code != 200 {
		m.t.Fatalf("%s: script: %d %s", m.mac, code, body)
	}
	return body
}

var (
	diagKernelRE   = regexp.MustCompile(`(?m)^kernel (http://\S+)`)
	diagInitrdRE   = regexp.MustCompile(`(?m)^initrd --name \S+ (http://\S+)`)
	diagCallbackRE = regexp.MustCompile(`bootchain\.callback=(\S+)`)
	diagTokenRE    = regexp.MustCompile(`bootchain\.token=([0-9a-f]+)`)
)

func find(t *testing.T, re *regexp.Regexp, script string) string {
	t.Helper()
	m := re.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("%s not in the script:\n%s", re, script)
	}
	return m[1]
}

// TestDiagnosisClasses produces every diagnosis class that needs no firmware
// for real: `bootchain up` in a lab, each machine a namespace on its bridge
// speaking real DHCP (nclient4), TFTP (pin/tftp and a raw client that stops
// acknowledging) and HTTP. Each machine stops its boot a different way; bootapi
// must record the class on its session, and fail the job dispatched in it
// with the diagnosis as its message.
func TestDiagnosisClasses(t *testing.T) {
	if err := lab.Check(); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/usr/lib/ipxe/undionly.kpxe"); err != nil {
		t.Skipf("Debian's iPXE binaries (package ipxe): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tl := buildTools(t)
	l := lab.NewT(t, lab.Config{IPv6: true, KeepDir: os.Getenv("BOOTCHAIN_E2E_KEEP") != ""})
	st, err := StartStack(ctx, l, l.Main(), StackConfig{
		Tools: tl, Dir: filepath.Join(l.Dir(), "bootchain"), DHCP: true,
		Args: []string{
			"--dhcpd-interface", l.Bridge(), "--dhcpd-subnet", "198.18.0.0/24", "--dhcpd-pool", "198.18.0.100-198.18.0.200",
			// Short, so that every stall is due within the test (the sweep
			// runs every 10 s); iPXE's longer than a loop's round (DHCP and
			// a TFTP download) on a loaded machine.
			"--bootapi-stall-after", "12s", "--bootapi-stall-after-offer", "3s",
			"--bootapi-stall-after-ipxe", "10s", "--bootapi-stall-after-script", "3s",
			"--bootapi-stall-after-download", "4s",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("launcher log (tail):\n%s", tail(st.Log(), 6000))
		}
		st.Stop()
	})
	bootctl := func(args ...string) string {
		t.Helper()
		out, err := st.Bootctl(ctx, args...)
		if err != nil {
			t.Fatalf("bootctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	ca, err := os.ReadFile(filepath.Join(st.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	dir := t.TempDir()
	kernel, initrd, other := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz"), filepath.Join(dir, "other")
	for _, f := range []string{kernel, initrd, other} {
		if err := os.WriteFile(f, []byte(strings.Repeat("not really "+filepath.Base(f), 200)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Provision(ctx, BootConfig{MAC: "52:54:00:d1:a6:00", Initrd: &Initrd{Path: initrd, Kernel: Kernel{Image: kernel}}, NoJob: true}); err != nil {
		t.Fatal(err)
	}
	// A profile whose initrd is gone, and one pinned to a kernel since replaced.
	bootctl("artifacts", "upload", initrd, "--name", "e2e/gone.gz")
	bootctl("profiles", "create", "gone", "-kernel", "e2e/vmlinuz", "-initrd", "e2e/gone.gz")
	sha := func(name string) string {
		out := bootctl("artifacts", "stat", name, "-o", "json")
		m := regexp.MustCompile(`"sha256":\s*"([0-9a-f]{64})"`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no sha256 in %s", out)
		}
		return m[1]
	}
	bootctl("artifacts", "delete", "e2e/gone.gz", "--force", "--sha256", sha("e2e/gone.gz"))
	bootctl("artifacts", "upload", kernel, "--name", "e2e/pinned")
	bootctl("profiles", "create", "pinned", "-kernel", "e2e/pinned@sha256:"+sha("e2e/pinned"), "-initrd", "e2e/initrd.gz")
	bootctl("artifacts", "upload", other, "--name", "e2e/pinned", "--replaces", sha("e2e/pinned"))
	// UEFI x64 clients get a BIOS binary: a misconfigured boot-file map.
	bootctl("sites", "update", "default", "--boot-file", "uefi-x64=undionly.kpxe")

	type check struct {
		m     *diagMachine
		class bootapiv1.DiagnosisClass
		hop   string
		job   string // the job the diagnosis must fail
		says  string // a part of the cause, when set
	}
	var checks []*check
	machine := func(n int, class bootapiv1.DiagnosisClass, hop, profile string) (*diagMachine, *check) {
		mac := fmt.Sprintf("52:54:00:d1:a6:%02x", n)
		bootctl("machines", "register", mac, "-action", "local-disk")
		c := &check{m: newDiagMachine(t, ctx, l, fmt.Sprintf("m%d", n), mac, roots), class: class, hop: hop}
		if profile != "" {
			id, err := st.CreateJob(ctx, mac, profile)
			if err != nil {
				t.Fatal(err)
			}
			c.job = id
		}
		checks = append(checks, c)
		return c.m, c
	}
	bios, efi := pxe(iana.INTEL_X86PC, false), pxe(iana.EFI_X86_64, false)

	m, _ := machine(1, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OFFER_IGNORED, "dhcp.discover", "")
	m.dhcp(ctx, true, bios...)

	m, _ = machine(2, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_NOT_FOUND, "tftp", "")
	m.dhcp(ctx, false, bios...)
	if _, err := m.tftpGet("nope.kpxe"); err == nil {
		t.Error("nope.kpxe: a file tftpd does not have was sent")
	}

	m, _ = machine(3, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_BOOTFILE_WRONG_ARCH, "tftp", "")
	m.dhcp(ctx, false, efi...)
	if n, err := m.tftpGet("undionly.kpxe"); err != nil || n == 0 {
		t.Fatalf("undionly.kpxe: %d bytes, %v", n, err)
	}

	m, c := machine(4, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_TFTP_STALLED, "tftp", "")
	c.says = "stalled at block 4"
	m.dhcp(ctx, false, bios...)
	m.tftpStall("undionly.kpxe", 3)

	m, _ = machine(5, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_SCRIPT_NOT_FETCHED, "ipxe.dhcp", "")
	m.dhcp(ctx, false, bios...)
	if _, err := m.tftpGet("undionly.kpxe"); err != nil {
		t.Fatal(err)
	}
	m.dhcp(ctx, false, pxe(iana.INTEL_X86PC, true)...)

	// iPXE given the boot file again instead of its script (as a DHCP
	// server that does not tell iPXE from the firmware does): a loop.
	m, c = machine(12, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_SCRIPT_NOT_FETCHED, "tftp", "")
	c.says = "chain-loads itself in a loop"
	m.dhcp(ctx, false, bios...)
	for i := 0; i < 3; i++ {
		if i > 0 {
			m.dhcp(ctx, false, pxe(iana.INTEL_X86PC, true)...)
		}
		if _, err := m.tftpGet("undionly.kpxe"); err != nil {
			t.Fatal(err)
		}
	}

	m, _ = machine(6, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_KERNEL_NOT_FETCHED, "script", "e2e")
	m.dhcp(ctx, false, bios...)
	find(t, diagKernelRE, m.script())

	m, _ = machine(7, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_NOT_FOUND, "artifact", "gone")
	m.dhcp(ctx, false, bios...)
	s := m.script()
	if code, _ := m.http(find(t, diagKernelRE, s), nil); code != 200 {
		t.Errorf("kernel: %d", code)
	}
	if code, _ := m.http(find(t, diagInitrdRE, s), nil); code != http.StatusNotFound {
		t.Errorf("deleted initrd: %d, want 404", code)
	}

	m, _ = machine(8, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_ARTIFACT_CHECKSUM, "artifact", "pinned")
	m.dhcp(ctx, false, bios...)
	if code, _ := m.http(find(t, diagKernelRE, m.script()), nil); code != http.StatusConflict {
		t.Errorf("replaced pinned kernel: %d, want 409", code)
	}

	m, _ = machine(9, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_NO_CALLBACK, "artifact", "e2e")
	m.dhcp(ctx, false, bios...)
	s = m.script()
	for _, re := range []*regexp.Regexp{diagKernelRE, diagInitrdRE} {
		if code, _ := m.http(find(t, re, s), nil); code != 200 {
			t.Errorf("download: %d", code)
		}
	}

	m, _ = machine(10, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_INSTALLER_FAILED, "callback", "")
	m.dhcp(ctx, false, bios...)
	installer, err := st.CreateJob(ctx, m.mac, "e2e")
	if err != nil {
		t.Fatal(err)
	}
	s = m.script()
	for _, re := range []*regexp.Regexp{diagKernelRE, diagInitrdRE} {
		m.http(find(t, re, s), nil)
	}
	if code, body := m.http(find(t, diagCallbackRE, s), url.Values{"token": {find(t, diagTokenRE, s)}, "state": {"failed"}, "message": {"no disk found"}}); code != 200 {
		t.Fatalf("failed report: %d %s", code, body)
	}

	m, _ = machine(11, bootapiv1.DiagnosisClass_DIAGNOSIS_CLASS_OTHER, "dhcp.request", "")
	m.dhcp(ctx, false, bios...)

	cc, err := st.Conn("bootapi")
	if err != nil {
		t.Fatal(err)
	}
	sessions, jobs := bootapiv1.NewSessionServiceClient(cc), bootapiv1.NewJobServiceClient(cc)
	var wg sync.WaitGroup
	for _, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got *bootapiv1.DiagnoseMachineResponse
			ok := every(ctx, 90*time.Second, func() bool {
				r, err := sessions.DiagnoseMachine(ctx, &bootapiv1.DiagnoseMachineRequest{Mac: c.m.mac})
				got = r
				// The diagnosis recorded by bootapi's diagnoser, not one worked
				// out for the asking.
				return err == nil && r.GetSession().GetDiagnosis() != nil
			})
			d := got.GetSession().GetDiagnosis()
			if !ok || d.GetClass() != c.class || d.GetHop() != c.hop || !strings.Contains(d.GetCause(), c.says) || d.GetNextStep() == "" {
				t.Errorf("%s: want %v at %s saying %q, got %v (session %s)", c.m.mac, c.class, c.hop, c.says, d, describeSession(got.GetSession()))
				return
			}
			t.Logf("%s: %v at %s: %s", c.m.mac, d.GetClass(), d.GetHop(), d.GetCause())
			if c.job == "" {
				return
			}
			var j *bootapiv1.Job
			every(ctx, 30*time.Second, func() bool {
				r, err := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: c.job})
				j = r.GetJob()
				return err == nil && j.GetState() == bootapiv1.JobState_JOB_STATE_FAILED
			})
			if j.GetState() != bootapiv1.JobState_JOB_STATE_FAILED || !strings.Contains(j.GetMessage(), d.GetCause()) {
				t.Errorf("%s: job %s %v %q, want failed with the diagnosis", c.m.mac, c.job, j.GetState(), j.GetMessage())
			}
		}()
	}
	wg.Wait()
	// The installer's own failure keeps the installer's message.
	if r, err := jobs.GetJob(ctx, &bootapiv1.GetJobRequest{Id: installer}); err != nil || r.GetJob().GetMessage() != "no disk found" {
		t.Errorf("installer's job: %v %v", r.GetJob(), err)
	}
	out := bootctl("diagnose", "52:54:00:d1:a6:07")
	for _, want := range []string{"artifact_not_found", "Cause:", "e2e/gone.gz answered 404", "Next step:"} {
		if !strings.Contains(out, want) {
			t.Errorf("bootctl diagnose lacks %q:\n%s", want, out)
		}
	}
}

// every checks cond twice a second until it holds or within has passed: the
// diagnoses come with bootapi's 10 s sweep, so a tighter loop only loads the
// stack.
func every(ctx context.Context, within time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
	return true
}
