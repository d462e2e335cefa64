package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
)

// services are the gRPC services bootctl talks to, in the order of their flags.
var services = []string{"bootapi", "artifactstore", "dhcpd", "tftpd"}

// defaultAddrs are the services' default gRPC ports on the local host.
var defaultAddrs = map[string]string{
	"bootapi": "localhost:9080", "artifactstore": "localhost:9081", "dhcpd": "localhost:9082", "tftpd": "localhost:9083",
}

// addrFlag is the flag that sets service's address ("--dhcpd-addr").
func addrFlag(service string) string { return service + "-addr" }

// Global holds what every command shares: the global flags and the connections
// opened from them. One Global lives for one command line.
type Global struct {
	Addrs   map[string]string // service -> gRPC address
	TLS     tlsconf.Files
	Output  string // table, json or yaml
	Timeout time.Duration
	Out     io.Writer
	// Token, or the first line of TokenFile, is presented to every service.
	Token, TokenFile string

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// dialed is the service of the last connection asked for: an Unavailable
	// error names it.
	dialed string
}

func newGlobal(out io.Writer) *Global {
	g := &Global{Addrs: map[string]string{}, Out: out, conns: map[string]*grpc.ClientConn{}}
	for s, a := range defaultAddrs {
		g.Addrs[s] = a
	}
	return g
}

// addFlags binds the global flags to root's persistent flags.
func (g *Global) addFlags(fs *pflag.FlagSet) {
	for _, s := range services {
		fs.String(addrFlag(s), defaultAddrs[s], "gRPC address of "+s)
	}
	// tlsconf binds standard-library flags; pflag takes them over as they are.
	std := flag.NewFlagSet("tls", flag.ContinueOnError)
	g.TLS.AddClientFlags(std, "")
	fs.AddGoFlagSet(std)
	fs.String(configFlag, "", "client config file (default $XDG_CONFIG_HOME/bootchain/bootctl.json, else ~/.config/bootchain/bootctl.json, which bootchain up writes)")
	g.addTokenFlags(fs)
	fs.StringVarP(&g.Output, "output", "o", "table", "output format: table, json or yaml")
	fs.DurationVar(&g.Timeout, "timeout", 30*time.Second, "time allowed for each call (not for watch)")
}

// resolve fills flags not given on the command line from BOOTCHAIN_<FLAG>
// variables, then from the client config (applyConfig), and checks them.
// Completion runs it too, so that it asks the same servers as the command would.
func (g *Global) resolve(cmd *cobra.Command) error {
	fs := cmd.Root().PersistentFlags()
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		for _, name := range append([]string{f.Name}, legacyNamesOf(f.Name)...) {
			if v, ok := os.LookupEnv(config.EnvName(name)); ok {
				if e := fs.Set(f.Name, v); e != nil {
					err = fmt.Errorf("%s=%q: %w", config.EnvName(name), v, e)
				}
				return
			}
		}
	})
	if err != nil {
		return err
	}
	if _, err := applyConfig(fs); err != nil {
		return err
	}
	for _, s := range services {
		a, _ := fs.GetString(addrFlag(s))
		g.Addrs[s] = a
	}
	switch g.Output {
	case "table", "json", "yaml":
	default:
		return usageErrorf("--output %q: want table, json or yaml", g.Output)
	}
	return nil
}

// Conn returns the connection to service ("bootapi", "dhcpd", ...), dialing it
// on first use.
func (g *Global) Conn(service string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dialed = service
	if c, ok := g.conns[service]; ok {
		return c, nil
	}
	tok, err := g.bearerToken()
	if err != nil {
		return nil, err
	}
	c, err := grpcclient.Dial(g.Addrs[service], g.TLS, grpcclient.WithToken(tok))
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", service, g.Addrs[service], err)
	}
	g.conns[service] = c
	return c, nil
}

// lastService is the service of the last Conn call.
func (g *Global) lastService() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dialed
}

// Close closes every connection opened.
func (g *Global) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for s, c := range g.conns {
		c.Close()
		delete(g.conns, s)
	}
}

// call bounds one unary call by --timeout.
func (g *Global) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.Timeout)
}
