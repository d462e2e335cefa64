package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/pkg/apierr"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/bootapi"
	"google.golang.org/grpc"
)

// TestCommandsAgainstBootapi runs bootctl's commands against a real bootapi on an
// embedded etcd, in table and JSON output.
func TestCommandsAgainstBootapi(t *testing.T) {
	cfg := bootapi.DefaultConfig()
	cfg.Store, cfg.HTTPAddr, cfg.GRPC = storetest.New(t), "127.0.0.1:0", grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := bootapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	addr := srv.GRPCAddr().String()
	run := func(output string, args ...string) (string, error) {
		var out bytes.Buffer
		g := &Global{Addrs: map[string]*string{"bootapi": &addr}, Out: &out, Output: output, Timeout: 10 * time.Second, conns: map[string]*grpc.ClientConn{}}
		defer func() {
			for _, c := range g.conns {
				c.Close()
			}
		}()
		err := command(args[0]).Run(context.Background(), g, args[1:])
		return out.String(), err
	}
	// The gRPC server answers once bootapi's caches are loaded.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := run("table", "machines", "list"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	steps := [][]string{
		{"profiles", "create", "debian-12", "-kernel", "debian/linux", "-initrd", "debian/initrd.gz", "-cmdline", "console=ttyS0", "-menu"},
		{"machines", "register", "52-54-00-12-34-56", "-hostname", "node1", "-label", "rack=r12"},
		{"jobs", "create", "-mac", "52:54:00:12:34:56", "-profile", "debian-12"},
		{"sites", "put", "lab", "-action", "local-disk"},
	}
	for _, s := range steps {
		if out, err := run("table", s...); err != nil {
			t.Fatalf("%v: %v\n%s", s, err, out)
		}
	}
	out, err := run("table", "machines", "list", "-l", "rack=r12")
	if err != nil || !strings.Contains(out, "52:54:00:12:34:56") || !strings.Contains(out, "node1") || !strings.HasPrefix(out, "MAC") {
		t.Fatalf("machines list: %v\n%s", err, out)
	}
	out, err = run("table", "jobs", "list", "-state", "pending")
	if err != nil || !strings.Contains(out, "pending") || !strings.Contains(out, "debian-12") {
		t.Fatalf("jobs list: %v\n%s", err, out)
	}
	out, err = run("json", "jobs", "list")
	var parsed struct {
		Jobs []struct{ Mac, State string }
	}
	if err != nil || json.Unmarshal([]byte(out), &parsed) != nil || len(parsed.Jobs) != 1 || parsed.Jobs[0].State != "JOB_STATE_PENDING" {
		t.Fatalf("jobs list -o json: %v\n%s", err, out)
	}
	// An error names the field, as the API does.
	_, err = run("table", "jobs", "create", "-mac", "52:54:00:12:34:56", "-profile", "debian-12")
	if apierr.FieldOf(err) != "mac" || !strings.Contains(describe(err), "InvalidArgument") {
		t.Fatalf("second job: %v", err)
	}
	if _, err := run("table", "trace", "52:54:00:99:99:99"); err == nil || !strings.Contains(describe(err), "NotFound") {
		t.Fatalf("trace of an unknown machine: %v", err)
	}
}
