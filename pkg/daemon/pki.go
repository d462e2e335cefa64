package daemon

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/bootchain/bootchain/pkg/pki"
)

// WirePKI fills the TLS flags of fs that were not given from a PKI folder (the
// layout `bootchain up` keeps in <data-dir>/pki and `bootchain pki issue --bundle`
// writes): every gRPC server's group (<p>tls-cert, <p>tls-key, <p>tls-client-ca)
// with the server certificate and the CA, and every client of another bootchain
// service (<p>tls-ca, <p>tls-cert, <p>tls-key: tftpd's artifactstore client, a
// replica's origin client; not etcd's) with the service certificate and the CA.
// A group with any flag given is the user's and left alone, as is a server whose
// <p>insecure-plaintext flag is set; every HTTPS listener (<p>https-tls-cert,
// <p>https-tls-key) with the server certificate. A group whose files the folder lacks stays
// off; a folder with none of them is an error.
func WirePKI(fs *flag.FlagSet, d pki.Dir) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	type group map[string]string
	var groups []group
	fs.VisitAll(func(f *flag.Flag) {
		switch {
		case strings.HasSuffix(f.Name, "tls-client-ca"):
			p := strings.TrimSuffix(f.Name, "tls-client-ca")
			if ins := fs.Lookup(p + "insecure-plaintext"); ins != nil && ins.Value.String() == "true" {
				return
			}
			groups = append(groups, group{p + "tls-cert": pki.ServerCert, p + "tls-key": pki.ServerKey, p + "tls-client-ca": pki.CACert})
		case strings.HasSuffix(f.Name, "https-tls-cert"):
			// An HTTPS listener for installers: the server certificate. It
			// serves only where its address is given.
			p := strings.TrimSuffix(f.Name, "tls-cert")
			groups = append(groups, group{p + "tls-cert": pki.ServerCert, p + "tls-key": pki.ServerKey})
		case strings.HasSuffix(f.Name, "tls-ca") && !strings.HasPrefix(f.Name, "etcd-"):
			p := strings.TrimSuffix(f.Name, "tls-ca")
			groups = append(groups, group{p + "tls-ca": pki.CACert, p + "tls-cert": pki.ServiceCert, p + "tls-key": pki.ServiceKey})
		}
	})
	wired := 0
	for _, g := range groups {
		names := make([]string, 0, len(g))
		for name := range g {
			names = append(names, name)
		}
		sort.Strings(names)
		mine, complete := true, true
		for _, name := range names {
			if fs.Lookup(name) == nil {
				return fmt.Errorf("pki: no flag --%s", name)
			}
			if given[name] {
				mine = false
			}
			if _, err := os.Stat(d.Path(g[name])); err != nil {
				complete = false
			}
		}
		if !mine || !complete {
			continue
		}
		for _, name := range names {
			if err := fs.Set(name, d.Path(g[name])); err != nil {
				return err
			}
		}
		wired++
	}
	if wired == 0 && len(groups) > 0 {
		for _, f := range []string{pki.CACert, pki.ServerCert, pki.ServiceCert} {
			if _, err := os.Stat(d.Path(f)); err == nil {
				return nil
			}
		}
		return fmt.Errorf("pki: %s holds none of %s, %s, %s", d, pki.CACert, pki.ServerCert, pki.ServiceCert)
	}
	return nil
}
