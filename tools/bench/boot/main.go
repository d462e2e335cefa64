//go:build linux

// Command boot measures network boot time, power-on to the installer's "succeeded"
// callback, for the same VM booted through different boot stacks: stock dnsmasq +
// nginx, hand-tuned dnsmasq + nginx, and bootchain's defaults (the launcher built
// from this tree, started with only the boot network's interface, subnet and pool).
//
// Each boot runs in a fresh private lab (package test/lab): a network namespace with
// a bridge on 198.18.0.1/24 and no route out, the stack under test, a callback
// receiver on 198.18.0.1:8080 and QEMU (TCG) with its NIC on a tap on the bridge.
// The VM's firmware PXE-boots iPXE, iPXE fetches a script, the kernel and the e2e
// initrd (package test/e2e) over HTTP, and the initrd reports "running" and
// "succeeded" to the callback URL on its kernel cmdline, then powers off.
//
//	go run ./tools/bench/boot              # BIOS (SeaBIOS, iPXE ROM on virtio-net)
//	go run ./tools/bench/boot -uefi        # also UEFI (OVMF's PXE, romfile=, snponly.efi)
//	go run ./tools/bench/boot -http        # also UEFI HTTP boot (OVMF, PXE off, snponly.efi over HTTP)
//	go run ./tools/bench/boot -ipv6        # also OVMF's PXE over IPv6 (DHCPv6, TFTP on IPv6; bootchain row only)
//	go run ./tools/bench/boot -n 3 -v      # three boots per row, with phase timings
//
// Needs root and the packages of scripts/install-deps.sh.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/bootchain/bootchain/test/e2e"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/bootchain/bootchain/tools/bench/internal/benchenv"
)

// Setup is one row of the table: a named boot stack.
type Setup struct {
	// Key selects the setup with -setups.
	Key string
	// Name is the row's label.
	Name string
	// New returns a fresh stack for one boot.
	New func() Server
}

// setups are the rows, in order; the first is the baseline of the ratios.
var setups = []Setup{
	{Key: "stock", Name: "stock dnsmasq + nginx", New: func() Server { return &dnsmasqNginx{} }},
	{Key: "tuned", Name: "tuned dnsmasq + nginx", New: func() Server { return &dnsmasqNginx{tuned: true} }},
	{Key: "bootchain", Name: "bootchain defaults", New: func() Server { return &bootchainDefaults{} }},
}

// ipxeDir holds Debian's iPXE builds (package ipxe).
const ipxeDir = "/usr/lib/ipxe"

// uefiHTTP is the UEFI HTTP boot row: OVMF with its PXE turned off, so DHCP gives
// its HTTP boot client an http URL of the UEFI iPXE binary.
const uefiHTTP e2e.Firmware = "uefi-http"

// uefiPXE6 is the UEFI PXE over IPv6 row: OVMF with PXE over IPv4 off, so its
// first boot option is PXE over IPv6 (DHCPv6, option 59, TFTP on IPv6). Only
// bootchain's row boots it: the dnsmasq peers here are set up for IPv4 boots.
const uefiPXE6 e2e.Firmware = "uefi-pxe6"

// supports reports whether setup s can boot firmware fw.
func supports(s Setup, fw e2e.Firmware) bool { return fw != uefiPXE6 || s.Key == "bootchain" }

type options struct {
	uefi, bios bool
	http, ipv6 bool
	runs       int
	timeout    time.Duration
	keep       bool
	pcap       bool
	verbose    bool
	only       map[string]bool
	ipxeEFI    string
}

func main() {
	var o options
	var only string
	flag.BoolVar(&o.uefi, "uefi", false, "also boot UEFI (OVMF's own PXE client, NIC without option ROM, snponly.efi over TFTP)")
	flag.BoolVar(&o.http, "http", false, "also boot UEFI HTTP boot (OVMF with PXE off: DHCP gives an http URL of the UEFI iPXE binary, no TFTP)")
	flag.BoolVar(&o.ipv6, "ipv6", false, "also boot OVMF's PXE over IPv6 (IPv4 PXE off: DHCPv6 with option 59, TFTP on IPv6; bootchain row only)")
	flag.BoolVar(&o.bios, "bios", true, "boot BIOS (SeaBIOS, iPXE option ROM on virtio-net)")
	flag.IntVar(&o.runs, "n", 1, "boots per setup and firmware (the table shows the median)")
	flag.DurationVar(&o.timeout, "timeout", 150*time.Second, "limit for one boot, power-on to power-off")
	flag.BoolVar(&o.keep, "keep", false, "keep each boot's lab directory (configs, logs, serial output)")
	flag.BoolVar(&o.pcap, "pcap", false, "capture the bridge's traffic with tcpdump into the lab directory (implies -keep)")
	flag.BoolVar(&o.verbose, "v", false, "print each boot's phases and server log summary")
	flag.StringVar(&only, "setups", "", "comma-separated setup keys to run (default all: "+setupKeys()+")")
	flag.StringVar(&o.ipxeEFI, "ipxe-efi", "snponly.efi", "UEFI iPXE binary in "+ipxeDir+" for the dnsmasq rows (snponly.efi, bootchain's default, or ipxe.efi)")
	flag.Parse()
	if only != "" {
		o.only = map[string]bool{}
		for _, k := range strings.Split(only, ",") {
			o.only[strings.TrimSpace(k)] = true
		}
	}
	if o.pcap {
		o.keep = true
	}
	if o.runs < 1 || o.runs > 20 {
		fatalf("-n must be 1..20")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		stop()
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/boot: "+format+"\n", args...)
	os.Exit(1)
}

func setupKeys() string {
	var ks []string
	for _, s := range setups {
		ks = append(ks, s.Key)
	}
	return strings.Join(ks, ",")
}

// result is one boot.
type result struct {
	setup    Setup
	firmware e2e.Firmware
	total    time.Duration // power-on to "succeeded" received
	// firstDHCP is power-on to the VM's first DHCP packet on the bridge; zero if
	// none was captured. total - firstDHCP is the part the boot stack answers.
	firstDHCP time.Duration
	phases    []phase
	err       error
}

type phase struct {
	name string
	at   time.Duration // since power-on
}

func run(ctx context.Context, o options, w io.Writer) error {
	if err := lab.Check(); err != nil {
		return err
	}
	var firmwares []e2e.Firmware
	if o.bios {
		firmwares = append(firmwares, e2e.BIOS)
	}
	if o.uefi {
		firmwares = append(firmwares, e2e.UEFI)
	}
	if o.http {
		firmwares = append(firmwares, uefiHTTP)
	}
	if o.ipv6 {
		firmwares = append(firmwares, uefiPXE6)
	}
	var rows []Setup
	for _, s := range setups {
		if o.only == nil || o.only[s.Key] {
			rows = append(rows, s)
		}
	}
	if len(firmwares) == 0 || len(rows) == 0 {
		return errors.New("nothing to run (check -bios, -uefi, -http, -ipv6, -setups)")
	}
	if err := checkFiles(o); err != nil {
		return err
	}

	rd, err := e2e.BuildInitrd(ctx, e2e.InitrdConfig{})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "kernel %s, initrd %s (%d bytes, cached %v)\n", rd.Kernel.Version, rd.Path, rd.Size, rd.Cached)
	fmt.Fprintf(w, "%d CPUs, load average at start: %s\n", runtime.NumCPU(), benchenv.LoadAvg())

	var results []result
	for _, fw := range firmwares {
		for i := 0; i < o.runs; i++ {
			// Rows interleaved, so slow drift of the machine's load hits all alike.
			for _, s := range rows {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !supports(s, fw) {
					continue
				}
				r := bootOnce(ctx, o, s, fw, rd)
				results = append(results, r)
				if r.err != nil {
					fmt.Fprintf(w, "%-5s %-24s run %d: FAILED: %v\n", fw, s.Name, i+1, r.err)
					continue
				}
				fmt.Fprintf(w, "%-5s %-24s run %d: %6.2f s (first DHCP at %5.2f s, then %5.2f s)\n", fw, s.Name, i+1,
					r.total.Seconds(), r.firstDHCP.Seconds(), (r.total - r.firstDHCP).Seconds())
				if o.verbose {
					for _, p := range r.phases {
						fmt.Fprintf(w, "        %7.2f s  %s\n", p.at.Seconds(), p.name)
					}
				}
			}
		}
	}
	fmt.Fprintf(w, "load average at end: %s\n\n", benchenv.LoadAvg())
	printTable(w, rows, firmwares, results)
	for _, r := range results {
		if r.err != nil {
			return errors.New("some boots failed")
		}
	}
	return nil
}

func checkFiles(o options) error {
	need := []string{filepath.Join(ipxeDir, "undionly.kpxe")}
	if o.uefi || o.http || o.ipv6 {
		need = append(need, filepath.Join(ipxeDir, o.ipxeEFI), e2e.DefaultOVMFCode, e2e.DefaultOVMFVars)
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (scripts/install-deps.sh installs it)", err)
		}
	}
	for _, bin := range []string{"qemu-system-x86_64", "dnsmasq", "nginx"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w (scripts/install-deps.sh installs it)", err)
		}
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// bootOnce boots the VM once through setup s in a fresh lab.
func bootOnce(ctx context.Context, o options, s Setup, fw e2e.Firmware, rd *e2e.Initrd) (res result) {
	res = result{setup: s, firmware: fw}
	ctx, cancel := context.WithTimeout(ctx, o.timeout+30*time.Second)
	defer cancel()

	l, err := lab.New(ctx, lab.Config{IPv6: true, KeepDir: o.keep})
	if err != nil {
		res.err = err
		return res
	}
	defer func() {
		if err := l.Close(); err != nil && res.err == nil {
			res.err = err
		}
		if o.keep {
			fmt.Fprintf(os.Stderr, "kept %s\n", l.Dir())
		}
	}()

	f, err := prepareFiles(l, o, fw, rd)
	if err != nil {
		res.err = err
		return res
	}
	tap, err := l.AddTap(ctx, "tap0")
	if err != nil {
		res.err = err
		return res
	}
	ln, err := l.Main().Listen("tcp", net.JoinHostPort(f.ServerAddr.String(), callbackPort))
	if err != nil {
		res.err = err
		return res
	}
	cb := e2e.ServeCallbacks(ln)
	defer cb.Close()

	if o.pcap {
		if err := startCapture(ctx, l, filepath.Join(l.Dir(), "bridge.pcap"), "-s", "512", "-w", filepath.Join(l.Dir(), "bridge.pcap")); err != nil {
			res.err = err
			return res
		}
	}
	// The first DHCP packet from the VM: where the part the boot stack answers
	// starts. OVMF spends ~9-10 s under TCG before it (docs/firmware.md).
	dhcpLog := filepath.Join(l.Dir(), "first-dhcp.txt")
	if err := startCapture(ctx, l, dhcpLog, "-tt", "-c", "1", "-l",
		"udp and (dst port 67 or dst port 547) and ether src "+f.MAC.String()); err != nil {
		res.err = err
		return res
	}

	srv := s.New()
	if err := srv.Start(ctx, l, f); err != nil {
		res.err = fmt.Errorf("start %s: %w", s.Name, err)
		srv.Stop()
		return res
	}
	defer srv.Stop()

	vmFW := fw
	var extra []string
	switch fw {
	case uefiHTTP:
		vmFW = e2e.UEFI
	case uefiPXE6:
		vmFW = e2e.UEFI
		extra = []string{"-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no"}
	}
	vm, err := e2e.StartVM(l, l.Main(), e2e.VMConfig{
		Name:      "bench",
		Dir:       filepath.Join(f.Dir, "vm"),
		Firmware:  vmFW,
		NoNICROM:  vmFW == e2e.UEFI,
		HTTPBoot:  fw == uefiHTTP,
		MAC:       f.MAC,
		Tap:       tap,
		ExtraArgs: extra,
	})
	if err != nil {
		res.err = err
		return res
	}

	bootCtx, bootCancel := context.WithTimeout(ctx, o.timeout)
	defer bootCancel()
	var succeeded time.Time
	if rep, ok := srv.(Reporter); ok {
		succeeded, err = rep.WaitSucceeded(bootCtx)
	} else {
		var r e2e.Report
		r, err = cb.WaitState(bootCtx, "succeeded")
		succeeded = r.Time
	}
	if err != nil {
		serial, _ := vm.Wait(ctx) // kills it at once: bootCtx is over
		res.err = fmt.Errorf("%w\nserial tail:\n%s", err, lastLines(serial, 15))
		if d, ok := srv.(*dnsmasqNginx); ok {
			res.err = fmt.Errorf("%w\n%s", res.err, d.describe())
		}
		return res
	}
	res.total = succeeded.Sub(vm.Started)
	if at, err := firstPacketTime(dhcpLog); err == nil {
		res.firstDHCP = at.Sub(vm.Started)
	} else {
		res.err = fmt.Errorf("first DHCP packet: %w", err)
		return res
	}

	// The initrd powers off right after reporting; a VM that does not is a failure.
	offCtx, offCancel := context.WithTimeout(ctx, 30*time.Second)
	defer offCancel()
	if serial, err := vm.Wait(offCtx); err != nil {
		res.err = fmt.Errorf("after succeeded: %w\nserial tail:\n%s", err, lastLines(serial, 15))
		return res
	}
	res.phases = phases(vm, srv, cb, succeeded)
	return res
}

// startCapture runs tcpdump on the lab's bridge with args, tracked by the lab, its
// stdout in path, and waits until it captures.
func startCapture(ctx context.Context, l *lab.Lab, path string, args ...string) error {
	errPath := path + ".stderr"
	stderr, err := os.Create(errPath)
	if err != nil {
		return err
	}
	defer stderr.Close()
	stdout, err := os.Create(path + ".out")
	if err != nil {
		return err
	}
	defer stdout.Close()
	cmd := l.Main().Command("tcpdump", append([]string{"-i", l.Bridge(), "-n", "-U"}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	p, err := l.Start(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(errPath)
		if strings.Contains(string(b), "listening on") {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("tcpdump exited: %v: %s", p.Err(), b)
		case <-ctx.Done():
			return fmt.Errorf("tcpdump not ready: %w: %s", ctx.Err(), b)
		case <-tick.C:
		}
	}
}

// firstPacketTime reads the time stamp (tcpdump -tt: seconds since the epoch) of
// the first packet tcpdump printed into path+".out".
func firstPacketTime(path string) (time.Time, error) {
	b, err := os.ReadFile(path + ".out")
	if err != nil {
		return time.Time{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	stamp, _, _ := strings.Cut(line, " ")
	sec, frac, ok := strings.Cut(stamp, ".")
	s, err1 := strconv.ParseInt(sec, 10, 64)
	us, err2 := strconv.ParseInt(frac, 10, 64)
	if !ok || err1 != nil || err2 != nil || len(frac) != 6 {
		return time.Time{}, fmt.Errorf("no packet captured (%q)", line)
	}
	return time.Unix(s, us*1000), nil
}

// prepareFiles lays out the TFTP and HTTP roots and the iPXE script for one boot.
func prepareFiles(l *lab.Lab, o options, fw e2e.Firmware, rd *e2e.Initrd) (Files, error) {
	server := l.BridgeAddr().Addr()
	base := server.As4()
	f := Files{
		Dir:          filepath.Join(l.Dir(), "stack"),
		TFTPRoot:     filepath.Join(l.Dir(), "tftp"),
		HTTPRoot:     filepath.Join(l.Dir(), "http"),
		BIOSBootFile: "undionly.kpxe",
		UEFIBootFile: o.ipxeEFI,
		ScriptName:   "boot.ipxe",
		KernelName:   "vmlinuz",
		InitrdName:   "initrd.img",
		Kernel:       rd.Kernel.Image,
		Initrd:       rd.Path,
		Token:        randomHex(16),
		Traceparent:  "00-" + randomHex(16) + "-" + randomHex(8) + "-01",
		Interface:    l.Bridge(),
		ServerAddr:   server,
		RangeStart:   netip.AddrFrom4([4]byte{base[0], base[1], base[2], 100}),
		RangeEnd:     netip.AddrFrom4([4]byte{base[0], base[1], base[2], 200}),
		MAC:          net.HardwareAddr{0x52, 0x54, 0x00, 0xbc, 0x00, 0x01},
		Firmware:     fw,
	}
	f.ScriptURL = fmt.Sprintf("http://%s/%s", server, f.ScriptName)
	f.CallbackURL = fmt.Sprintf("http://%s/report?job=bench-%s", net.JoinHostPort(server.String(), callbackPort), randomHex(4))
	// initrd=<name>: on UEFI this iPXE hands the initrd over by name, and the kernel
	// finds it only when the cmdline names it (docs/firmware.md); harmless on BIOS.
	f.Cmdline = fmt.Sprintf("initrd=%s console=ttyS0 panic=1 bootchain.callback=%s bootchain.token=%s bootchain.traceparent=%s",
		f.InitrdName, f.CallbackURL, f.Token, f.Traceparent)

	for _, d := range []string{f.Dir, f.TFTPRoot, f.HTTPRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return f, err
		}
	}
	copies := map[string]string{
		filepath.Join(f.TFTPRoot, f.BIOSBootFile): filepath.Join(ipxeDir, f.BIOSBootFile),
		filepath.Join(f.HTTPRoot, f.KernelName):   f.Kernel,
		filepath.Join(f.HTTPRoot, f.InitrdName):   f.Initrd,
	}
	switch fw {
	case e2e.UEFI, uefiPXE6:
		copies[filepath.Join(f.TFTPRoot, f.UEFIBootFile)] = filepath.Join(ipxeDir, f.UEFIBootFile)
	case uefiHTTP:
		copies[filepath.Join(f.HTTPRoot, f.UEFIBootFile)] = filepath.Join(ipxeDir, f.UEFIBootFile)
	}
	for dst, src := range copies {
		if err := e2e.CopyFile(src, dst); err != nil {
			return f, err
		}
	}
	script := fmt.Sprintf(`#!ipxe
echo bootchain bench: ${net0/mac} ${platform} ${buildarch}
kernel http://%[1]s/%[2]s %[3]s
initrd http://%[1]s/%[4]s
boot
`, server, f.KernelName, f.Cmdline, f.InitrdName)
	return f, os.WriteFile(filepath.Join(f.HTTPRoot, f.ScriptName), []byte(script), 0o644)
}

// phases lists what the servers saw of the boot, as offsets from power-on.
func phases(vm *e2e.VM, srv Server, cb *e2e.CallbackServer, succeeded time.Time) []phase {
	var ps []phase
	if d, ok := srv.(*dnsmasqNginx); ok && d.nginx != nil {
		reqs, _ := d.nginx.Requests()
		for _, r := range reqs {
			ps = append(ps, phase{name: fmt.Sprintf("HTTP %s -> %d, %d bytes", r.Request, r.Status, r.Bytes), at: r.Done.Sub(vm.Started)})
		}
	}
	for _, r := range cb.Reports() {
		ps = append(ps, phase{name: "callback " + r.State(), at: r.Time.Sub(vm.Started)})
	}
	ps = append(ps, serialPhases(vm, cb)...)
	if d, ok := srv.(*dnsmasqNginx); ok {
		ps = append(ps, phase{name: d.describe(), at: succeeded.Sub(vm.Started)})
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].at < ps[j].at })
	return ps
}

// markerRE matches the initrd's console markers stamped with the kernel's uptime.
var markerRE = regexp.MustCompile(`BOOTCHAIN-E2E: (.*) \(uptime ([0-9.]+)\)`)

// serialPhases places the initrd's console markers on the power-on time line. The
// kernel's clock starts at an unknown moment; the "running" callback, seen both on
// the console (kernel uptime) and by the callback server (wall clock), anchors it.
func serialPhases(vm *e2e.VM, cb *e2e.CallbackServer) []phase {
	type mark struct {
		up   float64
		text string
	}
	var marks []mark
	anchor := -1.0
	for _, m := range markerRE.FindAllStringSubmatch(vm.Serial(), -1) {
		up, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		marks = append(marks, mark{up, strings.TrimSpace(m[1])})
		if strings.HasPrefix(m[1], "callback running ok") {
			anchor = up
		}
	}
	var running time.Time
	for _, r := range cb.Reports() {
		if r.State() == "running" {
			running = r.Time
			break
		}
	}
	if anchor < 0 || running.IsZero() {
		return nil
	}
	kernelStart := running.Add(-time.Duration(anchor * float64(time.Second))).Sub(vm.Started)
	ps := []phase{{name: "kernel started (from console uptime)", at: kernelStart}}
	for _, m := range marks {
		ps = append(ps, phase{name: "console: " + m.text, at: kernelStart + time.Duration(m.up*float64(time.Second))})
	}
	return ps
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// printTable prints one row per firmware and setup: median seconds from power-on
// and from the VM's first DHCP packet (the part the boot stack answers), and the
// ratio to the first setup (the stock baseline) of the same firmware.
func printTable(w io.Writer, rows []Setup, firmwares []e2e.Firmware, results []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "firmware\tsetup\tboots\tmedian s\tmin s\tmax s\tstock / this\tfrom 1st DHCP s\tstock / this")
	for _, fw := range firmwares {
		var base, baseDHCP float64
		for i, s := range rows {
			var secs, after []float64
			failed := 0
			for _, r := range results {
				if r.firmware != fw || r.setup.Key != s.Key {
					continue
				}
				if r.err != nil {
					failed++
					continue
				}
				secs = append(secs, r.total.Seconds())
				after = append(after, (r.total - r.firstDHCP).Seconds())
			}
			if len(secs) == 0 && failed == 0 && !supports(s, fw) {
				continue
			}
			if len(secs) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t0 (%d failed)\t-\t-\t-\t-\t-\t-\n", fw, s.Name, failed)
				continue
			}
			med, medAfter := median(secs), median(after)
			if i == 0 {
				base, baseDHCP = med, medAfter
			}
			boots := fmt.Sprint(len(secs))
			if failed > 0 {
				boots += fmt.Sprintf(" (%d failed)", failed)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t%.2f\t%s\n", fw, s.Name, boots, med, secs[0], secs[len(secs)-1],
				ratio(base, med), medAfter, ratio(baseDHCP, medAfter))
		}
	}
	tw.Flush()
}

// median sorts xs and returns its median.
func median(xs []float64) float64 {
	sort.Float64s(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return m
}

func ratio(base, x float64) string {
	if base <= 0 || x <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", base/x)
}

// callbackPort is where the harness receives the callbacks of the dnsmasq + nginx
// rows; not 8080, which bootchain's bootapi serves in its own row.
const callbackPort = "8099"
