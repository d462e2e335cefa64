package tftpd

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// collector exports the transfer counters at scrape time: the transfer path
// keeps its atomic counters and pays nothing for metrics.
type collector struct {
	s                                                *Server
	transfers, requests, active, bytes, retransmits  *prometheus.Desc
	cache, fetchFailures, limited, panics, cacheSize *prometheus.Desc
	grub                                             *prometheus.Desc
}

func newCollector(s *Server) *collector {
	site := prometheus.Labels{"site": s.cfg.Site}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("bootchain_tftpd_"+name, help, labels, site)
	}
	return &collector{
		s:             s,
		transfers:     d("transfers_total", "Transfers that ended, by outcome (succeeded, failed, aborted).", "outcome"),
		requests:      d("requests_refused_total", "Read and write requests answered with an error or dropped, by reason.", "reason"),
		active:        d("transfers_active", "Transfers running now."),
		bytes:         d("sent_bytes_total", "File bytes sent."),
		retransmits:   d("retransmits_total", "Packets sent again after an ACK timeout."),
		cache:         d("cache_lookups_total", "File opens, by whether the disk cache had the content (hit, miss).", "result"),
		fetchFailures: d("fetch_failures_total", "Fetches from artifactstore that failed."),
		limited:       d("rate_limited_total", "Read requests dropped by the per-IP rate limit."),
		panics:        d("panics_total", "Requests and transfers dropped by a recovered panic."),
		cacheSize:     d("cache_entries", "Artifacts in the disk cache."),
		grub:          d("grub_configs_total", "GRUB configs asked of bootapi for machines, by outcome (rendered, failed).", "outcome"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.transfers, c.requests, c.active, c.bytes, c.retransmits, c.cache, c.fetchFailures, c.limited, c.panics, c.cacheSize, c.grub} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.transfers.Stats()
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.transfers, st.Succeeded, "succeeded")
	counter(c.transfers, st.Failed, "failed")
	counter(c.transfers, st.Aborted, "aborted")
	counter(c.requests, st.RefusedBusy, "busy")
	counter(c.requests, st.RefusedAccess, "access")
	counter(c.requests, st.NotFound, "not_found")
	counter(c.requests, st.RefusedWrites, "write")
	// Dropped counts the rate-limited requests too; each reason once.
	counter(c.requests, max(st.Dropped-st.Limited, 0), "dropped")
	counter(c.requests, st.Limited, "rate_limited")
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(st.Active))
	counter(c.bytes, st.BytesSent)
	counter(c.retransmits, st.Retransmits)
	counter(c.cache, st.CacheHits, "hit")
	counter(c.cache, st.CacheMisses, "miss")
	counter(c.fetchFailures, st.FetchFailures)
	counter(c.limited, st.Limited)
	counter(c.panics, st.Panics)
	counter(c.grub, c.s.grubConfigs.Load(), "rendered")
	counter(c.grub, c.s.grubFailures.Load(), "failed")
	ch <- prometheus.MustNewConstMetric(c.cacheSize, prometheus.GaugeValue, float64(len(c.s.cache.Names())))
}

// newRegistry makes the server's registry: the transfer collector, the
// session recorder's, and the Go runtime and process metrics.
func (s *Server) newRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{newCollector(s), s.boots.Hops, s.boots.Finished, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	for _, c := range append(cs, s.sessions.Collectors()...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}
