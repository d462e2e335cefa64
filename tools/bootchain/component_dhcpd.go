package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/bootchain/bootchain/services/dhcpd"
)

// dhcpd needs root and a real interface: without --dhcpd-interface it stays off,
// so `bootchain up` on a laptop never answers DHCP on the laptop's network.
func init() {
	cfg := dhcpd.DefaultConfig()
	var seed dhcpd.SeedFlags
	register(&Component{
		Name: "dhcpd", Order: 30,
		AddFlags: func(fs *flag.FlagSet) {
			cfg.AddFlags(fs, "dhcpd-")
			seed.AddFlags(fs, "dhcpd-")
		},
		New: func(ctx context.Context, env *Env) (Service, error) {
			if cfg.Interface == "" {
				return dhcpdDisabled{"disabled (give --dhcpd-interface to serve DHCP on a boot network)"}, nil
			}
			if os.Geteuid() != 0 {
				return nil, fmt.Errorf("--dhcpd-interface %s: serving DHCP needs root (UDP 67 on a bound interface)", cfg.Interface)
			}
			c := cfg
			var err error
			if c.Seed, err = seed.Seed(); err != nil {
				return nil, fmt.Errorf("dhcpd flags: %w", err)
			}
			c.Store, c.Logger, c.Site, c.TracerProvider, c.Advertise = env.Store, env.Logger, env.Site, env.Tracer("dhcpd"), env.Advertise
			return dhcpd.New(c)
		},
	})
}

// dhcpdDisabled is a component that is configured off.
type dhcpdDisabled struct{ why string }

func (d dhcpdDisabled) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (d dhcpdDisabled) Endpoints() []string           { return []string{d.why} }
