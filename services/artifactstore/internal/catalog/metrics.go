package catalog

import "github.com/prometheus/client_golang/prometheus"

// Metrics are artifactstore's Prometheus metrics.
type Metrics struct {
	OriginFetches *prometheus.CounterVec
	HTTPRequests  *prometheus.CounterVec
	HTTPBytes     prometheus.Counter
	ReadStreams   prometheus.Counter
	Uploads       *prometheus.CounterVec
}

// NewMetrics makes the metrics; register them with Register.
func NewMetrics() *Metrics {
	return &Metrics{
		OriginFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_origin_fetches_total", Help: "Pulls of missing content from the origin, by result.",
		}, []string{"result"}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_http_requests_total", Help: "HTTP artifact requests, by status code.",
		}, []string{"code"}),
		HTTPBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_http_sent_bytes_total", Help: "Body bytes sent over HTTP.",
		}),
		ReadStreams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_read_streams_total", Help: "gRPC Read streams served.",
		}),
		Uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_uploads_total", Help: "Uploads, by result.",
		}, []string{"result"}),
	}
}

// Register adds every metric to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.OriginFetches, m.HTTPRequests, m.HTTPBytes, m.ReadStreams, m.Uploads} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *Metrics) fetch(err error) {
	if err != nil {
		m.OriginFetches.WithLabelValues("error").Inc()
		return
	}
	m.OriginFetches.WithLabelValues("ok").Inc()
}
