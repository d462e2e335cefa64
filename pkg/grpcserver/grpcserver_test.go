package grpcserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// pki writes a CA and a server and a client certificate signed by it.
type pki struct{ dir, ca, srvCert, srvKey, cliCert, cliKey, opCert, opKey string }

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bootchain test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := pki{dir: dir, ca: filepath.Join(dir, "ca.pem")}
	writePEM(t, p.ca, "CERTIFICATE", caDER)
	issue := func(name string, usage x509.ExtKeyUsage, serial int64, uris ...string) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		for _, u := range uris {
			pu, _ := url.Parse(u)
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		cert, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, cert, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", kb)
		return cert, keyFile
	}
	p.srvCert, p.srvKey = issue("server", x509.ExtKeyUsageServerAuth, 2)
	// client: signed by the CA but without an identity URI; operator: with one.
	p.cliCert, p.cliKey = issue("client", x509.ExtKeyUsageClientAuth, 3)
	p.opCert, p.opKey = issue("operator", x509.ExtKeyUsageClientAuth, 4, "https://example.com/x", "bootchain://operator/ops?sites=a")
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func serve(t *testing.T, st *store.Store, files tlsconf.Files) string {
	t.Helper()
	s, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", TLS: files, StopTimeout: time.Second, Auth: auth.NewAuthenticator(st, nil)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.Addr().String()
}

func check(addr string, files tlsconf.Files, opts ...grpc.DialOption) error {
	cc, err := grpcclient.Dial(addr, files, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil && r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return context.DeadlineExceeded
	}
	if err != nil {
		return err
	}
	// Reflection is registered, so grpcurl works without .proto files.
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		return err
	}
	// A stream the server already ended (refused: Unauthenticated) answers
	// Send with io.EOF; its status comes from Recv.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.Recv()
	return err
}

func TestPlaintextTLSAndMutualTLS(t *testing.T) {
	p := newPKI(t)
	st := storetest.New(t)
	tok := grpcclient.WithToken(testkit.AdminToken(t, st))
	plain := serve(t, st, tlsconf.Files{})
	if err := check(plain, tlsconf.Files{}, tok); err != nil {
		t.Fatalf("plaintext on loopback with a token: %v", err)
	}
	if err := check(plain, tlsconf.Files{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reflection without a credential: %v, want Unauthenticated", err)
	}

	tlsAddr := serve(t, st, tlsconf.Files{CertFile: p.srvCert, KeyFile: p.srvKey})
	if err := check(tlsAddr, tlsconf.Files{CAFile: p.ca}, tok); err != nil {
		t.Fatalf("TLS with the CA: %v", err)
	}
	if err := check(tlsAddr, tlsconf.Files{}); err == nil {
		t.Fatal("plaintext client reached a TLS server")
	}

	mtls := serve(t, st, tlsconf.Files{CertFile: p.srvCert, KeyFile: p.srvKey, CAFile: p.ca})
	if err := check(mtls, tlsconf.Files{CAFile: p.ca, CertFile: p.opCert, KeyFile: p.opKey}); err != nil {
		t.Fatalf("mTLS with an identity certificate: %v", err)
	}
	// A certificate the CA signed is no identity without a bootchain:// URI.
	err := check(mtls, tlsconf.Files{CAFile: p.ca, CertFile: p.cliCert, KeyFile: p.cliKey})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "no identity URI") {
		t.Fatalf("CA-signed certificate without identity URI: %v, want Unauthenticated", err)
	}
	// A token is the other credential: it works without a client certificate.
	if err := check(mtls, tlsconf.Files{CAFile: p.ca}, tok); err != nil {
		t.Fatalf("mTLS server, token without a client certificate: %v", err)
	}
	if err := check(mtls, tlsconf.Files{CAFile: p.ca}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("mTLS server, no credential at all: %v, want Unauthenticated", err)
	}
	// A certificate the CA did not sign fails the handshake.
	other := newPKI(t)
	if err := check(mtls, tlsconf.Files{CAFile: p.ca, CertFile: other.cliCert, KeyFile: other.cliKey}); err == nil {
		t.Fatal("mTLS server accepted a client certificate from another CA")
	}
}

func TestBadConfig(t *testing.T) {
	a := auth.NewAuthenticator(storetest.New(t), nil)
	if _, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Auth: a, TLS: tlsconf.Files{CAFile: "/nonexistent"}}); err == nil {
		t.Fatal("client CA without a server certificate accepted")
	}
	if _, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Auth: a, TLS: tlsconf.Files{CertFile: "/nonexistent", KeyFile: "/nonexistent"}}); err == nil {
		t.Fatal("missing certificate files accepted")
	}
	if _, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("a server without an authenticator was built")
	}
}
