package daemon

import (
	"context"
	"errors"
	"flag"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdBinary is Debian's etcd-server (scripts/install-deps.sh installs it).
const etcdBinary = "/usr/bin/etcd"

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// realEtcd runs a real etcd process that serves TLS, requires client
// certificates from a pkg/pki CA, and has etcd authentication enabled: user root,
// user "svc" (password "svc-secret") with a role that may read and write
// /bootchain/ only, and user "nobody" (password "nobody-secret") with no role.
func realEtcd(t *testing.T) (string, pki.Dir) {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		t.Skipf("no %s (Debian's etcd-server; scripts/install-deps.sh installs it)", etcdBinary)
	}
	dir := t.TempDir()
	d := pki.Dir(filepath.Join(dir, "pki"))
	if _, err := pki.Ensure(d, []string{"localhost", "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	client, peer := freeAddr(t), freeAddr(t)
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(etcdBinary,
		"--name", "t", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", "https://"+client, "--advertise-client-urls", "https://"+client,
		"--listen-peer-urls", "http://"+peer, "--initial-advertise-peer-urls", "http://"+peer,
		"--initial-cluster", "t=http://"+peer,
		"--cert-file", d.Path(pki.ServerCert), "--key-file", d.Path(pki.ServerKey),
		"--trusted-ca-file", d.Path(pki.CACert), "--client-cert-auth",
		"--log-level", "error", "--logger", "zap")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "etcd.log"))
			t.Logf("etcd log:\n%s", b)
		}
	})

	tlsCfg, err := tlsconf.Files{CAFile: d.Path(pki.CACert), CertFile: d.Path(pki.AdminCert), KeyFile: d.Path(pki.AdminKey)}.Client()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + client}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !testkit.Poll(30*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Get(c, "ping")
		return err == nil
	}) {
		t.Fatal("etcd did not answer")
	}
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "root-secret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "bootchain"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "bootchain", "/bootchain/", clientv3.GetPrefixRangeEnd("/bootchain/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "svc", "svc-secret"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "svc", "bootchain"); return err },
		func() error { _, err := cli.UserAdd(ctx, "nobody", "nobody-secret"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("etcd auth setup step %d: %v", i, err)
		}
	}
	return "https://" + client, d
}

// options are a service's shared flags as its command line gives them.
func options(t *testing.T, args ...string) *Options {
	t.Helper()
	fs := flagSet()
	var o Options
	o.AddFlags(fs)
	if err := config.Parse(fs, args); err != nil {
		t.Fatal(err)
	}
	return &o
}

func TestExternalEtcdWithTLSAndAuth(t *testing.T) {
	endpoint, d := realEtcd(t)
	t.Setenv(EtcdPasswordEnv, "")
	tlsArgs := []string{"--etcd-endpoints", endpoint, "--etcd-timeout", "5s",
		"--etcd-tls-ca", d.Path(pki.CACert), "--etcd-tls-cert", d.Path(pki.ServiceCert), "--etcd-tls-key", d.Path(pki.ServiceKey)}
	pwFile := func(pw string) string {
		p := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx := context.Background()

	// The right user and password: the service reads and writes /bootchain/,
	// and nothing else.
	env, err := options(t, append(tlsArgs, "--etcd-username", "svc", "--etcd-password-file", pwFile("svc-secret"))...).Start(ctx)
	if err != nil {
		t.Fatalf("right credentials: %v", err)
	}
	cli := env.Store.Client()
	if _, err := cli.Put(ctx, "/bootchain/v1/probe", "x"); err != nil {
		t.Fatalf("write under /bootchain/: %v", err)
	}
	if _, err := cli.Put(ctx, "/elsewhere", "x"); err == nil {
		t.Fatal("the bootchain role wrote outside /bootchain/")
	}
	env.Close()

	// The password from the environment instead of a file.
	t.Setenv(EtcdPasswordEnv, "svc-secret")
	env, err = options(t, append(tlsArgs, "--etcd-username", "svc")...).Start(ctx)
	if err != nil {
		t.Fatalf("password from %s: %v", EtcdPasswordEnv, err)
	}
	env.Close()
	t.Setenv(EtcdPasswordEnv, "")

	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"wrong password": {[]string{"--etcd-username", "svc", "--etcd-password-file", pwFile("not-the-secret")}, `authentication failed for user "svc"`},
		"no role":        {[]string{"--etcd-username", "nobody", "--etcd-password-file", pwFile("nobody-secret")}, `user "nobody" may not read /bootchain/v1/`},
		"no password":    {[]string{"--etcd-username", "svc"}, "give its password in --etcd-password-file"},
		"no credentials": {nil, "has authentication enabled"},
	} {
		env, err := options(t, append(tlsArgs, c.args...)...).Start(ctx)
		if err == nil {
			env.Close()
			t.Errorf("%s: connected", name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to say %q", name, err, c.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error holds a password: %q", name, err)
		}
	}

	// Without the client certificate etcd refuses the TLS handshake.
	noCert := []string{"--etcd-endpoints", endpoint, "--etcd-timeout", "2s", "--etcd-tls-ca", d.Path(pki.CACert),
		"--etcd-username", "svc", "--etcd-password-file", pwFile("svc-secret")}
	if env, err := options(t, noCert...).Start(ctx); err == nil {
		env.Close()
		t.Error("connected without a client certificate")
	}
}

func TestEtcdPasswordNeedsAUser(t *testing.T) {
	t.Setenv(EtcdPasswordEnv, "")
	o := options(t, "--etcd-password-file", "/dev/null")
	if _, err := o.etcdPassword(); err == nil {
		t.Fatal("a password file without --etcd-username was accepted")
	}
	p := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(p, []byte("\nsecret\n"), 0o600)
	if _, err := options(t, "--etcd-username", "u", "--etcd-password-file", p).etcdPassword(); err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("empty first line: %v", err)
	}
	if _, err := options(t, "--etcd-username", "u", "--etcd-password-file", filepath.Join(t.TempDir(), "gone")).etcdPassword(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func flagSet() *flag.FlagSet { return flag.NewFlagSet("test", flag.ContinueOnError) }
