package strhash

import (
	"hash/fnv"
	"testing"
)

func TestFNV64aMatchesHashFNV(t *testing.T) {
	for _, s := range []string{"", "a", "52:54:00:12:34:56", "198.18.0.10", "x86_64"} {
		h := fnv.New64a()
		h.Write([]byte(s))
		if got, want := FNV64a(s), h.Sum64(); got != want {
			t.Errorf("FNV64a(%q) = %#x, want %#x", s, got, want)
		}
		if got, want := FNV64a([]byte(s)), h.Sum64(); got != want {
			t.Errorf("FNV64a([]byte(%q)) = %#x, want %#x", s, got, want)
		}
	}
}
