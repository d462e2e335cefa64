package opshttp_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bootchain/bootchain/pkg/opshttp"
	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestEndpoints serves the three paths on a real listener: /readyz follows the
// service's readiness both ways, /metrics serves the registry, and the server
// stops when its context ends.
func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "bootchain_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	srv, err := opshttp.Listen("127.0.0.1:0", opshttp.Handler(reg, func() error {
		if !ready.Load() {
			return errors.New("caches loading")
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	base := "http://" + srv.Addr().String()

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "caches loading") {
		t.Errorf("/readyz before: %d %q", code, body)
	}
	ready.Store(true)
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz after: %d %q", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "bootchain_test_things_total 3") {
		t.Errorf("/metrics: %d %q", code, body)
	}
	if code, _ := get(t, base+"/other"); code != http.StatusNotFound {
		t.Errorf("/other: %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after its context ended")
	}
}
