package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/auth"
	dhcpdv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/dhcpd/v1"
	"github.com/bootchain/bootchain/services/tftpd"
	"github.com/pin/tftp/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// startTFTPD starts a real tftpd on e's etcd and artifactstore.
func startTFTPD(t *testing.T, e *testEnv) *tftpd.Server {
	t.Helper()
	cfg := tftpd.DefaultConfig()
	cfg.Addr, cfg.GRPC.Addr, cfg.ArtifactStore, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", e.artifact.GRPCAddr().String(), "-"
	cfg.DataDir, cfg.Store, cfg.Warm = t.TempDir(), e.etcd.Client(t), false
	cfg.ArtifactStoreToken = testkit.Token(t, cfg.Store, auth.RoleService)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := tftpd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "tftpd", srv.Run)
	return srv
}

// TestTFTP fetches a file over TFTP as firmware does, then shows and evicts
// tftpd's cache entry and reads its counters with bootctl.
func TestTFTP(t *testing.T) {
	e := startEnv(t)
	srv := startTFTPD(t, e)
	dir := t.TempDir()
	writeFile(t, dir+"/undionly.kpxe", strings.Repeat("ipxe", 1000))
	e.mustRun("artifacts", "upload", dir+"/undionly.kpxe")

	c, err := tftp.NewClient(srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(2 * time.Second)
	wt, err := c.Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil || got.Len() != 4000 {
		t.Fatalf("tftp get: %d bytes, %v", got.Len(), err)
	}

	tftpdAddr := []string{"--tftpd-addr", srv.GRPCAddr().String()}
	golden(t, "commands/tftp_cache_list", e.mustRun(append(tftpdAddr, "tftp", "cache", "list")...))
	var stats struct {
		Stats struct{ Started, Succeeded, BytesSent string }
	}
	out := e.mustRun(append(tftpdAddr, "tftp", "stats", "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &stats); err != nil || stats.Stats.Succeeded != "1" || stats.Stats.BytesSent != "4000" {
		t.Errorf("tftp stats -o json: %v\n%s", err, out)
	}
	out = e.mustRun(append(tftpdAddr, "tftp", "stats")...)
	for _, w := range []string{"COUNTER", "succeeded", "bytes sent         4000"} {
		if !strings.Contains(out, w) {
			t.Errorf("tftp stats lacks %q:\n%s", w, out)
		}
	}
	golden(t, "commands/tftp_cache_evict", e.mustRun(append(tftpdAddr, "tftp", "cache", "evict", "undionly.kpxe")...))
	if out := e.mustRun(append(tftpdAddr, "tftp", "cache", "list")...); strings.Contains(out, "undionly") {
		t.Errorf("evicted entry still listed:\n%s", out)
	}
}

// TestLeaseTables renders dhcpd's leases and pools. They come from DHCP
// clients on a real interface, which this test does not have: the tables are
// checked on responses built here.
func TestLeaseTables(t *testing.T) {
	exp := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local))
	leases := []*dhcpdv1.Lease{
		{Site: "lab", Ip: "10.0.0.23", Mac: "52:54:00:12:34:56", State: dhcpdv1.LeaseState_LEASE_STATE_BOUND, ExpireTime: exp, Hostname: "node1", Server: "dhcpd-a"},
		{Site: "lab", Ip: "10.0.1.9", Mac: "52:54:00:12:34:57", State: dhcpdv1.LeaseState_LEASE_STATE_OFFERED, ExpireTime: exp, Giaddr: "10.0.1.1", Relay: &dhcpdv1.RelayInfo{CircuitId: []byte("ge-0/0/1")}},
	}
	var b bytes.Buffer
	if err := leaseTable(&b, leases); err != nil {
		t.Fatal(err)
	}
	golden(t, "commands/leases_list", b.String())
	b.Reset()
	g := newGlobal(&b)
	g.Output = "table"
	if err := showLease(g, leases[1]); err != nil {
		t.Fatal(err)
	}
	golden(t, "commands/leases_get", b.String())
	b.Reset()
	if err := poolTable(&b, []*dhcpdv1.PoolUsage{{Site: "lab", Subnet: "10.0.0.0/24", Start: "10.0.0.100", End: "10.0.0.199", Size: 100, Bound: 1, Offered: 1, Free: 98}}); err != nil {
		t.Fatal(err)
	}
	golden(t, "commands/pools", b.String())
}
