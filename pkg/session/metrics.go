package session

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the recorder's Prometheus metrics, named for its service
// (bootchain_<svc>_session_*), so that a dashboard can tell a slow etcd or a
// backed-up writer from a slow boot.
type metrics struct {
	// txn is the latency of the writer's etcd transactions, by what they
	// wrote (sessions, hops) and result (ok, error).
	txn *prometheus.HistogramVec
}

func newMetrics(svc string) *metrics {
	return &metrics{txn: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "bootchain_" + svc + "_session_write_seconds",
		Help:    "Latency of the boot-session recorder's etcd transactions, by what they wrote (sessions, hops) and result (ok, error).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"what", "result"})}
}

// observe records one transaction begun at start.
func (r *Recorder) observe(what string, start time.Time, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	r.metrics.txn.WithLabelValues(what, res).Observe(time.Since(start).Seconds())
}

// Collectors are the recorder's metrics, to register with the service's
// registry: the etcd write latency, the write queue's depth (machines with
// changes waiting, hops waiting) and the changes dropped because it was full.
func (r *Recorder) Collectors() []prometheus.Collector {
	svc := r.cfg.Service
	depth := func(what string, n func(sh *shard) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "bootchain_" + svc + "_session_queue_depth",
			Help:        "Boot-session writes waiting for etcd: machines with changes (sessions) and hops (hops).",
			ConstLabels: prometheus.Labels{"what": what},
		}, func() float64 {
			total := 0
			for i := range r.shards {
				sh := &r.shards[i]
				sh.mu.Lock()
				total += n(sh)
				sh.mu.Unlock()
			}
			return float64(total)
		})
	}
	return []prometheus.Collector{
		r.metrics.txn,
		depth("sessions", func(sh *shard) int { return len(sh.pending) }),
		depth("hops", func(sh *shard) int { return len(sh.hops) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "bootchain_" + svc + "_session_dropped_total",
			Help: "Boot-session changes and hops not recorded because the write queue was full.",
		}, func() float64 { return float64(r.Dropped.Load()) }),
	}
}
