package artifactstore_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/artifactsig"
	artifactv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/artifactstore/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/services/artifactstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func served(t *testing.T, in *instance, name string) []byte {
	t.Helper()
	resp, body := httpGet(t, in.base+"/artifacts/"+name, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", name, resp.StatusCode, body)
	}
	return body
}

// TestReplaceNeedsDigest: an attacker (or a slip) uploading under an existing name
// without naming its current digest, or with a stale one, changes nothing.
func TestReplaceNeedsDigest(t *testing.T) {
	e := storetest.Start(t)
	in := start(t, e, opts{})
	ctx := context.Background()
	v1, v2 := []byte("kernel one"), []byte("kernel two")
	a := mustUpload(t, in, "ipxe.efi", v1)

	for name, h := range map[string]*artifactv1.UploadHeader{
		"no digest, sha given": {Name: "ipxe.efi", Sha256: digest(v2)},
		"no digest at all":     {Name: "ipxe.efi"},
	} {
		_, err := upload(ctx, in.cli, h, v2)
		if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), a.GetSha256()) || !strings.Contains(err.Error(), "replaces_sha256") {
			t.Errorf("%s: %v, want AlreadyExists naming %s", name, err, a.GetSha256())
		}
	}
	_, err := upload(ctx, in.cli, &artifactv1.UploadHeader{Name: "ipxe.efi", ReplacesSha256: digest([]byte("older"))}, v2)
	if status.Code(err) != codes.FailedPrecondition || apierr.FieldOf(err) != "header.replaces_sha256" || !strings.Contains(err.Error(), a.GetSha256()) {
		t.Errorf("stale digest: %v, want FailedPrecondition naming %s", err, a.GetSha256())
	}
	_, err = upload(ctx, in.cli, &artifactv1.UploadHeader{Name: "ipxe.efi", ReplacesSha256: "XYZ"}, v2)
	if apierr.FieldOf(err) != "header.replaces_sha256" {
		t.Errorf("malformed digest: %v", err)
	}
	_, err = upload(ctx, in.cli, &artifactv1.UploadHeader{Name: "new.efi", ReplacesSha256: a.GetSha256()}, v2)
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("replacing a name that does not exist: %v", err)
	}
	// Nothing changed: the old content is served, no other blob stays on disk.
	if got := served(t, in, "ipxe.efi"); !bytes.Equal(got, v1) {
		t.Fatalf("served %q after refused replaces", got)
	}
	testkit.Eventually(t, "refused uploads' blobs to go", func() bool { return len(blobFiles(t, in.dir)) == 1 })
	if _, err := in.cli.Stat(ctx, &artifactv1.StatRequest{Name: "new.efi"}); status.Code(err) != codes.NotFound {
		t.Errorf("new.efi: %v", err)
	}
	// The same content again replaces nothing: no digest needed.
	if r, err := upload(ctx, in.cli, &artifactv1.UploadHeader{Name: "ipxe.efi", ContentType: "application/x-test"}, v1); err != nil || !r.GetUnchanged() {
		t.Errorf("same content: %v %v", r, err)
	}

	// Two uploaders naming the same current digest: exactly one replaces it.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = upload(ctx, in.cli, &artifactv1.UploadHeader{Name: "ipxe.efi", ReplacesSha256: a.GetSha256()}, []byte("racer "+string(rune('a'+i))))
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok++
		case codes.FailedPrecondition:
		default:
			t.Errorf("racing replace: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d racing replaces succeeded, want 1: %v", ok, errs)
	}
	if got := served(t, in, "ipxe.efi"); !strings.HasPrefix(string(got), "racer ") {
		t.Errorf("served %q", got)
	}
}

// TestPinnedURL: a URL pinned to a digest answers 409 once the name holds other
// content, and never its bytes.
func TestPinnedURL(t *testing.T) {
	e := storetest.Start(t)
	in := start(t, e, opts{})
	a := mustUpload(t, in, "debian/12/linux", []byte("old kernel"))
	url := in.base + "/artifacts/debian/12/linux?sha256="
	if resp, body := httpGet(t, url+a.GetSha256(), nil); resp.StatusCode != 200 || string(body) != "old kernel" {
		t.Fatalf("pinned GET: %d %q", resp.StatusCode, body)
	}
	if resp, body := httpGet(t, url+"abc", nil); resp.StatusCode != 400 || !strings.Contains(string(body), "sha256") {
		t.Errorf("malformed pin: %d %q", resp.StatusCode, body)
	}
	if _, err := upload(context.Background(), in.cli, &artifactv1.UploadHeader{Name: "debian/12/linux", ReplacesSha256: a.GetSha256()}, []byte("new kernel")); err != nil {
		t.Fatal(err)
	}
	resp, body := httpGet(t, url+a.GetSha256(), nil)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "replaced") || !strings.Contains(string(body), a.GetSha256()) || strings.Contains(string(body), "new kernel") {
		t.Fatalf("GET pinned to replaced content: %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodHead, url+a.GetSha256(), nil)
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != http.StatusConflict {
		t.Errorf("HEAD pinned to replaced content: %d", hr.StatusCode)
	}
}

func flipByte(t *testing.T, dir, sha string) string {
	t.Helper()
	p := filepath.Join(dir, "blobs", "sha256", sha[:2], sha)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func quarantined(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(dir, "quarantine"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestCorruptBlobNeverServed: a byte flipped on disk while artifactstore was down
// is caught before the first serve after the start: HTTP 503 and gRPC DataLoss,
// never the bytes, and the blob is moved to quarantine/.
func TestCorruptBlobNeverServed(t *testing.T) {
	e := storetest.Start(t)
	dir := t.TempDir()
	first := start(t, e, opts{dir: dir})
	data := randBytes(t, 3<<20)
	a := mustUpload(t, first, "ipxe.efi", data)
	good := mustUpload(t, first, "good.efi", []byte("untouched"))
	p := flipByte(t, dir, a.GetSha256())

	second := start(t, e, opts{dir: dir})
	resp, body := httpGet(t, second.base+"/artifacts/ipxe.efi", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "quarantined") || len(body) > 1000 {
		t.Fatalf("GET of a corrupt blob: %d %q", resp.StatusCode, body[:min(len(body), 200)])
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("corrupt blob still in place: %v", err)
	}
	if q := quarantined(t, dir); len(q) != 1 || !strings.HasPrefix(q[0], a.GetSha256()+".") {
		t.Errorf("quarantine: %v", q)
	}
	if n := counter(t, second.srv.Metrics(), "bootchain_artifactstore_blobs_quarantined_total", ""); n != 1 {
		t.Errorf("quarantined metric = %v", n)
	}
	if _, _, err := readAll(t, second.cli, &artifactv1.ReadRequest{Name: "ipxe.efi"}); status.Code(err) != codes.NotFound && status.Code(err) != codes.DataLoss {
		t.Errorf("gRPC Read after quarantine: %v", err)
	}
	// Other artifacts are unaffected and checked too.
	if got := served(t, second, "good.efi"); string(got) != "untouched" {
		t.Errorf("good.efi: %q", got)
	}
	if good.GetSha256() == "" {
		t.Fatal("no digest")
	}
	// Uploading it again (it is missing now) heals the name.
	if _, err := upload(context.Background(), second.cli, &artifactv1.UploadHeader{Name: "ipxe.efi"}, data); err != nil {
		t.Fatal(err)
	}
	if got := served(t, second, "ipxe.efi"); !bytes.Equal(got, data) {
		t.Error("re-upload not served")
	}
}

// TestCorruptBlobGRPCRead: tftpd's path (gRPC Read) refuses a corrupt blob too.
func TestCorruptBlobGRPCRead(t *testing.T) {
	e := storetest.Start(t)
	dir := t.TempDir()
	first := start(t, e, opts{dir: dir})
	a := mustUpload(t, first, "undionly.kpxe", randBytes(t, 100000))
	flipByte(t, dir, a.GetSha256())
	second := start(t, e, opts{dir: dir})
	_, body, err := readAll(t, second.cli, &artifactv1.ReadRequest{Name: "undionly.kpxe"})
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), "quarantined") || len(body) != 0 {
		t.Fatalf("Read of a corrupt blob: %d bytes, %v", len(body), err)
	}
	_, _, err = readAll(t, second.cli, &artifactv1.ReadRequest{Name: "undionly.kpxe", Sha256: a.GetSha256()})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Read by digest after quarantine: %v", err)
	}
}

// TestScheduledVerify: the schedule finds a blob that rots after it was served.
func TestScheduledVerify(t *testing.T) {
	e := storetest.Start(t)
	dir := t.TempDir()
	in := start(t, e, opts{dir: dir, cfg: func(c *artifactstore.Config) { c.VerifyInterval = 200 * time.Millisecond }})
	a := mustUpload(t, in, "vmlinuz", randBytes(t, 1<<20))
	served(t, in, "vmlinuz")
	flipByte(t, dir, a.GetSha256())
	testkit.Eventually(t, "the scheduled check to quarantine the blob", func() bool { return len(quarantined(t, dir)) == 1 })
	resp, body := httpGet(t, in.base+"/artifacts/vmlinuz", nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "missing") {
		t.Errorf("GET after quarantine: %d %q", resp.StatusCode, body)
	}
	if n := counter(t, in.srv.Metrics(), "bootchain_artifactstore_blob_checks_total", "corrupt"); n != 1 {
		t.Errorf("corrupt checks = %v", n)
	}
}

// TestReplicaRepullsCorrupt: a replica whose copy rotted quarantines it and pulls
// the content again from its origin.
func TestReplicaRepullsCorrupt(t *testing.T) {
	e := storetest.Start(t)
	origin := start(t, e, opts{site: "hq"})
	rdir := t.TempDir()
	replica := start(t, e, opts{site: "edge", dir: rdir, origin: origin.srv.GRPCAddr().String()})
	data := randBytes(t, 2<<20)
	a := mustUpload(t, origin, "initrd.gz", data)
	served(t, replica, "initrd.gz")
	flipByte(t, rdir, a.GetSha256())
	again := start(t, e, opts{site: "edge", dir: rdir, origin: origin.srv.GRPCAddr().String()})
	if got := served(t, again, "initrd.gz"); !bytes.Equal(got, data) {
		t.Fatal("replica served other bytes")
	}
	if q := quarantined(t, rdir); len(q) != 1 {
		t.Errorf("replica quarantine: %v", q)
	}
	if n := counter(t, again.srv.Metrics(), "bootchain_artifactstore_origin_fetches_total", "ok"); n != 1 {
		t.Errorf("re-pulls = %v, want 1", n)
	}
}

func writeKeys(t *testing.T, pubs ...ed25519.PublicKey) string {
	t.Helper()
	var b []byte
	for _, p := range pubs {
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
	}
	f := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSignedUploads: with trusted keys, an unsigned or badly signed upload is
// refused and stores nothing; a signed one keeps its signature in the metadata.
func TestSignedUploads(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	keys := writeKeys(t, pub)
	e := storetest.Start(t)
	in := start(t, e, opts{cfg: func(c *artifactstore.Config) { c.SigningKeys = keys }})
	ctx := context.Background()
	data := []byte("signed kernel")
	d := digest(data)
	for name, h := range map[string]*artifactv1.UploadHeader{
		"unsigned":                  {Name: "k", Sha256: d},
		"unsigned, no sha":          {Name: "k"},
		"untrusted key":             {Name: "k", Sha256: d, Signature: artifactsig.Sign(stranger, "k", d)},
		"signed for another name":   {Name: "k", Sha256: d, Signature: artifactsig.Sign(priv, "other", d)},
		"signed for other content":  {Name: "k", Signature: artifactsig.Sign(priv, "k", digest([]byte("x")))},
		"truncated signature":       {Name: "k", Sha256: d, Signature: artifactsig.Sign(priv, "k", d)[:63]},
		"signed other content, sha": {Name: "k", Sha256: d, Signature: artifactsig.Sign(priv, "k", digest([]byte("x")))},
	} {
		_, err := upload(ctx, in.cli, h, data)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "header.signature") {
			t.Errorf("%s: %v, want PermissionDenied naming header.signature", name, err)
		}
	}
	if _, err := in.cli.Stat(ctx, &artifactv1.StatRequest{Name: "k"}); status.Code(err) != codes.NotFound {
		t.Errorf("stat after refused uploads: %v", err)
	}
	testkit.Eventually(t, "no blob from refused uploads", func() bool { return len(blobFiles(t, in.dir)) == 0 })

	r, err := upload(ctx, in.cli, &artifactv1.UploadHeader{Name: "k", Signature: artifactsig.Sign(priv, "k", d)}, data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.GetArtifact().GetSignature(), artifactsig.Sign(priv, "k", d)) || r.GetArtifact().GetSigningKey() != artifactsig.KeyID(pub) {
		t.Errorf("stored %v", r.GetArtifact())
	}
}

// TestReplicaChecksSignatures: a replica with trusted keys serves what they verify
// and refuses, without pulling a byte, what they do not, whatever its origin
// accepted.
func TestReplicaChecksSignatures(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	e := storetest.Start(t)
	origin := start(t, e, opts{site: "hq"}) // trusts no key: accepts anything
	replica := start(t, e, opts{site: "edge", origin: origin.srv.GRPCAddr().String(), cfg: func(c *artifactstore.Config) { c.SigningKeys = writeKeys(t, pub) }})
	ctx := context.Background()
	up := func(name string, data []byte, sig []byte) {
		if _, err := upload(ctx, origin.cli, &artifactv1.UploadHeader{Name: name, Signature: sig}, data); err != nil {
			t.Fatal(err)
		}
	}
	good, bad, none := []byte("good"), []byte("bad"), []byte("none")
	up("good", good, artifactsig.Sign(priv, "good", digest(good)))
	up("bad", bad, artifactsig.Sign(stranger, "bad", digest(bad)))
	up("none", none, nil)
	if got := served(t, replica, "good"); !bytes.Equal(got, good) {
		t.Errorf("good: %q", got)
	}
	// Uploading the same content unsigned keeps its signature.
	up("good", good, nil)
	if st, err := origin.cli.Stat(ctx, &artifactv1.StatRequest{Name: "good"}); err != nil || len(st.GetArtifact().GetSignature()) != 64 {
		t.Errorf("signature after an unsigned re-upload: %v %v", st, err)
	}
	for _, n := range []string{"bad", "none"} {
		resp, body := httpGet(t, replica.base+"/artifacts/"+n, nil)
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "signature") {
			t.Errorf("replica GET %s: %d %q", n, resp.StatusCode, body)
		}
		if _, _, err := readAll(t, replica.cli, &artifactv1.ReadRequest{Name: n}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("replica Read %s: %v", n, err)
		}
	}
	if n := counter(t, origin.srv.Metrics(), "bootchain_artifactstore_read_streams_total", ""); n != 1 {
		t.Errorf("origin served %v Read streams, want 1 (only the trusted artifact)", n)
	}
	for _, f := range blobFiles(t, replica.dir) {
		if strings.Contains(f, digest(bad)) || strings.Contains(f, digest(none)) {
			t.Errorf("replica stored %s", f)
		}
	}
}

// testCA is a CA and a server certificate for 127.0.0.1, written to files.
type testCA struct{ ca, cert, key string }

func newTestCA(t *testing.T) testCA {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "artifactstore"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	c := testCA{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "server.crt"), key: filepath.Join(dir, "server.key")}
	for p, b := range map[string]*pem.Block{c.ca: {Type: "CERTIFICATE", Bytes: caDER}, c.cert: {Type: "CERTIFICATE", Bytes: der}, c.key: {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(p, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestReplicaPullOverTLS: a replica pulls from a TLS origin it verifies, and
// refuses one whose certificate its CA did not sign. The HTTPS listener serves
// the same artifacts.
func TestReplicaPullOverTLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	e := storetest.Start(t)
	origin := start(t, e, opts{site: "hq", clientTLS: tlsconf.Files{CAFile: ca.ca}, cfg: func(c *artifactstore.Config) {
		c.GRPC.TLS = tlsconf.Files{CertFile: ca.cert, KeyFile: ca.key}
		c.HTTPSAddr, c.HTTPSTLS = "127.0.0.1:0", tlsconf.Files{CertFile: ca.cert, KeyFile: ca.key}
	}})
	data := randBytes(t, 1<<20)
	mustUpload(t, origin, "ipxe.efi", data)
	trusting := start(t, e, opts{site: "edge", origin: origin.srv.GRPCAddr().String(), cfg: func(c *artifactstore.Config) { c.OriginTLS = tlsconf.Files{CAFile: ca.ca} }})
	if got := served(t, trusting, "ipxe.efi"); !bytes.Equal(got, data) {
		t.Error("replica over TLS served other bytes")
	}
	fooled := start(t, e, opts{site: "edge2", origin: origin.srv.GRPCAddr().String(), cfg: func(c *artifactstore.Config) { c.OriginTLS = tlsconf.Files{CAFile: other.ca} }})
	resp, body := httpGet(t, fooled.base+"/artifacts/ipxe.efi", nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "certificate") {
		t.Errorf("replica with another CA: %d %q", resp.StatusCode, body)
	}

	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(ca.ca)
	pool.AppendCertsFromPEM(pem)
	cl := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer cl.CloseIdleConnections()
	hr, err := cl.Get("https://" + origin.srv.HTTPSAddr().String() + "/artifacts/ipxe.efi")
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(hr.Body)
	if hr.StatusCode != 200 || !bytes.Equal(buf.Bytes(), data) || hr.TLS == nil {
		t.Errorf("HTTPS GET: %d, %d bytes", hr.StatusCode, buf.Len())
	}
}
