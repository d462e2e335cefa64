package main

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the output")

// Output that changes from run to run becomes placeholders of the same width,
// so that the columns around it stay aligned as they were.
var scrubs = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}`), "YYYY-MM-DD hh:mm:ss"},
	{regexp.MustCompile(`\b[0-9a-f]{21}\b`), "JOB-ID"},
	{regexp.MustCompile(`\b[0-9a-f]{32}\b`), "TRACE-ID"},
	{regexp.MustCompile(`\b\d+(\.\d+)?(ms|µs|s) ago\b`), "N ago"},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
}

func scrub(s string) string {
	for _, r := range scrubs {
		s = r.re.ReplaceAllStringFunc(s, func(m string) string {
			if len(r.with) >= len(m) {
				return r.with
			}
			return r.with + strings.Repeat(" ", len(m)-len(r.with))
		})
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// golden compares got with testdata/<name>.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	got = scrub(got)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", path, d)
	}
}
