package macaddr

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"52:54:00:12:34:56":  "52:54:00:12:34:56",
		"52-54-00-12-34-56":  "52:54:00:12:34:56",
		"5254.0012.3456":     "52:54:00:12:34:56",
		"525400123456":       "52:54:00:12:34:56",
		" 52:54:00:AB:CD:EF": "52:54:00:ab:cd:ef",
	} {
		if got, err := Normalize(in); err != nil || got != want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "zz", "52:54:00", "52:54:00:12:34:56:78:9a", "52%3A54", "52:54:00:12:34:5g"} {
		if _, err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%q) accepted", bad)
		}
	}
}

// FuzzNormalize: whatever comes in (a query parameter, a CLI argument), the result is
// either an error or a canonical MAC that normalizes to itself.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"52:54:00:12:34:56", "52-54-00-AB-cd-EF", "52:54-00:12:34:56", "5254.0012.3456", "525400123456", "", "::::::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := Normalize(s)
		// The fast path agrees with the full parser.
		if slow, serr := parse(s); (err == nil) != (serr == nil) || slow != m {
			t.Fatalf("Normalize(%q) = %q, %v; parse = %q, %v", s, m, err, slow, serr)
		}
		if err != nil {
			return
		}
		if len(m) != 17 || strings.ToLower(m) != m {
			t.Fatalf("Normalize(%q) = %q", s, m)
		}
		if again, err := Normalize(m); err != nil || again != m {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", s, m, again, err)
		}
	})
}
