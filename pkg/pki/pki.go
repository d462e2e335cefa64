// Package pki is bootchain's own small certificate authority: the CA `bootchain up`
// creates on its first start, the server certificate its gRPC listeners present and
// the client certificates that name an identity (auth.IdentityURI) for bootctl,
// operators and services.
//
// Keys are ECDSA P-256. The CA lives ten years, leaf certificates one year; a leaf
// within RenewBefore of its end is issued again from the same CA, so clients that
// trust the CA never notice. Private keys are written 0600, every file atomically
// (a temporary file renamed into place), so a crash leaves the old file or the new
// one, never half of one.
//
//	ca, err := pki.CreateCA("bootchain CA")
//	cert, key, err := ca.IssueClient(auth.Identity{Name: "ci", Role: auth.RoleOperator}, pki.LeafValidity)
package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
)

// Validity periods and the renewal margin.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 365 * 24 * time.Hour
	// RenewBefore: a leaf this close to its end is issued again at start.
	RenewBefore = 30 * 24 * time.Hour
	// backdate covers clocks a little behind the CA's.
	backdate = 5 * time.Minute
)

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM is Cert as PEM, what clients are given to trust.
	CertPEM []byte
}

// CreateCA makes a new self-signed CA named name, valid for CAValidity.
func CreateCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"bootchain"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(der)}, nil
}

// LoadCA reads a CA's certificate and key and checks that they belong together.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA %s and %s: %w", certPath, keyPath, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("pki: CA key %s: want an ECDSA key", keyPath)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodeCert(pair.Certificate[0])}, nil
}

// WriteFiles writes the CA's certificate (0644) and key (0600) atomically.
func (ca *CA) WriteFiles(certPath, keyPath string) error {
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(certPath, ca.CertPEM, 0o644)
}

// IssueServer issues a server certificate for hosts (DNS names or IP addresses),
// valid for validity. It returns the certificate and key as PEM.
func (ca *CA) IssueServer(name string, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("pki: a server certificate needs at least one host")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, Organization: []string{"bootchain"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, validity)
}

// IssueClient issues a client certificate whose URI SAN names id
// (auth.IdentityURI), valid for validity.
func (ca *CA) IssueClient(id auth.Identity, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if !auth.ValidName(id.Name) {
		return nil, nil, fmt.Errorf("pki: name %q: want 1-63 letters, digits, '.', '_', '-'", id.Name)
	}
	if _, err := auth.ParseRole(string(id.Role)); err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	for _, s := range id.Sites {
		if !auth.ValidName(s) {
			return nil, nil, fmt.Errorf("pki: site %q: want 1-63 letters, digits, '.', '_', '-'", s)
		}
	}
	u, err := url.Parse(auth.IdentityURI(id))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: identity URI: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.Name, OrganizationalUnit: []string{string(id.Role)}, Organization: []string{"bootchain"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	return ca.issue(tmpl, validity)
}

func (ca *CA) issue(tmpl *x509.Certificate, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: key: %w", err)
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-backdate), now.Add(validity)
	// A leaf never outlives its CA: a client would refuse the chain anyway.
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %q: %w", tmpl.Subject.CommonName, err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// WriteLeaf writes a certificate (0644) and its key (0600) atomically, the key
// first: a crash between the two leaves a pair that does not match, which Ensure
// detects and issues again.
func WriteLeaf(certPath, keyPath string, certPEM, keyPEM []byte) error {
	if err := WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(certPath, certPEM, 0o644)
}

// LoadLeaf reads a certificate and key as a tls.Certificate and the parsed leaf.
func LoadLeaf(certPath, keyPath string) (tls.Certificate, *x509.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pki: %s and %s: %w", certPath, keyPath, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pki: %s: %w", certPath, err)
	}
	pair.Leaf = leaf
	return pair, leaf, nil
}

// Signed reports whether ca signed cert.
func (ca *CA) Signed(cert *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, ca.Cert.RawSubject) && cert.CheckSignatureFrom(ca.Cert) == nil
}

// WriteFileAtomic writes data to path with mode perm through a temporary file in
// the same folder, synced and renamed into place.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; chmod before any byte is written, so a key
	// is never readable by others, not even for a moment.
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
