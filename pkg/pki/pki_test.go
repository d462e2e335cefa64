package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/tlsconf"
)

// handshake runs a real TLS handshake over loopback TCP and returns what the
// server saw, or the first side's error.
func handshake(t *testing.T, server, client *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		err = tc.Handshake()
		// TLS 1.3 reports a refused client certificate on the client's first
		// read: answer one byte so the client reads.
		if err == nil {
			_, err = tc.Write([]byte{1})
		}
		done <- result{tc.ConnectionState(), err}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	r := <-done
	if r.err != nil {
		return r.st, r.err
	}
	return r.st, err
}

func ensured(t *testing.T) Dir {
	t.Helper()
	d := Dir(filepath.Join(t.TempDir(), "pki"))
	if _, err := Ensure(d, []string{"localhost", "127.0.0.1", "::1", "198.18.0.1"}); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestMutualTLSCarriesTheIdentity(t *testing.T) {
	d := ensured(t)
	ca, err := d.CA()
	if err != nil {
		t.Fatal(err)
	}
	id := auth.Identity{Name: "site-a-tftpd", Role: auth.RoleService, Sites: []string{"a", "b"}}
	certPEM, keyPEM, err := ca.IssueClient(id, LeafValidity)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if err := WriteLeaf(filepath.Join(out, "c.crt"), filepath.Join(out, "c.key"), certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	server, err := tlsconf.Files{CertFile: d.Path(ServerCert), KeyFile: d.Path(ServerKey), CAFile: d.Path(CACert)}.Server()
	if err != nil {
		t.Fatal(err)
	}
	server.ClientAuth = tls.RequireAndVerifyClientCert
	client, err := tlsconf.Files{CertFile: filepath.Join(out, "c.crt"), KeyFile: filepath.Join(out, "c.key"), CAFile: d.Path(CACert), ServerName: "198.18.0.1"}.Client()
	if err != nil {
		t.Fatal(err)
	}
	st, err := handshake(t, server, client)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if len(st.PeerCertificates) == 0 || len(st.PeerCertificates[0].URIs) != 1 {
		t.Fatalf("server saw certificates %v", st.PeerCertificates)
	}
	got, err := auth.ParseIdentityURI(st.PeerCertificates[0].URIs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != id.Name || got.Role != id.Role || !slices.Equal(got.Sites, id.Sites) || got.Kind != auth.KindCert {
		t.Fatalf("identity %+v, want %+v", got, id)
	}

	// The admin and service certificates Ensure wrote name their identities.
	for file, want := range map[string]auth.Identity{AdminCert: AdminIdentity, ServiceCert: ServiceIdentity} {
		_, leaf, err := LoadLeaf(d.Path(file), d.Path(file[:len(file)-3]+"key"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := auth.ParseIdentityURI(leaf.URIs[0].String())
		if err != nil || got.Name != want.Name || got.Role != want.Role {
			t.Fatalf("%s: identity %+v (%v), want %+v", file, got, err, want)
		}
	}
}

func TestServerRefusesOtherCAsAndVerifiesItsNames(t *testing.T) {
	d := ensured(t)
	other := ensured(t)
	server, err := tlsconf.Files{CertFile: d.Path(ServerCert), KeyFile: d.Path(ServerKey), CAFile: d.Path(CACert)}.Server()
	if err != nil {
		t.Fatal(err)
	}
	// A client certificate from another CA is refused, even though the server
	// does not require one.
	stranger, err := tlsconf.Files{CertFile: other.Path(AdminCert), KeyFile: other.Path(AdminKey), CAFile: d.Path(CACert), ServerName: "localhost"}.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, server, stranger); err == nil {
		t.Fatal("a certificate from another CA was accepted")
	}
	// No certificate at all: the handshake passes (a token may follow), with no
	// peer certificate.
	anon, err := tlsconf.Files{CAFile: d.Path(CACert), ServerName: "localhost"}.Client()
	if err != nil {
		t.Fatal(err)
	}
	st, err := handshake(t, server, anon)
	if err != nil || len(st.PeerCertificates) != 0 {
		t.Fatalf("anonymous client: %v, %d certificates", err, len(st.PeerCertificates))
	}
	// The client refuses a server name the certificate does not carry, and a
	// server whose CA it does not trust.
	wrongName, _ := tlsconf.Files{CAFile: d.Path(CACert), ServerName: "198.18.0.9"}.Client()
	if _, err := handshake(t, server, wrongName); err == nil {
		t.Fatal("client accepted a server certificate without its name")
	}
	wrongCA, _ := tlsconf.Files{CAFile: other.Path(CACert), ServerName: "localhost"}.Client()
	if _, err := handshake(t, server, wrongCA); err == nil {
		t.Fatal("client accepted a server from another CA")
	}
}

func TestEnsureKeepsRenewsAndProtects(t *testing.T) {
	d := ensured(t)
	for _, f := range []string{CAKey, ServerKey, AdminKey, ServiceKey} {
		fi, err := os.Stat(d.Path(f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	before := map[string][]byte{}
	for _, f := range []string{CACert, CAKey, ServerCert, AdminCert, ServiceCert} {
		before[f], _ = os.ReadFile(d.Path(f))
	}

	// A second run keeps everything.
	rep, err := Ensure(d, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Created)+len(rep.Renewed) != 0 {
		t.Fatalf("second run created %v, renewed %v", rep.Created, rep.Renewed)
	}
	for f, b := range before {
		if now, _ := os.ReadFile(d.Path(f)); !bytes.Equal(now, b) {
			t.Fatalf("%s changed on a second run", f)
		}
	}

	// A leaf within RenewBefore of its end, and a server certificate that lacks a
	// new address, are issued again from the same CA.
	ca, err := d.CA()
	if err != nil {
		t.Fatal(err)
	}
	c, k, err := ca.IssueClient(AdminIdentity, RenewBefore-time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteLeaf(d.Path(AdminCert), d.Path(AdminKey), c, k); err != nil {
		t.Fatal(err)
	}
	rep, err = Ensure(d, []string{"localhost", "198.18.0.7"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Renewed)
	if !slices.Equal(rep.Renewed, []string{AdminCert, ServerCert}) || len(rep.Created) != 0 {
		t.Fatalf("renewed %v created %v", rep.Renewed, rep.Created)
	}
	_, admin, err := LoadLeaf(d.Path(AdminCert), d.Path(AdminKey))
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(admin.NotAfter) < RenewBefore || !ca.Signed(admin) {
		t.Fatalf("renewed admin certificate ends %v, signed by the CA: %v", admin.NotAfter, ca.Signed(admin))
	}
	_, srv, err := LoadLeaf(d.Path(ServerCert), d.Path(ServerKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.VerifyHostname("198.18.0.7"); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(d.Path(CACert)); !bytes.Equal(now, before[CACert]) {
		t.Fatal("renewal replaced the CA")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(before[CACert])
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatalf("renewed server certificate does not chain to the old CA: %v", err)
	}

	// A certificate from another CA is someone's own: kept.
	other := ensured(t)
	theirs, _ := os.ReadFile(other.Path(ServerCert))
	theirKey, _ := os.ReadFile(other.Path(ServerKey))
	if err := WriteLeaf(d.Path(ServerCert), d.Path(ServerKey), theirs, theirKey); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(d, []string{"localhost", "198.18.0.99"}); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(d.Path(ServerCert)); !bytes.Equal(now, theirs) {
		t.Fatal("Ensure replaced a certificate from another CA")
	}

	// A CA that does not load is an error, never replaced.
	if err := os.WriteFile(d.Path(CAKey), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(d, []string{"localhost"}); err == nil {
		t.Fatal("Ensure accepted a broken CA key")
	}
	if now, _ := os.ReadFile(d.Path(CACert)); !bytes.Equal(now, before[CACert]) {
		t.Fatal("Ensure replaced a CA it could not load")
	}
	os.Remove(d.Path(CAKey))
	if _, err := Ensure(d, []string{"localhost"}); err == nil {
		t.Fatal("Ensure accepted a CA certificate without its key")
	}
}

func TestIssueClientRefusesBadIdentities(t *testing.T) {
	ca, err := CreateCA("test")
	if err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]auth.Identity{
		"empty name": {Role: auth.RoleAdmin},
		"slash":      {Name: "a/b", Role: auth.RoleAdmin},
		"no role":    {Name: "x"},
		"bad site":   {Name: "x", Role: auth.RoleViewer, Sites: []string{"a,b"}},
	} {
		if _, _, err := ca.IssueClient(id, LeafValidity); err == nil {
			t.Errorf("%s: issued", name)
		}
	}
}

func TestWriteFileAtomicReplacesWhole(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%q %v", b, fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(p, "x"), nil, 0o600); err == nil || errors.Is(err, nil) {
		t.Fatal("write under a file succeeded")
	}
}
