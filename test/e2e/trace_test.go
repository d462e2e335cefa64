//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bootchain/bootchain/test/lab"
	"github.com/google/go-cmp/cmp"
)

// traceSource is where a chain test reads a boot's trace back: the test's own
// OTLP receiver (OTLPReceiver) or a real trace backend's query API (Jaeger).
type traceSource interface {
	// WaitTrace waits until done(spans of traceID) holds, or ctx ends; it
	// returns the spans seen last.
	WaitTrace(ctx context.Context, traceID string, done func([]Span) bool) ([]Span, error)
	// All returns every span the source holds (for a failing test's report).
	All() []Span
}

// startTraceBackend starts what the stack exports its spans to, in the lab's
// namespace: Jaeger with o.jaeger, else an OTLPReceiver. It returns the source to
// read traces from and the OTLP/gRPC endpoint for the stack.
func startTraceBackend(t *testing.T, ctx context.Context, l *lab.Lab, o chainOpts) (traceSource, string) {
	t.Helper()
	if o.jaeger {
		bin := needJaeger(t)
		j, err := StartJaeger(ctx, l, l.Main(), JaegerConfig{Binary: bin, Dir: filepath.Join(l.Dir(), "jaeger")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("jaeger log (tail):\n%s", tail(j.Log(), 4000))
			}
			j.Stop()
		})
		return j, j.OTLPEndpoint()
	}
	ln, err := l.Main().Listen("tcp", "127.0.0.1:4317")
	if err != nil {
		t.Fatal(err)
	}
	otlp := ServeOTLP(ln)
	t.Cleanup(otlp.Close)
	return otlp, otlp.Endpoint()
}

// needJaeger returns the Jaeger binary. Outside CI a machine that has not built it
// skips, saying how; in CI (CI set) its absence fails the test, because `make unit`
// and `make e2e` build it first.
func needJaeger(t *testing.T) string {
	t.Helper()
	bin, err := JaegerBinary(context.Background(), false)
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%v (CI is set: make unit and make e2e build it first)", err)
	}
	t.Skip(err)
	return ""
}

// traceTreeProblems checks a trace's shape: exactly one root (a span without a
// parent), the session's "boot <mac>", and no orphans (every other span's parent
// is a span of the trace). It returns one line per problem.
func traceTreeProblems(spans []Span, mac string) []string {
	var problems []string
	ids := make(map[string]bool, len(spans))
	for _, sp := range spans {
		ids[sp.SpanID] = true
	}
	var roots []string
	for _, sp := range spans {
		switch {
		case sp.ParentID == "":
			roots = append(roots, fmt.Sprintf("%s (%s)", sp.Name, sp.Service))
			if sp.Name != "boot "+mac {
				problems = append(problems, fmt.Sprintf("root span %q (%s) is not the session's \"boot %s\"", sp.Name, sp.Service, mac))
			}
		case !ids[sp.ParentID]:
			problems = append(problems, fmt.Sprintf("orphan: %s (%s) has parent %s, which is not in the trace", sp.Name, sp.Service, sp.ParentID))
		}
	}
	if len(roots) != 1 {
		problems = append(problems, fmt.Sprintf("%d roots, want 1: %s", len(roots), strings.Join(roots, ", ")))
	}
	return problems
}

func TestTraceTreeProblems(t *testing.T) {
	const mac = "52:54:00:bc:e2:0a"
	root := Span{Name: "boot " + mac, Service: "bootchain-dhcpd", SpanID: "r"}
	hop := func(id, parent string) Span {
		return Span{Name: "tftp", Service: "bootchain-tftpd", SpanID: id, ParentID: parent}
	}
	for name, tc := range map[string]struct {
		spans []Span
		want  []string
	}{
		"one root, hops and a grandchild": {spans: []Span{root, hop("a", "r"), hop("b", "a")}},
		"orphan": {
			spans: []Span{root, hop("a", "r"), hop("b", "x")},
			want:  []string{"orphan: tftp (bootchain-tftpd) has parent x, which is not in the trace"},
		},
		"two roots": {
			spans: []Span{root, hop("a", "")},
			want: []string{
				`root span "tftp" (bootchain-tftpd) is not the session's "boot 52:54:00:bc:e2:0a"`,
				"2 roots, want 1: boot 52:54:00:bc:e2:0a (bootchain-dhcpd), tftp (bootchain-tftpd)",
			},
		},
		"no root": {
			spans: []Span{hop("a", "x")},
			want:  []string{"orphan: tftp (bootchain-tftpd) has parent x, which is not in the trace", "0 roots, want 1: "},
		},
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, traceTreeProblems(tc.spans, mac)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// jaegerTraceJSON is the shape of Jaeger's GET /api/v3/traces/<id> answer (OTLP
// JSON from its gogo jsonpb marshaller: enums as numbers, 64-bit integers as strings).
const jaegerTraceJSON = `{"result":{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"bootchain-artifactstore"}}]},
"scopeSpans":[{"scope":{"name":"bootchain"},"spans":[
{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00f067aa0ba902b8","parentSpanId":"b7ad6b7169203331","name":"artifact","kind":2,
 "startTimeUnixNano":"1700000000500000000","endTimeUnixNano":"1700000001000000000",
 "attributes":[{"key":"url.path","value":{"stringValue":"/a/e2e/vmlinuz"}},{"key":"bootchain.bytes","value":{"intValue":"8000000"}},{"key":"bootchain.ok","value":{"boolValue":false}}],
 "status":{"code":2,"message":"not found"}},
{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"boot 52:54:00:bc:e2:0a","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000001000","status":{}}
]}]}]}}`

func TestParseOTLPJSON(t *testing.T) {
	got, err := parseOTLPJSON([]byte(jaegerTraceJSON))
	if err != nil {
		t.Fatal(err)
	}
	const tid = "0af7651916cd43dd8448eb211c80319c"
	want := []Span{
		{Service: "bootchain-artifactstore", TraceID: tid, SpanID: "b7ad6b7169203331", Name: "boot 52:54:00:bc:e2:0a",
			Start: time.Unix(1700000000, 0), End: time.Unix(1700000000, 1000), Attrs: map[string]string{}},
		{Service: "bootchain-artifactstore", TraceID: tid, SpanID: "00f067aa0ba902b8", ParentID: "b7ad6b7169203331", Name: "artifact",
			Start: time.Unix(1700000000, 500000000), End: time.Unix(1700000001, 0), Error: true,
			Attrs: map[string]string{"url.path": "/a/e2e/vmlinuz", "bootchain.bytes": "8000000", "bootchain.ok": "false"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spans (-want +got):\n%s", diff)
	}
	if _, err := parseOTLPJSON([]byte(`{"result":`)); err == nil {
		t.Error("truncated JSON parsed without error")
	}
}

// FuzzParseOTLPJSON: whatever a query API answers, the parser returns spans or an
// error, never panics.
func FuzzParseOTLPJSON(f *testing.F) {
	f.Add([]byte(jaegerTraceJSON))
	f.Add([]byte(`{"result":{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":1e99,"status":{"code":"STATUS_CODE_ERROR"}}]}]}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		spans, err := parseOTLPJSON(b)
		if err != nil && spans != nil {
			t.Errorf("error %v with %d spans", err, len(spans))
		}
	})
}
