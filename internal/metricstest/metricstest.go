// Package metricstest scrapes a service's /metrics over real HTTP in tests,
// parses the exposition, and runs `promtool check metrics` on it when
// Debian's prometheus package (scripts/install-deps.sh) is installed.
package metricstest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape is one scrape of /metrics.
type Scrape struct {
	Text     string
	Families map[string]*dto.MetricFamily
}

// Get fetches base+"/metrics" with hc (nil: http.DefaultClient), fails t on a
// non-200 answer or text that does not parse, and checks it with promtool.
func Get(t testing.TB, hc *http.Client, base string) *Scrape {
	t.Helper()
	code, body := Fetch(t, hc, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %s", base, code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", base, err)
	}
	Promtool(t, body)
	return &Scrape{Text: body, Families: fams}
}

// Fetch GETs url and returns the status code and body.
func Fetch(t testing.TB, hc *http.Client, url string) (int, string) {
	t.Helper()
	if hc == nil {
		hc = http.DefaultClient
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// Promtool runs `promtool check metrics` on text and fails t on any problem
// it reports; without promtool the check is skipped (logged).
func Promtool(t testing.TB, text string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed (scripts/install-deps.sh installs it): lint skipped")
		return
	}
	cmd := exec.Command(bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// Value is the sample of family name whose labels include want (every label
// given must match); ok is false when there is none. Counters, gauges and
// untyped samples give their value, histograms their count.
func (s *Scrape) Value(name string, want map[string]string) (float64, bool) {
	f, ok := s.Families[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !matches(m, want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// Require fails t unless every name is a family of the scrape.
func (s *Scrape) Require(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, ok := s.Families[n]; !ok {
			t.Errorf("metric %s missing", n)
		}
	}
}

func matches(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}
