// Command artifactstore serves bootchain artifacts (kernels, initrds, iPXE
// binaries) over HTTP and gRPC; with --origin it is a pull-through site replica.
//
//	artifactstore --data-dir /var/lib/bootchain/artifactstore --site lab
package main

import (
	"context"
	"flag"

	"github.com/bootchain/bootchain/pkg/daemon"
	"github.com/bootchain/bootchain/services/artifactstore"
)

func main() {
	cfg := artifactstore.DefaultConfig()
	cfg.DataDir = "/var/lib/bootchain/artifactstore"
	daemon.Run("artifactstore", func(fs *flag.FlagSet) { cfg.AddFlags(fs, "") }, func(ctx context.Context, env *daemon.Env) error {
		cfg.Store, cfg.Logger, cfg.Site, cfg.TracerProvider = env.Store, env.Logger, env.Site, env.Tracer("artifactstore")
		srv, err := artifactstore.New(cfg)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}
