// Command bootapi benchmarks bootapi's script endpoint against nginx serving a
// static script of the same size, in the same run, with wrk (64 connections).
//
//	go run ./tools/bench/bootapi -load fleet            # a fleet's first contact
//	go run ./tools/bench/bootapi -machines 10000 -duration 30s   # uniform random
//
// bootapi runs in this process on a real (fsyncing) embedded etcd with -machines
// registered machines, so the cache, the session recorder and the renderer all do
// their real work. nginx serves a file holding a rendered script: the upper bound
// for "answer a small GET".
//
// Two loads:
//
//   - random (the default): each request asks for a random registered machine.
//     With 10,000 machines at 100,000 req/s every machine asks ~10 times a
//     second, which no real machine does: it measures a looping fleet.
//   - fleet: a fleet powering on. The requests walk the registered machines in
//     order, each once (its first contact: a new boot session, a sighting);
//     one request in loopEvery comes from one of loopMachines machines stuck
//     in a boot loop. A walk that runs out of machines starts over (the
//     summary counts those second contacts: raise -machines if there are any).
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/bootapi"
	"github.com/bootchain/bootchain/tools/bench/internal/proccpu"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var (
	cpuProfile   string
	mutexProfile string
	traceFile    string
	traceAt      time.Duration
	etcdGRPC     bool
	verbose      bool
	pin          bool
)

func main() {
	daemon.TuneRuntime() // the service runs in this process: measure it with the daemons' runtime settings
	load := flag.String("load", "random", "random: a random machine per request; fleet: every machine once, and a few looping machines")
	machines := flag.Int("machines", 0, "registered machines (default 10000 for -load random, 300000 for -load fleet)")
	duration := flag.Duration("duration", 0, "wrk duration per server (default 30s for -load random, 5s for -load fleet)")
	conns := flag.Int("connections", 64, "wrk connections")
	threads := flag.Int("threads", 2, "wrk threads")
	flag.BoolVar(&etcdGRPC, "etcd-grpc", false, "bootapi talks to its embedded etcd over loopback gRPC instead of in-process")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of bootapi's run to this file")
	flag.StringVar(&mutexProfile, "mutexprofile", "", "write a mutex contention profile of bootapi's run to this file")
	flag.BoolVar(&verbose, "v", false, "print wrk's output")
	flag.BoolVar(&pin, "pin", runtime.NumCPU() >= 2, "run each server on CPU 0 and wrk on CPU 1, so that both servers get one core and the load generator the other")
	flag.StringVar(&traceFile, "trace", "", "write an execution trace of 3 s of bootapi's run to this file, with a probe's requests slower than 5 ms logged in it (go tool trace)")
	flag.DurationVar(&traceAt, "trace-at", -1, "with -trace, start the trace this long into the run (default: the middle)")
	flag.Parse()
	switch *load {
	case "random":
		*machines, *duration = cmp.Or(*machines, 10000), cmp.Or(*duration, 30*time.Second)
	case "fleet":
		*machines, *duration = cmp.Or(*machines, 300000), cmp.Or(*duration, 5*time.Second)
	default:
		fmt.Fprintf(os.Stderr, "bench: -load %q: want random or fleet\n", *load)
		os.Exit(2)
	}
	if err := run(*load, *machines, *duration, *conns, *threads); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name     string
	rps      float64
	p50, p99 time.Duration
	errors   int
	requests int
	// wrkCPU is the load generator's CPU time: on 2 cores, what the server leaves it.
	wrkCPU time.Duration
	// cpu is the server's CPU seconds while wrk ran (bootapi's: this process,
	// its embedded etcd included; nginx's: its master and workers).
	cpu float64
	// wraps is how many fleet requests asked for a machine a second time (-load fleet).
	wraps int
}

// cpuPerRequest is the server's CPU seconds per request answered.
func (r result) cpuPerRequest() float64 { return r.cpu / float64(max(r.requests, 1)) }

// floorRun serves body at every path from a fasthttp server with bootapi's
// timeouts and no handler work, and runs wrk against it.
func floorRun(body []byte, lua string, d time.Duration, conns, threads int) (result, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	srv := &fasthttp.Server{
		Handler: func(rc *fasthttp.RequestCtx) {
			rc.SetContentType("text/plain; charset=utf-8")
			rc.SetBody(body)
		},
		NoDefaultServerHeader: true,
		ReadTimeout:           time.Minute,
		IdleTimeout:           time.Minute,
		WriteTimeout:          time.Minute,
		ReadBufferSize:        16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	before := proccpu.Seconds(os.Getpid())
	r, err := wrk("http://"+lis.Addr().String(), lua, d, conns, threads)
	r.cpu = proccpu.Seconds(os.Getpid()) - before
	r.name = "fasthttp, no work"
	srv.Shutdown()
	<-errc
	return r, err
}

// The looping machines of -load fleet: registered beside the fleet, they ask
// one request in loopEvery between them. That is far more often than a real
// looping machine (a few times a second), so that their path weighs in the
// figures at all.
const (
	loopMachines = 8
	loopEvery    = 32
)

func run(load string, n int, d time.Duration, conns, threads int) error {
	for _, bin := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found (make deps installs it)", bin)
		}
	}
	if pin {
		if _, err := exec.LookPath("taskset"); err != nil {
			return fmt.Errorf("-pin: taskset not found (util-linux)")
		}
		// Before bootapi starts: its threads, etcd's and nginx inherit CPU 0.
		if err := proccpu.PinSelf(0); err != nil {
			return err
		}
		runtime.GOMAXPROCS(1) // as Go sets it in a process started on one CPU
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "bench-bootapi-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// nginx's workers drop privileges: let them read the script.
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}

	emb, err := etcdembed.Start(ctx, etcdembed.Config{Dir: filepath.Join(dir, "etcd"), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer emb.Close()
	// In-process etcd client, as 'bootchain up' runs bootapi; -etcd-grpc dials it
	// over loopback gRPC, as a bootapi in its own process would.
	st := emb.Store(0)
	if etcdGRPC {
		if st, err = store.Open(ctx, store.Config{Endpoints: emb.Endpoints()}); err != nil {
			return err
		}
	}
	defer st.Close()
	cfg := bootapi.DefaultConfig()
	cfg.Store, cfg.HTTPAddr, cfg.GRPC = st, "127.0.0.1:0", grpcserver.Config{Addr: "127.0.0.1:0"}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.HTTPLimitPerIP = ratelimit.Limit{} // one load generator: measure capacity, not the limit
	srv, err := bootapi.New(cfg)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	base := "http://" + srv.HTTPAddr().String()
	if err := waitHTTP(base + "/healthz"); err != nil {
		return err
	}
	if load == "fleet" {
		n += loopMachines
	}
	macs, err := seed(ctx, srv.GRPCAddr().String(), base, st, n)
	if err != nil {
		return err
	}
	// The script nginx serves is a real one, so both answer the same bytes. In
	// the fleet load it comes from a looping machine, whose first request this is
	// not meant to be anyway.
	sampleMAC := macs[0]
	if load == "fleet" {
		sampleMAC = macs[len(macs)-1]
	}
	resp, err := http.Get(base + "/ipxe/v1/config?mac=" + sampleMAC)
	if err != nil {
		return err
	}
	sample, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("bootapi: %d machines registered; script is %d bytes\n", n, len(sample))

	lua := filepath.Join(dir, "macs.lua")
	write := writeLua
	if load == "fleet" {
		write = func(path string, macs []string) error { return writeFleetLua(path, macs, threads) }
	}
	if err := write(lua, macs); err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
	}
	if mutexProfile != "" {
		runtime.SetMutexProfileFraction(10)
	}
	if traceFile != "" {
		at := traceAt
		if at < 0 {
			at = d / 2
		}
		stop := traceWindow(traceFile, srv.HTTPAddr().String(), "/ipxe/v1/config?mac="+sampleMAC+"&arch=x86_64&platform=pcbios", at, 3*time.Second)
		defer stop()
	}
	etcdBefore, cpuBefore := etcdWrites(), proccpu.Seconds(os.Getpid())
	ours, err := wrk(base, lua, d, conns, threads)
	etcdDuring := etcdWrites().minus(etcdBefore)
	ours.cpu = proccpu.Seconds(os.Getpid()) - cpuBefore
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if mutexProfile != "" {
		if err := writeProfile("mutex", mutexProfile); err != nil {
			return err
		}
		runtime.SetMutexProfileFraction(0)
	}
	if err != nil {
		return err
	}
	ours.name = "bootapi"
	// Every answered request is a script hop of its machine's session, written
	// to etcd asynchronously; count what arrived (the recorder drops and counts
	// hops when etcd cannot keep up).
	if err := srv.FlushSessions(ctx); err != nil {
		return err
	}
	cr, err := st.Client().Get(ctx, store.Prefix("sessionhops"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	fmt.Printf("bootapi: %d requests answered, %d script hops recorded in etcd, %d session changes dropped\n", ours.requests, cr.Count, srv.SessionsDropped())
	if load == "fleet" {
		fmt.Printf("bootapi: fleet of %d machines; %d requests were a machine's second contact\n", n-loopMachines, ours.wraps)
	}
	// What the requests cost etcd while wrk ran (writes still queued at its
	// end are not in it): raft proposals (one per transaction), WAL fsyncs
	// (shared by the proposals of one raft round) and keys put.
	r := float64(max(ours.requests, 1))
	fmt.Printf("bootapi: etcd during the run: %.0f proposals, %.0f WAL fsyncs, %.0f keys put: per request %.3f, %.3f, %.2f\n",
		etcdDuring.proposals, etcdDuring.fsyncs, etcdDuring.puts, etcdDuring.proposals/r, etcdDuring.fsyncs/r, etcdDuring.puts/r)

	ngx, ngxPID, stop, err := startNginx(dir, sample)
	if err != nil {
		return err
	}
	ngxBefore := proccpu.Seconds(ngxPID)
	theirs, err := wrk(ngx, lua, d, conns, threads)
	theirs.cpu = proccpu.Seconds(ngxPID) - ngxBefore
	stop()
	if err != nil {
		return err
	}
	theirs.name = "nginx (static file)"

	cancel()
	<-done
	// The floor of a Go server on this core: fasthttp, as bootapi serves,
	// answering the same bytes with no work, in this process with bootapi
	// stopped.
	floor, err := floorRun(sample, lua, d, conns, threads)
	if err != nil {
		return err
	}
	if pin {
		fmt.Println("\neach server on CPU 0, wrk on CPU 1")
	}
	fmt.Printf("\n%-22s %12s %10s %10s %8s %12s %10s\n", "server", "req/s", "p50", "p99", "errors", "CPU/request", "wrk CPU")
	for _, r := range []result{ours, theirs, floor} {
		fmt.Printf("%-22s %12.0f %10s %10s %8d %10.1fµs %9.0f%%\n", r.name, r.rps, r.p50, r.p99, r.errors, 1e6*r.cpuPerRequest(), 100*r.wrkCPU.Seconds()/d.Seconds())
	}
	// The p99 of both depends on what else the 2 cores run: nginx's says how
	// loaded this run's machine was.
	fmt.Printf("\nload %s: ratio bootapi/nginx: %.2fx requests/s; bootapi p99 %s, %.2fx nginx's\n", load, ours.rps/theirs.rps, ours.p99, float64(ours.p99)/float64(theirs.p99))
	fmt.Printf("fasthttp with no work/nginx: %.2fx requests/s, %.2fx the CPU per request\n", floor.rps/theirs.rps, floor.cpuPerRequest()/theirs.cpuPerRequest())
	return nil
}

// etcdCounts are the embedded etcd's own counters of writes.
type etcdCounts struct{ proposals, fsyncs, puts float64 }

func (a etcdCounts) minus(b etcdCounts) etcdCounts {
	return etcdCounts{a.proposals - b.proposals, a.fsyncs - b.fsyncs, a.puts - b.puts}
}

// etcdWrites reads etcd's counters from the process's Prometheus registry,
// where the embedded etcd registers them.
func etcdWrites() etcdCounts {
	var c etcdCounts
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		return c
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "etcd_server_proposals_committed_total":
				c.proposals += m.GetGauge().GetValue()
			case "etcd_disk_wal_fsync_duration_seconds":
				c.fsyncs += float64(m.GetHistogram().GetSampleCount())
			case "etcd_mvcc_put_total":
				c.puts += m.GetCounter().GetValue()
			}
		}
	}
	return c
}

// traceWindow writes an execution trace of the window [after, after+d) of the
// run, while a probe asks addr for path every millisecond on a connection of
// its own and logs each answer slower than 5 ms in the trace ("slow" events),
// so that a stall seen by a client can be found among the scheduler's events.
// stop ends the trace early.
func traceWindow(path, addr, reqPath string, after, d time.Duration) (stop func()) {
	quit := make(chan struct{})
	var once sync.Once
	stop = func() { once.Do(func() { close(quit) }) }
	go func() {
		select {
		case <-quit:
			return
		case <-time.After(after):
		}
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: trace:", err)
			return
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench: trace:", err)
			return
		}
		defer trace.Stop()
		slow, total := probe(addr, reqPath, d, quit)
		fmt.Fprintf(os.Stderr, "bench: trace: %d of %d probe requests slower than 5ms\n", slow, total)
	}()
	return stop
}

// probe asks for reqPath every millisecond for d (or until quit) and logs the
// slow answers in the execution trace.
func probe(addr, reqPath string, d time.Duration, quit <-chan struct{}) (slow, total int) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, 0
	}
	defer c.Close()
	req := []byte("GET " + reqPath + " HTTP/1.1\r\nHost: bench\r\n\r\n")
	br := bufio.NewReader(c)
	ctx := context.Background()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	end := time.After(d)
	for {
		select {
		case <-quit:
			return
		case <-end:
			return
		case <-tick.C:
		}
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		total++
		if lat := time.Since(start); lat > 5*time.Millisecond {
			slow++
			trace.Log(ctx, "slow", lat.String())
		}
	}
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func waitHTTP(u string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready", u)
}

// seed creates the menu's profiles through the API and registers n machines
// straight in etcd, a transaction of seedBatch at a time: a fleet of hundreds of
// thousands would take minutes through RegisterMachine's one write each.
func seed(ctx context.Context, addr, base string, st *store.Store, n int) ([]string, error) {
	tok, _, err := auth.MintToken(ctx, st, auth.TokenSpec{Name: "bench", Role: auth.RoleAdmin, CreatedBy: "bench"})
	if err != nil {
		return nil, err
	}
	cc, err := grpcclient.Dial(addr, tlsconf.Files{}, grpcclient.WithToken(tok))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	pc := bootapiv1.NewProfileServiceClient(cc)
	for _, name := range []string{"debian-12", "ubuntu-24.04", "memtest"} {
		// bootapi takes only profiles whose artifacts the catalog has: record
		// each kernel as artifactstore would (no blob: the bench fetches none).
		art := &artifactv1.Artifact{Name: name + "/linux", Sha256: strings.Repeat("0", 64), Size: 1, CreateTime: timestamppb.Now()}
		if _, err := st.Put(ctx, store.Key("artifacts", art.GetName()), art); err != nil {
			return nil, err
		}
		_, err := pc.CreateProfile(ctx, &bootapiv1.CreateProfileRequest{Profile: &bootapiv1.Profile{
			Name: name, Description: "installer " + name, Menu: true,
			Kernel: &bootapiv1.ArtifactRef{Source: &bootapiv1.ArtifactRef_Artifact{Artifact: name + "/linux"}},
		}})
		if err != nil {
			return nil, err
		}
	}
	macs := make([]string, n)
	for i := range macs {
		macs[i] = fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
	}
	now := timestamppb.Now()
	put := func(ctx context.Context, lo, hi int) error {
		ops := make([]clientv3.Op, 0, hi-lo)
		for i := lo; i < hi; i++ {
			b, err := proto.Marshal(&bootapiv1.Machine{
				Mac: macs[i], Hostname: hostname(i), Labels: map[string]string{"rack": fmt.Sprintf("r%02d", i%40)},
				CreateTime: now, UpdateTime: now,
			})
			if err != nil {
				return err
			}
			ops = append(ops, clientv3.OpPut(store.Key("machines", macs[i]), string(b)))
		}
		_, err := st.Client().Txn(ctx).Then(ops...).Commit()
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for lo := 0; lo < n-1; lo += seedBatch {
		g.Go(func() error { return put(gctx, lo, min(lo+seedBatch, n-1)) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// The last machine goes in last: once bootapi's cache (fed in revision
	// order) has it, it has them all.
	if err := put(ctx, n-1, n); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(base + "/ipxe/v1/config?mac=" + macs[n-1])
		if err != nil {
			return nil, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(body, []byte(hostname(n-1))) {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("machines not in bootapi's cache after 2 minutes")
		}
	}
	return macs, nil
}

// seedBatch is etcd's default limit of operations in one transaction.
const seedBatch = 128

func hostname(i int) string { return fmt.Sprintf("node%06d", i) }

// writeLua writes a wrk script that asks for a random registered machine each time.
func writeLua(path string, macs []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "local macs = {")
	for _, m := range macs {
		fmt.Fprintf(w, "%q,\n", m)
	}
	fmt.Fprintln(w, "}\nlocal n = #macs\nrequest = function()\n  return wrk.format(\"GET\", \"/ipxe/v1/config?mac=\" .. macs[math.random(n)] .. \"&arch=x86_64&platform=pcbios\")\nend")
	// The tail in more detail than wrk's --latency (printed with -v).
	w.WriteString(luaDone)
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// writeFleetLua writes a wrk script for -load fleet: thread t of threads asks
// for machines t, t+threads, t+2*threads... of the fleet (macs without its last
// loopMachines), each once, and one request in loopEvery for a looping machine.
func writeFleetLua(path string, macs []string, threads int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fleet, loop := macs[:len(macs)-loopMachines], macs[len(macs)-loopMachines:]
	for _, t := range []struct {
		name string
		macs []string
	}{{"fleet", fleet}, {"loop", loop}} {
		fmt.Fprintf(w, "local %s = {\n", t.name)
		for _, m := range t.macs {
			fmt.Fprintf(w, "%q,\n", m)
		}
		fmt.Fprintln(w, "}")
	}
	fmt.Fprintf(w, `local threads, loopEvery = %d, %d
local next_id, all = 1, {}
setup = function(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(all, thread)
end
local pos, k, wrapped
wraps = 0
init = function(args)
  pos, k, wrapped = id, 0, false
end
request = function()
  k = k + 1
  local mac
  if k %% loopEvery == 0 then
    mac = loop[(k / loopEvery) %% #loop + 1]
  else
    mac = fleet[pos]
    if wrapped then
      wraps = wraps + 1
    end
    pos = pos + threads
    if pos > #fleet then
      pos, wrapped = pos - #fleet, true
    end
  end
  return wrk.format("GET", "/ipxe/v1/config?mac=" .. mac .. "&arch=x86_64&platform=pcbios")
end
`, threads, loopEvery)
	w.WriteString(strings.Replace(luaDone, "done = function(summary, latency, requests)\n",
		"done = function(summary, latency, requests)\n  local n = 0\n  for _, t in ipairs(all) do n = n + t:get(\"wraps\") end\n  io.write(string.format(\"  second contacts %d\\n\", n))\n", 1))
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// luaDone prints more of wrk's latency distribution than --latency does.
const luaDone = `done = function(summary, latency, requests)
  for _, p in ipairs({90, 95, 98, 99, 99.5, 99.9, 99.99}) do
    io.write(string.format("  p%g %.2fms\n", p, latency:percentile(p) / 1000))
  end
  io.write(string.format("  max %.2fms\n", latency.max / 1000))
end
`

var (
	rpsRE   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reqRE   = regexp.MustCompile(`(\d+) requests in`)
	latRE   = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrapsRE = regexp.MustCompile(`second contacts (\d+)`)
	errsRE  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func wrk(base, lua string, d time.Duration, conns, threads int) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	args := []string{"wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", d.String(), "--latency", "-s", lua, base}
	if pin {
		args = append([]string{"taskset", "-c", "1"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	if verbose {
		os.Stderr.Write(out)
	}
	var r result
	r.wrkCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	m := rpsRE.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output without Requests/sec:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := reqRE.FindSubmatch(out); m != nil {
		r.requests, _ = strconv.Atoi(string(m[1]))
	}
	for _, lm := range latRE.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(lm[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(lm[3])]
		// wrk prints 2 decimals: round off the float's noise (513.809999ms).
		dur := time.Duration(v * float64(unit)).Round(time.Microsecond)
		if string(lm[1]) == "50" {
			r.p50 = dur
		} else {
			r.p99 = dur
		}
	}
	if m := wrapsRE.FindSubmatch(out); m != nil {
		r.wraps, _ = strconv.Atoi(string(m[1]))
	}
	for _, em := range errsRE.FindAllSubmatch(out, -1) {
		for _, g := range em[1:] {
			if n, err := strconv.Atoi(string(g)); err == nil {
				r.errors += n
			}
		}
	}
	return r, nil
}

// startNginx serves body at every path from a foreground nginx on a free port;
// it returns the address, nginx's PID and how to stop it. Pinned, it runs one
// worker, on the pinned CPU.
func startNginx(dir string, body []byte) (string, int, func(), error) {
	root := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o755); err != nil {
		return "", 0, nil, err
	}
	if err := os.MkdirAll(filepath.Join(root, "logs"), 0o755); err != nil {
		return "", 0, nil, err
	}
	if err := os.WriteFile(filepath.Join(root, "script.ipxe"), body, 0o644); err != nil {
		return "", 0, nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	addr := l.Addr().String()
	l.Close()
	workers := "auto"
	if pin {
		workers = "1"
	}
	conf := fmt.Sprintf(`worker_processes %[3]s;
error_log %[1]s/logs/error.log;
pid %[1]s/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp; proxy_temp_path %[1]s/tmp; fastcgi_temp_path %[1]s/tmp; uwsgi_temp_path %[1]s/tmp; scgi_temp_path %[1]s/tmp;
  server {
    listen %[2]s;
    root %[1]s;
    location / { default_type text/plain; try_files /script.ipxe =404; }
  }
}
`, root, addr, workers)
	cf := filepath.Join(root, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command("nginx", "-p", root, "-c", cf, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	base := "http://" + addr
	if err := waitHTTP(base + "/x"); err != nil {
		stop()
		return "", 0, nil, err
	}
	return base, cmd.Process.Pid, stop, nil
}
