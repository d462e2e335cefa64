package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
)

// Span is one span received by an OTLPReceiver, flattened.
type Span struct {
	// Service is the resource's service.name.
	Service string
	// TraceID, SpanID and ParentID are hex.
	TraceID, SpanID, ParentID string
	// Name is the span name (a hop name such as "tftp").
	Name string
	// Start and End are the span's times.
	Start, End time.Time
	// Attrs are the span's string-able attributes.
	Attrs map[string]string
	// Error reports status code Error.
	Error bool
}

// OTLPReceiver is a minimal OpenTelemetry collector: an OTLP/gRPC trace receiver
// (the official protos, go.opentelemetry.io/proto/otlp) that keeps every span in
// memory, for tests to assert on.
type OTLPReceiver struct {
	collectorpb.UnimplementedTraceServiceServer
	srv  *grpc.Server
	addr net.Addr

	mu      sync.Mutex
	spans   []Span
	changed chan struct{}
}

// ServeOTLP serves OTLP/gRPC on ln (for instance a listener from lab.Netns.Listen)
// until Close.
func ServeOTLP(ln net.Listener) *OTLPReceiver {
	r := &OTLPReceiver{srv: grpc.NewServer(), addr: ln.Addr(), changed: make(chan struct{})}
	collectorpb.RegisterTraceServiceServer(r.srv, r)
	go r.srv.Serve(ln)
	return r
}

// Endpoint is the value for OTEL_EXPORTER_OTLP_ENDPOINT (with protocol grpc).
func (r *OTLPReceiver) Endpoint() string { return "http://" + r.addr.String() }

// Export receives spans.
func (r *OTLPReceiver) Export(ctx context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		svc := attrs(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				got = append(got, Span{
					Service:  svc,
					TraceID:  hex.EncodeToString(sp.GetTraceId()),
					SpanID:   hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Name:     sp.GetName(),
					Start:    time.Unix(0, int64(sp.GetStartTimeUnixNano())),
					End:      time.Unix(0, int64(sp.GetEndTimeUnixNano())),
					Attrs:    attrs(sp.GetAttributes()),
					Error:    sp.GetStatus().GetCode() == 2, // STATUS_CODE_ERROR
				})
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = fmt.Sprint(x.DoubleValue)
		}
	}
	return m
}

// Trace returns the spans of one trace received so far, by start time.
func (r *OTLPReceiver) Trace(traceID string) []Span {
	r.mu.Lock()
	var out []Span
	for _, s := range r.spans {
		if s.TraceID == traceID {
			out = append(out, s)
		}
	}
	r.mu.Unlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// All returns every span received so far.
func (r *OTLPReceiver) All() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// WaitTrace waits until done(spans of traceID) is true, or ctx ends; it returns the
// spans seen last.
func (r *OTLPReceiver) WaitTrace(ctx context.Context, traceID string, done func([]Span) bool) ([]Span, error) {
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		spans := r.Trace(traceID)
		if done(spans) {
			return spans, nil
		}
		select {
		case <-ctx.Done():
			return spans, fmt.Errorf("e2e: trace %s incomplete: %w", traceID, ctx.Err())
		case <-changed:
		}
	}
}

// Close stops the receiver.
func (r *OTLPReceiver) Close() { r.srv.Stop() }
