package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/bootchain/bootchain/services/tftpd/internal/source"
)

// laggingSource serves one artifact whose content the test switches; until it
// does, it keeps answering with the old content, as an artifactstore whose view
// trails etcd by a moment does.
type laggingSource struct {
	mu      sync.Mutex
	content []byte
}

func (s *laggingSource) set(b []byte) { s.mu.Lock(); s.content = b; s.mu.Unlock() }

func (s *laggingSource) meta() (source.Meta, []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := sha256.Sum256(s.content)
	return source.Meta{Name: "ipxe.efi", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(s.content))}, s.content
}

func (s *laggingSource) Stat(context.Context, string) (source.Meta, error) {
	m, _ := s.meta()
	return m, nil
}

func (s *laggingSource) Fetch(_ context.Context, _ string, w io.Writer) (source.Meta, error) {
	m, b := s.meta()
	_, err := w.Write(b)
	return m, err
}

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func read(t *testing.T, c *Cache) []byte {
	t.Helper()
	h, _, err := c.Open(context.Background(), "ipxe.efi")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	b, err := io.ReadAll(h.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// etcd announces new content before artifactstore serves it: the entry must stay
// stale (the old copy is served meanwhile) and pick up the new content once the
// source has it, not settle on the old content for good.
func TestChangedWaitsForAnnouncedContent(t *testing.T) {
	v1, v2 := []byte("version one"), []byte("version two, longer")
	src := &laggingSource{content: v1}
	c, err := New(Config{Dir: t.TempDir(), Source: src, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); !bytes.Equal(got, v1) {
		t.Fatalf("first read: %q", got)
	}

	c.Changed("ipxe.efi", digest(v2)) // the source still has v1
	if got := read(t, c); !bytes.Equal(got, v1) {
		t.Fatalf("while the source lags: %q, want the cached %q", got, v1)
	}
	if err := c.refresh(context.Background(), "ipxe.efi", false); err == nil {
		t.Fatal("refresh against a lagging source succeeded; the entry would never be refreshed again")
	}
	if !c.entries["ipxe.efi"].Stale {
		t.Fatal("entry no longer stale while the source lags")
	}

	src.set(v2)
	if got := read(t, c); !bytes.Equal(got, v2) {
		t.Fatalf("after the source caught up: %q, want %q", got, v2)
	}
	if e := c.entries["ipxe.efi"]; e.Stale || e.SHA256 != digest(v2) {
		t.Fatalf("entry after refresh: %+v", e)
	}

	// A change with no digest (deleted, or a watch gap) takes what the source says.
	c.Changed("ipxe.efi", "")
	if err := c.refresh(context.Background(), "ipxe.efi", false); err != nil {
		t.Fatalf("refresh with nothing announced: %v", err)
	}
	if c.entries["ipxe.efi"].Stale {
		t.Fatal("still stale after a refresh with nothing announced")
	}
}
