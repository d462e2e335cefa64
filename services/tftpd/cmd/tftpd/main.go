// Command tftpd serves a site's boot files over TFTP from artifactstore, through a
// local disk cache.
//
//	tftpd --data-dir /var/lib/bootchain/tftpd --site lab --artifactstore 10.0.0.5:9081
package main

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/tftpd"
)

func main() {
	daemon.Main("tftpd", func(ctx context.Context) error {
		fs := flag.NewFlagSet("tftpd", flag.ContinueOnError)
		var d daemon.Options
		d.AddFlags(fs)
		cfg := tftpd.DefaultConfig()
		fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/bootchain/tftpd", "folder of the artifact cache")
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
		cfg.TracerProvider = env.Tracer("tftpd")
		srv, err := tftpd.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
