package blobstore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func put(t *testing.T, s *Store, data string) string {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(data))
	d, err := w.Commit("", -1)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestCheckAndQuarantine: a blob written here is verified; a store opened again
// (a restart) trusts nothing until Check; a flipped byte is ErrCorrupt, and
// Quarantine moves the blob aside so it can no longer be opened.
func TestCheckAndQuarantine(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	good, bad := put(t, s, "good content"), put(t, s, "bad content")
	if !s.Verified(good) || !s.Verified(bad) {
		t.Fatal("blobs written by this store are not marked verified")
	}
	p, _ := s.Path(bad)
	os.Chmod(p, 0o600)
	if err := os.WriteFile(p, []byte("bad c0ntent"), 0o600); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Verified(good) || s2.Verified(bad) {
		t.Fatal("a reopened store trusts blobs it has not hashed")
	}
	ds, err := s2.Digests()
	if err != nil || len(ds) != 2 {
		t.Fatalf("Digests = %v, %v", ds, err)
	}
	f, _ := s2.Open(good)
	if err := s2.Check(f, good, nil); err != nil || !s2.Verified(good) {
		t.Fatalf("good blob: %v", err)
	}
	f.Close()
	f, _ = s2.Open(bad)
	calls := 0
	err = s2.Check(f, bad, func(int) error { calls++; return nil })
	f.Close()
	if !errors.Is(err, ErrCorrupt) || s2.Verified(bad) || calls == 0 {
		t.Fatalf("corrupt blob: %v (limit called %d times)", err, calls)
	}
	dst, err := s2.Quarantine(bad)
	if err != nil || !strings.HasPrefix(filepath.Base(dst), bad+".") || filepath.Dir(dst) != s2.QuarantineDir() {
		t.Fatalf("Quarantine = %q, %v", dst, err)
	}
	if _, err := s2.Open(bad); !errors.Is(err, ErrNotFound) {
		t.Errorf("open after quarantine: %v", err)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "bad c0ntent" {
		t.Errorf("quarantined file: %q %v", b, err)
	}
	if _, err := s2.Quarantine(bad); !errors.Is(err, ErrNotFound) {
		t.Errorf("second quarantine: %v", err)
	}
	// A restart keeps the quarantine and does not list it as a blob.
	s3, err := Open(dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ds, _ := s3.Digests(); len(ds) != 1 || ds[0] != good {
		t.Errorf("digests after quarantine: %v", ds)
	}
}
