package main

import (
	"context"
	"flag"

	"github.com/bootchain/bootchain/services/artifactstore"
)

// artifactstore starts first: tftpd and bootapi point machines at it.
func init() {
	cfg := artifactstore.DefaultConfig()
	register(&Component{
		Name:     "artifactstore",
		Order:    10,
		AddFlags: func(fs *flag.FlagSet) { cfg.AddFlags(fs, "artifactstore-") },
		New: func(ctx context.Context, env *Env) (Service, error) {
			c := cfg
			if c.DataDir == "" {
				c.DataDir = env.DataDir
			}
			c.Store, c.Logger, c.Site = env.Store, env.Logger, env.Site
			c.TracerProvider = env.Tracer("artifactstore")
			return artifactstore.New(c)
		},
	})
}
