// Command bootapi serves iPXE scripts, installer callbacks and the bootapi gRPC API.
package main

import (
	"context"
	"flag"

	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/bootapi"
)

func main() {
	cfg := bootapi.DefaultConfig()
	daemon.Run("bootapi", func(fs *flag.FlagSet) {
		fs.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "IP machines reach this host at")
		cfg.AddFlags(fs, "")
	}, func(ctx context.Context, env *daemon.Env) error {
		cfg.Store, cfg.Logger, cfg.Site, cfg.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("bootapi")
		srv, err := bootapi.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
