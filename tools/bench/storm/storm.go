//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bootchain/bootchain/test/e2e"
	"github.com/bootchain/bootchain/test/lab"
	"github.com/bootchain/bootchain/tools/bench/internal/proccpu"
)

// The lab's addresses: the servers on the bridge, the machines' namespace on a
// veth, and a pool of 1,790 addresses routed to that namespace's loopback.
var (
	bridgeAddr  = netip.MustParsePrefix("198.18.0.1/21")
	clientAddr  = netip.MustParsePrefix("198.18.0.2/21")
	poolStart   = netip.MustParseAddr("198.18.1.1")
	poolEnd     = netip.MustParseAddr("198.18.7.254")
	poolRoutes  = []string{"198.18.1.0/24", "198.18.2.0/23", "198.18.4.0/22"}
	maxMachines = 1790
	blastPort   = uint16(9999)
	ipxeDir     = "/usr/lib/ipxe"
)

// files are what both setups serve.
type files struct {
	dir                    string
	kernelSrc              string
	kernel, initrd         string
	kernelSize, initrdSize int64
	biosFile, uefiFile     string // names in ipxeDir
}

func prepareFiles(ctx context.Context, o options) (*files, error) {
	k, err := e2e.FindKernel()
	if err != nil {
		return nil, err
	}
	for _, p := range []string{filepath.Join(ipxeDir, "undionly.kpxe"), filepath.Join(ipxeDir, "ipxe.efi")} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w (scripts/install-deps.sh installs it)", err)
		}
	}
	dir, err := os.MkdirTemp("", "bootchain-storm-")
	if err != nil {
		return nil, err
	}
	f := &files{dir: dir, kernelSrc: k.Image, kernel: filepath.Join(dir, "vmlinuz"), initrd: filepath.Join(dir, "initrd.img"),
		biosFile: "undionly.kpxe", uefiFile: "ipxe.efi"}
	if err := e2e.CopyFile(k.Image, f.kernel); err != nil {
		return nil, err
	}
	out, err := os.Create(f.initrd)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(out, rand.Reader, o.initrdSize); err != nil {
		out.Close()
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	for _, p := range []struct {
		path string
		size *int64
	}{{f.kernel, &f.kernelSize}, {f.initrd, &f.initrdSize}} {
		st, err := os.Stat(p.path)
		if err != nil {
			return nil, err
		}
		*p.size = st.Size()
	}
	return f, nil
}

// stack is one setup's servers in a lab.
type stack interface {
	// start starts the servers on the lab's bridge, ready for n machines (MACs
	// from index 0).
	start(ctx context.Context, l *lab.Lab, f *files, o options) error
	// caFile is the CA certificate of the stack's https:// callbacks, if any.
	caFile() string
	// pids are the server processes whose CPU time counts (with their children).
	pids() []int
	stop()
}

type setup struct {
	key, name string
	new       func() stack
}

var setupByKey = map[string]setup{
	"bootchain": {key: "bootchain", name: "bootchain defaults", new: func() stack { return &bootchainStack{} }},
	"peer":      {key: "peer", name: "tuned dnsmasq + nginx", new: func() stack { return &peerStack{} }},
}

// summary is one storm's figures.
type summary struct {
	key, name   string
	n, failed   int
	byHop       map[string]int
	errs        []string
	allDone     time.Duration // storm start to the last machine's end
	p50, p99    time.Duration // per machine, power-on to succeeded
	max         time.Duration
	cpu         time.Duration // servers' user+system time during the storm
	clientCPU   time.Duration
	payload     int64
	pathBytesPS float64
	// dlBytes were the kernels and initrds of the boots that succeeded, over
	// dlWindow: from the first kernel request to the last initrd byte.
	dlBytes   int64
	dlWindow  time.Duration
	setupTime time.Duration
	hopP50    map[string]time.Duration // time spent in each hop, successful boots
	hopP99    map[string]time.Duration
	resent    map[string]int
	notes     string
}

// noter is a stack with something to say once it stopped.
type noter interface{ notes() string }

func stormOnce(ctx context.Context, o options, s setup, f *files) (sum summary, err error) {
	sum = summary{key: s.key, name: s.name, n: o.n, byHop: map[string]int{}}
	l, err := lab.New(ctx, lab.Config{Prefix: "storm", BridgeAddr: bridgeAddr, KeepDir: o.keep})
	if err != nil {
		return sum, err
	}
	defer func() {
		if cerr := l.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if o.keep {
			fmt.Fprintf(os.Stderr, "kept %s\n", l.Dir())
		}
	}()
	mns, err := l.AddNetns(ctx, "m")
	if err != nil {
		return sum, err
	}
	if err := l.AddVeth(ctx, lab.Endpoint{NS: l.Main(), Name: "vm0", Master: l.Bridge()},
		lab.Endpoint{NS: mns, Name: "eth0", Addr: clientAddr}); err != nil {
		return sum, err
	}
	// Frames to a machine's own MAC reach the packet socket; the leased range is
	// local to the namespace.
	if _, err := mns.IP(ctx, "link", "set", "eth0", "promisc", "on"); err != nil {
		return sum, err
	}
	for _, r := range poolRoutes {
		if _, err := mns.IP(ctx, "route", "add", "local", r, "dev", "lo"); err != nil {
			return sum, err
		}
	}

	if o.blast > 0 {
		if sum.pathBytesPS, err = measurePath(ctx, l, mns, f, o.blast); err != nil {
			return sum, fmt.Errorf("path capacity: %w", err)
		}
	}

	t0 := time.Now()
	st := s.new()
	defer st.stop()
	if err := st.start(ctx, l, f, o); err != nil {
		return sum, err
	}
	sum.setupTime = time.Since(t0)

	self, err := os.Executable()
	if err != nil {
		return sum, err
	}
	cpu0 := treeCPU(st.pids())
	outPath := filepath.Join(l.Dir(), "results.jsonl")
	out, err := os.Create(outPath)
	if err != nil {
		return sum, err
	}
	defer out.Close()
	var stderr bytes.Buffer
	cmd := mns.Command(self, "client", "-iface", "eth0", "-n", strconv.Itoa(o.n), "-uefi", fmt.Sprint(o.uefi),
		"-spread", o.spread.String(), "-timeout", o.timeout.String(), "-ca", st.caFile())
	cmd.Stdout, cmd.Stderr = out, &stderr
	begin := time.Now()
	p, err := l.Start(cmd)
	if err != nil {
		return sum, err
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout+time.Minute)
	defer cancel()
	if err := p.Wait(wctx); err != nil {
		return sum, fmt.Errorf("storm client: %w: %s", err, stderr.String())
	}
	wall := time.Since(begin)
	sum.cpu = treeCPU(st.pids()) - cpu0
	// Stopped before the figures are read: bootchain's services log what their
	// session recorders dropped when they stop.
	st.stop()
	if n, ok := st.(noter); ok {
		sum.notes = n.notes()
	}
	// The path again, with the servers stopped: its capacity is the better of
	// the two (what else the machine ran moved single measurements by 2x).
	if o.blast > 0 {
		after, err := measurePath(ctx, l, mns, f, o.blast)
		if err != nil {
			return sum, fmt.Errorf("path capacity after the storm: %w", err)
		}
		sum.pathBytesPS = max(sum.pathBytesPS, after)
	}
	if ps := p.Cmd.ProcessState; ps != nil {
		sum.clientCPU = ps.UserTime() + ps.SystemTime()
	}

	rs, err := readResults(outPath)
	if err != nil {
		return sum, err
	}
	if len(rs) != o.n {
		return sum, fmt.Errorf("%d results for %d machines: %s", len(rs), o.n, stderr.String())
	}
	var totals []float64
	spent := map[string][]float64{}
	sum.resent = map[string]int{}
	for _, r := range rs {
		for h, k := range r.Resent {
			sum.resent[h] += k
		}
		if r.OK {
			prev := 0.0
			for _, h := range hops {
				spent[h] = append(spent[h], r.Hops[h]-prev)
				prev = r.Hops[h]
			}
		}
		sum.payload += r.Bytes
		end := time.Duration((r.Start + r.Total) * float64(time.Second))
		sum.allDone = max(sum.allDone, end)
		if !r.OK {
			sum.failed++
			sum.byHop[r.FailedHop]++
			sum.errs = append(sum.errs, fmt.Sprintf("%s (%s, %s): %s", r.MAC, firmware(r.UEFI), r.FailedHop, r.Err))
			continue
		}
		totals = append(totals, r.Total)
	}
	sum.dlBytes, sum.dlWindow = downloadWindow(rs, f.kernelSize+f.initrdSize)
	sum.hopP50, sum.hopP99 = map[string]time.Duration{}, map[string]time.Duration{}
	for h, v := range spent {
		sort.Float64s(v)
		sum.hopP50[h], sum.hopP99[h] = secs(percentile(v, 0.5)), secs(percentile(v, 0.99))
	}
	sort.Float64s(totals)
	if len(totals) > 0 {
		sum.p50 = secs(percentile(totals, 0.50))
		sum.p99 = secs(percentile(totals, 0.99))
		sum.max = secs(totals[len(totals)-1])
	}
	if sum.allDone == 0 {
		sum.allDone = wall
	}
	return sum, nil
}

// downloadWindow is what the boots that succeeded fetched over HTTP (each
// image bytes: kernel and initrd) and the window in which they fetched it, from
// the first kernel request (a script hop's end) to the last initrd's end. The
// payload rate over the whole storm also counts its DHCP and TFTP seconds, in
// which no image moves; over this window it compares with the path's capacity.
func downloadWindow(rs []result, image int64) (int64, time.Duration) {
	var n int64
	first, last := -1.0, 0.0
	for _, r := range rs {
		s, okS := r.Hops[hopScript]
		e, okE := r.Hops[hopInitrd]
		if !r.OK || !okS || !okE {
			continue
		}
		n += image
		if first < 0 || r.Start+s < first {
			first = r.Start + s
		}
		last = max(last, r.Start+e)
	}
	if n == 0 {
		return 0, 0
	}
	return n, secs(last - first)
}

func firmware(uefi bool) string {
	if uefi {
		return "UEFI"
	}
	return "BIOS"
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func percentile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func readResults(path string) ([]result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rs []result
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("result line %q: %w", sc.Text(), err)
		}
		rs = append(rs, r)
	}
	return rs, sc.Err()
}

// measurePath is the raw capacity of the machines' path to the servers:
// blastConns TCP connections from the machines' namespace reading the initrd,
// sent with sendfile from the main namespace, over and over.
//
// blastConns is about how many downloads a storm has in flight at once on
// this machine, so that the path is measured at the concurrency it carries.
const blastConns = 64

func measurePath(ctx context.Context, l *lab.Lab, mns *lab.Netns, f *files, d time.Duration) (float64, error) {
	ln, err := l.Main().Listen("tcp", netip.AddrPortFrom(bridgeAddr.Addr(), blastPort).String())
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					fh, err := os.Open(f.initrd)
					if err != nil {
						return
					}
					_, err = io.Copy(c.(*net.TCPConn), fh) // sendfile
					fh.Close()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := mns.Run(cctx, self, "blast", "-server", ln.Addr().String(), "-from", poolStart.String(), "-duration", d.String(), "-conns", strconv.Itoa(blastConns))
	if err != nil {
		return 0, err
	}
	var n int64
	var el float64
	if _, err := fmt.Sscan(string(out), &n, &el); err != nil || el <= 0 {
		return 0, fmt.Errorf("blast output %q", out)
	}
	return float64(n) / el, nil
}

// treeCPU is the user+system time of the processes and all their descendants,
// alive or reaped.
func treeCPU(roots []int) time.Duration {
	return time.Duration(proccpu.Tree(roots...) * float64(time.Second))
}

func printSummary(w io.Writer, s summary, verbose bool) {
	fmt.Fprintf(w, "%s: %d machines, %d failed, all done in %.2f s (setup %.1f s); per machine p50 %.2f s, p99 %.2f s, max %.2f s; servers' CPU %.2f s, storm clients' %.2f s\n",
		s.name, s.n, s.failed, s.allDone.Seconds(), s.setupTime.Seconds(), s.p50.Seconds(), s.p99.Seconds(), s.max.Seconds(), s.cpu.Seconds(), s.clientCPU.Seconds())
	var parts []string
	for _, h := range hops {
		parts = append(parts, fmt.Sprintf("%s %.2f/%.2f", h, s.hopP50[h].Seconds(), s.hopP99[h].Seconds()))
	}
	fmt.Fprintf(w, "  time in each hop, p50/p99 s: %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(w, "  retransmissions by hop: %s\n", hopCounts(s.resent))
	if s.notes != "" {
		fmt.Fprintf(w, "  %s\n", s.notes)
	}
	if s.failed > 0 {
		fmt.Fprintf(w, "  failed by hop: %s\n", hopCounts(s.byHop))
		sort.Strings(s.errs)
		for i, e := range s.errs {
			if !verbose && i >= 5 {
				fmt.Fprintf(w, "  ... %d more (-v)\n", len(s.errs)-i)
				break
			}
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}

func hopCounts(m map[string]int) string {
	var parts []string
	for _, h := range hops {
		if m[h] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", h, m[h]))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// printTable prints the setups side by side and, with both, the ratios.
func printTable(w io.Writer, sums []summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "setup\tmachines\tfailed\tall done s\tp50 s\tp99 s\tboots/min\tserver CPU s\tpayload MB/s\tpath MB/s\tpayload/path\tdownloads MB/s (window s)\tdownloads/path\tfailed by hop")
	for _, s := range sums {
		ok := s.n - s.failed
		bpm := float64(ok) / s.allDone.Minutes()
		payload := float64(s.payload) / s.allDone.Seconds()
		share := "-"
		if s.pathBytesPS > 0 {
			share = fmt.Sprintf("%.0f%%", 100*payload/s.pathBytesPS)
		}
		dl, dlShare := 0.0, "-"
		if s.dlWindow > 0 {
			dl = float64(s.dlBytes) / s.dlWindow.Seconds()
			if s.pathBytesPS > 0 {
				dlShare = fmt.Sprintf("%.0f%%", 100*dl/s.pathBytesPS)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.0f\t%.2f\t%.0f\t%.0f\t%s\t%.0f (%.1f)\t%s\t%s\n", s.name, s.n, s.failed, s.allDone.Seconds(),
			s.p50.Seconds(), s.p99.Seconds(), bpm, s.cpu.Seconds(), payload/1e6, s.pathBytesPS/1e6, share, dl/1e6, s.dlWindow.Seconds(), dlShare, hopCounts(s.byHop))
	}
	tw.Flush()
	var bc, peer *summary
	for i := range sums {
		switch sums[i].key {
		case "bootchain":
			bc = &sums[i]
		case "peer":
			peer = &sums[i]
		}
	}
	if bc != nil && peer != nil && peer.allDone > 0 && peer.cpu > 0 {
		fmt.Fprintf(w, "bootchain / peer: time until all done %.2fx, p99 %.2fx, server CPU %.2fx (failed: %d vs %d)\n",
			bc.allDone.Seconds()/peer.allDone.Seconds(), ratio(bc.p99, peer.p99), bc.cpu.Seconds()/peer.cpu.Seconds(), bc.failed, peer.failed)
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}
