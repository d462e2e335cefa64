// Command bootctl is the operator CLI for bootchain: it manages machines, profiles,
// jobs, sites, artifacts, leases and the TFTP cache over the services' gRPC APIs.
//
//	bootctl machines list -l role=worker
//	bootctl jobs create --mac 52:54:00:12:34:56 --profile debian-12
//	bootctl jobs watch --mac 52:54:00:12:34:56
//	bootctl trace 52:54:00:12:34:56
//
// Every command takes -o table|json|yaml; `bootctl help` and `bootctl CMD --help`
// describe each one, and `bootctl completion bash|zsh|fish` prints a completion script.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one bootctl command line and returns the process exit status:
// 0 on success, 2 for a usage error, 1 for anything else.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := newGlobal(stdout)
	defer g.Close()
	root := newRootCommand(g)
	root.SetArgs(legacyArgs(root, args))
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "bootctl:", explain(cmd, g, err))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return 2
	}
	return 1
}
