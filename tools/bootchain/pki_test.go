package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/tftpd"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startUp runs `bootchain up` with args until the test ends and returns once its
// client config has been written for dataDir.
func startUp(t *testing.T, dataDir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Two launchers run at once here: their HTTPS listeners take free ports.
	args = append([]string{"--data-dir", dataDir, "--bootapi-https-addr", "127.0.0.1:0", "--artifactstore-https-addr", "127.0.0.1:0"}, args...)
	go func() { done <- up(ctx, args) }()
	var ended error
	returned := false
	t.Cleanup(func() {
		cancel()
		err := ended
		if !returned {
			err = <-done
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("up: %v", err)
		}
	})
	// The launcher writes its own copy first, then the one where bootctl looks
	// (BOOTCHAIN_CONFIG here): wait for both.
	own := filepath.Join(dataDir, "pki", "bootctl.json")
	deadline := time.After(time.Minute)
	for {
		_, errOwn := os.Stat(own)
		_, errUser := os.Stat(os.Getenv(pki.ConfigEnv))
		if errOwn == nil && errUser == nil {
			return
		}
		select {
		case ended = <-done:
			returned = true
			t.Fatalf("up returned before writing %s: %v", own, ended)
		case <-deadline:
			t.Fatalf("no %s", own)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// health checks addr's health; wait waits for the connection (a server that is
// up), otherwise the first failure to connect is the answer.
func health(t *testing.T, addr string, files tlsconf.Files, wait bool) error {
	t.Helper()
	cc, err := grpcclient.Dial(addr, files)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(wait))
	return err
}

// The first start creates the PKI, serves TLS with it and writes a client config
// that reaches the services; a second launcher with another data dir keeps the
// first one's config where bootctl looks.
func TestUpServesTLSAndWritesTheClientConfig(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "conf", "bootctl.json")
	t.Setenv(pki.ConfigEnv, cfgPath)
	dataDir := t.TempDir()
	// Port 0: the config names the port the service got.
	startUp(t, dataDir, "--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0",
		"--only", "artifactstore", "--artifactstore-http-addr", freePort(t), "--artifactstore-grpc-addr", "127.0.0.1:0")

	c, err := pki.ReadClientConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, port, _ := net.SplitHostPort(c.ArtifactStore); port == "0" || port == "" || c.TFTPD != "localhost:9083" || c.DataDir != dataDir || c.CA != filepath.Join(dataDir, "pki", "ca.crt") {
		t.Fatalf("client config %+v", c)
	}
	if err := c.CheckFiles(cfgPath); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(cfgPath)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client config mode: %v %v", fi.Mode(), err)
	}
	if err := health(t, c.ArtifactStore, tlsconf.Files{CAFile: c.CA, CertFile: c.Cert, KeyFile: c.Key}, true); err != nil {
		t.Fatalf("health over mTLS with the client config: %v", err)
	}
	if err := health(t, c.ArtifactStore, tlsconf.Files{}, false); err == nil {
		t.Fatal("plaintext health check answered: the server does not serve TLS")
	}

	// Another launcher with another data dir: the config where bootctl looks
	// stays the first one's.
	other := t.TempDir()
	startUp(t, other, "--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0",
		"--only", "artifactstore", "--artifactstore-http-addr", freePort(t), "--artifactstore-grpc-addr", freePort(t))
	if c2, err := pki.ReadClientConfig(cfgPath); err != nil || c2.DataDir != dataDir {
		t.Fatalf("client config after a second launcher: %+v %v", c2, err)
	}
	if c3, err := pki.ReadClientConfig(filepath.Join(other, "pki", "bootctl.json")); err != nil || c3.DataDir != other {
		t.Fatalf("second launcher's own copy: %+v %v", c3, err)
	}
}

// A person's own config is never replaced.
func TestUpKeepsAUsersOwnClientConfig(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "bootctl.json")
	mine := []byte(`{"bootapi": "bootchain.example:9080"}` + "\n")
	if err := os.WriteFile(cfgPath, mine, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(pki.ConfigEnv, cfgPath)
	startUp(t, t.TempDir(), "--etcd-client-addr", "127.0.0.1:0", "--etcd-peer-addr", "127.0.0.1:0",
		"--only", "artifactstore", "--artifactstore-http-addr", freePort(t), "--artifactstore-grpc-addr", freePort(t))
	if b, _ := os.ReadFile(cfgPath); string(b) != string(mine) {
		t.Fatalf("user's config replaced with %s", b)
	}
}

func TestPKIIssue(t *testing.T) {
	dataDir := t.TempDir()
	if _, err := pki.Ensure(pki.Dir(filepath.Join(dataDir, "pki")), []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "alice")
	args := []string{"issue", "--data-dir", dataDir, "--role", "operator", "--name", "alice", "--sites", "a,b", "--out", out}
	if err := pkiMain(args); err != nil {
		t.Fatal(err)
	}
	_, leaf, err := pki.LoadLeaf(filepath.Join(out, "alice.crt"), filepath.Join(out, "alice.key"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := auth.ParseIdentityURI(leaf.URIs[0].String())
	if err != nil || id.Name != "alice" || id.Role != auth.RoleOperator || strings.Join(id.Sites, ",") != "a,b" {
		t.Fatalf("identity %+v %v", id, err)
	}
	ca, err := pki.LoadCA(filepath.Join(dataDir, "pki", "ca.crt"), filepath.Join(dataDir, "pki", "ca.key"))
	if err != nil || !ca.Signed(leaf) {
		t.Fatalf("not signed by the launcher's CA: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "ca.crt")); err != nil {
		t.Fatal(err)
	}
	if err := pkiMain(args); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second issue into the same folder: %v", err)
	}

	srvOut := t.TempDir()
	if err := pkiMain([]string{"issue", "--data-dir", dataDir, "--name", "site-b", "--hosts", "site-b.example,198.18.0.20", "--out", srvOut}); err != nil {
		t.Fatal(err)
	}
	_, srv, err := pki.LoadLeaf(filepath.Join(srvOut, "site-b.crt"), filepath.Join(srvOut, "site-b.key"))
	if err != nil || srv.VerifyHostname("198.18.0.20") != nil || srv.VerifyHostname("site-b.example") != nil {
		t.Fatalf("server certificate: %v", err)
	}

	for name, bad := range map[string][]string{
		"role and hosts": {"issue", "--data-dir", dataDir, "--role", "admin", "--hosts", "x", "--name", "n", "--out", t.TempDir()},
		"bad role":       {"issue", "--data-dir", dataDir, "--role", "root", "--name", "n", "--out", t.TempDir()},
		"no CA":          {"issue", "--data-dir", t.TempDir(), "--role", "admin", "--name", "n", "--out", t.TempDir()},
	} {
		if err := pkiMain(bad); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

// A bundle is a standalone service's --pki-dir: its server certificate for its
// hosts and its service identity, both from the launcher's CA, which tftpd's
// flags pick up (daemon.WirePKI, as `tftpd --pki-dir` runs it).
func TestPKIIssueBundleForAStandaloneService(t *testing.T) {
	dataDir := t.TempDir()
	if _, err := pki.Ensure(pki.Dir(filepath.Join(dataDir, "pki")), []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "site-b")
	if err := pkiMain([]string{"issue", "--bundle", "--data-dir", dataDir, "--name", "tftpd-b", "--sites", "site-b", "--hosts", "198.18.0.20,tftp-b.example", "--out", out}); err != nil {
		t.Fatal(err)
	}
	d := pki.Dir(out)
	ca, err := pki.LoadCA(filepath.Join(dataDir, "pki", "ca.crt"), filepath.Join(dataDir, "pki", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	_, srv, err := pki.LoadLeaf(d.Path(pki.ServerCert), d.Path(pki.ServerKey))
	if err != nil || !ca.Signed(srv) || srv.VerifyHostname("198.18.0.20") != nil {
		t.Fatalf("server certificate: %v", err)
	}
	_, svc, err := pki.LoadLeaf(d.Path(pki.ServiceCert), d.Path(pki.ServiceKey))
	if err != nil || !ca.Signed(svc) {
		t.Fatalf("service certificate: %v", err)
	}
	id, err := auth.ParseIdentityURI(svc.URIs[0].String())
	if err != nil || id.Role != auth.RoleService || id.Name != "tftpd-b" || strings.Join(id.Sites, ",") != "site-b" {
		t.Fatalf("service identity %+v %v", id, err)
	}

	c := tftpd.Component()
	fs := flag.NewFlagSet("tftpd", flag.ContinueOnError)
	c.AddFlags(fs, "")
	if err := daemon.WirePKI(fs, d); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"grpc-tls-cert": d.Path(pki.ServerCert), "grpc-tls-client-ca": d.Path(pki.CACert),
		"artifactstore-tls-cert": d.Path(pki.ServiceCert), "artifactstore-tls-ca": d.Path(pki.CACert),
	} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}
}
