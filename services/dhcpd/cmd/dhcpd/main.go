// Command dhcpd serves DHCP and PXE answers for one site; see docs/dhcpd.md.
//
//	dhcpd --site lab --interface br0 --subnet 198.18.0.0/24 --pool 198.18.0.100-198.18.0.199
package main

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/dhcpd"
)

func main() {
	daemon.Main("dhcpd", func(ctx context.Context) error {
		fs := flag.NewFlagSet("dhcpd", flag.ContinueOnError)
		var d daemon.Options
		d.AddFlags(fs)
		cfg := dhcpd.DefaultConfig()
		var seed dhcpd.SeedFlags
		seed.AddFlags(fs, "")
		cfg.AddFlags(fs, "")
		fs.StringVar(&cfg.Advertise, "advertise", "", "this host's address for default bootapi/artifactstore/tftpd URLs")
		if err := config.Parse(fs, os.Args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		var err error
		if cfg.Seed, err = seed.Seed(); err != nil {
			return err
		}
		env, err := d.Start(ctx)
		if err != nil {
			return err
		}
		defer env.Close()
		cfg.Store, cfg.Site, cfg.Logger, cfg.TracerProvider = env.Store, env.Site, env.Logger, env.Tracer("dhcpd")
		srv, err := dhcpd.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
