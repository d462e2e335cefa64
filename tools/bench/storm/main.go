//go:build linux

// Command storm boots a fleet of virtual machines at once through the whole
// chain, against bootchain's defaults and against tuned dnsmasq + nginx, in one
// run, and prints the two side by side.
//
// Each virtual machine behaves like firmware: DHCP DISCOVER and REQUEST with PXE
// options (BIOS or UEFI arch), a lock-step TFTP download of its boot file (UEFI
// asks for the size first), DHCP again as iPXE (options 77 and 175), the script
// from the boot file URL (chain, kernel, initrd, boot, sleep, goto: the subset of
// iPXE's language boot scripts use), the kernel (Debian's installed vmlinuz) and a
// ~30 MiB initrd over HTTP, then the installer's "running" and "succeeded"
// callbacks, with firmware-like timeouts and retries. Every machine has its own
// MAC (its DHCP frames are sent raw with that source address) and asks from its
// leased address, as a real machine does.
//
// The machines live in one namespace behind the lab's bridge (a veth; the leased
// range is routed to the namespace's loopback, so any leased address is local
// there); the servers run in the lab's main namespace on the bridge. Before each
// storm, the raw capacity of the same path is measured: TCP connections from the
// machines' namespace reading the initrd sent with sendfile.
//
//	go run ./tools/bench/storm -n 300              # both setups, 300 machines each
//	go run ./tools/bench/storm -n 1000 -timeout 15m
//	go run ./tools/bench/storm -setups bootchain -n 50 -keep
//
// Needs root and the packages of scripts/install-deps.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/bootchain/bootchain/tools/bench/internal/benchenv"
)

type options struct {
	n          int
	uefi       float64
	spread     time.Duration
	timeout    time.Duration
	initrdSize int64
	setups     []string
	keep       bool
	blast      time.Duration
	bcArgs     []string
	verbose    bool
}

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "client":
			if err := clientMain(os.Args[2:]); err != nil {
				fatalf("client: %v", err)
			}
			return
		case "blast":
			if err := blastMain(os.Args[2:]); err != nil {
				fatalf("blast: %v", err)
			}
			return
		}
	}
	var o options
	var setups, bcArgs string
	var initrdMiB int
	flag.IntVar(&o.n, "n", 100, "machines per storm (at most 1,790: the lab's /21 pool)")
	flag.Float64Var(&o.uefi, "uefi", 0.5, "share of UEFI machines (the rest BIOS)")
	flag.DurationVar(&o.spread, "spread", time.Second, "power-on times spread uniformly over this")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "limit for one storm")
	flag.IntVar(&initrdMiB, "initrd-mib", 30, "size of the initrd in MiB (random, incompressible)")
	flag.StringVar(&setups, "setups", "bootchain,peer", "setups to run, in order: bootchain, peer")
	flag.BoolVar(&o.keep, "keep", false, "keep each lab's directory (configs, logs, results)")
	flag.DurationVar(&o.blast, "blast", 3*time.Second, "how long to measure the path's raw capacity (0: skip)")
	flag.StringVar(&bcArgs, "bootchain-args", "", "further `bootchain up` flags, space-separated")
	flag.BoolVar(&o.verbose, "v", false, "print each failed machine's error")
	flag.Parse()
	o.initrdSize = int64(initrdMiB) << 20
	o.setups = strings.Split(setups, ",")
	o.bcArgs = strings.Fields(bcArgs)
	if o.n < 1 || o.n > maxMachines {
		fatalf("-n must be 1..%d", maxMachines)
	}
	for _, s := range o.setups {
		if _, ok := setupByKey[s]; !ok {
			fatalf("unknown setup %q (bootchain, peer)", s)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		stop()
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/storm: "+format+"\n", args...)
	os.Exit(1)
}

func run(ctx context.Context, o options, w io.Writer) error {
	files, err := prepareFiles(ctx, o)
	if err != nil {
		return err
	}
	defer os.RemoveAll(files.dir)
	fmt.Fprintf(w, "%d machines (%.0f%% UEFI), kernel %s (%d bytes), initrd %d bytes; %d CPUs, load %s\n",
		o.n, o.uefi*100, files.kernelSrc, files.kernelSize, files.initrdSize, runtime.NumCPU(), benchenv.LoadAvg())
	var sums []summary
	for _, key := range o.setups {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s, err := stormOnce(ctx, o, setupByKey[key], files)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		sums = append(sums, s)
		printSummary(w, s, o.verbose)
	}
	fmt.Fprintf(w, "load at end %s\n\n", benchenv.LoadAvg())
	printTable(w, sums)
	for _, s := range sums {
		if s.key == "bootchain" && s.failed > 0 {
			return errors.New("bootchain: some boots failed")
		}
	}
	return nil
}
