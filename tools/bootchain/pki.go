package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/auth"
	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/pki"
)

// ensurePKI creates or completes <dataDir>/pki (pki.Ensure) for a server reached
// at advertise, and prints what it did.
func ensurePKI(dataDir, advertise string) (pki.Dir, error) {
	d := pki.Dir(filepath.Join(dataDir, "pki"))
	hosts := []string{"localhost", "127.0.0.1", "::1", advertise}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		hosts = append(hosts, h)
	}
	rep, err := pki.Ensure(d, hosts)
	if err != nil {
		return "", err
	}
	what := fmt.Sprintf("%s (CA, server, admin and service certificates", d)
	if len(rep.Created) > 0 {
		what += "; created " + strings.Join(rep.Created, ", ")
	}
	if len(rep.Renewed) > 0 {
		what += "; renewed " + strings.Join(rep.Renewed, ", ")
	}
	fmt.Printf("%-14s %s)\n", "pki", what)
	for _, w := range rep.Warnings {
		fmt.Printf("%-14s warning: %s\n", "pki", w)
	}
	return d, nil
}

// clientConfig is the client config for the admin of this launcher: the
// addresses the services listen on (listening: where they do; others: their
// flags) and the admin's certificate.
func clientConfig(fs *flag.FlagSet, listening map[string]string, dataDir string, d pki.Dir) pki.ClientConfig {
	addr := func(svc string) string {
		if a, ok := listening[svc]; ok {
			return dialAddr(a)
		}
		f := fs.Lookup(svc + "-grpc-addr")
		if f == nil {
			return ""
		}
		return dialAddr(f.Value.String())
	}
	return pki.ClientConfig{
		BootAPI: addr("bootapi"), ArtifactStore: addr("artifactstore"), DHCPD: addr("dhcpd"), TFTPD: addr("tftpd"),
		CA: d.Path(pki.CACert), Cert: d.Path(pki.AdminCert), Key: d.Path(pki.AdminKey),
		DataDir: dataDir,
	}
}

// dialAddr turns a listen address into one a local client dials: a wildcard or
// empty host becomes localhost, which the server certificate names.
func dialAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// writeClientConfigs writes the admin's client config into the PKI folder and,
// when there is none or the one there is this launcher's for the same data dir,
// where bootctl looks for it. It prints where bootctl finds it.
func writeClientConfigs(c pki.ClientConfig, d pki.Dir) error {
	own := d.Path("bootctl.json")
	if err := pki.WriteClientConfig(own, c); err != nil {
		return err
	}
	user, err := pki.ClientConfigPath(os.Getenv)
	if err != nil {
		fmt.Printf("%-14s config %s (%v: set %s to it)\n", "bootctl", own, err, pki.ConfigEnv)
		return nil
	}
	if !pki.MayReplaceClientConfig(user, c.DataDir) {
		fmt.Printf("%-14s config %s (kept your own %s: %s=%s selects this one)\n", "bootctl", own, user, pki.ConfigEnv, own)
		return nil
	}
	if err := pki.WriteClientConfig(user, c); err != nil {
		return err
	}
	fmt.Printf("%-14s config %s (copy in %s)\n", "bootctl", user, own)
	return nil
}

// issueBundle writes a standalone service's PKI folder (daemon.WirePKI reads it).
func issueBundle(ca *pki.CA, name string, sites, hosts []string, validity time.Duration, out string) error {
	id := auth.Identity{Name: name, Role: auth.RoleService, Sites: sites}
	certPEM, keyPEM, err := ca.IssueClient(id, validity)
	if err != nil {
		return err
	}
	srvPEM, srvKey, err := ca.IssueServer(name, hosts, validity)
	if err != nil {
		return err
	}
	d := pki.Dir(out)
	for _, f := range []string{pki.CACert, pki.ServerCert, pki.ServerKey, pki.ServiceCert, pki.ServiceKey} {
		if _, err := os.Stat(d.Path(f)); err == nil {
			return fmt.Errorf("%s exists: remove it (or choose another --out) to issue a new bundle", d.Path(f))
		}
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	if err := pki.WriteLeaf(d.Path(pki.ServerCert), d.Path(pki.ServerKey), srvPEM, srvKey); err != nil {
		return err
	}
	if err := pki.WriteLeaf(d.Path(pki.ServiceCert), d.Path(pki.ServiceKey), certPEM, keyPEM); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(d.Path(pki.CACert), ca.CertPEM, 0o644); err != nil {
		return err
	}
	fmt.Printf("bundle for --pki-dir %s: server certificate for %s, client certificate %s, the CA\n", out, strings.Join(hosts, ", "), auth.IdentityURI(id))
	return nil
}

// pkiMain is `bootchain pki issue`: certificates from the launcher's CA for
// operators, automation and per-site services.
func pkiMain(args []string) error {
	if len(args) == 0 || args[0] != "issue" {
		return errors.New("usage: bootchain pki issue --name N (--role R [--sites a,b] | --hosts h1,h2 | --bundle --hosts h1,h2 [--sites a,b]) --out DIR")
	}
	fs := flag.NewFlagSet("bootchain pki issue", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./var", "the launcher's data dir: its CA is <data-dir>/pki/ca.{crt,key}")
	name := fs.String("name", "", "the certificate's name: the identity's (a client) or the server's")
	role := fs.String("role", "", "client certificate: role viewer, operator, admin or service")
	var sites, hosts config.StringList
	fs.Var(&sites, "sites", "client certificate: limit the identity to these sites (comma-separated)")
	fs.Var(&hosts, "hosts", "server certificate instead: DNS names and IPs it serves (comma-separated)")
	out := fs.String("out", "", "folder for <name>.crt, <name>.key and the CA's ca.crt")
	days := fs.Int("days", int(pki.LeafValidity/(24*time.Hour)), "days the certificate is valid")
	bundle := fs.Bool("bundle", false, "a standalone service's folder for its --pki-dir: ca.crt, server.crt/.key for --hosts and service.crt/.key for the service identity --name [--sites]")
	if err := config.Parse(fs, args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *name == "" || *out == "" {
		return errors.New("--name and --out are required")
	}
	if *bundle {
		if *role != "" && *role != string(auth.RoleService) || len(hosts) == 0 {
			return errors.New("--bundle: give --hosts (the service's names) and no --role but service")
		}
	} else if (*role == "") == (len(hosts) == 0) {
		return errors.New("give --role (a client certificate) or --hosts (a server certificate)")
	}
	if *days < 1 {
		return fmt.Errorf("--days %d: want at least 1", *days)
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	d := pki.Dir(filepath.Join(abs, "pki"))
	ca, err := d.CA()
	if err != nil {
		return fmt.Errorf("%w (run `bootchain up --data-dir %s` once to create the CA)", err, *dataDir)
	}
	validity := time.Duration(*days) * 24 * time.Hour
	if *bundle {
		return issueBundle(ca, *name, sites, hosts, validity, *out)
	}
	var certPEM, keyPEM []byte
	what := ""
	if len(hosts) > 0 {
		if !auth.ValidName(*name) {
			return fmt.Errorf("--name %q: want 1-63 letters, digits, '.', '_', '-'", *name)
		}
		certPEM, keyPEM, err = ca.IssueServer(*name, hosts, validity)
		what = "server certificate for " + strings.Join(hosts, ", ")
	} else {
		r, rerr := auth.ParseRole(*role)
		if rerr != nil {
			return fmt.Errorf("--role: %w", rerr)
		}
		id := auth.Identity{Name: *name, Role: r, Sites: sites}
		certPEM, keyPEM, err = ca.IssueClient(id, validity)
		what = "client certificate " + auth.IdentityURI(id)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(*out, *name+".crt"), filepath.Join(*out, *name+".key")
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s exists: remove it (or choose another --out) to issue a new one", p)
		}
	}
	if err := pki.WriteLeaf(certPath, keyPath, certPEM, keyPEM); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(*out, pki.CACert), ca.CertPEM, 0o644); err != nil {
		return err
	}
	fmt.Printf("%s\n  %s\n  %s (0600)\n  %s (the CA that verifies the servers)\n", what, certPath, keyPath, filepath.Join(*out, pki.CACert))
	return nil
}
