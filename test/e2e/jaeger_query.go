//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Reading traces back from Jaeger's query API (/api/v3): what TestChainJaeger
// checks and the demo prints.

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
