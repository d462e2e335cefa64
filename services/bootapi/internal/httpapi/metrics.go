package httpapi

import (
	"strings"

	bootapiv1 "github.com/bootchain/bootchain/pkg/gen/bootchain/bootapi/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the HTTP API's Prometheus metrics: what the counters of Handler
// do not say (scripts by the rule that decided them, callbacks by result).
type metrics struct {
	scripts   *prometheus.CounterVec
	callbacks *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		scripts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootchain_bootapi_scripts_total", Help: "Boot scripts served, by the decision rule that chose them.",
		}, []string{"rule"}),
		callbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootchain_bootapi_callbacks_total", Help: "Installer reports (POST /ipxe/v1/report), by result (accepted, refused, not_found, bad_request, unavailable: 503, etcd unreachable or the write failed; error).",
		}, []string{"result"}),
	}
}

// callback counts a report by the status code it was answered with.
func (m *metrics) callback(code int) {
	r := "error"
	switch {
	case code < 300:
		r = "accepted"
	case code == 404:
		r = "not_found"
	case code == 401 || code == 403 || code == 409:
		r = "refused"
	case code < 500:
		r = "bad_request"
	case code == 503:
		r = "unavailable"
	}
	m.callbacks.WithLabelValues(r).Inc()
}

// Collectors are the handler's metrics, to register: the vectors above and a
// collector reading the counters and the job cache at scrape time.
func (h *Handler) Collectors() []prometheus.Collector {
	return []prometheus.Collector{h.metrics.scripts, h.metrics.callbacks, handlerCollector{h}}
}

var (
	descDispatches = prometheus.NewDesc("bootchain_bootapi_dispatches_total", "Jobs dispatched (moved pending to dispatched by a script request).", nil, nil)
	descRejected   = prometheus.NewDesc("bootchain_bootapi_requests_rejected_total", "Script and report requests refused as malformed or unauthorized.", nil, nil)
	descPanics     = prometheus.NewDesc("bootchain_bootapi_http_panics_total", "HTTP requests whose handler panicked (answered 500).", nil, nil)
	descWithheld   = prometheus.NewDesc("bootchain_bootapi_jobs_withheld_total", "Script requests whose pending job was withheld (the default served) because etcd was unreachable.", nil, nil)
	descReachable  = prometheus.NewDesc("bootchain_bootapi_etcd_reachable", "1 while etcd commits (its probe answers), 0 while bootapi serves cut off from it.", nil, nil)
	descJobs       = prometheus.NewDesc("bootchain_bootapi_jobs", "Jobs in etcd as this replica's cache holds them, by state.", []string{"state"}, nil)
)

type handlerCollector struct{ h *Handler }

func (c handlerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDispatches
	ch <- descRejected
	ch <- descPanics
	ch <- descJobs
	ch <- descWithheld
	ch <- descReachable
}

func (c handlerCollector) Collect(ch chan<- prometheus.Metric) {
	h := c.h
	ch <- prometheus.MustNewConstMetric(descDispatches, prometheus.CounterValue, float64(h.Dispatches.Load()))
	ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(h.Rejected.Load()))
	ch <- prometheus.MustNewConstMetric(descPanics, prometheus.CounterValue, float64(h.Panics.Load()))
	ch <- prometheus.MustNewConstMetric(descWithheld, prometheus.CounterValue, float64(h.Withheld.Load()))
	reachable := 1.0
	if h.offline() {
		reachable = 0
	}
	ch <- prometheus.MustNewConstMetric(descReachable, prometheus.GaugeValue, reachable)
	// Every state is exported, zeros too, so a dashboard's series never vanish.
	counts := map[bootapiv1.JobState]int{}
	for st := range bootapiv1.JobState_name {
		if st != 0 {
			counts[bootapiv1.JobState(st)] = 0
		}
	}
	for _, it := range h.cfg.State.Jobs.List(nil) {
		counts[it.Value.GetState()]++
	}
	for st, n := range counts {
		name := strings.ToLower(strings.TrimPrefix(st.String(), "JOB_STATE_"))
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), name)
	}
}
