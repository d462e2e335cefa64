// Command bootapi serves iPXE scripts, installer callbacks and the bootapi gRPC API.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/bootapi"
)

func main() {
	daemon.Main("bootapi", func(ctx context.Context) error {
		fs := flag.NewFlagSet("bootapi", flag.ExitOnError)
		var d daemon.Options
		d.AddFlags(fs)
		cfg := bootapi.DefaultConfig()
		fs.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "IP machines reach this host at")
		cfg.AddFlags(fs, "")
		if err := config.Parse(fs, os.Args[1:]); err != nil {
			return err
		}
		env, err := d.Start(ctx)
		if err != nil {
			return err
		}
		defer env.Close()
		cfg.Store, cfg.Logger, cfg.Site, cfg.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("bootapi")
		srv, err := bootapi.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
