//go:build linux

// Command demo boots a VM through the whole bootchain chain in a private lab and
// prints what happened: `make demo` runs it (as root, after scripts/install-deps.sh).
//
// It builds a lab (network namespace, bridge 198.18.0.1/24, tap; no route out),
// starts `bootchain up` inside it (embedded etcd, dhcpd on the bridge, tftpd,
// bootapi, artifactstore), imports Debian's iPXE binaries, uploads a Debian kernel
// and a small test initrd, registers the VM, creates a reinstall job, powers on a
// QEMU VM (TCG) that PXE-boots, and prints the job's states and the boot's trace
// timeline (`bootctl trace`). Everything it started is stopped by PID and the
// namespace deleted at the end, also on Ctrl-C.
//
//	go run ./test/e2e/cmd/demo            # BIOS: SeaBIOS, iPXE ROM -> undionly.kpxe over TFTP
//	go run ./test/e2e/cmd/demo -uefi      # UEFI: OVMF's own PXE -> snponly.efi over TFTP
//	go run ./test/e2e/cmd/demo -keep      # keep logs and the serial console output
//	go run ./test/e2e/cmd/demo -jaeger    # export the trace to Jaeger, print its URL, wait for Ctrl-C
//
// With -jaeger, a Jaeger all-in-one (tools/jaeger; built once per machine by
// scripts/jaeger.sh if it is not yet) runs in the lab namespace and receives the
// stack's OTLP; its query API is forwarded to -jaeger-listen on this host's
// loopback, and the demo waits for Ctrl-C so you can look at the trace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/test/e2e"
	"github.com/bootchain/bootchain/test/lab"
)

func main() {
	uefi := flag.Bool("uefi", false, "boot UEFI (OVMF, NIC without option ROM) instead of BIOS")
	keep := flag.Bool("keep", false, "keep the lab directory (logs, serial output) after the demo")
	timeout := flag.Duration("timeout", 4*time.Minute, "give up on the boot after this long")
	withJaeger := flag.Bool("jaeger", false, "export the boot's trace to Jaeger (tools/jaeger) in the lab; print where to look; wait for Ctrl-C")
	jaegerListen := flag.String("jaeger-listen", "127.0.0.1:16686", "with -jaeger: where on this host's loopback to serve Jaeger's query API (busy: any free port)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := opts{uefi: *uefi, keep: *keep, timeout: *timeout, jaeger: *withJaeger, jaegerListen: *jaegerListen}
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

type opts struct {
	uefi, keep   bool
	timeout      time.Duration
	jaeger       bool
	jaegerListen string
}

func run(ctx context.Context, o opts) (err error) {
	uefi, keep, timeout := o.uefi, o.keep, o.timeout
	if err := lab.Check(); err != nil {
		return fmt.Errorf("%w (run as root: sudo make demo)", err)
	}
	// Leftovers of a demo that was killed before it could clean up.
	if gone, _ := lab.RemoveStale(ctx, "bcdemo"); len(gone) > 0 {
		step("removed stale lab namespaces %v", gone)
	}
	step("building the test initrd (busybox + virtio-net modules of the installed Debian kernel)")
	rd, err := e2e.BuildInitrd(ctx, e2e.InitrdConfig{})
	if err != nil {
		return err
	}
	fmt.Printf("    kernel %s, initrd %s (%d bytes)\n", rd.Kernel.Image, rd.Path, rd.Size)

	l, err := lab.New(ctx, lab.Config{Prefix: "bcdemo", IPv6: true, KeepDir: keep})
	if err != nil {
		return err
	}
	defer func() {
		step("cleaning up: stopping processes by PID, deleting namespace %s", l.Name())
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if keep {
			fmt.Printf("    kept %s\n", l.Dir())
		}
	}()
	step("lab: namespace %s, bridge %s %s (no route out), dir %s", l.Name(), l.Bridge(), l.BridgeAddr(), l.Dir())

	step("building bootchain and bootctl")
	tools, err := e2e.BuildTools(ctx, filepath.Join(l.Dir(), "bin"))
	if err != nil {
		return err
	}
	tap, err := l.AddTap(ctx, "tap0")
	if err != nil {
		return err
	}
	args := []string{"--dhcpd-interface", l.Bridge(), "--dhcpd-subnet", "198.18.0.0/24", "--dhcpd-pool", "198.18.0.100-198.18.0.200"}
	if !uefi {
		// The BIOS NIC's ROM is iPXE already; chain-loading our own undionly.kpxe
		// shows the TFTP hop too.
		args = append(args, "--dhcpd-chainload-own-ipxe")
	}
	var jg *e2e.Jaeger
	var env []string
	if o.jaeger {
		step("starting Jaeger (tools/jaeger) in the lab")
		bin, err := e2e.JaegerBinary(ctx, true)
		if err != nil {
			return err
		}
		if jg, err = e2e.StartJaeger(ctx, l, l.Main(), e2e.JaegerConfig{Binary: bin, Dir: filepath.Join(l.Dir(), "jaeger")}); err != nil {
			return err
		}
		defer jg.Stop()
		env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + jg.OTLPEndpoint(), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_BSP_SCHEDULE_DELAY=200"}
		fmt.Printf("    %s, OTLP at %s in the lab\n", bin, jg.OTLPEndpoint())
	}
	step("starting: bootchain up %s", strings.Join(args, " "))
	st, err := e2e.StartStack(ctx, l, l.Main(), e2e.StackConfig{Tools: tools, Dir: filepath.Join(l.Dir(), "bootchain"), Args: args, DHCP: true, Env: env})
	if err != nil {
		return err
	}
	defer st.Stop()

	const macs = "52:54:00:bc:de:01"
	step("bootctl: import iPXE, upload kernel and initrd, profile e2e, machine %s, reinstall job", macs)
	if _, err := st.Provision(ctx, e2e.BootConfig{MAC: macs, Initrd: rd, NoJob: true}); err != nil {
		return err
	}
	cc, err := st.Conn("bootapi")
	if err != nil {
		return err
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	stream, err := bootapiv1.NewJobServiceClient(cc).WatchJobs(wctx, &bootapiv1.WatchJobsRequest{Mac: macs})
	if err != nil {
		return err
	}
	job, err := st.CreateJob(ctx, macs, "e2e")
	if err != nil {
		return err
	}

	fw := e2e.BIOS
	if uefi {
		fw = e2e.UEFI
	}
	mac, _ := net.ParseMAC(macs)
	step("powering on a %s VM (QEMU, TCG) with MAC %s", strings.ToUpper(string(fw)), macs)
	vm, err := e2e.StartVM(l, l.Main(), e2e.VMConfig{Name: "demo", Firmware: fw, NoNICROM: uefi, MAC: mac, Tap: tap})
	if err != nil {
		return err
	}
	defer vm.Kill()

	bctx, bcancel := context.WithTimeout(ctx, timeout)
	defer bcancel()
	go func() { <-bctx.Done(); wcancel() }()
	var final bootapiv1.JobState
	for {
		r, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("job %s did not finish: %w; serial tail:\n%s", job, err, lastLines(vm.Serial(), 20))
		}
		j := r.GetJob()
		if j.GetId() != job {
			continue
		}
		state := strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_"))
		fmt.Printf("    %6.2fs  job %s %s %s\n", time.Since(vm.Started).Seconds(), job, state, j.GetMessage())
		if s := j.GetState(); s == bootapiv1.JobState_JOB_STATE_SUCCEEDED || s == bootapiv1.JobState_JOB_STATE_FAILED {
			final = s
			break
		}
	}
	wcancel()
	if _, err := vm.Wait(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Printf("    VM: %v\n", err)
	}
	step("the VM powered off %.2fs after power-on", time.Since(vm.Started).Seconds())

	// The last hops' records reach etcd asynchronously: wait for the session to end.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var session *bootapiv1.BootSession
	for i := 0; i < 50; i++ {
		r, err := bootapiv1.NewSessionServiceClient(cc).GetSession(ctx, &bootapiv1.GetSessionRequest{Mac: macs})
		if err == nil {
			session = r.GetSession()
			if session.GetState() != bootapiv1.SessionState_SESSION_STATE_ACTIVE {
				break
			}
		}
		<-tick.C
	}
	step("bootctl trace %s", macs)
	out, err := st.Bootctl(ctx, "trace", macs)
	if err != nil {
		return fmt.Errorf("bootctl trace: %w: %s", err, out)
	}
	fmt.Println(out)
	out, _ = st.Bootctl(ctx, "jobs", "list", "-mac", macs)
	fmt.Println(out)

	step("where to look")
	fmt.Printf(`    launcher log          %s
    VM serial console     %s
    lab namespace         %s (commands: ip netns exec %[3]s %s <command>)
    while a lab runs:     ip netns exec <ns> env BOOTCHAIN_CONFIG=%[5]s bootctl sessions | trace <mac> | jobs list | leases list
    traces:               set OTEL_EXPORTER_OTLP_ENDPOINT (and _PROTOCOL=grpc) for bootchain up; DEMO_FLAGS=-jaeger shows them in Jaeger
    the same, as a test:  make e2e   (test/e2e: BIOS + UEFI, authoritative + proxy DHCP, one OTLP trace per boot)
`, st.LogPath, vm.SerialPath, l.Name(), tools.Bootctl, st.ClientConfig)
	if !keep {
		fmt.Println("    (run with -keep, or `make demo DEMO_FLAGS=-keep`, to keep these files)")
	}
	if jg != nil && session != nil {
		if err := showJaeger(ctx, jg, session.GetTraceId(), o.jaegerListen); err != nil {
			return err
		}
	}
	if final != bootapiv1.JobState_JOB_STATE_SUCCEEDED {
		return fmt.Errorf("job %s ended %v", job, final)
	}
	return nil
}

// showJaeger prints the boot's trace as Jaeger has it, serves Jaeger's query API
// on this host's loopback and waits for Ctrl-C.
func showJaeger(ctx context.Context, jg *e2e.Jaeger, traceID, listen string) error {
	step("the boot's trace in Jaeger")
	// Spans reach Jaeger in batches: wait (bounded) until the count stops growing.
	var spans []e2e.Span
	for i := 0; i < 20; i++ {
		got, err := jg.Trace(ctx, traceID)
		if err != nil {
			return err
		}
		if len(got) > 0 && len(got) == len(spans) {
			break
		}
		spans = got
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(500 * time.Millisecond):
		}
	}
	for _, sp := range spans {
		d := sp.End.Sub(sp.Start)
		if d >= time.Millisecond {
			d = d.Round(time.Millisecond)
		}
		fmt.Printf("    %s  %-24s %-22s %9s %s\n", sp.Start.Format("15:04:05.000"), sp.Service, sp.Name, d, sp.Attrs["url.path"])
	}
	fmt.Printf("    %d spans in trace %s\n", len(spans), traceID)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		// Busy (another demo?): any free port on loopback.
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	stop := jg.Forward(ln)
	defer stop()
	base := "http://" + ln.Addr().String()
	step("where to look in Jaeger (until Ctrl-C)")
	fmt.Printf(`    the boot's trace      %s%s   (OTLP JSON)
    the same, v1 format   %s/api/traces/%s
    services              %s/api/v3/services
    Jaeger's log          %s
    (a Jaeger built from Go modules has no web UI assets: / is a placeholder page;
    point a full Jaeger, or Grafana, at bootchain with OTEL_EXPORTER_OTLP_ENDPOINT)
`, base, e2e.TracePath(traceID), base, traceID, base, jg.LogPath)
	<-ctx.Done()
	fmt.Println()
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
