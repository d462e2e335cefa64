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
	targets, _ := startFour(t)

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
