// Command tftpd benchmarks bootchain's tftpd against atftpd and tftpd-hpa
// (in.tftpd) serving the same files on loopback: 1, 50 and 200 concurrent downloads
// of ipxe.efi and of a 32 MB file at blksize 512 and 1468. For each run it reports
// the completion time of the slowest download, failed transfers, and the server's
// CPU seconds (utime+stime+cutime+cstime from /proc/<pid>/stat; every server, ours
// included, runs as its own process).
//
//	go run ./tools/bench/tftpd
//	go run ./tools/bench/tftpd -concurrency 200 -files ipxe.efi -blksizes 1468
//
// Clients are pin/tftp's Go client in this process (the same for every server).
// Every process it starts is killed by PID when it ends.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bootchain/bootchain/pkg/etcdembed"
	artifactstorev1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/tools/bench/internal/proccpu"
	"github.com/pin/tftp/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type options struct {
	atftpd, inTftpd, ipxe string
	bootchainArgs         string
	bootchainEnv          string
	concurrency, blksizes []int
	files, servers        []string
	bigSize               int64
	runTimeout            time.Duration
	clientTimeout         time.Duration
	repeat                int
}

func main() {
	var o options
	var conc, bls, files, servers string
	flag.StringVar(&o.atftpd, "atftpd", "atftpd", "atftpd binary")
	flag.StringVar(&o.inTftpd, "in-tftpd", "in.tftpd", "tftpd-hpa's in.tftpd binary")
	flag.StringVar(&o.bootchainArgs, "bootchain-args", "", "extra flags for bootchain's tftpd (e.g. \"--anticipate 8\")")
	flag.StringVar(&o.bootchainEnv, "bootchain-env", "", "extra environment for bootchain's tftpd (e.g. \"GOMAXPROCS=1 GOGC=400\")")
	flag.StringVar(&o.ipxe, "ipxe", "/usr/lib/ipxe/ipxe.efi", "ipxe.efi to serve (Debian package ipxe)")
	flag.StringVar(&conc, "concurrency", "1,50,200", "concurrent downloads per run")
	flag.StringVar(&bls, "blksizes", "512,1468", "block sizes")
	flag.StringVar(&files, "files", "ipxe.efi,big.bin", "files: ipxe.efi and/or big.bin")
	flag.StringVar(&servers, "servers", "bootchain,atftpd,tftpd-hpa", "servers to compare")
	flag.Int64Var(&o.bigSize, "big-size", 32<<20, "size of big.bin")
	flag.DurationVar(&o.runTimeout, "run-timeout", 5*time.Minute, "bound on one run; downloads not done by then count as failed")
	flag.DurationVar(&o.clientTimeout, "client-timeout", time.Second, "client retransmit timeout")
	flag.IntVar(&o.repeat, "repeat", 1, "runs per cell (the median is reported)")
	flag.Parse()
	var err error
	if o.concurrency, err = ints(conc); err == nil {
		o.blksizes, err = ints(bls)
	}
	if err != nil {
		fatal(err)
	}
	o.files, o.servers = strings.Split(files, ","), strings.Split(servers, ",")
	if err := run(o); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench tftpd:", err)
	os.Exit(1)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		out = append(out, n)
	}
	return out, nil
}

// server is one TFTP server under test.
type server struct {
	name string
	addr string
	cmd  *exec.Cmd
	// sampleChildren: add the CPU of short-lived children, sampled while they run
	// (a lower bound: the last few ms of each child may be missed).
	sampleChildren bool
}

// cpu is the server's CPU seconds with its reaped children's (tftpd-hpa forks one
// per transfer).
func (s *server) cpu() float64 { return proccpu.WithReaped(s.cmd.Process.Pid) }

func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
}

type file struct {
	name string
	data []byte
	crc  uint32
}

func run(o options) error {
	tmp, err := os.MkdirTemp("", "bench-tftpd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	serveDir := filepath.Join(tmp, "files")
	if err := os.MkdirAll(serveDir, 0o755); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	files := map[string]*file{}
	for _, name := range o.files {
		var data []byte
		switch name {
		case "ipxe.efi":
			if data, err = os.ReadFile(o.ipxe); err != nil {
				return fmt.Errorf("%w (apt-get install ipxe)", err)
			}
		case "big.bin":
			data = make([]byte, o.bigSize)
			rand.Read(data)
		default:
			return fmt.Errorf("unknown file %q", name)
		}
		if err := os.WriteFile(filepath.Join(serveDir, name), data, 0o644); err != nil {
			return err
		}
		files[name] = &file{name: name, data: data, crc: crc32.ChecksumIEEE(data)}
	}

	var servers []*server
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	for _, name := range o.servers {
		var s *server
		switch name {
		case "bootchain":
			s, err = startBootchain(tmp, serveDir, files, strings.Fields(o.bootchainArgs), strings.Fields(o.bootchainEnv))
		case "atftpd":
			s, err = startPeer(name, o.atftpd, func(addr string) []string {
				host, port, _ := net.SplitHostPort(addr)
				return []string{"--daemon", "--no-fork", "--port", port, "--bind-address", host, "--logfile", "/dev/null",
					"--maxthread", "1000", "--user", "root", "--group", "root", serveDir}
			})
		case "tftpd-hpa":
			s, err = startPeer(name, o.inTftpd, func(addr string) []string {
				return []string{"--foreground", "--listen", "--address", addr, "--secure", "--user", "root", serveDir}
			})
			if s != nil {
				// in.tftpd forks a child per transfer and lets the kernel reap it
				// (SA_NOCLDWAIT), so the children's CPU never reaches its cutime:
				// sample them while they run.
				s.sampleChildren = true
			}
		default:
			err = fmt.Errorf("unknown server %q", name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		servers = append(servers, s)
		// Ready when it serves the files (bootchain: once its cache is warm).
		for _, f := range files {
			if err := waitServes(s.addr, f); err != nil {
				return fmt.Errorf("%s not serving %s: %w", name, f.name, err)
			}
		}
		fmt.Printf("# %s pid %d on %s\n", s.name, s.cmd.Process.Pid, s.addr)
	}

	fmt.Printf("\n| file | blksize | clients | server | time s | failed | server CPU s | time vs best peer | CPU vs best peer |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, fname := range o.files {
		f := files[fname]
		for _, bs := range o.blksizes {
			for _, n := range o.concurrency {
				results := map[string]result{}
				for _, s := range servers {
					results[s.name] = measure(s, f, bs, n, o)
				}
				bestT, bestC := -1.0, -1.0
				for name, r := range results {
					if name == "bootchain" || r.failed > 0 {
						continue
					}
					if bestT < 0 || r.secs < bestT {
						bestT = r.secs
					}
					// A sampled CPU figure is only a lower bound: not a fair base.
					if !r.sampled && (bestC < 0 || r.cpu < bestC) {
						bestC = r.cpu
					}
				}
				for _, s := range servers {
					r := results[s.name]
					rt, rc := "", ""
					if s.name == "bootchain" && bestT > 0 {
						rt = fmt.Sprintf("%.2f", r.secs/bestT)
						if bestC > 0 {
							rc = fmt.Sprintf("%.2f", r.cpu/bestC)
						}
					}
					cpu := fmt.Sprintf("%.2f", r.cpu)
					if r.sampled {
						cpu = "≥" + cpu
					}
					fmt.Printf("| %s | %d | %d | %s | %.2f | %d | %s | %s | %s |\n", fname, bs, n, s.name, r.secs, r.failed, cpu, rt, rc)
				}
			}
		}
	}
	return nil
}

type result struct {
	secs    float64
	cpu     float64
	failed  int
	sampled bool // cpu is a lower bound (children sampled)
}

// measure runs o.repeat runs and returns the one with the median time.
func measure(s *server, f *file, blksize, n int, o options) result {
	var rs []result
	for i := 0; i < o.repeat; i++ {
		rs = append(rs, once(s, f, blksize, n, o))
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].secs < rs[j].secs })
	return rs[len(rs)/2]
}

func once(s *server, f *file, blksize, n int, o options) result {
	cpu0 := s.cpu()
	var childCPU func() float64
	if s.sampleChildren {
		childCPU = sampleChildren(s.cmd.Process.Pid)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), o.runTimeout)
	defer cancel()
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan error, 1)
			go func() { done <- download(s.addr, f, blksize, o.clientTimeout) }()
			select {
			case err := <-done:
				if err != nil {
					failed.Add(1)
				}
			case <-ctx.Done():
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	cpu1 := s.cpu()
	r := result{secs: secs, cpu: cpu1 - cpu0, failed: int(failed.Load())}
	if childCPU != nil {
		r.cpu += childCPU()
		r.sampled = true
	}
	return r
}

// sampleChildren polls the children of pid every few ms and returns a function
// that stops polling and sums the last CPU seen of every child.
func sampleChildren(pid int) func() float64 {
	stop := make(chan struct{})
	done := make(chan float64)
	go func() {
		seen := map[string]float64{}
		t := time.NewTicker(3 * time.Millisecond)
		defer t.Stop()
		for {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
			for _, c := range strings.Fields(string(b)) {
				n, _ := strconv.Atoi(c)
				if v := proccpu.WithReaped(n); v > seen[c] {
					seen[c] = v
				}
			}
			select {
			case <-stop:
				sum := 0.0
				for _, v := range seen {
					sum += v
				}
				done <- sum
				return
			case <-t.C:
			}
		}
	}()
	return func() float64 { close(stop); return <-done }
}

var errContent = errors.New("content differs")

func download(addr string, f *file, blksize int, timeout time.Duration) error {
	c, err := tftp.NewClient(addr)
	if err != nil {
		return err
	}
	c.SetTimeout(timeout)
	c.SetRetries(5)
	c.SetBlockSize(blksize)
	c.RequestTSize(true)
	wt, err := c.Receive(f.name, "octet")
	if err != nil {
		return err
	}
	h := crc32.NewIEEE()
	n, err := wt.WriteTo(h)
	if err != nil {
		return err
	}
	if n != int64(len(f.data)) || h.Sum32() != f.crc {
		return errContent
	}
	return nil
}

func waitServes(addr string, f *file) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := download(addr, f, 1468, time.Second)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freeUDP() (string, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

func startPeer(name, bin string, args func(addr string) []string) (*server, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%w (Debian packages atftpd and tftpd-hpa conflict: extract one with apt-get download + dpkg-deb -x and pass its path)", err)
	}
	addr, err := freeUDP()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args(addr)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &server{name: name, addr: addr, cmd: cmd}, nil
}

// startBootchain builds the tftpd binary and runs it against an embedded etcd and a
// small ArtifactService (in this process) that serves the bench files.
func startBootchain(tmp, serveDir string, files map[string]*file, extra, env []string) (*server, error) {
	bin := filepath.Join(tmp, "tftpd")
	build := exec.Command("go", "build", "-o", bin, "github.com/bootchain/bootchain/services/tftpd/cmd/tftpd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("go build tftpd: %w", err)
	}
	etcd, err := etcdembed.Start(context.Background(), etcdembed.Config{
		Dir: filepath.Join(tmp, "etcd"), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", UnsafeNoFsync: true,
	})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer()
	artifactstorev1.RegisterArtifactServiceServer(gs, &artifacts{files: files})
	go gs.Serve(lis)
	addr, err := freeUDP()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--addr", addr, "--grpc-addr", "127.0.0.1:0", "--artifactstore", lis.Addr().String(),
		"--data-dir", filepath.Join(tmp, "bootchain"), "--etcd-endpoints", strings.Join(etcd.Endpoints(), ","),
		"--map", "big.bin=big.bin", "--max-transfers", "1024", "--max-per-client", "0", "--log-level", "warn")
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &server{name: "bootchain", addr: addr, cmd: cmd}, nil
}

// artifacts serves the bench files over ArtifactService's Stat and Read.
type artifacts struct {
	artifactstorev1.UnimplementedArtifactServiceServer
	files map[string]*file
}

func (a *artifacts) meta(f *file) *artifactstorev1.Artifact {
	sum := sha256.Sum256(f.data)
	return &artifactstorev1.Artifact{Name: f.name, Sha256: hex.EncodeToString(sum[:]), Size: int64(len(f.data))}
}

func (a *artifacts) Stat(_ context.Context, req *artifactstorev1.StatRequest) (*artifactstorev1.StatResponse, error) {
	f, ok := a.files[req.GetName()]
	if !ok {
		return nil, status.Error(codes.NotFound, "not found")
	}
	return &artifactstorev1.StatResponse{Artifact: a.meta(f), Local: true}, nil
}

func (a *artifacts) Read(req *artifactstorev1.ReadRequest, stream grpc.ServerStreamingServer[artifactstorev1.ReadResponse]) error {
	f, ok := a.files[req.GetName()]
	if !ok {
		return status.Error(codes.NotFound, "not found")
	}
	if err := stream.Send(&artifactstorev1.ReadResponse{Artifact: a.meta(f)}); err != nil {
		return err
	}
	r := bytes.NewReader(f.data)
	buf := make([]byte, 1<<20)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if err := stream.Send(&artifactstorev1.ReadResponse{Chunk: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}
