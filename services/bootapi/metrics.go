package bootapi

import (
	"net/netip"

	"github.com/bootchain/bootchain/pkg/opshttp"
	"github.com/bootchain/bootchain/pkg/ratelimit"
	"github.com/bootchain/bootchain/services/bootapi/internal/httpapi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// registerMetrics adds bootapi's metrics to reg: the HTTP API's (scripts by
// rule, dispatches, callbacks, jobs by state), the per-IP limit's refusals,
// boot-session hops and outcomes, boot diagnoses by class, the session recorder's etcd writes (rec),
// and the Go runtime and process metrics.
func registerMetrics(reg *prometheus.Registry, h *httpapi.Handler, limiter *ratelimit.Limiter[netip.Addr], boots *opshttp.Boots, rec []prometheus.Collector, diagnoses prometheus.Collector) error {
	limited := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bootchain_bootapi_http_limited_total", Help: "HTTP requests refused (429) by the per-IP rate limit.",
	}, func() float64 { return float64(limiter.Limited.Load()) })
	cs := append(h.Collectors(), limited, boots.Hops, boots.Finished, diagnoses, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cs = append(cs, rec...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
