// Command artifactstore serves bootchain artifacts (kernels, initrds, iPXE
// binaries) over HTTP and gRPC; with --origin it is a pull-through site replica.
//
//	artifactstore --data-dir /var/lib/bootchain/artifactstore --site lab
package main

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/artifactstore"
)

func main() {
	daemon.Main("artifactstore", func(ctx context.Context) error {
		fs := flag.NewFlagSet("artifactstore", flag.ContinueOnError)
		var d daemon.Options
		d.AddFlags(fs)
		cfg := artifactstore.DefaultConfig()
		cfg.DataDir = "/var/lib/bootchain/artifactstore"
		cfg.AddFlags(fs, "")
		if err := config.Parse(fs, os.Args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		env, err := d.Start(ctx)
		if err != nil {
			return err
		}
		defer env.Close()
		cfg.Store, cfg.Logger, cfg.Site = env.Store, env.Logger, env.Site
		cfg.TracerProvider = env.Tracer("artifactstore")
		srv, err := artifactstore.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
