package dhcpd

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// collector exports the server's Stats counters at scrape time, so the packet
// path keeps its atomic counters and pays nothing for metrics.
type collector struct {
	s                                            *Server
	received, replies, drops, limited, panics    *prometheus.Desc
	unanswered, leaseTxns, leaseWrites, queue    *prometheus.Desc
	poolSize, poolLeases, raPackets, leasesKnown *prometheus.Desc
	reachable, offlineRenewals, journal, replays *prometheus.Desc
	received6, replies6, drops6, bound6          *prometheus.Desc
}

func newCollector(s *Server) *collector {
	site := prometheus.Labels{"site": s.cfg.Site}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("bootchain_dhcpd_"+name, help, labels, site)
	}
	return &collector{
		s:               s,
		received:        d("packets_received_total", "DHCP messages received and handled, by message type.", "type"),
		replies:         d("replies_sent_total", "DHCP replies sent, by message type (offer, ack, nak).", "type"),
		drops:           d("packets_dropped_total", "Packets dropped unanswered, by reason.", "reason"),
		limited:         d("rate_limited_total", "Packets dropped by a rate limit, by limit (mac, ip).", "limit"),
		panics:          d("panics_total", "Packets and lease transactions whose handling panicked (recovered)."),
		unanswered:      d("requests_unanswered_total", "Requests left unanswered, by reason (exhausted: no address free; store_error: etcd failed; offline: etcd unreachable and the client holds no lease).", "reason"),
		leaseTxns:       d("lease_transactions_total", "etcd transactions committed by the lease writer."),
		leaseWrites:     d("lease_writes_total", "Lease records written to etcd."),
		queue:           d("lease_write_queue_depth", "Lease writes waiting for an etcd transaction."),
		poolSize:        d("pool_addresses", "Addresses in the pools of each subnet.", "subnet"),
		poolLeases:      d("pool_leases", "Pool addresses with a lease record, by subnet and state (bound, offered).", "subnet", "state"),
		raPackets:       d("router_advertisement_packets_total", "IPv6 router solicitations answered or ignored and advertisements sent.", "kind"),
		leasesKnown:     d("lease_records", "Lease records of the site this replica knows."),
		reachable:       d("etcd_reachable", "1 while etcd commits (its probe answers), 0 while this dhcpd serves cut off from it."),
		offlineRenewals: d("offline_renewals_total", "Leases renewed while etcd was unreachable (journaled before the ACK)."),
		journal:         d("offline_journal_records", "Offline renewals journaled and not yet replayed into etcd."),
		replays:         d("offline_replays_total", "Journaled renewals replayed, by outcome (written; current: etcd had it or newer; conflict: another lease won).", "outcome"),
		received6:       d("dhcpv6_messages_received_total", "DHCPv6 messages received and handled, by message type.", "type"),
		replies6:        d("dhcpv6_replies_sent_total", "DHCPv6 Advertise and Reply messages sent."),
		drops6:          d("dhcpv6_messages_dropped_total", "DHCPv6 messages dropped unanswered, by reason.", "reason"),
		bound6:          d("dhcpv6_binds_total", "DHCPv6 addresses bound (committed to etcd), and IA_NAs answered NoAddrsAvail.", "result"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.received, c.replies, c.drops, c.limited, c.panics, c.unanswered, c.leaseTxns, c.leaseWrites, c.queue, c.poolSize, c.poolLeases, c.raPackets, c.leasesKnown, c.reachable, c.offlineRenewals, c.journal, c.replays, c.received6, c.replies6, c.drops6, c.bound6} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for t, v := range map[string]uint64{"discover": st.Discovers, "request": st.Requests, "release": st.Releases, "decline": st.Declines, "inform": st.Informs} {
		counter(c.received, v, t)
	}
	for t, v := range map[string]uint64{"offer": st.Offers, "ack": st.Acks, "nak": st.Naks} {
		counter(c.replies, v, t)
	}
	for r, v := range map[string]uint64{
		"malformed": st.Malformed, "wrong_op": st.WrongOp, "bad_hardware": st.BadHardware, "no_message_type": st.NoMessageType,
		"no_subnet": st.NoSubnet, "not_for_us": st.NotForUs, "not_pxe": st.NotPXE, "unknown_relay": st.UnknownRelay,
		"unsupported": st.Unsupported, "overrun": st.Overrun, "rate_limited": st.LimitedMAC + st.LimitedIP,
	} {
		counter(c.drops, v, r)
	}
	counter(c.limited, st.LimitedMAC, "mac")
	counter(c.limited, st.LimitedIP, "ip")
	counter(c.panics, st.Panics)
	counter(c.unanswered, st.Exhausted, "exhausted")
	counter(c.unanswered, st.StoreErrors, "store_error")
	counter(c.unanswered, st.OfflineRefused, "offline")
	reachable := uint64(1)
	if !c.s.reach.Online() {
		reachable = 0
	}
	gauge(c.reachable, reachable)
	counter(c.offlineRenewals, st.OfflineRenewals)
	gauge(c.journal, uint64(c.s.JournalLen()))
	counter(c.replays, st.Replayed, "written")
	counter(c.replays, st.ReplayCurrent, "current")
	counter(c.replays, st.ReplayConflicts, "conflict")
	counter(c.leaseTxns, st.LeaseTxns)
	counter(c.leaseWrites, st.LeaseWrites)
	gauge(c.queue, uint64(c.s.writer.QueueLen()))
	gauge(c.leasesKnown, uint64(c.s.alloc.Len()))
	for _, u := range c.s.alloc.PoolUse() {
		gauge(c.poolSize, u.Size, u.Subnet)
		gauge(c.poolLeases, u.Bound, u.Subnet, "bound")
		gauge(c.poolLeases, u.Offered, u.Subnet, "offered")
	}
	if s6 := c.s.Stats6(); s6.On {
		for t, v := range map[string]uint64{"solicit": s6.Solicits, "request": s6.Requests, "renew": s6.Renews, "release": s6.Releases,
			"decline": s6.Declines, "confirm": s6.Confirms, "information_request": s6.InfoRequests} {
			counter(c.received6, v, t)
		}
		counter(c.replies6, s6.Replied)
		for r, v := range map[string]uint64{"malformed": s6.Malformed, "not_for_us": s6.NotForUs, "relayed": s6.Relayed,
			"unsupported": s6.Unsupported, "store_error": s6.StoreErrors} {
			counter(c.drops6, v, r)
		}
		counter(c.bound6, s6.Bound, "bound")
		counter(c.bound6, s6.NoAddrs, "no_addrs")
	}
	if st.RA {
		counter(c.raPackets, st.RouterSolicitations, "solicitation_answered")
		counter(c.raPackets, st.RouterSolicitationsIgnored, "solicitation_ignored")
		counter(c.raPackets, st.RouterAdvertisements, "advertisement")
	}
}

// newRegistry makes the server's registry: the Stats collector, the lease
// writer's etcd latency, the session recorder's, and the Go runtime and
// process metrics.
func (s *Server) newRegistry() (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	txn := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "bootchain_dhcpd_lease_transaction_seconds", Help: "Latency of the lease writer's etcd transactions, by result.",
		ConstLabels: prometheus.Labels{"site": s.cfg.Site},
		Buckets:     []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"result"})
	s.writer.OnTxn = func(d time.Duration, err error) {
		r := "ok"
		if err != nil {
			r = "error"
		}
		txn.WithLabelValues(r).Observe(d.Seconds())
	}
	cs := []prometheus.Collector{newCollector(s), txn, s.boots.Hops, s.boots.Finished, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	for _, c := range append(cs, s.rec.Collectors()...) {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}
