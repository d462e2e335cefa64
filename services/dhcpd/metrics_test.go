package dhcpd_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/internal/metricstest"
	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/bootchain/bootchain/pkg/store/storetest"
	"github.com/bootchain/bootchain/test/lab"
)

// TestMetricsAndHealth scrapes a real dhcpd's HTTP endpoint before and after a
// real DORA: the counters read from the server's Stats move, pool use shows
// the bound lease, the lease writer's etcd latency has samples, and promtool
// finds the exposition clean.
func TestMetricsAndHealth(t *testing.T) {
	l := lab.NewT(t, lab.Config{})
	st := storetest.New(t)
	r := startDHCPD(t, l, st, seed(bootapiv1.DhcpMode_DHCP_MODE_AUTHORITATIVE))
	// The endpoint listens in the lab's namespace, as the server does.
	hc := &http.Client{Transport: &http.Transport{DialContext: l.Main().DialContext}}
	base := "http://" + r.srv.HTTPAddr().String()
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := metricstest.Fetch(t, hc, base+p); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	if code, _ := metricstest.Fetch(t, hc, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing: %d", code)
	}

	before := metricstest.Get(t, hc, base)
	before.Require(t, "bootchain_dhcpd_packets_received_total", "bootchain_dhcpd_replies_sent_total",
		"bootchain_dhcpd_packets_dropped_total", "bootchain_dhcpd_rate_limited_total", "bootchain_dhcpd_pool_addresses",
		"bootchain_dhcpd_pool_leases", "bootchain_dhcpd_lease_write_queue_depth", "bootchain_dhcpd_lease_records")
	if v, _ := before.Value("bootchain_dhcpd_pool_addresses", map[string]string{"subnet": "198.18.0.0/24", "site": "lab"}); v != 100 {
		t.Errorf("pool_addresses = %v, want 100", v)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := nclient(t, client(t, l, "m1", ""))
	if _, err := c.Request(ctx, pxeMods...); err != nil {
		t.Fatalf("DORA: %v", err)
	}

	after := metricstest.Get(t, hc, base)
	for _, m := range []struct {
		name   string
		labels map[string]string
	}{
		{"bootchain_dhcpd_packets_received_total", map[string]string{"type": "discover"}},
		{"bootchain_dhcpd_packets_received_total", map[string]string{"type": "request"}},
		{"bootchain_dhcpd_replies_sent_total", map[string]string{"type": "offer"}},
		{"bootchain_dhcpd_replies_sent_total", map[string]string{"type": "ack"}},
		{"bootchain_dhcpd_lease_writes_total", nil},
		{"bootchain_dhcpd_lease_transaction_seconds", map[string]string{"result": "ok"}},
		{"bootchain_dhcpd_hop_duration_seconds", map[string]string{"hop": "dhcp.request", "result": "ok"}},
	} {
		b, _ := before.Value(m.name, m.labels)
		a, ok := after.Value(m.name, m.labels)
		if !ok || a <= b {
			t.Errorf("%s%v: %v before, %v (found %v) after the DORA", m.name, m.labels, b, a, ok)
		}
	}
	if v, _ := after.Value("bootchain_dhcpd_pool_leases", map[string]string{"state": "bound"}); v != 1 {
		t.Errorf("pool_leases{state=bound} = %v, want 1", v)
	}
	if !strings.Contains(after.Text, `site="lab"`) {
		t.Error("no site label")
	}
}
