package main

import (
	"context"
	"flag"

	"github.com/bootchain/bootchain/services/bootapi"
)

func init() {
	cfg := bootapi.DefaultConfig()
	register(&Component{
		Name: "bootapi", Order: 40,
		AddFlags: func(fs *flag.FlagSet) { cfg.AddFlags(fs, "bootapi-") },
		New: func(ctx context.Context, env *Env) (Service, error) {
			c := cfg
			c.Store, c.Logger, c.Site, c.TracerProvider, c.Advertise = env.Store, env.Logger, env.Site, env.Tracer("bootapi"), env.Advertise
			return bootapi.New(c)
		},
	})
}
