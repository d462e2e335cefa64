//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/test/lab"
)

// needQEMU skips t unless QEMU and the other lab tools are installed.
func needQEMU(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM under TCG; skipped with -short")
	}
	for _, tool := range append([]string{"qemu-system-x86_64"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (scripts/install-deps.sh)", tool)
		}
	}
}

// TestInitrdBoot boots the e2e initrd directly (-kernel, no PXE) in a lab with
// dnsmasq as DHCP server, and checks the two callbacks and the power-off.
func TestInitrdBoot(t *testing.T) {
	needQEMU(t, "dnsmasq")
	needInitrdTools(t)
	l := lab.NewT(t, lab.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	rd, err := BuildInitrd(ctx, InitrdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tap, err := l.AddTap(ctx, "tap0")
	if err != nil {
		t.Fatal(err)
	}
	server := l.BridgeAddr().Addr()
	if _, err := StartDnsmasq(ctx, l, l.Main(), DnsmasqConfig{
		Dir:        l.Dir() + "/dnsmasq",
		Interface:  l.Bridge(),
		RangeStart: netip.MustParseAddr("198.18.0.100"),
		RangeEnd:   netip.MustParseAddr("198.18.0.200"),
		NoPing:     true,
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := l.Main().Listen("tcp", net.JoinHostPort(server.String(), "8080"))
	if err != nil {
		t.Fatal(err)
	}
	cb := ServeCallbacks(ln)
	defer cb.Close()

	const (
		token = "e2e-token"
		tp    = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	)
	mac, _ := net.ParseMAC("52:54:00:bc:00:01")
	vm, err := StartVM(l, l.Main(), VMConfig{
		MAC:    mac,
		Tap:    tap,
		Kernel: rd.Kernel.Image,
		Initrd: rd.Path,
		Append: "console=ttyS0 panic=1 bootchain.callback=" + cb.URL("boot-test") +
			" bootchain.token=" + token + " bootchain.traceparent=" + tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	seen, err := vm.WaitSerial(ctx, "BOOTCHAIN-E2E: callback succeeded ok")
	if err != nil {
		t.Fatal(err)
	}
	serial, err := vm.Wait(ctx)
	if err != nil {
		t.Fatalf("%v\nserial:\n%s", err, tail(serial, 4000))
	}
	t.Logf("marker after %v, VM ran %v", seen.Sub(vm.Started).Round(time.Millisecond), time.Since(vm.Started).Round(time.Millisecond))

	reps := cb.Reports()
	if len(reps) != 2 {
		t.Fatalf("got %d reports, want 2; serial:\n%s", len(reps), tail(serial, 4000))
	}
	// The first report exchanges the cmdline's bootstrap token for the one in
	// the answer, which the second report must carry.
	for i, want := range []string{"running", "succeeded"} {
		r := reps[i]
		wantTok := token
		if i > 0 {
			wantTok = cb.Issued("boot-test")
		}
		if r.State() != want || r.Form.Get("token") != wantTok || wantTok == "" || r.Header.Get("traceparent") != tp || r.Query.Get("job") != "boot-test" {
			t.Errorf("report %d: state %q token %q traceparent %q job %q", i, r.State(), r.Form.Get("token"), r.Header.Get("traceparent"), r.Query.Get("job"))
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if a, err := netip.ParseAddr(host); err != nil || !netip.MustParsePrefix("198.18.0.0/24").Contains(a) {
			t.Errorf("report %d from %s, want a lab DHCP address", i, r.RemoteAddr)
		}
	}
	for _, m := range []string{"BOOTCHAIN-E2E: modules loaded", "BOOTCHAIN-E2E: dhcp ok ip=198.18.0.", "BOOTCHAIN-E2E: callback running ok", "BOOTCHAIN-E2E: callback succeeded ok", "BOOTCHAIN-E2E: poweroff"} {
		if !strings.Contains(serial, m) {
			t.Errorf("serial log lacks %q", m)
		}
	}
}

// TestScreendump takes a picture of the firmware screen of a VM that waits for DHCP.
func TestScreendump(t *testing.T) {
	needQEMU(t)
	l := lab.NewT(t, lab.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tap, err := l.AddTap(ctx, "tap0")
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:bc:00:02")
	vm, err := StartVM(l, l.Main(), VMConfig{MAC: mac, Tap: tap, QMP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Kill()
	png := filepath.Join(t.TempDir(), "screen.png")
	// The QMP socket appears once QEMU has set up; poll (bounded) until it answers.
	testkit.Poll(5*time.Second, func() bool {
		err = vm.Screendump(ctx, png)
		return err == nil || vm.Proc.Exited()
	})
	if err != nil {
		t.Fatalf("%v; qemu: %s", err, vm.Output())
	}
	b, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "\x89PNG\r\n\x1a\n") {
		t.Errorf("screendump is not a PNG (%d bytes)", len(b))
	}
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	if !vm.Proc.Exited() {
		t.Error("QEMU still running after Kill")
	}
}

// TestPXEChainBIOS boots the whole chain the way a site with dnsmasq and nginx does
// (tuned as docs/firmware.md says): SeaBIOS, the NIC's iPXE ROM asks DHCP, gets the script
// URL, fetches the script, kernel and initrd over HTTP, and the initrd reports back.
// It checks the lab, peers, QEMU and initrd pieces together.
func TestPXEChainBIOS(t *testing.T) {
	needQEMU(t, "dnsmasq", "nginx")
	needInitrdTools(t)
	l := lab.NewT(t, lab.Config{IPv6: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	rd, err := BuildInitrd(ctx, InitrdConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tap, err := l.AddTap(ctx, "tap0")
	if err != nil {
		t.Fatal(err)
	}
	server := l.BridgeAddr().Addr()
	ln, err := l.Main().Listen("tcp", net.JoinHostPort(server.String(), "8080"))
	if err != nil {
		t.Fatal(err)
	}
	cb := ServeCallbacks(ln)
	defer cb.Close()

	root := filepath.Join(l.Dir(), "http")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{"vmlinuz": rd.Kernel.Image, "initrd.img": rd.Path} {
		if err := CopyFile(src, filepath.Join(root, dst)); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf("#!ipxe\nkernel http://%[1]s/vmlinuz initrd=initrd.img console=ttyS0 panic=1 bootchain.callback=%[2]s bootchain.token=chain\ninitrd http://%[1]s/initrd.img\nboot\n", server, cb.URL("chain"))
	if err := os.WriteFile(filepath.Join(root, "boot.ipxe"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := StartDnsmasq(ctx, l, l.Main(), DnsmasqConfig{
		Dir:             filepath.Join(l.Dir(), "dnsmasq"),
		Interface:       l.Bridge(),
		RangeStart:      netip.MustParseAddr("198.18.0.100"),
		RangeEnd:        netip.MustParseAddr("198.18.0.200"),
		IPXEScript:      "http://" + server.String() + "/boot.ipxe",
		NoPing:          true,
		IPXENoProxyDHCP: true,
		RouterAdvertise: true,
	}); err != nil {
		t.Fatal(err)
	}
	ng, err := StartNginx(ctx, l, l.Main(), NginxConfig{Dir: filepath.Join(l.Dir(), "nginx"), Root: root, Listen: netip.AddrPortFrom(server, 80)})
	if err != nil {
		t.Fatal(err)
	}

	mac, _ := net.ParseMAC("52:54:00:bc:00:03")
	vm, err := StartVM(l, l.Main(), VMConfig{MAC: mac, Tap: tap})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.WaitState(ctx, "succeeded"); err != nil {
		serial, _ := vm.Wait(ctx)
		t.Fatalf("%v; serial:\n%s", err, tail(serial, 3000))
	}
	if _, err := vm.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("power-on to power-off: %v", time.Since(vm.Started).Round(time.Millisecond))

	reqs, err := ng.Requests()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range reqs {
		got = append(got, fmt.Sprintf("%s %d", r.Request, r.Status))
	}
	want := []string{"GET /boot.ipxe HTTP/1.1 200", "GET /vmlinuz HTTP/1.1 200", "GET /initrd.img HTTP/1.1 200"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("nginx requests:\n got %q\nwant %q", got, want)
	}
}
