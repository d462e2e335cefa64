// Command tftpd serves a site's boot files over TFTP from artifactstore, through a
// local disk cache.
//
//	tftpd --data-dir /var/lib/bootchain/tftpd --site lab --artifactstore 10.0.0.5:9081
package main

import (
	"context"
	"flag"

	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/tftpd"
)

func main() {
	cfg := tftpd.DefaultConfig()
	daemon.Run("tftpd", func(fs *flag.FlagSet) {
		fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/bootchain/tftpd", "folder of the artifact cache")
		cfg.AddFlags(fs, "")
	}, func(ctx context.Context, env *daemon.Env) error {
		cfg.Store, cfg.Logger, cfg.Site, cfg.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("tftpd")
		srv, err := tftpd.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
