package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/bootchain/bootchain/pkg/grpcserver"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/services/artifactstore"
	"github.com/bootchain/bootchain/services/bootapi"
	"github.com/bootchain/bootchain/services/dhcpd"
	"github.com/bootchain/bootchain/services/tftpd"
)

// TestPrometheusScrapesEveryService runs the four services and Debian's
// Prometheus server against them: every target is up (Prometheus parsed each
// exposition) and each service's own metrics are in its database. Skipped
// without the prometheus binary (scripts/install-deps.sh installs it).
func TestPrometheusScrapesEveryService(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus not installed (scripts/install-deps.sh installs it)")
	}
	etcd := storetest.Start(t)
	grpc := func() grpcserver.Config { return grpcserver.Config{Addr: "127.0.0.1:0", StopTimeout: time.Second} }

	acfg := artifactstore.DefaultConfig()
	acfg.Store, acfg.HTTPAddr, acfg.DataDir, acfg.Logger, acfg.GRPC = etcd.Client(t), "127.0.0.1:0", t.TempDir(), discard(), grpc()
	asrv, err := artifactstore.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "artifactstore", asrv.Run)

	bcfg := bootapi.DefaultConfig()
	bcfg.Store, bcfg.HTTPAddr, bcfg.Logger, bcfg.GRPC = etcd.Client(t), "127.0.0.1:0", discard(), grpc()
	bsrv, err := bootapi.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "bootapi", bsrv.Run)

	tcfg := tftpd.DefaultConfig()
	tcfg.Addr, tcfg.GRPC, tcfg.HTTPAddr, tcfg.ArtifactStore = "127.0.0.1:0", grpc(), "127.0.0.1:0", asrv.GRPCAddr().String()
	tcfg.DataDir, tcfg.Store, tcfg.Logger, tcfg.Warm = t.TempDir(), etcd.Client(t), discard(), false
	tsrv, err := tftpd.New(tcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "tftpd", tsrv.Run)

	// No interface: relayed traffic only, on loopback; enough to be scraped.
	dcfg := dhcpd.DefaultConfig()
	dcfg.Store, dcfg.Logger, dcfg.Name = etcd.Client(t), discard(), "prom"
	dcfg.ListenAddr, dcfg.PXEAddr, dcfg.GRPC, dcfg.HTTPAddr = "127.0.0.1:0", "-", grpc(), "127.0.0.1:0"
	dsrv, err := dhcpd.New(dcfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.Run(t, "dhcpd", dsrv.Run)

	targets := map[string]string{
		"artifactstore": asrv.HTTPAddr().String(), "bootapi": bsrv.HTTPAddr().String(),
		"tftpd": tsrv.HTTPAddr().String(), "dhcpd": dsrv.HTTPAddr().String(),
	}
	for svc, addr := range targets {
		testkit.WaitHTTP(t, "http://"+addr+"/healthz")
		if svc == "dhcpd" || svc == "tftpd" {
			testkit.WaitHTTP(t, "http://"+addr+"/readyz")
		}
	}

	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n")
	for svc, addr := range targets {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", svc, addr)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+web, "--log.level=warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})

	query := func(q string) []map[string]any {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []map[string]any `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil {
			return nil
		}
		return r.Data.Result
	}
	// up is 1 only when the scrape succeeded and Prometheus parsed it.
	testkit.EventuallyWithin(t, time.Minute, "every target up in Prometheus", func() bool {
		return len(query("up == 1")) == len(targets)
	})
	for svc := range targets {
		q := fmt.Sprintf(`count({__name__=~"bootchain_%s_.+", job=%q})`, svc, svc)
		if len(query(q)) == 0 {
			t.Errorf("no bootchain_%s_* series in Prometheus", svc)
		}
	}
	if down := query("up == 0"); len(down) != 0 {
		t.Errorf("targets down: %v", down)
	}
}
