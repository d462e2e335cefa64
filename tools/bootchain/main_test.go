package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// freePort returns a loopback TCP address that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// A service that fails to start stops the ones started before it: up returns
// only after artifactstore, already listening, has let go of its ports.
func TestLaterFailureStopsEarlierServices(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	httpAddr, grpcAddr := freePort(t), freePort(t)
	t.Setenv("BOOTCHAIN_CONFIG", filepath.Join(t.TempDir(), "bootctl.json"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = up(ctx, []string{
		"--data-dir", t.TempDir(), "--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0",
		"--only", "artifactstore,tftpd", "--artifactstore-https-addr", "127.0.0.1:0",
		"--artifactstore-http-addr", httpAddr, "--artifactstore-grpc-addr", grpcAddr,
		"--tftpd-addr", busy.LocalAddr().String(), "--tftpd-grpc-addr", "127.0.0.1:0", "--tftpd-warm=false",
	})
	if err == nil || !strings.HasPrefix(err.Error(), "tftpd: ") {
		t.Fatalf("up = %v, want tftpd's listen error", err)
	}
	if ctx.Err() != nil {
		t.Fatal("up returned only at the test's deadline")
	}
	for _, addr := range []string{httpAddr, grpcAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("artifactstore still holds %s after up returned: %v", addr, err)
		}
		l.Close()
	}
}

// The per-site binaries talk to etcd; only the launcher runs one. Linking etcd's
// server into them would cost every site its size and its init.
func TestServiceBinariesDoNotLinkEtcdServer(t *testing.T) {
	if testing.Short() {
		t.Skip("go list over four binaries")
	}
	for _, pkg := range []string{"dhcpd", "tftpd", "artifactstore", "bootapi"} {
		out, err := exec.Command("go", "list", "-deps", "github.com/bootchain/bootchain/services/"+pkg+"/cmd/"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.HasPrefix(dep, "go.etcd.io/etcd/server") {
				t.Errorf("%s links %s", pkg, dep)
			}
		}
	}
}
