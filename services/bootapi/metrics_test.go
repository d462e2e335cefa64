package bootapi_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/bootchain/bootchain/internal/metricstest"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
)

// TestMetricsAndReadiness scrapes a real bootapi's /metrics around a job's
// dispatch and its installer's reports: scripts by rule, dispatches,
// callbacks by result and jobs by state move, promtool finds the exposition
// clean, and a scraper polling from one address is not rate-limited.
func TestMetricsAndReadiness(t *testing.T) {
	st := storetest.New(t)
	h := start(t, st)
	h.seed(t, mac)
	for _, p := range []string{"/readyz", "/healthz"} {
		if code, body := metricstest.Fetch(t, nil, h.base+p); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	if code, _ := post(t, "127.0.0.1", h.base+"/metrics", url.Values{}); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %d, want 405", code)
	}
	before := metricstest.Get(t, nil, h.base)
	before.Require(t, "bootchain_bootapi_dispatches_total", "bootchain_bootapi_jobs", "bootchain_bootapi_http_limited_total",
		"bootchain_bootapi_requests_rejected_total", "bootchain_bootapi_http_panics_total")

	ctx := context.Background()
	if _, err := h.jobs.CreateJob(ctx, &bootapiv1.CreateJobRequest{Mac: mac, Profile: "debian-12"}); err != nil {
		t.Fatal(err)
	}
	code, body := h.get(t, "/ipxe/v1/config?mac="+url.QueryEscape(mac))
	if code != 200 {
		t.Fatalf("script: %d %s", code, body)
	}
	inst := newInstaller(t, mac, body)
	if code, body := inst.report(t, url.Values{"state": {"running"}, "progress": {"10"}}); code != 200 {
		t.Fatalf("report: %d %s", code, body)
	}
	if code, _ := post(t, inst.from, inst.cb, url.Values{"state": {"running"}}); code != http.StatusBadRequest {
		t.Fatalf("report without job and token: %d", code)
	}
	if code, body := inst.report(t, url.Values{"state": {"succeeded"}}); code != 200 {
		t.Fatalf("report: %d %s", code, body)
	}

	after := metricstest.Get(t, nil, h.base)
	for _, m := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"bootchain_bootapi_scripts_total", map[string]string{"rule": "pending-job"}, 1},
		{"bootchain_bootapi_dispatches_total", nil, 1},
		{"bootchain_bootapi_callbacks_total", map[string]string{"result": "accepted"}, 2},
		{"bootchain_bootapi_callbacks_total", map[string]string{"result": "bad_request"}, 1},
		{"bootchain_bootapi_jobs", map[string]string{"state": "succeeded"}, 1},
		// The session recorder's hooks: the script's hop and the boot the
		// installer's success finished.
		{"bootchain_bootapi_hop_duration_seconds", map[string]string{"hop": "script", "result": "ok"}, 1},
		{"bootchain_bootapi_boots_finished_total", map[string]string{"outcome": "succeeded"}, 1},
	} {
		b, _ := before.Value(m.name, m.labels)
		a, ok := after.Value(m.name, m.labels)
		if !ok || a-b != m.want {
			t.Errorf("%s%v: %v -> %v (found %v), want +%v", m.name, m.labels, b, a, ok, m.want)
		}
	}

	// A scraper (or several, and the probes) poll from one address: far
	// below the per-IP limit, which applies to every path.
	for i := range 100 {
		if code, _ := metricstest.Fetch(t, nil, h.base+"/metrics"); code != http.StatusOK {
			t.Fatalf("scrape %d from one address: %d", i, code)
		}
	}
	if v, _ := metricstest.Get(t, nil, h.base).Value("bootchain_bootapi_http_limited_total", nil); v != 0 {
		t.Errorf("http_limited_total = %v after scrapes, want 0", v)
	}
}
