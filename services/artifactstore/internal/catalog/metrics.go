package catalog

import "github.com/prometheus/client_golang/prometheus"

// Metrics are artifactstore's Prometheus metrics.
type Metrics struct {
	OriginFetches *prometheus.CounterVec
	HTTPRequests  *prometheus.CounterVec
	HTTPBytes     prometheus.Counter
	ReadStreams   prometheus.Counter
	Uploads       *prometheus.CounterVec
	// Verified counts sha256 checks of blobs on disk by why (serve, schedule,
	// pull) and result (ok, corrupt).
	Verified *prometheus.CounterVec
	// Quarantined counts blobs moved aside after a failed check.
	Quarantined prometheus.Counter
	// Untrusted counts artifacts a replica refused for their signature.
	Untrusted prometheus.Counter
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
		Verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_blob_checks_total", Help: "sha256 checks of blobs on disk, by why (serve, schedule, pull) and result (ok, corrupt).",
		}, []string{"check", "result"}),
		Quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_blobs_quarantined_total", Help: "Blobs moved to quarantine/ after failing their sha256 check.",
		}),
		Untrusted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bootchain_artifactstore_untrusted_total", Help: "Artifacts a replica refused because its trusted keys do not verify their signature.",
		}),
	}
}

// Register adds every metric to reg.
func (m *Metrics) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.OriginFetches, m.HTTPRequests, m.HTTPBytes, m.ReadStreams, m.Uploads, m.Verified, m.Quarantined, m.Untrusted} {
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
