// Package daemon is the common start-up of bootchain's thin mains and of the
// all-in-one launcher: flags (or BOOTCHAIN_* variables) for etcd, logging and the
// site; the etcd store; tracing; a root context that ends on SIGINT/SIGTERM; and
// Component, a service's flags and constructor, which both of them run.
//
//	func main() { daemon.Run(tftpd.Component()) }
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/audit"
	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/logging"
	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/pkg/store"
	"github.com/bootchain/bootchain/pkg/telemetry"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"go.opentelemetry.io/otel/trace"
)

// Options are the flags every daemon shares.
type Options struct {
	// Etcd endpoints.
	Etcd config.StringList
	// EtcdTLS for the etcd client.
	EtcdTLS tlsconf.Files
	// EtcdUsername, when set, authenticates to etcd (etcd auth) with the password
	// read from EtcdPasswordFile or, without one, from BOOTCHAIN_ETCD_PASSWORD.
	// There is no password flag: a flag's value shows in ps.
	EtcdUsername, EtcdPasswordFile string
	// EtcdTimeout bounds each etcd call.
	EtcdTimeout time.Duration
	// Site this process serves.
	Site string
	// Log options.
	Log logging.Options
	// AuditRetention is how long audit events are kept.
	AuditRetention time.Duration
}

// AddFlags binds the shared flags.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	if len(o.Etcd) == 0 {
		o.Etcd = config.StringList{"127.0.0.1:2379"}
	}
	if o.Site == "" {
		o.Site = "default"
	}
	fs.Var(&o.Etcd, "etcd-endpoints", "comma-separated etcd endpoints")
	o.EtcdTLS.AddClientFlags(fs, "etcd-")
	fs.StringVar(&o.EtcdUsername, "etcd-username", o.EtcdUsername, "etcd user (etcd auth); its password comes from --etcd-password-file or "+EtcdPasswordEnv)
	fs.StringVar(&o.EtcdPasswordFile, "etcd-password-file", o.EtcdPasswordFile, "file holding the etcd user's password (its first line)")
	fs.DurationVar(&o.EtcdTimeout, "etcd-timeout", 5*time.Second, "timeout of each etcd call")
	fs.StringVar(&o.Site, "site", o.Site, "site this process serves")
	o.Log.AddFlags(fs)
	fs.DurationVar(&o.AuditRetention, "audit-retention", audit.DefaultRetention, "how long audit events are kept in etcd")
}

// Env is what a started daemon hands its services.
type Env struct {
	Store     *store.Store
	Logger    *slog.Logger
	Telemetry *telemetry.Telemetry
	Site      string
	// DataDir is the service's own folder (Component.DataDir).
	DataDir string
	// Advertise is the address machines and peers reach this host at; empty:
	// the service's default.
	Advertise string
	// Audit is the process's audit log, shared by its services.
	Audit *audit.Log
}

// Tracer returns the TracerProvider for service.
func (e *Env) Tracer(service string) trace.TracerProvider { return e.Telemetry.Provider(service) }

// Close flushes traces and closes the store.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e.Telemetry != nil {
		e.Telemetry.Shutdown(ctx)
	}
	if e.Store != nil {
		e.Store.Close()
	}
}

// Logger builds the logger alone (for tools that need no store).
func (o *Options) Logger() (*slog.Logger, error) { return logging.New(os.Stderr, o.Log) }

// Start builds the logger, tracing and the etcd store.
func (o *Options) Start(ctx context.Context, endpoints ...string) (*Env, error) {
	if len(endpoints) == 0 {
		endpoints = o.Etcd
	}
	tlsCfg, err := o.EtcdTLS.Client()
	if err != nil {
		return nil, err
	}
	password, err := o.etcdPassword()
	if err != nil {
		return nil, err
	}
	return o.start(ctx, func() (*store.Store, error) {
		return store.Open(ctx, store.Config{Endpoints: endpoints, TLS: tlsCfg, RequestTimeout: o.EtcdTimeout, Username: o.EtcdUsername, Password: password})
	})
}

// EtcdPasswordEnv holds the etcd user's password when no --etcd-password-file is
// given.
const EtcdPasswordEnv = "BOOTCHAIN_ETCD_PASSWORD"

// etcdPassword reads the etcd user's password: the first line of
// EtcdPasswordFile, else EtcdPasswordEnv. Errors never hold it.
func (o *Options) etcdPassword() (string, error) {
	env, inEnv := os.LookupEnv(EtcdPasswordEnv)
	if o.EtcdUsername == "" {
		if o.EtcdPasswordFile != "" || (inEnv && env != "") {
			return "", fmt.Errorf("an etcd password (--etcd-password-file or %s) needs --etcd-username", EtcdPasswordEnv)
		}
		return "", nil
	}
	if o.EtcdPasswordFile == "" {
		if env == "" {
			return "", fmt.Errorf("--etcd-username %q: give its password in --etcd-password-file or %s", o.EtcdUsername, EtcdPasswordEnv)
		}
		return env, nil
	}
	b, err := os.ReadFile(o.EtcdPasswordFile)
	if err != nil {
		return "", fmt.Errorf("--etcd-password-file: %w", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimSuffix(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("--etcd-password-file %s: empty first line", o.EtcdPasswordFile)
	}
	return pw, nil
}

// StartWith is Start with a store the caller opened (the all-in-one launcher's
// in-process one); Env.Close closes it.
func (o *Options) StartWith(ctx context.Context, st *store.Store) (*Env, error) {
	return o.start(ctx, func() (*store.Store, error) { return st, nil })
}

func (o *Options) start(ctx context.Context, open func() (*store.Store, error)) (*Env, error) {
	log, err := o.Logger()
	if err != nil {
		return nil, err
	}
	tel, err := telemetry.Setup(ctx, telemetry.Config{})
	if err != nil {
		return nil, err
	}
	st, err := open()
	if err != nil {
		return nil, err
	}
	al, err := audit.New(audit.Config{Store: st, Retention: o.AuditRetention, Logger: log})
	if err != nil {
		st.Close()
		return nil, err
	}
	return &Env{Store: st, Logger: log, Telemetry: tel, Site: o.Site, Audit: al}, nil
}

// Run is the whole of a service's thin main: the shared flags and the
// component's own, parsed from the command line and BOOTCHAIN_* variables, the
// Env started, the service built and run until SIGINT/SIGTERM.
func Run(c Component) {
	Main(c.Name, func(ctx context.Context) error {
		fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
		var o Options
		o.AddFlags(fs)
		c.AddFlags(fs, "")
		var dataDir, advertise, pkiDir string
		fs.StringVar(&pkiDir, "pki-dir", "", "folder with ca.crt, server.crt/.key and service.crt/.key (bootchain pki issue --bundle): TLS flags not given come from it")
		if c.DataDir != "" {
			fs.StringVar(&dataDir, "data-dir", c.DataDir, "folder of the service's files")
		}
		if c.Advertise {
			fs.StringVar(&advertise, "advertise", "", "IP machines and peers reach this host at (default: the service's)")
		}
		if err := config.Parse(fs, os.Args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		if pkiDir != "" {
			if err := WirePKI(fs, pki.Dir(pkiDir)); err != nil {
				return err
			}
		}
		env, err := o.Start(ctx)
		if err != nil {
			return err
		}
		defer env.Close()
		env.DataDir, env.Advertise = dataDir, advertise
		svc, err := c.New(ctx, env)
		if err != nil {
			return err
		}
		return svc.Run(ctx)
	})
}

// Main runs a daemon's body with a context canceled by SIGINT or SIGTERM, prints
// its error and exits non-zero on failure. context.Canceled counts as a clean exit.
// It applies TuneRuntime first.
func Main(name string, body func(ctx context.Context) error) {
	TuneRuntime()
	ctx, stop := signalContext()
	defer stop()
	if err := body(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
