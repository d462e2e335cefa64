// Command bootchain is the all-in-one launcher: `bootchain up` runs an embedded etcd
// and every bootchain service in one process, the single-machine and lab default.
//
//	bootchain up --data-dir ./var --advertise 198.18.0.1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/pkg/etcdembed"
	"golang.org/x/sync/errgroup"
)

// Service is a started bootchain service.
type Service interface {
	// Run serves until ctx ends and returns nil after a clean stop.
	Run(ctx context.Context) error
	// Endpoints describes where it listens ("http 127.0.0.1:8080").
	Endpoints() []string
}

// Env is what the launcher hands every component.
type Env struct {
	*daemon.Env
	// DataDir is this component's own folder under --data-dir.
	DataDir string
	// Advertise is the address machines and peers reach this host at.
	Advertise string
}

// Component is one service the launcher can run. Each lives in its own
// component_<name>.go and registers itself in init.
type Component struct {
	Name string
	// Order: lower starts first (artifactstore before tftpd, which pulls from it).
	Order int
	// AddFlags binds the component's flags (prefixed with its name).
	AddFlags func(fs *flag.FlagSet)
	// New builds the service; it must not block.
	New func(ctx context.Context, env *Env) (Service, error)
}

var components = map[string]*Component{}

func register(c *Component) { components[c.Name] = c }

func main() {
	if len(os.Args) < 2 || os.Args[1] != "up" {
		fmt.Fprintf(os.Stderr, "usage: bootchain up [flags]\n\nRuns an embedded etcd and the bootchain services (%s) in one process.\nRun `bootchain up -h` for flags.\n", strings.Join(names(), ", "))
		os.Exit(2)
	}
	daemon.Main("bootchain", func(ctx context.Context) error { return up(ctx, os.Args[2:]) })
}

func names() []string {
	var out []string
	for _, c := range ordered() {
		out = append(out, c.Name)
	}
	return out
}

func ordered() []*Component {
	out := make([]*Component, 0, len(components))
	for _, c := range components {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Order != out[j].Order {
			return out[i].Order < out[j].Order
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bootchain up", flag.ContinueOnError)
	var opts daemon.Options
	opts.AddFlags(fs)
	dataDir := fs.String("data-dir", "./var", "folder for etcd's data, artifacts and caches")
	etcdClient := fs.String("etcd-client-addr", "127.0.0.1:2379", "client address of the embedded etcd")
	etcdPeer := fs.String("etcd-peer-addr", "127.0.0.1:2380", "peer address of the embedded etcd")
	external := fs.Bool("external-etcd", false, "use --etcd-endpoints instead of running an embedded etcd")
	advertise := fs.String("advertise", "127.0.0.1", "address machines and peers reach this host at (put in boot scripts and DHCP answers)")
	var only config.StringList
	fs.Var(&only, "only", "run only these services (comma-separated; default all: "+strings.Join(names(), ",")+")")
	for _, c := range ordered() {
		c.AddFlags(fs)
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
	selected := ordered()
	if len(only) > 0 {
		selected = selected[:0]
		for _, n := range only {
			c, ok := components[n]
			if !ok {
				return fmt.Errorf("--only: no service %q (have %s)", n, strings.Join(names(), ", "))
			}
			selected = append(selected, c)
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

	var emb *etcdembed.Etcd
	if !*external {
		start := time.Now()
		emb, err = etcdembed.Start(ctx, etcdembed.Config{Dir: abs, ClientAddr: *etcdClient, PeerAddr: *etcdPeer})
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
	}
	// The services in this process reach the embedded etcd in-process; the client
	// port stays open for bootctl, etcdctl and services in other processes.
	var env *daemon.Env
	if emb != nil {
		env, err = opts.StartWith(ctx, emb.Store(opts.EtcdTimeout))
	} else {
		env, err = opts.Start(ctx)
	}
	if err != nil {
		return err
	}
	defer env.Close()

	g, gctx := errgroup.WithContext(ctx)
	for _, c := range selected {
		dir := filepath.Join(abs, c.Name)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
		svc, err := c.New(gctx, &Env{Env: env, DataDir: dir, Advertise: *advertise})
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		for _, ep := range svc.Endpoints() {
			fmt.Printf("%-14s %s\n", c.Name, ep)
		}
		g.Go(func() error {
			if err := svc.Run(gctx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			return nil
		})
	}
	fmt.Println("bootchain is up; Ctrl-C stops it")
	err = g.Wait()
	fmt.Println("bootchain stopped")
	return err
}
