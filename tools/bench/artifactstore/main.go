// Command artifactstore benchmarks artifactstore's HTTP downloads against nginx
// (sendfile on) serving the same files from a temp folder, in the same run, on
// loopback: 1, 16 and 64 concurrent downloads of a 256 MiB file, a burst of 1000
// Range requests and a burst of small-file GETs. It prints throughput, the servers'
// CPU seconds (from /proc) and the ratios.
//
//	go run ./tools/bench/artifactstore [-size 256] [-downloads 64]
//
// artifactstore runs in a child process (this binary with -serve), with its own
// embedded etcd, so that its CPU seconds are its own; the load comes from Go HTTP
// clients in this process, the same for both servers.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/tools/bench/internal/proccpu"
)

func main() {
	daemon.TuneRuntime() // the service runs in this process: measure it with the daemons' runtime settings
	serve := flag.String("serve", "", "internal: run an artifactstore with its data under this folder")
	sizeMB := flag.Int("size", 256, "size of the large file in MiB")
	maxDownloads := flag.Int("downloads", 64, "large-file downloads per concurrency level (at least the concurrency)")
	ranges := flag.Int("ranges", 1000, "Range requests in the burst")
	smalls := flag.Int("small", 5000, "small-file GETs in the burst")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write artifactstore's CPU profile (the child's whole run) to this file")
	flag.Parse()
	if *serve != "" {
		if cpuProfile != "" {
			f, err := os.Create(cpuProfile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "serve:", err)
				os.Exit(1)
			}
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
		if err := runServer(*serve); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*sizeMB, *maxDownloads, *ranges, *smalls); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// cpuProfile is -cpuprofile: the child profiles itself.
var cpuProfile string

func runServer(dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	emb, err := etcdembed.Start(ctx, etcdembed.Config{Dir: filepath.Join(dir, "etcd"), ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", UnsafeNoFsync: true})
	if err != nil {
		return err
	}
	defer emb.Close()
	st, err := store.Open(ctx, store.Config{Endpoints: emb.Endpoints()})
	if err != nil {
		return err
	}
	cfg := artifactstore.DefaultConfig()
	cfg.HTTPAddr, cfg.GRPC.Addr, cfg.DataDir, cfg.Store = "127.0.0.1:0", "127.0.0.1:0", filepath.Join(dir, "data"), st
	cfg.HTTPLimitPerIP = ratelimit.Limit{} // one load generator: measure capacity, not the limit
	srv, err := artifactstore.New(cfg)
	if err != nil {
		return err
	}
	// The uploads authenticate as an admin minted in this etcd.
	tok, _, err := auth.MintToken(ctx, st, auth.TokenSpec{Name: "bench", Role: auth.RoleAdmin, CreatedBy: "bench"})
	if err != nil {
		return err
	}
	fmt.Printf("ADDRS %s %s %s\n", srv.HTTPAddr(), srv.GRPCAddr(), tok)
	return srv.Run(ctx)
}

type server struct {
	name string
	base string
	pid  int
}

func run(sizeMB, maxDownloads, nRanges, nSmall int) error {
	if _, err := exec.LookPath("nginx"); err != nil {
		return errors.New("nginx not installed (apt-get install nginx)")
	}
	tmp, err := os.MkdirTemp("", "bench-artifactstore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// nginx's workers run as an unprivileged user: let them in.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	www := filepath.Join(tmp, "www")
	os.MkdirAll(www, 0o755)
	big := filepath.Join(www, "big.bin")
	small := filepath.Join(www, "small.bin")
	if err := writeRandom(big, int64(sizeMB)<<20); err != nil {
		return err
	}
	if err := writeRandom(small, 4096); err != nil {
		return err
	}

	// artifactstore in a child process.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-serve", filepath.Join(tmp, "as")}
	if cpuProfile != "" {
		args = append(args, "-cpuprofile", cpuProfile)
	}
	child := exec.Command(self, args...)
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	if err := child.Start(); err != nil {
		return err
	}
	defer func() { child.Process.Signal(syscall.SIGTERM); child.Wait() }()
	sc := bufio.NewScanner(out)
	var httpAddr, grpcAddr, token string
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "ADDRS" {
			httpAddr, grpcAddr, token = f[1], f[2], f[3]
			break
		}
	}
	if httpAddr == "" {
		return errors.New("artifactstore child did not start")
	}
	go io.Copy(io.Discard, out)
	for _, f := range []string{big, small} {
		if err := upload(grpcAddr, token, f); err != nil {
			return err
		}
	}

	// nginx with sendfile, same files.
	port, err := freePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(tmp, "nginx.conf")
	os.MkdirAll(filepath.Join(tmp, "nginx"), 0o755)
	err = os.WriteFile(conf, []byte(fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx/nginx.pid;
error_log %[1]s/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path %[1]s/nginx/body;
  proxy_temp_path %[1]s/nginx/proxy;
  fastcgi_temp_path %[1]s/nginx/fastcgi;
  uwsgi_temp_path %[1]s/nginx/uwsgi;
  scgi_temp_path %[1]s/nginx/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    location /artifacts/ { alias %[3]s/; }
  }
}
`, tmp, port, www)), 0o644)
	if err != nil {
		return err
	}
	ng := exec.Command("nginx", "-c", conf, "-p", tmp, "-g", "daemon off;")
	ng.Stderr = os.Stderr
	if err := ng.Start(); err != nil {
		return err
	}
	defer func() { ng.Process.Signal(syscall.SIGQUIT); ng.Wait() }()

	servers := []server{
		{"artifactstore", "http://" + httpAddr, child.Process.Pid},
		{"nginx", fmt.Sprintf("http://127.0.0.1:%d", port), ng.Process.Pid},
	}
	for _, s := range servers {
		if err := waitHTTP(s.base + "/artifacts/small.bin"); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	size := int64(sizeMB) << 20
	fmt.Printf("artifactstore vs nginx (sendfile on), loopback, %d CPUs, large file %d MiB\n\n", numCPU(), sizeMB)
	fmt.Printf("%-28s %-14s %12s %10s %12s\n", "scenario", "server", "throughput", "cpu s", "bytes")
	type res struct{ rate, cpu float64 }
	report := func(scenario string, unit string, f func(s server) (float64, int64, error)) error {
		var rs []res
		for _, s := range servers {
			c0 := proccpu.Seconds(s.pid)
			rate, n, err := f(s)
			if err != nil {
				return fmt.Errorf("%s %s: %w", scenario, s.name, err)
			}
			cpu := proccpu.Seconds(s.pid) - c0
			rs = append(rs, res{rate, cpu})
			fmt.Printf("%-28s %-14s %9.1f %-3s %9.2f %12d\n", scenario, s.name, rate, unit, cpu, n)
		}
		fmt.Printf("%-28s %-14s %9.2fx     %9.2fx\n", "", "ratio as/ngx", rs[0].rate/rs[1].rate, rs[0].cpu/max(rs[1].cpu, 0.001))
		return nil
	}
	for _, c := range []int{1, 16, 64} {
		n := max(c, min(maxDownloads, 4*c))
		if err := report(fmt.Sprintf("GET %dMiB x%d, %d conc", sizeMB, n, c), "MB/s", func(s server) (float64, int64, error) {
			return load(c, n, func(cl *http.Client, i int) (int64, error) { return get(cl, s.base+"/artifacts/big.bin", "", size) })
		}); err != nil {
			return err
		}
	}
	if err := report(fmt.Sprintf("%d Range 64KiB, 16 conc", nRanges), "req/s", func(s server) (float64, int64, error) {
		start := time.Now()
		_, n, err := load(16, nRanges, func(cl *http.Client, i int) (int64, error) {
			off := mrand.Int64N(size - 65536)
			return get(cl, s.base+"/artifacts/big.bin", fmt.Sprintf("bytes=%d-%d", off, off+65535), 65536)
		})
		return float64(nRanges) / time.Since(start).Seconds(), n, err
	}); err != nil {
		return err
	}
	if err := report(fmt.Sprintf("%d GET 4KiB, 16 conc", nSmall), "req/s", func(s server) (float64, int64, error) {
		start := time.Now()
		_, n, err := load(16, nSmall, func(cl *http.Client, i int) (int64, error) { return get(cl, s.base+"/artifacts/small.bin", "", 4096) })
		return float64(nSmall) / time.Since(start).Seconds(), n, err
	}); err != nil {
		return err
	}
	return nil
}

// load runs total requests over conc workers (each with its own connection) and
// returns MB/s and bytes. Bounded: total requests, and 5 minutes.
func load(conc, total int, do func(cl *http.Client, i int) (int64, error)) (float64, int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next, bytes atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, conc)
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
			defer cl.CloseIdleConnections()
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(total) {
					return
				}
				n, err := do(cl, int(i))
				bytes.Add(n)
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	select {
	case err := <-errc:
		return 0, bytes.Load(), err
	default:
	}
	if ctx.Err() != nil {
		return 0, bytes.Load(), errors.New("did not finish in 5 minutes")
	}
	return float64(bytes.Load()) / el / 1e6, bytes.Load(), nil
}

var discardBuf = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func get(cl *http.Client, url, rng string, want int64) (int64, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	bp := discardBuf.Get().(*[]byte)
	defer discardBuf.Put(bp)
	n, err := io.CopyBuffer(io.Discard, resp.Body, *bp)
	if err != nil {
		return n, err
	}
	if (resp.StatusCode != 200 && resp.StatusCode != 206) || n != want {
		return n, fmt.Errorf("%s: status %d, %d bytes, want %d", url, resp.StatusCode, n, want)
	}
	return n, nil
}

func upload(grpcAddr, token, path string) error {
	cc, err := grpcclient.Dial(grpcAddr, tlsconf.Files{}, grpcclient.WithToken(token))
	if err != nil {
		return err
	}
	defer cc.Close()
	stream, err := artifactv1.NewArtifactServiceClient(cc).Upload(context.Background())
	if err != nil {
		return err
	}
	if err := stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Header{Header: &artifactv1.UploadHeader{Name: filepath.Base(path)}}}); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := stream.Send(&artifactv1.UploadRequest{Payload: &artifactv1.UploadRequest_Chunk{Chunk: buf[:n]}}); serr != nil {
				break
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

func writeRandom(path string, n int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		return err
	}
	return f.Close()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
