package blobstore

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"sync"
)

// Small blobs (configs, signatures, menus, small boot files) are served from
// memory: a 4 KiB file costs more to open, seek, read and close than to send.
// Blobs are content-addressed and immutable, so the bytes of a digest never
// change; they are dropped when the blob is removed or quarantined.
const (
	// MemoryMaxBlob is the largest blob held in memory.
	MemoryMaxBlob = 64 << 10
	// MemoryBudget bounds the bytes held in memory. Past it, small blobs are
	// served from disk like the others: nothing is evicted, since the set of
	// small blobs a site boots from is small and changes little.
	MemoryBudget = 32 << 20
)

// memory holds the bytes of small verified blobs by digest. Its entries are
// only ever added (after their bytes hashed to their digest) or dropped, never
// changed.
type memory struct {
	mu    sync.Mutex // serializes adds and drops; reads go through m alone
	m     sync.Map   // digest -> []byte
	total int64
}

// Cached returns the bytes of the blob with digest d when they are held in
// memory. The slice is shared: callers must not modify it.
func (s *Store) Cached(d string) ([]byte, bool) {
	v, ok := s.mem.m.Load(d)
	if !ok {
		return nil, false
	}
	return v.([]byte), true
}

// Remember reads the blob f (of digest d and size bytes, opened by the caller
// and verified) into memory when it is small enough and the budget allows, so
// that Cached finds it. The bytes read are hashed again: what memory holds is
// exactly what the digest names, whatever happened to the file. f's offset is
// not moved.
func (s *Store) Remember(f *os.File, d string, size int64) {
	if size < 0 || size > MemoryMaxBlob {
		return
	}
	if _, ok := s.mem.m.Load(d); ok {
		return
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); int64(n) != size || (err != nil && err != io.EOF) {
		return
	}
	sum := sha256.Sum256(b)
	if hex.EncodeToString(sum[:]) != d {
		return
	}
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	// Remove and Quarantine drop d from verified before they drop it from
	// memory under mu: a blob removed while it was being read is not added
	// back here.
	if !s.Verified(d) || s.mem.total+size > MemoryBudget {
		return
	}
	if _, loaded := s.mem.m.LoadOrStore(d, b); !loaded {
		s.mem.total += size
	}
}

// forget drops d from memory.
func (s *Store) forget(d string) {
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	if v, ok := s.mem.m.LoadAndDelete(d); ok {
		s.mem.total -= int64(len(v.([]byte)))
	}
}

// MemoryBytes is how many bytes of blobs are held in memory.
func (s *Store) MemoryBytes() int64 {
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	return s.mem.total
}
