package macaddr

import (
	"net"
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
		// Bits is the address's value: the same as net.ParseMAC's bytes.
		hw, _ := net.ParseMAC(m)
		var want uint64
		for _, b := range hw {
			want = want<<8 | uint64(b)
		}
		if v, ok := Bits(m); !ok || v != want {
			t.Fatalf("Bits(%q) = %#x, %v; want %#x", m, v, ok, want)
		}
	})
}

func TestBits(t *testing.T) {
	if v, ok := Bits("52:54:00:ab:cd:ef"); !ok || v != 0x525400abcdef {
		t.Errorf("Bits = %#x, %v", v, ok)
	}
	// Only the canonical form: anything Normalize would still change is refused.
	for _, s := range []string{"52:54:00:AB:CD:EF", "52-54-00-ab-cd-ef", "525400abcdef", "52:54:00:ab:cd:e", "52:54:00:ab:cd:eg", "52:54:00:ab:cd:ef "} {
		if v, ok := Bits(s); ok {
			t.Errorf("Bits(%q) = %#x, accepted", s, v)
		}
	}
}
