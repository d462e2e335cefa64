// Command bootchain is the all-in-one launcher: `bootchain up` runs an embedded etcd
// and every bootchain service in one process, the single-machine and lab default.
// On its first start it creates a CA and certificates in <data-dir>/pki and a
// client config bootctl finds; `bootchain pki issue` issues more certificates from
// that CA.
//
//	bootchain up --data-dir ./var --advertise 198.18.0.1
//	bootchain pki issue --data-dir ./var --role operator --name alice --out ./alice
//
// Installers' HTTP clients (busybox wget, as in Debian's installer) speak TLS 1.2
// without the signature_algorithms extension, which Go refuses unless
// SHA-1 handshake signatures are allowed; clients that send it (gRPC, curl,
// browsers) negotiate SHA-256 or better as before. See docs/security.md.
//
//go:debug tlssha1=1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	"github.com/bootchain/bootchain/pkg/lifecycle"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/bootapi"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/services/tftpd"
)

// component is a service the launcher runs, with the launcher's own policy.
type component struct {
	daemon.Component
	// off, when set, says why the service stays off with these flags ("" runs it),
	// or fails when the flags ask for something this process cannot do.
	off func(fs *flag.FlagSet) (why string, err error)
}

// components are the services `bootchain up` runs, in start order; they stop
// in the reverse order. artifactstore comes first: tftpd pulls files from it,
// and dhcpd and bootapi point machines at it.
func components() []component {
	return []component{
		{Component: artifactstore.Component()},
		{Component: tftpd.Component()},
		{Component: dhcpd.Component(), off: dhcpdOff},
		{Component: bootapi.Component()},
	}
}

// dhcpdOff keeps dhcpd off without --dhcpd-interface, so that `bootchain up` on
// a laptop never answers DHCP on the laptop's network; serving one needs root
// (UDP 67 on a bound interface).
func dhcpdOff(fs *flag.FlagSet) (string, error) {
	iface := fs.Lookup("dhcpd-interface").Value.String()
	if iface == "" {
		return "disabled (give --dhcpd-interface to serve DHCP on a boot network)", nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("--dhcpd-interface %s: serving DHCP needs root (UDP 67 on a bound interface)", iface)
	}
	return "", nil
}

func main() {
	if len(os.Args) >= 2 && os.Args[1] == "pki" {
		if err := pkiMain(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "bootchain pki: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) >= 2 && os.Args[1] == "token" {
		if err := tokenCmd(context.Background(), os.Args[2:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "bootchain token:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "up" {
		fmt.Fprintf(os.Stderr, "usage: bootchain up [flags]\n       bootchain pki issue [flags]\n       bootchain token create|revoke [flags]\n\nup runs an embedded etcd and the bootchain services (%s) in one process;\npki issue issues certificates from its CA; token writes API tokens straight to etcd.\nAdd -h for flags.\n", strings.Join(names(components()), ", "))
		os.Exit(2)
	}
	daemon.Main("bootchain", func(ctx context.Context) error { return up(ctx, os.Args[2:]) })
}

func names(cs []component) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

func up(ctx context.Context, args []string) error {
	all := components()
	fs := flag.NewFlagSet("bootchain up", flag.ContinueOnError)
	var opts daemon.Options
	opts.AddFlags(fs)
	dataDir := fs.String("data-dir", "./var", "folder for etcd's data, artifacts and caches")
	etcdClient := fs.String("etcd-client-addr", "127.0.0.1:2379", "client address of the embedded etcd")
	etcdPeer := fs.String("etcd-peer-addr", "127.0.0.1:2380", "peer address of the embedded etcd")
	etcdAnywhere := fs.Bool("etcd-insecure-non-loopback", false, "let --etcd-client-addr/--etcd-peer-addr be off loopback: the embedded etcd has no TLS and no authentication, so anyone who reaches it controls every boot")
	external := fs.Bool("external-etcd", false, "use --etcd-endpoints instead of running an embedded etcd")
	advertise := fs.String("advertise", "127.0.0.1", "address machines and peers reach this host at (put in boot scripts and DHCP answers)")
	var only config.StringList
	fs.Var(&only, "only", "run only these services (comma-separated; default all: "+strings.Join(names(all), ",")+")")
	dirs := map[string]*string{}
	for _, c := range all {
		c.AddFlags(fs, c.Name+"-")
		if c.DataDir != "" {
			dirs[c.Name] = fs.String(c.Name+"-data-dir", "", "folder of "+c.Name+"'s files (default <data-dir>/"+c.Name+")")
		}
	}
	if err := config.Parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if net.ParseIP(*advertise) == nil {
		return fmt.Errorf("--advertise %q: want an IP address", *advertise)
	}
	selected := all
	if len(only) > 0 {
		selected = nil
		for _, c := range all {
			if slices.Contains(only, c.Name) {
				selected = append(selected, c)
			}
		}
		for _, n := range only {
			if !slices.Contains(names(all), n) {
				return fmt.Errorf("--only: no service %q (have %s)", n, strings.Join(names(all), ", "))
			}
		}
	}
	abs, err := filepath.Abs(*dataDir)
	if err != nil {
		return err
	}
	log, err := opts.Logger()
	if err != nil {
		return err
	}
	// TLS and client certificates by default: every gRPC API authenticates its
	// callers, and the admin's credentials land where bootctl looks.
	pkiDir, err := ensurePKI(abs, *advertise)
	if err != nil {
		return err
	}
	// Every server gets the server certificate and the CA, tftpd's and a
	// replica's clients the service certificate. A replica's origin is another
	// host: this only works when it shares this CA (a copied pki folder), else
	// give --artifactstore-origin-tls-* from `bootchain pki issue` on the origin.
	if err := daemon.WirePKI(fs, pkiDir); err != nil {
		return err
	}
	// HTTPS for installers that speak it (their callbacks then go encrypted,
	// and their downloads can), beside the plain HTTP that iPXE needs.
	if err := defaultFlags(fs, map[string]string{"bootapi-https-addr": ":8443", "artifactstore-https-addr": ":8444"}); err != nil {
		return err
	}

	var env *daemon.Env
	if *external {
		env, err = opts.Start(ctx)
	} else {
		start := time.Now()
		var emb *etcdembed.Etcd
		if *etcdAnywhere {
			log.Warn("embedded etcd may listen off loopback (--etcd-insecure-non-loopback): it has no TLS and no authentication", "client", *etcdClient, "peer", *etcdPeer)
		}
		emb, err = etcdembed.Start(ctx, etcdembed.Config{Dir: abs, ClientAddr: *etcdClient, PeerAddr: *etcdPeer, AllowNonLoopback: *etcdAnywhere})
		if err != nil {
			return err
		}
		defer emb.Close()
		fmt.Printf("%-14s %s (embedded, data %s, ready in %s)\n", "etcd", strings.Join(emb.Endpoints(), ","), filepath.Join(abs, "etcd"), time.Since(start).Round(time.Millisecond))
		go func() {
			if err := <-emb.Err(); err != nil {
				log.Error("embedded etcd failed", "err", err)
			}
		}()
		// The services in this process reach the embedded etcd in-process; the
		// client port stays open for bootctl, etcdctl and services in other
		// processes.
		env, err = opts.StartWith(ctx, emb.Store(opts.EtcdTimeout))
	}
	if err != nil {
		return err
	}
	defer env.Close()

	for _, c := range selected {
		if c.DataDir == "" {
			continue
		}
		if *dirs[c.Name] == "" {
			*dirs[c.Name] = filepath.Join(abs, c.Name)
		}
		if err := os.MkdirAll(*dirs[c.Name], 0o750); err != nil {
			return err
		}
	}
	// The client config is written once the services listen, with the
	// addresses they listen on (a port 0 is resolved by then).
	ready := func(grpcAddrs map[string]string) error {
		return writeClientConfigs(clientConfig(fs, grpcAddrs, abs, pkiDir), pkiDir)
	}
	err = run(ctx, selected, fs, ready, func(c component) *daemon.Env {
		e := *env
		e.Advertise = *advertise
		if d := dirs[c.Name]; d != nil {
			e.DataDir = *d
		}
		return &e
	})
	fmt.Println("bootchain stopped")
	return err
}

// run builds and starts the services in order, each one before the next is
// built, and serves until ctx ends or one fails. A service that fails to build
// or to run stops the ones started before it: they are canceled and waited for,
// in the reverse order, before run returns.
//
// Once all are built, ready gets each one's gRPC address (from its "grpc ADDR"
// endpoint); an error from it stops them too.
func run(ctx context.Context, selected []component, fs *flag.FlagSet, ready func(grpcAddrs map[string]string) error, envFor func(component) *daemon.Env) error {
	grpcAddrs := map[string]string{}
	services := lifecycle.New(ctx)
	for _, c := range selected {
		if c.off != nil {
			why, err := c.off(fs)
			if err != nil {
				return services.Stop(fmt.Errorf("%s: %w", c.Name, err))
			}
			if why != "" {
				fmt.Printf("%-14s %s\n", c.Name, why)
				continue
			}
		}
		svc, err := c.New(services.Stopping(), envFor(c))
		if err != nil {
			return services.Stop(fmt.Errorf("%s: %w", c.Name, err))
		}
		for _, ep := range svc.Endpoints() {
			fmt.Printf("%-14s %s\n", c.Name, ep)
			if a, ok := strings.CutPrefix(ep, "grpc "); ok {
				grpcAddrs[c.Name] = a
			}
		}
		services.Layer().Go(func(ctx context.Context) error {
			if err := svc.Run(ctx); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			return nil
		})
	}
	if err := ready(grpcAddrs); err != nil {
		return services.Stop(err)
	}
	fmt.Println("bootchain is up; Ctrl-C stops it")
	return services.Wait()
}

// defaultFlags sets the flags of defaults that the command line and the
// environment left unset.
func defaultFlags(fs *flag.FlagSet, defaults map[string]string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for name, v := range defaults {
		if f := fs.Lookup(name); f != nil && !given[name] && f.Value.String() == "" {
			if err := fs.Set(name, v); err != nil {
				return err
			}
		}
	}
	return nil
}
