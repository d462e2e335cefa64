package opshttp

import (
	"strings"
	"time"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// Boots are a service's boot-session metrics, fed by the session recorder's
// OnHop and OnFinish hooks: hop durations by hop and result, and the
// sessions the service finished by outcome.
type Boots struct {
	Hops     *prometheus.HistogramVec
	Finished *prometheus.CounterVec
}

// NewBoots makes svc's boot metrics (bootchain_<svc>_hop_duration_seconds,
// bootchain_<svc>_boots_finished_total).
func NewBoots(svc string) *Boots {
	return &Boots{
		Hops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bootchain_" + svc + "_hop_duration_seconds", Help: "Duration of the boot-session hops this service recorded, by hop and result (ok, failed).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300},
		}, []string{"hop", "result"}),
		Finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootchain_" + svc + "_boots_finished_total", Help: "Boot sessions this service finished, by outcome (succeeded, failed, stalled).",
		}, []string{"outcome"}),
	}
}

// OnHop is the recorder's OnHop hook.
func (b *Boots) OnHop(name string, failed bool, d time.Duration) {
	r := "ok"
	if failed {
		r = "failed"
	}
	b.Hops.WithLabelValues(name, r).Observe(d.Seconds())
}

// OnFinish is the recorder's OnFinish hook.
func (b *Boots) OnFinish(state bootapiv1.SessionState) {
	b.Finished.WithLabelValues(strings.ToLower(strings.TrimPrefix(state.String(), "SESSION_STATE_"))).Inc()
}

// Collectors are the metrics, to register.
func (b *Boots) Collectors() []prometheus.Collector {
	return []prometheus.Collector{b.Hops, b.Finished}
}
