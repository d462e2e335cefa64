package tftpd_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/metricstest"
)

// TestMetricsAndHealth scrapes a real tftpd's HTTP endpoint around real
// transfers: transfers by outcome, bytes and cache lookups move, a missing
// file counts as not_found, and promtool finds the exposition clean.
func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t)
	data := randomBytes(t, 70001)
	e.arts.Put("undionly.kpxe", data)
	base := "http://" + e.srv.HTTPAddr().String()

	if code, body := metricstest.Fetch(t, nil, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz: %d %s", code, body)
	}
	// Ready once the caches hold etcd's snapshot; the loop only waits for it.
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, body := metricstest.Fetch(t, nil, base+"/readyz")
		if code == http.StatusOK {
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("GET /readyz: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}

	before := metricstest.Get(t, nil, base)
	before.Require(t, "bootchain_tftpd_transfers_total", "bootchain_tftpd_requests_refused_total", "bootchain_tftpd_transfers_active",
		"bootchain_tftpd_sent_bytes_total", "bootchain_tftpd_retransmits_total", "bootchain_tftpd_cache_lookups_total",
		"bootchain_tftpd_fetch_failures_total", "bootchain_tftpd_rate_limited_total", "bootchain_tftpd_cache_entries")

	got, _, err := get(e.addr(), "undionly.kpxe", 1468, false)
	if err != nil || len(got) != len(data) {
		t.Fatalf("get: %d bytes, %v", len(got), err)
	}
	if _, _, err := get(e.addr(), "no-such-file", 0, false); err == nil {
		t.Fatal("a missing file was served")
	}

	// The server counts a transfer when the last ACK arrives, which may be
	// after the client returned: scrape until it is counted.
	var after *metricstest.Scrape
	for deadline := time.Now().Add(30 * time.Second); ; {
		after = metricstest.Get(t, nil, base)
		if v, _ := after.Value("bootchain_tftpd_transfers_total", map[string]string{"outcome": "succeeded"}); v > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	delta := func(name string, labels map[string]string) float64 {
		b, _ := before.Value(name, labels)
		a, ok := after.Value(name, labels)
		if !ok {
			t.Errorf("%s%v missing", name, labels)
		}
		return a - b
	}
	if d := delta("bootchain_tftpd_transfers_total", map[string]string{"outcome": "succeeded"}); d != 1 {
		t.Errorf("succeeded transfers +%v, want +1", d)
	}
	if d := delta("bootchain_tftpd_sent_bytes_total", nil); d < float64(len(data)) {
		t.Errorf("sent bytes +%v, want >= %d", d, len(data))
	}
	if d := delta("bootchain_tftpd_requests_refused_total", map[string]string{"reason": "not_found"}); d != 1 {
		t.Errorf("not_found +%v, want +1", d)
	}
	if d := delta("bootchain_tftpd_cache_lookups_total", map[string]string{"result": "miss"}) +
		delta("bootchain_tftpd_cache_lookups_total", map[string]string{"result": "hit"}); d < 1 {
		t.Errorf("cache lookups +%v, want >= 1", d)
	}
	if v, _ := after.Value("bootchain_tftpd_cache_entries", map[string]string{"site": "default"}); v != 1 {
		t.Errorf("cache_entries = %v, want 1", v)
	}
}
