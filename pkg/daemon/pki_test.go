package daemon

import (
	"flag"
	"path/filepath"
	"testing"

	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/pkg/tlsconf"
)

func TestWirePKIFillsWhatIsNotGiven(t *testing.T) {
	d := pki.Dir(filepath.Join(t.TempDir(), "pki"))
	if _, err := pki.Ensure(d, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	fs := flagSet()
	var o Options
	o.AddFlags(fs) // etcd-tls-*: never wired
	var srv, plain, cli, mine tlsconf.Files
	srv.AddServerFlags(fs, "grpc-")
	plain.AddServerFlags(fs, "admin-grpc-")
	fs.Bool("admin-grpc-insecure-plaintext", false, "")
	cli.AddClientFlags(fs, "artifactstore-")
	mine.AddClientFlags(fs, "origin-")
	if err := fs.Parse([]string{"--admin-grpc-insecure-plaintext", "--origin-tls-ca", "/their/ca.crt"}); err != nil {
		t.Fatal(err)
	}
	if err := WirePKI(fs, d); err != nil {
		t.Fatal(err)
	}
	want := map[string]tlsconf.Files{
		"server":        {CertFile: d.Path(pki.ServerCert), KeyFile: d.Path(pki.ServerKey), CAFile: d.Path(pki.CACert)},
		"plaintext":     {},
		"client":        {CertFile: d.Path(pki.ServiceCert), KeyFile: d.Path(pki.ServiceKey), CAFile: d.Path(pki.CACert)},
		"user's client": {CAFile: "/their/ca.crt"},
		"etcd":          {},
	}
	got := map[string]tlsconf.Files{"server": srv, "plaintext": plain, "client": cli, "user's client": mine, "etcd": o.EtcdTLS}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %+v, want %+v", k, got[k], w)
		}
	}
	if err := WirePKI(flagSetWith(t), pki.Dir(t.TempDir())); err == nil {
		t.Error("an empty folder was accepted")
	}
}

func flagSetWith(t *testing.T) *flag.FlagSet {
	fs := flagSet()
	var f tlsconf.Files
	f.AddServerFlags(fs, "grpc-")
	return fs
}
