//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bootchain/bootchain/test/lab"
)

// This file runs a real trace backend: Jaeger all-in-one (tools/jaeger, built by
// scripts/jaeger.sh) inside a lab namespace, receiving OTLP from the stack, and
// reads traces back through its query API (/api/v3), as an operator's tools would.

// JaegerBinaryEnv names a Jaeger binary to use instead of scripts/jaeger.sh's.
const JaegerBinaryEnv = "BOOTCHAIN_JAEGER"

// ErrNoJaeger: the Jaeger binary has not been built on this machine.
var ErrNoJaeger = errors.New("e2e: Jaeger is not built (make jaeger, or scripts/jaeger.sh: about 10 CPU-minutes, once per machine)")

// JaegerBinary returns the Jaeger binary: $BOOTCHAIN_JAEGER, or the one
// scripts/jaeger.sh builds into the per-machine cache. With build, it runs the
// script, which builds the binary if it is missing; without, a missing binary is
// ErrNoJaeger.
func JaegerBinary(ctx context.Context, build bool) (string, error) {
	if p := os.Getenv(JaegerBinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("e2e: %s: %w", JaegerBinaryEnv, err)
		}
		return p, nil
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	args := []string{"--path"}
	if build {
		args = nil
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "jaeger.sh"), args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("e2e: scripts/jaeger.sh: %w", err)
	}
	p := strings.TrimSpace(string(out))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s", ErrNoJaeger, p)
	}
	return p, nil
}

// JaegerConfig describes one Jaeger run.
type JaegerConfig struct {
	// Binary is the jaeger binary; required (JaegerBinary finds it).
	Binary string
	// Config is its configuration; default tools/jaeger/config.yaml.
	Config string
	// Dir holds its log; required.
	Dir string
	// Host is the address every listener binds to in the namespace; default
	// 127.0.0.1 (reachable by a stack in the same namespace, nothing else).
	Host string
}

// Jaeger ports, as tools/jaeger/config.yaml sets them.
const (
	JaegerOTLPGRPCPort = 4317
	JaegerQueryPort    = 16686
	jaegerHealthPort   = 13133
)

// Jaeger is a running Jaeger all-in-one in a lab namespace.
type Jaeger struct {
	// Proc is the Jaeger process; LogPath has its output.
	Proc    *lab.Proc
	LogPath string
	host    string
	http    *http.Client
	ns      *lab.Netns
}

// StartJaeger starts Jaeger in ns, tracked by l (so Lab.Close stops it by PID
// too), and waits until its health check says the pipeline is running.
func StartJaeger(ctx context.Context, l *lab.Lab, ns *lab.Netns, cfg JaegerConfig) (*Jaeger, error) {
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("e2e: JaegerConfig needs Binary and Dir")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Config == "" {
		root, err := ModuleRoot(ctx)
		if err != nil {
			return nil, err
		}
		cfg.Config = filepath.Join(root, "tools", "jaeger", "config.yaml")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	j := &Jaeger{LogPath: filepath.Join(cfg.Dir, "jaeger.log"), host: cfg.Host, ns: ns}
	j.http = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return ns.DialContext(ctx, network, addr)
			},
		},
	}
	out, err := os.Create(j.LogPath)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := ns.Command(cfg.Binary, "--config", cfg.Config)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(cleanEnv(), "JAEGER_LISTEN_HOST="+cfg.Host)
	if j.Proc, err = l.Start(cmd); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := j.waitReady(ctx); err != nil {
		j.Stop()
		return nil, fmt.Errorf("%w; jaeger log:\n%s", err, tail(j.Log(), 3000))
	}
	return j, nil
}

func (j *Jaeger) waitReady(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	health := fmt.Sprintf("http://%s/status", net.JoinHostPort(j.host, strconv.Itoa(jaegerHealthPort)))
	var last error
	for {
		if code, _, err := j.get(ctx, health); err != nil {
			last = err
		} else if code == http.StatusOK {
			return nil
		} else {
			last = fmt.Errorf("health: HTTP %d", code)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("e2e: jaeger not ready: %w (last: %v)", ctx.Err(), last)
		case <-j.Proc.Done():
			return fmt.Errorf("e2e: jaeger exited (%v) before it was ready", j.Proc.Err())
		case <-tick.C:
		}
	}
}

// OTLPEndpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT (with protocol grpc)
// of a process in the same namespace.
func (j *Jaeger) OTLPEndpoint() string {
	return "http://" + net.JoinHostPort(j.host, strconv.Itoa(JaegerOTLPGRPCPort))
}

// QueryAddr is the query API's host:port in the namespace.
func (j *Jaeger) QueryAddr() string { return net.JoinHostPort(j.host, strconv.Itoa(JaegerQueryPort)) }

// TracePath is the query API's path of one trace (OTLP JSON).
func TracePath(traceID string) string { return "/api/v3/traces/" + url.PathEscape(traceID) }

// Log returns Jaeger's output so far.
func (j *Jaeger) Log() string {
	b, _ := os.ReadFile(j.LogPath)
	return string(b)
}

// Stop stops Jaeger by PID (SIGTERM, then SIGKILL).
func (j *Jaeger) Stop() error {
	j.http.CloseIdleConnections()
	return j.Proc.Stop(10 * time.Second)
}

func (j *Jaeger) get(ctx context.Context, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := j.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	// Bounded: a boot's trace is tens of kilobytes.
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, b, err
}

// query GETs path (with query) from the query API; a 404 is (nil, nil).
func (j *Jaeger) query(ctx context.Context, path string, q url.Values) ([]byte, error) {
	u := "http://" + j.QueryAddr() + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	code, b, err := j.get(ctx, u)
	switch {
	case err != nil:
		return nil, fmt.Errorf("e2e: jaeger %s: %w", path, err)
	case code == http.StatusNotFound:
		return nil, nil
	case code != http.StatusOK:
		return nil, fmt.Errorf("e2e: jaeger %s: HTTP %d: %s", path, code, bytes.TrimSpace(b))
	}
	return b, nil
}

// Trace returns one trace as Jaeger's query API has it (GET /api/v3/traces/<id>),
// by start time; nil while Jaeger has none of it.
func (j *Jaeger) Trace(ctx context.Context, traceID string) ([]Span, error) {
	b, err := j.query(ctx, TracePath(traceID), nil)
	if err != nil || b == nil {
		return nil, err
	}
	return parseOTLPJSON(b)
}

// WaitTrace polls the trace until done(spans) is true, or ctx ends; it returns the
// spans seen last.
func (j *Jaeger) WaitTrace(ctx context.Context, traceID string, done func([]Span) bool) ([]Span, error) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var spans []Span
	var last error
	for {
		s, err := j.Trace(ctx, traceID)
		if err == nil {
			spans = s
			if done(spans) {
				return spans, nil
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return spans, fmt.Errorf("e2e: trace %s incomplete in jaeger: %w (last error: %v)", traceID, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// Services returns the service names Jaeger has spans of (GET /api/v3/services).
func (j *Jaeger) Services(ctx context.Context) ([]string, error) {
	b, err := j.query(ctx, "/api/v3/services", nil)
	if err != nil || b == nil {
		return nil, err
	}
	var r struct {
		Services []string `json:"services"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("e2e: jaeger services: %w", err)
	}
	return r.Services, nil
}

// Find returns the spans of the traces that have spans of service and started
// within the last hour (GET /api/v3/traces?query.service_name=...), at most 1000
// traces.
func (j *Jaeger) Find(ctx context.Context, service string) ([]Span, error) {
	now := time.Now()
	q := url.Values{
		"query.service_name":   {service},
		"query.start_time_min": {now.Add(-time.Hour).UTC().Format(time.RFC3339Nano)},
		"query.start_time_max": {now.Add(time.Minute).UTC().Format(time.RFC3339Nano)},
		"query.num_traces":     {"1000"},
	}
	b, err := j.query(ctx, "/api/v3/traces", q)
	if err != nil || b == nil {
		return nil, err
	}
	return parseOTLPJSON(b)
}

// All returns every span of the last hour Jaeger holds, over all services (for a
// failing test's report; errors leave spans out).
func (j *Jaeger) All() []Span {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	svcs, _ := j.Services(ctx)
	seen := map[string]bool{}
	var out []Span
	for _, svc := range svcs {
		spans, _ := j.Find(ctx, svc)
		for _, sp := range spans {
			if k := sp.TraceID + sp.SpanID; !seen[k] {
				seen[k] = true
				out = append(out, sp)
			}
		}
	}
	return out
}

// otlpJSON is the query API's answer: OTLP JSON (IDs in hex, 64-bit integers as
// strings or numbers) wrapped in "result".
type otlpJSON struct {
	Result struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []jsonKV `json:"attributes"`
			} `json:"resource"`
			ScopeSpans []struct {
				Spans []struct {
					TraceID           string      `json:"traceId"`
					SpanID            string      `json:"spanId"`
					ParentSpanID      string      `json:"parentSpanId"`
					Name              string      `json:"name"`
					StartTimeUnixNano json.Number `json:"startTimeUnixNano"`
					EndTimeUnixNano   json.Number `json:"endTimeUnixNano"`
					Attributes        []jsonKV    `json:"attributes"`
					Status            struct {
						Code json.RawMessage `json:"code"`
					} `json:"status"`
				} `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	} `json:"result"`
}

type jsonKV struct {
	Key   string `json:"key"`
	Value struct {
		StringValue *string      `json:"stringValue"`
		IntValue    *json.Number `json:"intValue"`
		BoolValue   *bool        `json:"boolValue"`
		DoubleValue *float64     `json:"doubleValue"`
	} `json:"value"`
}

func jsonAttrs(kvs []jsonKV) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.Value
		switch {
		case v.StringValue != nil:
			m[kv.Key] = *v.StringValue
		case v.IntValue != nil:
			m[kv.Key] = v.IntValue.String()
		case v.BoolValue != nil:
			m[kv.Key] = strconv.FormatBool(*v.BoolValue)
		case v.DoubleValue != nil:
			m[kv.Key] = fmt.Sprint(*v.DoubleValue)
		}
	}
	return m
}

func unixNano(n json.Number) time.Time {
	i, _ := strconv.ParseInt(string(n), 10, 64)
	return time.Unix(0, i)
}

// parseOTLPJSON flattens the query API's OTLP JSON into Spans, by start time.
func parseOTLPJSON(b []byte) ([]Span, error) {
	var r otlpJSON
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("e2e: jaeger trace JSON: %w", err)
	}
	var out []Span
	for _, rs := range r.Result.ResourceSpans {
		svc := jsonAttrs(rs.Resource.Attributes)["service.name"]
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				code := strings.Trim(string(sp.Status.Code), `"`)
				out = append(out, Span{
					Service:  svc,
					TraceID:  strings.ToLower(sp.TraceID),
					SpanID:   strings.ToLower(sp.SpanID),
					ParentID: strings.ToLower(sp.ParentSpanID),
					Name:     sp.Name,
					Start:    unixNano(sp.StartTimeUnixNano),
					End:      unixNano(sp.EndTimeUnixNano),
					Attrs:    jsonAttrs(sp.Attributes),
					Error:    code == "2" || code == "STATUS_CODE_ERROR",
				})
			}
		}
	}
	sort.SliceStable(out, func(i, k int) bool { return out[i].Start.Before(out[k].Start) })
	return out, nil
}

// Forward serves Jaeger's query API on ln (a listener outside the namespace, on
// loopback), copying each connection to the query port in the namespace, until
// the returned stop is called; stop closes ln and every forwarded connection and
// waits for their goroutines. The demo uses it so that a browser or curl on the
// host reaches Jaeger.
func (j *Jaeger) Forward(ln net.Listener) (stop func()) {
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]bool{}
		closed bool
		wg     sync.WaitGroup
	)
	// track registers c for stop to close; false once stopped (c is closed then).
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
		c.Close()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(c) {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer untrack(c)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				up, err := j.ns.DialContext(ctx, "tcp", j.QueryAddr())
				cancel()
				if err != nil || !track(up) {
					return
				}
				defer untrack(up)
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					if cw, ok := up.(interface{ CloseWrite() error }); ok {
						cw.CloseWrite()
					}
					close(done)
				}()
				io.Copy(c, up)
				c.Close()
				<-done
			}()
		}
	}()
	return func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}
