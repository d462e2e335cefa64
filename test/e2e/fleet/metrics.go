//go:build linux

package fleet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/bootchain/bootchain/pkg/pki"
	"github.com/bootchain/bootchain/pkg/tlsconf"
	"github.com/bootchain/bootchain/test/lab"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// MetricsURL is where p serves /metrics (its health URL's host and port).
func (p *Proc) MetricsURL() string {
	if p.Ready == "" {
		return ""
	}
	i := strings.Index(p.Ready[len("http://"):], "/")
	return p.Ready[:len("http://")+i] + "/metrics"
}

// Metrics scrapes p's /metrics and returns each sample's value by its line's
// name and labels as exposed ("bootchain_dhcpd_packets_total{type=\"ack\"}").
func (p *Proc) Metrics(ctx context.Context) (map[string]float64, error) {
	url := p.MetricsURL()
	if url == "" {
		return nil, fmt.Errorf("fleet: %s has no HTTP endpoint", p.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	r, err := httpClient(p.NS).Do(req)
	if err != nil {
		return nil, fmt.Errorf("fleet: scrape %s: %w", p.Name, err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil || r.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fleet: scrape %s: %s %v", p.Name, r.Status, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}

// Sum adds the samples of metric name (every label set).
func Sum(m map[string]float64, name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		n, rest, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
			}
		}
		if ok {
			s += v
		}
	}
	return s
}

// dialAdmin dials addr's gRPC from ns with TLS and the admin certificate in dir.
func dialAdmin(ns *lab.Netns, dir, addr string) (*grpc.ClientConn, error) {
	d := pki.Dir(dir)
	tlsCfg, err := tlsconf.Files{CAFile: d.Path(pki.CACert), CertFile: d.Path(pki.AdminCert), KeyFile: d.Path(pki.AdminKey)}.Client()
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithContextDialer(dialer(ns)))
}
