package blobstore

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func remember(t *testing.T, s *Store, d string, size int64) {
	t.Helper()
	f, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.Remember(f, d, size)
}

// TestMemory: a small verified blob is held in memory once remembered, with
// exactly its bytes; one too large, unverified or whose bytes do not hash to
// its digest is not; Remove and Quarantine drop it.
func TestMemory(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	small := strings.Repeat("menu\n", 800)
	d := put(t, s, small)
	if _, ok := s.Cached(d); ok {
		t.Fatal("cached before Remember")
	}
	remember(t, s, d, int64(len(small)))
	if b, ok := s.Cached(d); !ok || string(b) != small {
		t.Fatalf("Cached = %d bytes, %v", len(b), ok)
	}
	if got := s.MemoryBytes(); got != int64(len(small)) {
		t.Errorf("MemoryBytes = %d, want %d", got, len(small))
	}
	remember(t, s, d, int64(len(small)))
	if got := s.MemoryBytes(); got != int64(len(small)) {
		t.Errorf("remembered twice: MemoryBytes = %d", got)
	}

	big := put(t, s, strings.Repeat("k", MemoryMaxBlob+1))
	remember(t, s, big, MemoryMaxBlob+1)
	if _, ok := s.Cached(big); ok {
		t.Error("a blob over MemoryMaxBlob is held in memory")
	}

	// The file changed under its digest (a disk that rots): its bytes are not
	// what the digest names, and are not held.
	other := put(t, s, "signature")
	p, _ := s.Path(other)
	os.Chmod(p, 0o600)
	if err := os.WriteFile(p, []byte("signaturf"), 0o600); err != nil {
		t.Fatal(err)
	}
	remember(t, s, other, 9)
	if _, ok := s.Cached(other); ok {
		t.Error("bytes that do not hash to the digest are held in memory")
	}

	// A store opened again has verified nothing: nothing is remembered.
	s2, err := Open(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	remember(t, s2, d, int64(len(small)))
	if _, ok := s2.Cached(d); ok {
		t.Error("an unverified blob is held in memory")
	}

	if err := s.Remove(d); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Cached(d); ok || s.MemoryBytes() != 0 {
		t.Errorf("removed blob still in memory (%d bytes held)", s.MemoryBytes())
	}
	q := put(t, s, "config")
	remember(t, s, q, 6)
	if b, ok := s.Cached(q); !ok || !bytes.Equal(b, []byte("config")) {
		t.Fatal("config not held")
	}
	if _, err := s.Quarantine(q); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Cached(q); ok {
		t.Error("quarantined blob still in memory")
	}
}
