package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
)

// tlsArtifactstore runs a real artifactstore whose gRPC API serves TLS with a CA
// made by pkg/pki, and returns its address and the PKI folder.
func tlsArtifactstore(t *testing.T) (string, pki.Dir) {
	t.Helper()
	d := pki.Dir(filepath.Join(t.TempDir(), "pki"))
	if _, err := pki.Ensure(d, []string{"localhost", "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	etcd := storetest.Start(t)
	cfg := artifactstore.DefaultConfig()
	cfg.Store, cfg.HTTPAddr, cfg.DataDir = etcd.Client(t), "127.0.0.1:0", t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.GRPC = grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second, TLS: tlsconf.Files{
		CertFile: d.Path(pki.ServerCert), KeyFile: d.Path(pki.ServerKey), CAFile: d.Path(pki.CACert),
	}}
	srv, err := artifactstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "artifactstore", srv.Run)
	return srv.GRPCAddr().String(), d
}

func bootctl(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"--timeout", "10s"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

// bootctl finds the client config `bootchain up` writes, where it writes it, and
// talks TLS with its certificate without a flag.
func TestClientConfigIsFoundWithoutFlags(t *testing.T) {
	addr, d := tlsArtifactstore(t)
	xdg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", xdg)
	cfg := pki.ClientConfig{ArtifactStore: addr, CA: d.Path(pki.CACert), Cert: d.Path(pki.AdminCert), Key: d.Path(pki.AdminKey)}
	if err := pki.WriteClientConfig(filepath.Join(xdg, "bootchain", "bootctl.json"), cfg); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := bootctl("artifacts", "list"); code != 0 {
		t.Fatalf("artifacts list with the config: exit %d: %s%s", code, stderr, out)
	}
	// The same server without the config's CA: plaintext fails.
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	if _, _, code := bootctl("--artifactstore-addr", addr, "artifacts", "list"); code == 0 {
		t.Fatal("plaintext artifacts list against a TLS server succeeded")
	}
	// $BOOTCHAIN_CONFIG names another file, and wins over XDG.
	other := filepath.Join(t.TempDir(), "ci.json")
	if err := pki.WriteClientConfig(other, cfg); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BOOTCHAIN_CONFIG", other)
	if out, stderr, code := bootctl("artifacts", "list"); code != 0 {
		t.Fatalf("artifacts list with $BOOTCHAIN_CONFIG: exit %d: %s%s", code, stderr, out)
	}
}

// Flags and BOOTCHAIN_* variables win over the file, field by field.
func TestFlagsAndVariablesOverrideTheConfig(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ca.crt", "a.crt", "a.key"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600)
	}
	path := filepath.Join(dir, "bootctl.json")
	if err := pki.WriteClientConfig(path, pki.ClientConfig{
		BootAPI: "file:1", DHCPD: "file:2", CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "a.crt"), Key: filepath.Join(dir, "a.key"),
	}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BOOTCHAIN_CONFIG", path)
	t.Setenv("BOOTCHAIN_DHCPD_ADDR", "env:2")
	g := newGlobal(io.Discard)
	root := newRootCommand(g)
	if err := root.PersistentFlags().Parse([]string{"--tls-cert", "/flag.crt"}); err != nil {
		t.Fatal(err)
	}
	if err := g.resolve(root); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"bootapi": "file:1", "dhcpd": "env:2", "tftpd": defaultAddrs["tftpd"]}
	for s, a := range want {
		if g.Addrs[s] != a {
			t.Errorf("%s address %q, want %q", s, g.Addrs[s], a)
		}
	}
	if g.TLS.CertFile != "/flag.crt" || g.TLS.CAFile != filepath.Join(dir, "ca.crt") || g.TLS.KeyFile != filepath.Join(dir, "a.key") {
		t.Errorf("TLS %+v", g.TLS)
	}
}

// A config that names files which are not there, a named config that is not there
// and one that does not parse are errors that say which file and field.
func TestClientConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bootctl.json")
	gone := filepath.Join(dir, "gone", "admin.crt")
	if err := pki.WriteClientConfig(path, pki.ClientConfig{BootAPI: "localhost:9080", Cert: gone, DataDir: filepath.Join(dir, "gone")}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BOOTCHAIN_CONFIG", path)
	_, stderr, code := bootctl("machines", "list")
	if code == 0 || !strings.Contains(stderr, `"cert"`) || !strings.Contains(stderr, gone) || !strings.Contains(stderr, "bootchain up --data-dir") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// The flag that replaces the missing file makes it irrelevant; the call then
	// fails for its own reason (no key), not the config's.
	_, stderr, _ = bootctl("--tls-cert", filepath.Join(dir, "mine.crt"), "machines", "list")
	if strings.Contains(stderr, gone) {
		t.Fatalf("overridden field still checked: %s", stderr)
	}

	t.Setenv("BOOTCHAIN_CONFIG", filepath.Join(dir, "missing.json"))
	if _, stderr, code := bootctl("machines", "list"); code == 0 || !strings.Contains(stderr, "missing.json") {
		t.Fatalf("named config missing: exit %d: %s", code, stderr)
	}
	os.WriteFile(path, []byte(`{"bootapi": "x", "ca_file": "typo"}`), 0o600)
	t.Setenv("BOOTCHAIN_CONFIG", path)
	if _, stderr, code := bootctl("machines", "list"); code == 0 || !strings.Contains(stderr, "ca_file") {
		t.Fatalf("unknown field: exit %d: %s", code, stderr)
	}
}
