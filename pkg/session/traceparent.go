package session

import (
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// ErrTraceparent is returned for a malformed traceparent.
var ErrTraceparent = errors.New("malformed traceparent")

// Format renders a span context as a W3C traceparent
// ("00-<32 hex trace id>-<16 hex span id>-<flags>").
func Format(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}

// Parse reads a W3C traceparent into a remote span context. It accepts only version
// 00 and lower-case hex, as the specification requires, and rejects all-zero IDs.
func Parse(s string) (trace.SpanContext, error) {
	parts := strings.Split(s, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return trace.SpanContext{}, fmt.Errorf("%w: %q", ErrTraceparent, s)
	}
	for _, p := range parts[1:] {
		if strings.ToLower(p) != p {
			return trace.SpanContext{}, fmt.Errorf("%w: %q", ErrTraceparent, s)
		}
	}
	tid, err := trace.TraceIDFromHex(parts[1])
	if err != nil {
		return trace.SpanContext{}, fmt.Errorf("%w: %q", ErrTraceparent, s)
	}
	sid, err := trace.SpanIDFromHex(parts[2])
	if err != nil {
		return trace.SpanContext{}, fmt.Errorf("%w: %q", ErrTraceparent, s)
	}
	var flags byte
	if _, err := fmt.Sscanf(parts[3], "%02x", &flags); err != nil {
		return trace.SpanContext{}, fmt.Errorf("%w: %q", ErrTraceparent, s)
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags), Remote: true}), nil
}
