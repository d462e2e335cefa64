//go:build linux

package fleet

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestFleetFailover starts the core and one site (no VMs) and checks the
// harness's own promises: bootctl reaches bootapi through the VIP; the VIP
// moves when its holder is killed and bootctl still answers; a killed etcd
// leader is replaced and rejoins when restarted; a killed dhcpd restarts.
func TestFleetFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a multi-process fleet; skipped with -short")
	}
	f := StartT(t, Config{Keep: os.Getenv("BOOTCHAIN_E2E_KEEP") != ""})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := f.EtcdWritable(ctx); err != nil {
		t.Fatal(err)
	}
	site, err := f.AddSite(ctx, "site-a", SiteConfig{})
	if err != nil {
		t.Fatal(err)
	}
	holder := f.VIPHolder()
	if err := holder.Kill(); err != nil {
		t.Fatal(err)
	}
	for f.VIPHolder() == holder && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := f.Bootctl(ctx, "sites", "get", "site-a"); err != nil {
		t.Fatalf("bootctl through the moved VIP: %v: %s", err, out)
	}
	if err := holder.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	leader, err := f.EtcdLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	next, err := f.EtcdLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next == leader {
		t.Fatalf("leader still %s after kill -9", leader.Name)
	}
	if err := f.EtcdWritable(ctx); err != nil {
		t.Fatal(err)
	}
	if err := leader.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := site.DHCPD.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := site.DHCPD.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := site.DHCPD.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) == 0 {
		t.Error("dhcpd exposes no metrics")
	}
	t.Logf("VIP moves: %+v", f.VIPMoves())
}
