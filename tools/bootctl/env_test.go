package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/bootapi"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// testEnv is a real bootapi and artifactstore on one embedded etcd, on
// loopback ports, for bootctl to talk to.
type testEnv struct {
	t        *testing.T
	etcd     *storetest.Etcd
	bootapi  *bootapi.Server
	artifact *artifactstore.Server
	// closed is a loopback address nothing listens on (dhcpd and tftpd).
	closed string
	// token is an admin token every command presents.
	token string
}

func startEnv(t *testing.T) *testEnv {
	t.Helper()
	etcd := storetest.Start(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	bcfg := bootapi.DefaultConfig()
	bcfg.Store, bcfg.HTTPAddr, bcfg.Logger = etcd.Client(t), "127.0.0.1:0", quiet
	bcfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	bsrv, err := bootapi.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	acfg := artifactstore.DefaultConfig()
	acfg.Store, acfg.HTTPAddr, acfg.DataDir, acfg.Logger = etcd.Client(t), "127.0.0.1:0", t.TempDir(), quiet
	acfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	asrv, err := artifactstore.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "bootapi", bsrv.Run)
	testkit.Run(t, "artifactstore", asrv.Run)

	// A port that was just listened on and closed refuses connections.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()

	e := &testEnv{t: t, etcd: etcd, bootapi: bsrv, artifact: asrv, closed: closed, token: testkit.AdminToken(t, etcd.Client(t))}
	// bootapi answers once its caches are loaded.
	var stderr string
	if !testkit.Poll(testkit.Wait, func() bool {
		var code int
		_, stderr, code = e.run("machines", "list")
		return code == 0
	}) {
		t.Fatalf("bootapi not ready: %s", stderr)
	}
	return e
}

// run runs one bootctl command line against the environment.
func (e *testEnv) run(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	return e.runCtx(context.Background(), args...)
}

func (e *testEnv) runCtx(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	global := []string{
		"--bootapi-addr", e.bootapi.GRPCAddr().String(), "--artifactstore-addr", e.artifact.GRPCAddr().String(),
		"--dhcpd-addr", e.closed, "--tftpd-addr", e.closed, "--timeout", "10s",
	}
	if e.token != "" && !slices.Contains(args, "--token") && !slices.Contains(args, "--token-file") {
		global = append(global, "--token", e.token)
	}
	var out, errb bytes.Buffer
	code = run(ctx, append(global, args...), &out, &errb)
	return out.String(), errb.String(), code
}

// mustRun runs a command that must succeed and returns its output.
func (e *testEnv) mustRun(args ...string) string {
	e.t.Helper()
	out, stderr, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("bootctl %q: exit %d\n%s%s", args, code, stderr, out)
	}
	return out
}

// bootScript asks bootapi for mac's iPXE script as the machine's iPXE would,
// which records a boot session and dispatches a pending job.
func (e *testEnv) bootScript(mac string) string {
	e.t.Helper()
	// bootapi dispatches a job only to the address holding the machine's
	// lease: record one for 127.0.0.1 at the machine's site, as dhcpd would.
	ctx := context.Background()
	st := e.etcd.Client(e.t)
	m := &bootapiv1.Machine{}
	if _, err := st.Get(ctx, store.Key("machines", mac), m); err != nil {
		e.t.Fatal(err)
	}
	site := m.GetSite()
	if site == "" {
		site = "default"
	}
	rev, err := st.Put(ctx, store.Key("leases", site, "127.0.0.1"), &dhcpdv1.Lease{
		Ip: "127.0.0.1", Mac: mac, State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, Site: site,
		ExpireTime: timestamppb.New(time.Now().Add(time.Hour)),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.bootapi.WaitLeases(ctx, rev); err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.Get("http://" + e.bootapi.HTTPAddr().String() + "/ipxe/v1/config?mac=" + mac)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		e.t.Fatalf("script of %s: %d %v\n%s", mac, resp.StatusCode, err, b)
	}
	if err := e.bootapi.FlushSessions(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}
