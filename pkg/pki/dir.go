package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
)

// The files of a PKI folder (`bootchain up` keeps it in <data-dir>/pki/).
const (
	CACert      = "ca.crt"
	CAKey       = "ca.key"
	ServerCert  = "server.crt"
	ServerKey   = "server.key"
	AdminCert   = "admin.crt"
	AdminKey    = "admin.key"
	ServiceCert = "service.crt"
	ServiceKey  = "service.key"
)

// The identities of the certificates Ensure issues.
var (
	// AdminIdentity is the first admin's: whoever runs `bootchain up` and
	// can read its data dir.
	AdminIdentity = auth.Identity{Name: "admin", Role: auth.RoleAdmin}
	// ServiceIdentity is the services' own, when one calls another (tftpd and
	// replicas reading from artifactstore).
	ServiceIdentity = auth.Identity{Name: "bootchain", Role: auth.RoleService}
)

// Dir is a PKI folder.
type Dir string

// Path is the path of file (CACert, ServerKey, ...) in d.
func (d Dir) Path(file string) string { return filepath.Join(string(d), file) }

// CA loads d's CA.
func (d Dir) CA() (*CA, error) { return LoadCA(d.Path(CACert), d.Path(CAKey)) }

// Report says what Ensure did, file by file.
type Report struct {
	// Created, Renewed and Kept name certificate files (relative to the folder).
	Created, Renewed, Kept []string
	// Warnings are things a person should act on (a CA near its end, a
	// certificate from another CA that expires soon).
	Warnings []string
}

// Ensure makes d a complete PKI folder: a CA, a server certificate for hosts
// (DNS names or IPs), the admin's and the services' client certificates. It is
// idempotent: files that exist are kept; a leaf this CA signed is issued again when
// it is within RenewBefore of its end, does not load (a crash between writing key
// and certificate) or, for the server, lacks one of hosts. A CA that does not load
// is an error, never replaced: every client trusts it.
func Ensure(d Dir, hosts []string) (*Report, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	rep := &Report{}
	ca, err := ensureCA(d, rep)
	if err != nil {
		return nil, err
	}
	leaves := []struct {
		cert, key string
		hosts     []string
		id        auth.Identity
	}{
		{cert: ServerCert, key: ServerKey, hosts: hosts},
		{cert: AdminCert, key: AdminKey, id: AdminIdentity},
		{cert: ServiceCert, key: ServiceKey, id: ServiceIdentity},
	}
	for _, l := range leaves {
		issue := func() ([]byte, []byte, error) {
			if l.hosts != nil {
				return ca.IssueServer("bootchain server", l.hosts, LeafValidity)
			}
			return ca.IssueClient(l.id, LeafValidity)
		}
		if err := ensureLeaf(d, ca, l.cert, l.key, l.hosts, issue, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

func ensureCA(d Dir, rep *Report) (*CA, error) {
	certOK, keyOK := exists(d.Path(CACert)), exists(d.Path(CAKey))
	switch {
	case certOK && keyOK:
		ca, err := d.CA()
		if err != nil {
			return nil, fmt.Errorf("%w (the CA is never replaced automatically; see docs/security.md to rotate it)", err)
		}
		rep.Kept = append(rep.Kept, CACert)
		if left := time.Until(ca.Cert.NotAfter); left < RenewBefore {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s ends %s: rotate the CA (docs/security.md)", d.Path(CACert), ca.Cert.NotAfter.Format(time.DateOnly)))
		}
		return ca, nil
	case certOK || keyOK:
		return nil, fmt.Errorf("pki: %s and %s: one is missing; restore it or move both away to create a new CA", d.Path(CACert), d.Path(CAKey))
	}
	ca, err := CreateCA("bootchain CA")
	if err != nil {
		return nil, err
	}
	if err := ca.WriteFiles(d.Path(CACert), d.Path(CAKey)); err != nil {
		return nil, err
	}
	rep.Created = append(rep.Created, CACert)
	return ca, nil
}

func ensureLeaf(d Dir, ca *CA, certFile, keyFile string, hosts []string, issue func() ([]byte, []byte, error), rep *Report) error {
	certPath, keyPath := d.Path(certFile), d.Path(keyFile)
	renew := false
	if exists(certPath) || exists(keyPath) {
		_, leaf, err := LoadLeaf(certPath, keyPath)
		switch {
		case err != nil:
			renew = true
		case !ca.Signed(leaf):
			// Someone's own certificate (a company CA's): theirs to renew.
			rep.Kept = append(rep.Kept, certFile)
			if time.Until(leaf.NotAfter) < RenewBefore {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s (not from this CA) ends %s: renew it", certPath, leaf.NotAfter.Format(time.DateOnly)))
			}
			return nil
		case time.Until(leaf.NotAfter) < RenewBefore, !covers(leaf.DNSNames, leaf.IPAddresses, hosts):
			renew = true
		default:
			rep.Kept = append(rep.Kept, certFile)
			return nil
		}
	}
	certPEM, keyPEM, err := issue()
	if err != nil {
		return err
	}
	if err := WriteLeaf(certPath, keyPath, certPEM, keyPEM); err != nil {
		return err
	}
	if renew {
		rep.Renewed = append(rep.Renewed, certFile)
	} else {
		rep.Created = append(rep.Created, certFile)
	}
	return nil
}

// covers reports whether a certificate's SANs name every one of hosts.
func covers(dns []string, ips []net.IP, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				return false
			}
		} else if h != "" && !slices.Contains(dns, h) {
			return false
		}
	}
	return true
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
