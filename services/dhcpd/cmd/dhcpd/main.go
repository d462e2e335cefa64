// Command dhcpd serves DHCP and PXE answers for one site; see docs/dhcpd.md.
//
//	dhcpd --site lab --interface br0 --subnet 198.18.0.0/24 --pool 198.18.0.100-198.18.0.199
package main

import (
	"context"
	"flag"

	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/dhcpd"
)

func main() {
	cfg := dhcpd.DefaultConfig()
	var seed dhcpd.SeedFlags
	daemon.Run("dhcpd", func(fs *flag.FlagSet) {
		seed.AddFlags(fs, "")
		cfg.AddFlags(fs, "")
		fs.StringVar(&cfg.Advertise, "advertise", "", "this host's address for default bootapi/artifactstore/tftpd URLs")
	}, func(ctx context.Context, env *daemon.Env) error {
		var err error
		if cfg.Seed, err = seed.Seed(); err != nil {
			return err
		}
		cfg.Store, cfg.Site, cfg.Logger, cfg.TracerProvider = env.Store, env.Site, env.Logger, env.Tracer("dhcpd")
		srv, err := dhcpd.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
