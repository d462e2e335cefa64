package audit_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	tftpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/tftpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/tlsconf"
)

const crashChildEnv = "AUDIT_CRASH_CHILD"

// TestCrashChild is the all-in-one process (embedded etcd, fsync on, and an
// audited gRPC server) that TestCrashKeepsAnsweredWrites kills; it does nothing
// in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashKeepsAnsweredWrites")
	}
	e, err := etcdembed.Start(context.Background(), etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	st := e.Store(0)
	log, err := audit.New(audit.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Auth: auth.NewAuthenticator(st, quiet), Audit: log})
	if err != nil {
		t.Fatal(err)
	}
	tftpdv1.RegisterTftpServiceServer(srv.GRPC, &service{st: st, revs: map[string]int64{}})
	fmt.Printf("GRPC %s\n", srv.Addr())
	srv.Serve(context.Background()) // until killed
}

// TestCrashKeepsAnsweredWrites kills (SIGKILL) a process serving writes while
// they pour in, restarts etcd on its data dir, and checks that every write that
// was answered has its event, with the revision the write committed at.
func TestCrashKeepsAnsweredWrites(t *testing.T) {
	dir := t.TempDir()
	// The child serves from this etcd data dir: mint the client's token into
	// it first, for the child's authenticator to load.
	pre, err := etcdembed.Start(context.Background(), etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	preStore := pre.Store(0)
	ciBot := mint(t, preStore, "ci-bot", auth.RoleAdmin)
	preStore.Close()
	pre.Close()

	cmd := exec.Command(os.Args[0], "-test.run", "^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "GRPC "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		t.Fatal("child did not start")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	cc, err := grpcclient.Dial(addr, tlsconf.Files{}, grpcclient.WithToken(ciBot))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tftp := tftpdv1.NewTftpServiceClient(cc)

	var (
		mu       sync.Mutex
		answered []string
		wg       sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := tftp.EvictCacheEntry(ctx, &tftpdv1.EvictCacheEntryRequest{Name: name})
				cancel()
				if err != nil {
					return // the process is gone
				}
				mu.Lock()
				answered = append(answered, name)
				mu.Unlock()
			}
		})
	}
	// Kill mid-stream, once writes are flowing.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(answered)
		mu.Unlock()
		if n >= 40 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	wg.Wait()
	if len(answered) == 0 {
		t.Fatal("no write was answered before the crash")
	}

	e, err := etcdembed.Start(context.Background(), etcdembed.Config{Dir: dir, ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	st := e.Store(0)
	t.Cleanup(func() { st.Close() })
	byResource := map[string]int64{}
	for _, ev := range events(t, st) {
		byResource[ev.GetResource()] = ev.GetRevision()
	}
	for _, name := range answered {
		rev, err := st.Get(context.Background(), store.Key("test", name), &tftpdv1.CacheEntry{})
		if err != nil {
			t.Errorf("answered write %s lost: %v", name, err)
			continue
		}
		if got, ok := byResource[name]; !ok || got != rev {
			t.Errorf("answered write %s at revision %d: event revision %d (recorded %v)", name, rev, got, ok)
		}
	}
	t.Logf("%d answered writes, %d events after the crash", len(answered), len(byResource))
}
