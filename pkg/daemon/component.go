package daemon

import (
	"context"
	"flag"
)

// Service is a bootchain service, built and ready to Run.
type Service interface {
	// Run serves until ctx ends and returns nil after a clean stop.
	Run(ctx context.Context) error
	// Endpoints describes where it listens ("http 127.0.0.1:8080").
	Endpoints() []string
}

// Component is a service as both its thin main and the all-in-one launcher run
// it: its flags and how it is built from them, written once in the service's
// package.
type Component struct {
	// Name is the service's name: its binary's, its flags' prefix in the
	// launcher ("tftpd-addr") and its folder under the launcher's --data-dir.
	Name string
	// DataDir is the standalone binary's default --data-dir; empty when the
	// service keeps no files.
	DataDir string
	// Advertise says the service takes --advertise (Env.Advertise): the address
	// machines and peers reach this host at.
	Advertise bool
	// AddFlags binds the service's own flags, each named prefix+name.
	AddFlags func(fs *flag.FlagSet, prefix string)
	// New builds the service from its flags and env; it listens but does not
	// serve, and must not block.
	New func(ctx context.Context, env *Env) (Service, error)
}
