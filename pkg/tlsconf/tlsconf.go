// Package tlsconf builds TLS configurations for bootchain's gRPC servers and clients
// from file paths given on the command line: TLS when a certificate is given, and
// client certificates verified against a client CA when one is given too.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
)

// Files are the PEM files for one side of a connection.
type Files struct {
	// CertFile and KeyFile are this side's certificate and key.
	CertFile, KeyFile string
	// CAFile verifies the other side: clients' certificates on a server (mTLS),
	// the server's certificate on a client.
	CAFile string
	// ServerName overrides the name a client verifies.
	ServerName string
	// Insecure, on a client, uses TLS without verifying the server (for labs).
	Insecure bool
}

// AddServerFlags binds server-side flags under prefix (e.g. "grpc-").
func (f *Files) AddServerFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&f.CertFile, prefix+"tls-cert", f.CertFile, "PEM certificate: serve TLS")
	fs.StringVar(&f.KeyFile, prefix+"tls-key", f.KeyFile, "PEM private key of --"+prefix+"tls-cert")
	fs.StringVar(&f.CAFile, prefix+"tls-client-ca", f.CAFile, "PEM CA bundle: verify client certificates against it (mTLS; callers without one must present a token)")
}

// AddClientFlags binds client-side flags under prefix.
func (f *Files) AddClientFlags(fs *flag.FlagSet, prefix string) {
	fs.StringVar(&f.CAFile, prefix+"tls-ca", f.CAFile, "PEM CA bundle: connect with TLS and verify the server")
	fs.StringVar(&f.CertFile, prefix+"tls-cert", f.CertFile, "PEM client certificate (mTLS)")
	fs.StringVar(&f.KeyFile, prefix+"tls-key", f.KeyFile, "PEM key of the client certificate")
	fs.StringVar(&f.ServerName, prefix+"tls-server-name", f.ServerName, "server name to verify")
	fs.BoolVar(&f.Insecure, prefix+"tls-insecure", f.Insecure, "use TLS without verifying the server")
}

// Enabled reports whether any TLS setting is given.
func (f Files) Enabled() bool {
	return f.CertFile != "" || f.KeyFile != "" || f.CAFile != "" || f.Insecure
}

// Server returns the server config, or nil when TLS is not configured.
func (f Files) Server() (*tls.Config, error) {
	if f.CertFile == "" && f.KeyFile == "" {
		if f.CAFile != "" {
			return nil, errors.New("tls: a client CA needs a server certificate and key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load server key pair: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.CAFile != "" {
		pool, err := loadPool(f.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		// A certificate, when given, must be the CA's; a caller may present a
		// bearer token instead, so the handshake does not require one: the
		// server's authentication refuses a call that brings neither.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// Client returns the client config, or nil for plaintext.
func (f Files) Client() (*tls.Config, error) {
	if !f.Enabled() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName, InsecureSkipVerify: f.Insecure}
	if f.CAFile != "" {
		pool, err := loadPool(f.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls: load client key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: no certificate in %s", path)
	}
	return pool, nil
}
