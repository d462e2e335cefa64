// Package telemetry sets up OpenTelemetry tracing for bootchain from the standard
// OTEL_* environment variables.
//
// Each service gets its own TracerProvider whose resource names the service
// (service.name = "bootchain-dhcpd", ...), so a trace shows which service handled each
// hop even when all four run in one process. All providers share one exporter:
//
//	tel, err := telemetry.Setup(ctx, telemetry.Config{})
//	defer tel.Shutdown(context.Background())
//	tp := tel.Provider("dhcpd")
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config configures tracing. Empty fields come from OTEL_* variables.
type Config struct {
	// Exporter overrides the exporter chosen from the environment (tests use an
	// in-memory one).
	Exporter sdktrace.SpanExporter
	// Version is reported as service.version.
	Version string
	// Synchronous exports each span as it ends instead of batching (tests).
	Synchronous bool
}

// Telemetry owns the exporter and the per-service providers.
type Telemetry struct {
	cfg       Config
	exporter  sdktrace.SpanExporter
	mu        sync.Mutex
	providers map[string]*sdktrace.TracerProvider
}

// Setup chooses the exporter: Config.Exporter, else OTLP when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (protocol
// from OTEL_EXPORTER_OTLP_PROTOCOL: grpc, or http/protobuf), else none (spans still
// get IDs, which the boot sessions in etcd record). OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none turns exporting off. It installs the W3C TraceContext
// propagator globally.
func Setup(ctx context.Context, cfg Config) (*Telemetry, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t := &Telemetry{cfg: cfg, exporter: cfg.Exporter, providers: map[string]*sdktrace.TracerProvider{}}
	if t.exporter != nil || disabled() {
		return t, nil
	}
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if endpoint == "" {
		return t, nil
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var err error
	switch proto {
	case "grpc":
		t.exporter, err = otlptracegrpc.New(ctx)
	case "", "http/protobuf":
		t.exporter, err = otlptracehttp.New(ctx)
	default:
		return nil, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL=%q: want grpc or http/protobuf", proto)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	return t, nil
}

func disabled() bool {
	return strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") ||
		strings.EqualFold(os.Getenv("OTEL_TRACES_EXPORTER"), "none")
}

// Provider returns the TracerProvider for a service ("dhcpd", "bootapi", ...). The
// sampler is ParentBased(AlwaysOn) unless OTEL_TRACES_SAMPLER says otherwise. With no
// exporter configured it is a no-op provider.
func (t *Telemetry) Provider(service string) trace.TracerProvider {
	if t.exporter == nil {
		// Spans nobody exports are pure cost on the hot paths; boot sessions make
		// their own trace and span IDs when the provider records nothing.
		return noop.NewTracerProvider()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tp, ok := t.providers[service]; ok {
		return tp
	}
	attrs := []resource.Option{
		resource.WithAttributes(semconv.ServiceName("bootchain-"+service), semconv.ServiceNamespace("bootchain")),
		resource.WithFromEnv(),
		resource.WithHost(),
	}
	if t.cfg.Version != "" {
		attrs = append(attrs, resource.WithAttributes(semconv.ServiceVersion(t.cfg.Version)))
	}
	res, err := resource.New(context.Background(), attrs...)
	if err != nil {
		res = resource.Default()
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	}
	if t.exporter != nil {
		if t.cfg.Synchronous {
			opts = append(opts, sdktrace.WithSyncer(t.exporter))
		} else {
			opts = append(opts, sdktrace.WithBatcher(t.exporter))
		}
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t.providers[service] = tp
	return tp
}

// Shutdown flushes and stops every provider and the exporter.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, tp := range t.providers {
		errs = append(errs, tp.Shutdown(ctx))
	}
	if t.exporter != nil && len(t.providers) == 0 {
		errs = append(errs, t.exporter.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
