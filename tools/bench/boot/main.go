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
//	go run ./tools/bench/boot -secureboot  # also UEFI PXE with Secure Boot and the site key (signed snponly.efi and kernel)
//	go run ./tools/bench/boot -secureboot-ms # also Secure Boot, Microsoft's keys: shim -> GRUB, all over TFTP
//	go run ./tools/bench/boot -arm64       # also arm64 (AAVMF's PXE -> Debian's GRUB, all over TFTP)
//	go run ./tools/bench/boot -ipv6        # also OVMF's PXE over IPv6 (DHCPv6, TFTP on IPv6; bootchain row only)
//	go run ./tools/bench/boot -all         # every firmware path (bootPaths in paths.go)
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

type options struct {
	// paths are the firmware paths to boot, by bootPath.fw.
	paths   map[e2e.Firmware]bool
	runs    int
	timeout time.Duration
	keep    bool
	pcap    bool
	verbose bool
	only    map[string]bool
	ipxeEFI string
	// signed is the site-signed iPXE and kernel, when a siteSigned path runs.
	signed *siteSigned
	// arm64Kit and arm64Initrd are the arm64 GRUB, kernel and initrd (-arm64).
	arm64Kit    *e2e.ARM64Kit
	arm64Initrd *e2e.Initrd
}

func main() {
	var o options
	var only string
	pathFlags := map[e2e.Firmware]*bool{}
	for _, p := range bootPaths {
		pathFlags[p.fw] = flag.Bool(p.flag, p.on, p.usage)
	}
	all := flag.Bool("all", false, "boot every firmware path")
	flag.IntVar(&o.runs, "n", 1, "boots per setup and firmware (the table shows the median)")
	flag.DurationVar(&o.timeout, "timeout", 150*time.Second, "limit for one boot, power-on to power-off")
	flag.BoolVar(&o.keep, "keep", false, "keep each boot's lab directory (configs, logs, serial output)")
	flag.BoolVar(&o.pcap, "pcap", false, "capture the bridge's traffic with tcpdump into the lab directory (implies -keep)")
	flag.BoolVar(&o.verbose, "v", false, "print each boot's phases and server log summary")
	flag.StringVar(&only, "setups", "", "comma-separated setup keys to run (default all: "+setupKeys()+")")
	flag.StringVar(&o.ipxeEFI, "ipxe-efi", "snponly.efi", "UEFI iPXE binary in "+ipxeDir+" for the dnsmasq rows (snponly.efi, bootchain's default, or ipxe.efi)")
	flag.Parse()
	o.paths = map[e2e.Firmware]bool{}
	for fw, on := range pathFlags {
		o.paths[fw] = *on || *all
	}
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
	// stages are the durations of stageNames, from the capture (-pcap).
	stages []time.Duration
	err    error
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
	for _, p := range bootPaths {
		if o.paths[p.fw] {
			firmwares = append(firmwares, p.fw)
		}
	}
	var rows []Setup
	for _, s := range setups {
		if o.only == nil || o.only[s.Key] {
			rows = append(rows, s)
		}
	}
	if len(firmwares) == 0 || len(rows) == 0 {
		return errors.New("nothing to run (check the path flags and -setups)")
	}
	if err := checkFiles(o, firmwares); err != nil {
		return err
	}

	rd, err := e2e.BuildInitrd(ctx, e2e.InitrdConfig{})
	if err != nil {
		return err
	}
	for _, fw := range firmwares {
		if pathOf(fw).siteSigned && o.signed == nil {
			dir, err := os.MkdirTemp("", "bench-boot-sign-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			if o.signed, err = signForSiteKey(ctx, dir, filepath.Join(ipxeDir, o.ipxeEFI), rd.Kernel.Image); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(w, "kernel %s, initrd %s (%d bytes, cached %v)\n", rd.Kernel.Version, rd.Path, rd.Size, rd.Cached)
	if o.paths[e2e.ARM64] {
		root, err := e2e.ModuleRoot(ctx)
		if err != nil {
			return err
		}
		if o.arm64Kit, err = e2e.FindARM64(ctx, root); err != nil {
			return err
		}
		if o.arm64Initrd, err = o.arm64Kit.BuildInitrd(ctx); err != nil {
			return err
		}
		fmt.Fprintf(w, "arm64: kernel %s, initrd %s (%d bytes, cached %v)\n", o.arm64Kit.Kernel.Version, o.arm64Initrd.Path, o.arm64Initrd.Size, o.arm64Initrd.Cached)
	}
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
				fwrd := rd
				if fw == e2e.ARM64 {
					fwrd = o.arm64Initrd
				}
				r := bootOnce(ctx, o, s, fw, fwrd)
				results = append(results, r)
				if r.err != nil {
					fmt.Fprintf(w, "%-5s %-24s run %d: FAILED: %v\n", fw, s.Name, i+1, r.err)
					continue
				}
				fmt.Fprintf(w, "%-5s %-24s run %d: %6.2f s (first DHCP at %5.2f s, then %5.2f s)\n", fw, s.Name, i+1,
					r.total.Seconds(), r.firstDHCP.Seconds(), (r.total - r.firstDHCP).Seconds())
				if len(r.stages) > 0 {
					var parts []string
					for _, d := range r.stages {
						parts = append(parts, fmt.Sprintf("%.2f", d.Seconds()))
					}
					fmt.Fprintf(w, "        stages from the first DHCP packet: %s s\n", strings.Join(parts, " + "))
				}
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
	printStages(w, rows, firmwares, results)
	for _, r := range results {
		if r.err != nil {
			return errors.New("some boots failed")
		}
	}
	return nil
}

func checkFiles(o options, firmwares []e2e.Firmware) error {
	need := []string{filepath.Join(ipxeDir, "undionly.kpxe")}
	for _, fw := range firmwares {
		if pathOf(fw).uefiFile {
			need = append(need, filepath.Join(ipxeDir, o.ipxeEFI), e2e.DefaultOVMFCode, e2e.DefaultOVMFVars)
			break
		}
	}
	for _, fw := range firmwares {
		if pathOf(fw).shimGrub {
			need = append(need, e2e.SecureBootCode, e2e.MicrosoftVars, e2e.ShimSigned, e2e.GrubNetSigned)
			break
		}
	}
	bins := []string{"qemu-system-x86_64", "dnsmasq", "nginx"}
	if o.paths[e2e.ARM64] {
		need = append(need, e2e.DefaultAAVMFCode, e2e.DefaultAAVMFVars)
		bins = append(bins, e2e.ARM64.QEMU())
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (scripts/install-deps.sh installs it)", err)
		}
	}
	for _, bin := range bins {
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

	var capture *lab.Proc
	if o.pcap {
		if capture, err = startCapture(ctx, l, filepath.Join(l.Dir(), "bridge.pcap"), "-s", "512", "-w", filepath.Join(l.Dir(), "bridge.pcap")); err != nil {
			res.err = err
			return res
		}
	}
	// The first DHCP packet from the VM: where the part the boot stack answers
	// starts. OVMF spends ~9-10 s under TCG before it (docs/firmware.md).
	dhcpLog := filepath.Join(l.Dir(), "first-dhcp.txt")
	if _, err := startCapture(ctx, l, dhcpLog, "-tt", "-c", "1", "-l",
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

	vmCfg := e2e.VMConfig{
		Name: "bench",
		Dir:  filepath.Join(f.Dir, "vm"),
		MAC:  f.MAC,
		Tap:  tap,
	}
	pathOf(fw).vm(&vmCfg)
	vm, err := e2e.StartVM(l, l.Main(), vmCfg)
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
	if o.pcap {
		// Under load tcpdump lags behind the bridge, and what it has not read when
		// it stops is lost: let it catch up first.
		pcap := filepath.Join(l.Dir(), "bridge.pcap")
		waitQuiet(ctx, pcap, 2*time.Second, 20*time.Second)
		capture.Stop(5 * time.Second)
		if res.stages, err = captureStages(ctx, pcap); err != nil {
			fmt.Fprintf(os.Stderr, "bench/boot: stages: %v\n", err)
		}
	}
	return res
}

// startCapture runs tcpdump on the lab's bridge with args, tracked by the lab, its
// stdout in path, and waits until it captures.
func startCapture(ctx context.Context, l *lab.Lab, path string, args ...string) (*lab.Proc, error) {
	errPath := path + ".stderr"
	stderr, err := os.Create(errPath)
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	stdout, err := os.Create(path + ".out")
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	cmd := l.Main().Command("tcpdump", append([]string{"-i", l.Bridge(), "-n", "-U"}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	p, err := l.Start(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(errPath)
		if strings.Contains(string(b), "listening on") {
			return p, nil
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("tcpdump exited: %v: %s", p.Err(), b)
		case <-ctx.Done():
			return nil, fmt.Errorf("tcpdump not ready: %w: %s", ctx.Err(), b)
		case <-tick.C:
		}
	}
}

// waitQuiet returns once path has not grown for quiet, or after limit.
func waitQuiet(ctx context.Context, path string, quiet, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var size int64 = -1
	since := time.Now()
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() != size {
			size, since = fi.Size(), time.Now()
		}
		if time.Since(since) >= quiet {
			return
		}
		select {
		case <-ctx.Done():
			return
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
		IPXEDir:      ipxeDir,
	}
	path := pathOf(fw)
	ipxeEFI := filepath.Join(ipxeDir, f.UEFIBootFile)
	if path.siteSigned {
		f.Kernel, ipxeEFI = o.signed.kernel, o.signed.ipxe
		f.IPXEDir = filepath.Join(f.Dir, "ipxe")
	}
	f.ScriptURL = fmt.Sprintf("http://%s/%s", server, f.ScriptName)
	f.CallbackURL = fmt.Sprintf("http://%s/report?job=bench-%s", net.JoinHostPort(server.String(), callbackPort), randomHex(4))
	// initrd=<name>: on UEFI this iPXE hands the initrd over by name, and the kernel
	// finds it only when the cmdline names it (docs/firmware.md); harmless on BIOS.
	f.Cmdline = fmt.Sprintf("initrd=%s console=ttyS0 panic=1 bootchain.callback=%s bootchain.token=%s bootchain.traceparent=%s",
		f.InitrdName, f.CallbackURL, f.Token, f.Traceparent)

	dirs := []string{f.Dir, f.TFTPRoot, f.HTTPRoot}
	if path.siteSigned {
		dirs = append(dirs, f.IPXEDir)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return f, err
		}
	}
	copies := map[string]string{
		filepath.Join(f.TFTPRoot, f.BIOSBootFile): filepath.Join(ipxeDir, f.BIOSBootFile),
		filepath.Join(f.HTTPRoot, f.KernelName):   f.Kernel,
		filepath.Join(f.HTTPRoot, f.InitrdName):   f.Initrd,
	}
	switch {
	case path.uefiFileHTTP:
		copies[filepath.Join(f.HTTPRoot, f.UEFIBootFile)] = ipxeEFI
	case path.uefiFile:
		copies[filepath.Join(f.TFTPRoot, f.UEFIBootFile)] = ipxeEFI
	}
	if path.siteSigned {
		// bootchain's row imports the iPXE binaries of this directory.
		copies[filepath.Join(f.IPXEDir, f.UEFIBootFile)] = ipxeEFI
	}
	if fw == e2e.ARM64 {
		// GRUB, its config, the kernel and the initrd over TFTP, as bootchain
		// serves them; the virt machine's console is a PL011 (ttyAMA0).
		f.ARM64BootFile, f.ARM64GRUB = e2e.ARM64GRUBName, o.arm64Kit.GRUB
		copies[filepath.Join(f.TFTPRoot, f.ARM64BootFile)] = f.ARM64GRUB
		copies[filepath.Join(f.TFTPRoot, f.KernelName)] = f.Kernel
		copies[filepath.Join(f.TFTPRoot, f.InitrdName)] = f.Initrd
		if err := os.MkdirAll(filepath.Join(f.TFTPRoot, "grub"), 0o755); err != nil {
			return f, err
		}
		cmdline := strings.Replace(strings.TrimPrefix(f.Cmdline, "initrd="+f.InitrdName+" "), "console=ttyS0", "console=ttyAMA0", 1)
		cfg := fmt.Sprintf("linux (tftp)/%s %s\ninitrd (tftp)/%s\nboot\n", f.KernelName, cmdline, f.InitrdName)
		if err := os.WriteFile(filepath.Join(f.TFTPRoot, "grub", "grub.cfg"), []byte(cfg), 0o644); err != nil {
			return f, err
		}
	}
	if path.shimGrub {
		// Everything over TFTP: Debian's signed GRUB has no HTTP.
		f.UEFIBootFile = "shimx64.efi"
		copies[filepath.Join(f.TFTPRoot, "shimx64.efi")] = e2e.ShimSigned
		copies[filepath.Join(f.TFTPRoot, "grubx64.efi")] = e2e.GrubNetSigned
		copies[filepath.Join(f.TFTPRoot, f.KernelName)] = f.Kernel
		copies[filepath.Join(f.TFTPRoot, f.InitrdName)] = f.Initrd
		if err := os.MkdirAll(filepath.Join(f.TFTPRoot, "grub"), 0o755); err != nil {
			return f, err
		}
		// GRUB hands the initrd to the kernel itself: no initrd=<name>.
		cmdline := strings.TrimPrefix(f.Cmdline, "initrd="+f.InitrdName+" ")
		cfg := fmt.Sprintf("linux (tftp)/%s %s\ninitrd (tftp)/%s\nboot\n", f.KernelName, cmdline, f.InitrdName)
		if err := os.WriteFile(filepath.Join(f.TFTPRoot, "grub", "grub.cfg"), []byte(cfg), 0o644); err != nil {
			return f, err
		}
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
// and from the VM's first DHCP packet (the part the boot stack answers), the ratio
// to the first setup (the stock baseline) of the same firmware, and the ratio of
// the time from the first DHCP packet to the first path's (BIOS) with the same setup.
func printTable(w io.Writer, rows []Setup, firmwares []e2e.Firmware, results []result) {
	type key struct {
		fw    e2e.Firmware
		setup string
	}
	type stats struct {
		secs, after []float64
		failed      int
	}
	all := map[key]*stats{}
	for _, r := range results {
		k := key{r.firmware, r.setup.Key}
		if all[k] == nil {
			all[k] = &stats{}
		}
		if r.err != nil {
			all[k].failed++
			continue
		}
		all[k].secs = append(all[k].secs, r.total.Seconds())
		all[k].after = append(all[k].after, (r.total - r.firstDHCP).Seconds())
	}
	medAfter := func(k key) float64 {
		if st := all[k]; st != nil && len(st.after) > 0 {
			return median(st.after)
		}
		return 0
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "firmware\tsetup\tboots\tmedian s\tmin s\tmax s\tstock / this\tfrom 1st DHCP s\tstock / this\tthis / %s\n", firmwares[0])
	for _, fw := range firmwares {
		var base, baseDHCP float64
		for i, s := range rows {
			st := all[key{fw, s.Key}]
			if st == nil && !supports(s, fw) {
				continue
			}
			if st == nil || len(st.secs) == 0 {
				failed := 0
				if st != nil {
					failed = st.failed
				}
				fmt.Fprintf(tw, "%s\t%s\t0 (%d failed)\t-\t-\t-\t-\t-\t-\t-\n", fw, s.Name, failed)
				continue
			}
			med, after := median(st.secs), medAfter(key{fw, s.Key})
			if i == 0 {
				base, baseDHCP = med, after
			}
			boots := fmt.Sprint(len(st.secs))
			if st.failed > 0 {
				boots += fmt.Sprintf(" (%d failed)", st.failed)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t%.2f\t%s\t%s\n", fw, s.Name, boots, med, st.secs[0], st.secs[len(st.secs)-1],
				ratio(base, med), after, ratio(baseDHCP, after), ratio(after, medAfter(key{firmwares[0], s.Key})))
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
