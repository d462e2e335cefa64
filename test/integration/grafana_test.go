package integration

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/testkit"
	"github.com/pin/tftp/v3"
)

// dashboard is what the test reads of a Grafana dashboard's JSON model.
type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"` // a collapsed row's panels
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

var metricName = regexp.MustCompile(`\bbootchain_[a-z0-9_]+`)

// TestGrafanaDashboardMetricsExist runs the four services, makes each do a
// little (a script, a missing artifact, a missing TFTP file), scrapes their
// /metrics and checks that every metric each panel of deploy/grafana/*.json
// queries is one they export: a renamed metric breaks this test, not an
// operator's dashboard.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	files, err := filepath.Glob("../../deploy/grafana/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in deploy/grafana (%v)", err)
	}
	targets, tftpAddr := startFour(t)
	get := func(u string) int {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// Metrics with labels appear once something happened.
	if code := get("http://" + targets["bootapi"] + "/ipxe/v1/config?mac=52:54:00:00:00:01"); code != 200 {
		t.Fatalf("script: %d", code)
	}
	if resp, err := http.Post("http://"+targets["bootapi"]+"/ipxe/v1/report?job=nope", "application/x-www-form-urlencoded", strings.NewReader("token=x&state=running")); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if code := get("http://" + targets["artifactstore"] + "/artifacts/nope?traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"); code != 404 {
		t.Fatalf("missing artifact: %d", code)
	}
	c, err := tftp.NewClient(tftpAddr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(1)
	if _, err := c.Receive("nope", "octet"); err == nil {
		t.Fatal("TFTP: a missing file was served")
	}

	have := map[string]bool{}
	scrape := func() {
		for _, addr := range targets {
			resp, err := http.Get("http://" + addr + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
					name, _, _ = strings.Cut(name, " ")
					have[name] = true
					continue
				}
				if line == "" || line[0] == '#' {
					continue
				}
				if i := strings.IndexAny(line, "{ "); i > 0 {
					have[line[:i]] = true
				}
			}
			resp.Body.Close()
		}
	}
	// The session recorders write their hops in the background.
	testkit.Eventually(t, "the session writes in the metrics", func() bool {
		scrape()
		return have["bootchain_bootapi_session_write_seconds_count"]
	})

	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.Title == "" || d.UID == "" {
			t.Errorf("%s: no title or uid", f)
		}
		queries := 0
		var check func(ps []panel)
		check = func(ps []panel) {
			for _, p := range ps {
				check(p.Panels)
				if p.Type == "row" {
					continue
				}
				if len(p.Targets) == 0 {
					t.Errorf("%s: panel %q has no query", filepath.Base(f), p.Title)
				}
				for _, q := range p.Targets {
					names := metricName.FindAllString(q.Expr, -1)
					if len(names) == 0 {
						t.Errorf("%s: panel %q: query %q names no bootchain metric", filepath.Base(f), p.Title, q.Expr)
					}
					for _, n := range names {
						queries++
						if !have[n] {
							t.Errorf("%s: panel %q: %s is not exported by any service", filepath.Base(f), p.Title, n)
						}
					}
				}
			}
		}
		check(d.Panels)
		t.Logf("%s: %d panels, %d metric references, all exported", filepath.Base(f), len(d.Panels), queries)
	}
	if testing.Verbose() {
		var names []string
		for n := range have {
			if strings.HasPrefix(n, "bootchain_") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		t.Logf("exported: %s", strings.Join(names, " "))
	}
}
