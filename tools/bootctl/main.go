// Command bootctl is the operator CLI for bootchain over gRPC.
//
//	bootctl machines list -l role=worker
//	bootctl jobs create --mac 52:54:00:12:34:56 --profile debian-12
//	bootctl jobs watch
//	bootctl trace 52:54:00:12:34:56
//
// Output is a table by default and JSON with -o json.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/pkg/config"
	"github.com/bootchain/bootchain/pkg/grpcclient"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Global holds the flags every command shares and the connections they open.
type Global struct {
	Addrs   map[string]*string // service name -> gRPC address
	TLS     tlsconf.Files
	Output  string
	Out     io.Writer
	Timeout time.Duration

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// Conn returns a (cached) connection to service ("bootapi", "artifactstore", ...).
func (g *Global) Conn(service string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.conns[service]; ok {
		return c, nil
	}
	addr, ok := g.Addrs[service]
	if !ok {
		return nil, fmt.Errorf("no address flag for %s", service)
	}
	c, err := grpcclient.Dial(*addr, g.TLS)
	if err != nil {
		return nil, err
	}
	g.conns[service] = c
	return c, nil
}

// JSON reports whether -o json was given.
func (g *Global) JSON() bool { return g.Output == "json" }

// Command is one top-level bootctl command (with its own subcommands).
type Command struct {
	Name    string
	Summary string
	// Run gets the arguments after the command name.
	Run func(ctx context.Context, g *Global, args []string) error
}

// commands are bootctl's commands, in the order usage lists them.
var commands = []*Command{
	{Name: "artifacts", Summary: "upload, list, stat and delete artifacts; import-ipxe", Run: runArtifacts},
	{Name: "jobs", Summary: "create, list, get, cancel, watch one-shot jobs", Run: runJobs},
	{Name: "leases", Summary: "dhcpd: leases list [--site S] [--mac M] [--state bound], get IP|MAC, release IP", Run: runLeases},
	{Name: "machines", Summary: "list, get, register, update, delete machines", Run: runMachines},
	{Name: "pools", Summary: "dhcpd: pool usage per subnet [--site S]", Run: poolsList},
	{Name: "profiles", Summary: "list, get, create, delete boot profiles", Run: runProfiles},
	{Name: "sessions", Summary: "list boot sessions", Run: runSessions},
	{Name: "sites", Summary: "list, get, put, delete sites", Run: runSites},
	{Name: "tftp", Summary: "tftpd: cache list|evict NAME, stats", Run: runTftp},
	{Name: "trace", Summary: "show a machine's last boot as a timeline: trace MAC", Run: runTrace},
}

// command finds the command called name; nil when there is none.
func command(name string) *Command {
	for _, c := range commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// defaultAddrs are the services' default gRPC ports.
var defaultAddrs = map[string]string{
	"bootapi": "localhost:9080", "artifactstore": "localhost:9081", "dhcpd": "localhost:9082", "tftpd": "localhost:9083",
}

func main() {
	g := &Global{Addrs: map[string]*string{}, Out: os.Stdout, conns: map[string]*grpc.ClientConn{}}
	fs := flag.NewFlagSet("bootctl", flag.ContinueOnError)
	fs.Usage = func() { usage(fs) }
	for _, svc := range []string{"bootapi", "artifactstore", "dhcpd", "tftpd"} {
		g.Addrs[svc] = fs.String(svc, defaultAddrs[svc], "gRPC address of "+svc)
	}
	g.TLS.AddClientFlags(fs, "")
	fs.StringVar(&g.Output, "o", "table", "output: table or json")
	fs.DurationVar(&g.Timeout, "timeout", 30*time.Second, "timeout of each call (not of watch)")
	if err := config.Parse(fs, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	if g.Output != "table" && g.Output != "json" {
		fmt.Fprintln(os.Stderr, "bootctl: -o: want table or json")
		os.Exit(2)
	}
	args := fs.Args()
	if len(args) == 0 {
		usage(fs)
		os.Exit(2)
	}
	cmd := command(args[0])
	if cmd == nil {
		fmt.Fprintf(os.Stderr, "bootctl: unknown command %q\n", args[0])
		usage(fs)
		os.Exit(2)
	}
	ctx, stop := signalContext()
	defer stop()
	err := cmd.Run(ctx, g, args[1:])
	for _, c := range g.conns {
		c.Close()
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bootctl:", describe(err))
		os.Exit(1)
	}
}

// describe prints a gRPC status as "Code: message (field: ...)".
func describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	return fmt.Sprintf("%s: %s", st.Code(), st.Message())
}

func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "usage: bootctl [global flags] <command> [args]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nglobal flags (also BOOTCHAIN_<FLAG> variables):\n")
	fs.PrintDefaults()
}

// subcommand dispatches args[0] among subs, printing their names on a miss.
func subcommand(ctx context.Context, g *Global, cmd string, args []string, subs map[string]func(context.Context, *Global, []string) error) error {
	var names []string
	for n := range subs {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 {
		return fmt.Errorf("%s: want a subcommand: %s", cmd, strings.Join(names, ", "))
	}
	f, ok := subs[args[0]]
	if !ok {
		return fmt.Errorf("%s: unknown subcommand %q (have %s)", cmd, args[0], strings.Join(names, ", "))
	}
	return f(ctx, g, args[1:])
}
