package main

import (
	"context"
	"flag"

	"github.com/bootchain/bootchain/services/tftpd"
)

// tftpd starts after artifactstore, which it pulls files from.
func init() {
	cfg := tftpd.DefaultConfig()
	register(&Component{
		Name:     "tftpd",
		Order:    20,
		AddFlags: func(fs *flag.FlagSet) { cfg.AddFlags(fs, "tftpd-") },
		New: func(ctx context.Context, env *Env) (Service, error) {
			c := cfg
			c.DataDir = env.DataDir
			c.Store, c.Logger, c.Site = env.Store, env.Logger, env.Site
			c.TracerProvider = env.Tracer("tftpd")
			return tftpd.New(c)
		},
	})
}
